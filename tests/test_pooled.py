"""Pooling a suite's contrasts over its datasets (`experiments.pooled`): the random-effects
estimate and the minimum detectable effect against hand and independent computations, which
datasets are left out, and the committed table from the committed results."""

import json
import math
import os

import numpy as np
import pytest
from scipy import optimize, stats

from mixupe_jax.experiments import pooled, suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_random_effects_by_hand_and_against_statsmodels():
  """Two datasets, means 1 and 3 with variance 1: Q = 2, tau^2 = (Q - 1) / (2 - 1) = 1, weights
  1/2 each, so mu = 2, SE = 1, I^2 = 1/2. Three heterogeneous datasets: statsmodels'
  DerSimonian-Laird (an independent implementation) where tau^2 > 0."""
  pool = pooled.random_effects([1.0, 3.0], [1.0, 1.0])
  assert pool["mean"] == 2.0 and pool["tau2"] == 1.0 and pool["i2"] == 0.5
  assert pool["se"] == pytest.approx(1.0)
  assert pool["ci95"] == pytest.approx([2 - 1.959964, 2 + 1.959964], abs=1e-6)
  from statsmodels.stats.meta_analysis import combine_effects

  means, variances = np.array([0.5, 1.0, -0.2, 0.8]), np.array([0.04, 0.09, 0.05, 0.2])
  pool = pooled.random_effects(means, variances)
  reference = combine_effects(means, variances, method_re="dl")
  row = reference.summary_frame().loc["random effect"]
  assert reference.tau2 > 0
  assert pool["tau2"] == pytest.approx(reference.tau2, rel=1e-12)
  assert pool["mean"] == pytest.approx(row["eff"], rel=1e-12)
  assert pool["ci95"] == pytest.approx([row["ci_low"], row["ci_upp"]], rel=1e-9)
  assert pool["i2"] == pytest.approx(reference.i2, rel=1e-12)


def test_homogeneous_effects_pool_as_fixed_effects_with_tau_zero():
  """Means closer than their noise: Q < k - 1, so tau^2 is 0 (not negative) and the pool is
  the inverse-variance mean with SE = (sum 1/v)^(-1/2)."""
  means, variances = [0.1, 0.1001, 0.0999], [0.01, 0.02, 0.04]
  pool = pooled.random_effects(means, variances)
  weights = 1 / np.asarray(variances)
  assert pool["tau2"] == 0.0 and pool["i2"] == 0.0
  assert pool["mean"] == pytest.approx(np.sum(weights * means) / np.sum(weights), rel=1e-12)
  assert pool["se"] == pytest.approx(np.sum(weights) ** -0.5, rel=1e-12)


@pytest.mark.parametrize("seeds", [3, 5, 20])
def test_the_minimum_detectable_effect_has_80_percent_power(seeds):
  """At the MDE, a two-sided paired t-test at alpha 0.05 rejects with probability 0.8: solved
  here from scipy's noncentral t directly, for differences of standard deviation 0.7."""
  critical = stats.t.ppf(0.975, seeds - 1)

  def power(delta):
    noncentral = stats.nct(seeds - 1, delta * math.sqrt(seeds))
    # The lower tail is negligible here (scipy's nct gives NaN for it at a large noncentrality).
    return noncentral.sf(critical) + np.nan_to_num(noncentral.cdf(-critical))

  delta = optimize.brentq(lambda d: power(d) - 0.8, 0.01, 4)
  assert pooled.minimum_detectable_effect(0.7, seeds) == pytest.approx(0.7 * delta, rel=1e-4)
  assert pooled.minimum_detectable_effect(0.7, 1) is None


def results_of(per_dataset):
  """A results.json of methods "a" and "b" with the given per-seed accuracies."""
  return {"results": {
    dataset: {method: {"seeds": list(range(len(values))),
                       "per_seed": {"accuracy": list(values)}}
              for method, values in methods.items()}
    for dataset, methods in per_dataset.items()}}


def test_identical_and_constant_datasets_are_named_not_pooled():
  """Per dataset: the paired mean, std and seeds of a - b; a dataset where a and b are equal at
  every seed, or differ by a constant (no variance to weigh it by), is listed and left out; the
  rest pooled as `random_effects` pools them, with the count of positive means."""
  results = results_of({
    "one": {"a": [0.9, 0.8, 0.7], "b": [0.85, 0.8, 0.6]},
    "two": {"a": [0.5, 0.6, 0.4], "b": [0.55, 0.5, 0.35]},
    "same": {"a": [0.5, 0.6], "b": [0.5, 0.6]},
    "shifted": {"a": [0.5, 0.6], "b": [0.4, 0.5]},
  })
  entry = pooled.analyze(results, [("a", "b")])["contrasts"]["a - b"]
  assert entry["identical"] == ["same"] and entry["not_pooled_no_variance"] == ["shifted"]
  one = np.array([0.05, 0.0, 0.1])
  assert entry["datasets"]["one"]["mean"] == pytest.approx(one.mean())
  assert entry["datasets"]["one"]["std"] == pytest.approx(one.std(ddof=1))
  assert entry["datasets"]["one"]["n"] == 3
  two = np.array([-0.05, 0.1, 0.05])
  expected = pooled.random_effects([one.mean(), two.mean()],
                                   [one.var(ddof=1) / 3, two.var(ddof=1) / 3])
  assert entry["pooled"]["mean"] == pytest.approx(expected["mean"])
  assert entry["pooled"]["datasets"] == ["one", "two"] and entry["positive"] == 2


def test_the_committed_results_give_the_committed_pooled_table():
  """results/converged/pooled.md is what the report code makes of the committed results.json."""
  folder = os.path.join(ROOT, "results", "converged")
  with open(os.path.join(folder, "results.json")) as file:
    results = json.load(file)
  analysis = pooled.analyze(results, pooled.suite_contrasts(suites.get_suite("converged")))
  with open(os.path.join(folder, "pooled.md")) as file:
    assert pooled.markdown(analysis) == file.read()
