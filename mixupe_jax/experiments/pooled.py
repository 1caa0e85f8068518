r"""A suite's contrasts pooled over its datasets, and the effect each dataset's seeds could detect.

Per dataset d, a contrast's paired per-seed differences (method - baseline, the same seed: the
same initialization, data order and mixing draws) have mean m_d, standard deviation s_d over n_d
seeds, and the mean's variance v_d = s_d^2 / n_d. The datasets are pooled by a random-effects
meta-analysis (DerSimonian and Laird 1986):

.. math::

   w_d &= 1 / v_d, \qquad m_{FE} = \frac{\sum_d w_d m_d}{\sum_d w_d}, \qquad
     Q = \sum_d w_d (m_d - m_{FE})^2 \\
   \tau^2 &= \max\Big(0, \frac{Q - (k - 1)}{\sum_d w_d - \sum_d w_d^2 / \sum_d w_d}\Big) \\
   u_d &= \frac{1}{v_d + \tau^2}, \qquad \mu = \frac{\sum_d u_d m_d}{\sum_d u_d}, \qquad
     \mathrm{SE} = \Big(\sum_d u_d\Big)^{-1/2} \\
   \text{95\% CI} &: \mu \mp 1.96\, \mathrm{SE}, \qquad
     I^2 = \max\big(0, (Q - (k - 1)) / Q\big)

(computed here: `statsmodels.stats.meta_analysis.combine_effects(method_re="dl")` gives the same
where tau^2 > 0, which the tests check, but in 0.15 leaves a negative tau^2 unclipped, and with
it weights and an interval that are wrong).

tau^2 is the between-dataset variance of the true effects (how much the effect itself differs
from dataset to dataset); I^2 the share of the spread of the m_d it explains. A dataset where the
two methods are the same computation (every difference exactly 0) or whose differences do not
vary (v_d = 0: no weight can be given) is left out of the pool and named.

The minimum detectable effect of a dataset is the true mean difference that a two-sided paired
t-test at alpha = 0.05 over its n_d seeds detects with 80% power, given the observed s_d:

.. math::

   \mathrm{MDE}_d = \delta\, s_d, \qquad \delta:\ \text{the noncentral-}t\text{ solution of }
     \mathrm{power}\big(\delta \sqrt{n_d},\, n_d - 1\big) = 0.8

(`statsmodels.stats.power.TTestPower`; delta = 1.68 for 5 seeds, 3.07 for 3). An interval that
contains 0 on a dataset whose MDE is larger than the effect in question says "not resolved", not
"no effect".

    python -m mixupe_jax.experiments --suite converged --report_only   # writes pooled.md too
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA, POWER = 0.05, 0.8


def paired_differences(
  results: dict[str, Any], dataset: str, method: str, baseline: str, metric: str = "accuracy"
) -> np.ndarray:
  """method - baseline of `metric` at every seed both finished on `dataset` (results.json's
  per-seed values), in the seeds' order."""
  entries = results["results"][dataset]
  a, b = entries.get(method), entries.get(baseline)
  if not a or not b:
    return np.zeros(0)
  seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
  pick = lambda entry: [entry["per_seed"][metric][entry["seeds"].index(s)] for s in seeds]  # noqa: E731
  return np.asarray(pick(a), np.float64) - np.asarray(pick(b), np.float64)


def minimum_detectable_effect(
  std: float, seeds: int, alpha: float = ALPHA, power: float = POWER
) -> float | None:
  """The mean difference a two-sided paired t-test over `seeds` seeds detects with `power`, for
  differences of standard deviation `std` (None for fewer than 2 seeds).

  >>> from mixupe_jax.experiments import pooled
  >>> round(pooled.minimum_detectable_effect(1.0, 5), 3)
  1.682
  """
  if seeds < 2:
    return None
  from statsmodels.stats.power import TTestPower

  delta = TTestPower().solve_power(
    effect_size=None, nobs=seeds, alpha=alpha, power=power, alternative="two-sided"
  )
  return float(np.squeeze(delta)) * std  # A one-element array for some seed counts.


def random_effects(means: Sequence[float], variances: Sequence[float]) -> dict[str, Any]:
  """DerSimonian-Laird pooling of per-dataset means with their variances (see above):
  {"mean", "se", "ci95", "tau2", "i2", "q", "k"}.

  >>> from mixupe_jax.experiments import pooled
  >>> pool = pooled.random_effects([1.0, 3.0], [1.0, 1.0])  # Q = 2, tau^2 = (2 - 1) / 1 = 1
  >>> pool["mean"], pool["tau2"], round(pool["se"], 4), pool["i2"]
  (2.0, 1.0, 1.0, 0.5)
  """
  from scipy import stats

  m, v = np.asarray(means, np.float64), np.asarray(variances, np.float64)
  w = 1.0 / v
  fixed = np.sum(w * m) / np.sum(w)
  q = float(np.sum(w * (m - fixed) ** 2))
  df = len(m) - 1
  tau2 = max(0.0, (q - df) / (np.sum(w) - np.sum(w**2) / np.sum(w))) if df else 0.0
  u = 1.0 / (v + tau2)
  mean, se = float(np.sum(u * m) / np.sum(u)), float(np.sum(u) ** -0.5)
  z = stats.norm.ppf(1 - ALPHA / 2)
  return {
    "mean": mean,
    "se": se,
    "ci95": [mean - z * se, mean + z * se],
    "tau2": float(tau2),
    "i2": max(0.0, (q - df) / q) if q > 0 else 0.0,
    "q": q,
    "k": len(m),
  }


def analyze(
  results: dict[str, Any], contrasts: Sequence[tuple[str, str]], metric: str = "accuracy"
) -> dict[str, Any]:
  """Per contrast (method, baseline): each dataset's paired mean difference, its std, seeds and
  minimum detectable effect, and the random-effects pool over the datasets that can be pooled."""
  analysis: dict[str, Any] = {"metric": metric, "alpha": ALPHA, "power": POWER, "contrasts": {}}
  for method, baseline in contrasts:
    datasets: dict[str, dict[str, Any]] = {}
    identical: list[str] = []
    constant: list[str] = []
    for dataset in results["results"]:
      differences = paired_differences(results, dataset, method, baseline, metric)
      n = len(differences)
      if n == 0:
        continue
      std = float(differences.std(ddof=1)) if n > 1 else 0.0
      datasets[dataset] = {
        "n": n,
        "mean": float(differences.mean()),
        "std": std,
        "mde": minimum_detectable_effect(std, n),
      }
      if not differences.any():
        identical.append(dataset)
      elif n < 2 or std == 0:
        constant.append(dataset)
    pooled_sets = [d for d in datasets if d not in identical and d not in constant]
    pool = None
    if pooled_sets:
      pool = random_effects(
        [datasets[d]["mean"] for d in pooled_sets],
        [datasets[d]["std"] ** 2 / datasets[d]["n"] for d in pooled_sets],
      )
      pool["datasets"] = pooled_sets
    analysis["contrasts"][f"{method} - {baseline}"] = {
      "datasets": datasets,
      "identical": identical,
      "not_pooled_no_variance": constant,
      "pooled": pool,
      "positive": sum(datasets[d]["mean"] > 0 for d in pooled_sets),
    }
  return analysis


def markdown(analysis: dict[str, Any], scale: float = 100.0, unit: str = "points") -> str:
  """One table of pooled estimates, then one of each dataset's mean difference and MDE."""
  contrasts = analysis["contrasts"]
  lines = [
    f"**Pooled over datasets** (random effects, DerSimonian-Laird): test {analysis['metric']} "
    f"difference in {unit}, 95% CI; tau = the between-dataset standard deviation of the true "
    "effect; I^2 its share of the spread",
    "",
    "| contrast | pooled [95% CI] | datasets (positive) | tau | I^2 | left out |",
    "|---|---|---|---|---|---|",
  ]
  for name, entry in contrasts.items():
    pool = entry["pooled"]
    left_out = [f"{d} (identical)" for d in entry["identical"]]
    left_out += [f"{d} (no variance)" for d in entry["not_pooled_no_variance"]]
    if pool is None:
      lines.append(f"| {name} | — | 0 | — | — | {', '.join(left_out) or '—'} |")
      continue
    low, high = (bound * scale for bound in pool["ci95"])
    lines.append(
      f"| {name} | {pool['mean'] * scale:+.2f} [{low:+.2f}, {high:+.2f}] | {pool['k']} "
      f"({entry['positive']}) | {math.sqrt(pool['tau2']) * scale:.2f} | {100 * pool['i2']:.0f}% "
      f"| {', '.join(left_out) or '—'} |"
    )
  datasets = list(dict.fromkeys(d for e in contrasts.values() for d in e["datasets"]))
  lines += [
    "",
    f"**Per dataset**: mean paired difference ({unit}) and, in brackets, the minimum detectable "
    f"effect at {100 * analysis['power']:.0f}% power (two-sided paired t-test, alpha = "
    f"{analysis['alpha']}, the observed seed-to-seed spread); n = seeds",
    "",
    "| dataset | " + " | ".join(contrasts) + " |",
    "|---" * (len(contrasts) + 1) + "|",
  ]
  for dataset in datasets:
    cells = []
    for entry in contrasts.values():
      found = entry["datasets"].get(dataset)
      if found is None:
        cells.append("—")
      elif dataset in entry["identical"]:
        cells.append(f"identical (n={found['n']})")
      else:
        mde = "—" if found["mde"] is None else f"{found['mde'] * scale:.2f}"
        cells.append(f"{found['mean'] * scale:+.2f} ({mde}; n={found['n']})")
    lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def suite_contrasts(suite) -> list[tuple[str, str]]:
  """The suite's own comparisons, and every other MixupE method against Mixup."""
  contrasts = list(suite.comparisons)
  if "mixup" in suite.methods:
    for method in suite.methods:
      if method.startswith("mixupe") and (method, "mixup") not in contrasts:
        contrasts.append((method, "mixup"))
  return contrasts


def write(results: dict[str, Any], suite, results_dir: str) -> tuple[str, str]:
  """pooled.json and pooled.md in `results_dir`, each replaced whole."""
  analysis = analyze(results, suite_contrasts(suite))
  os.makedirs(results_dir, exist_ok=True)
  paths = os.path.join(results_dir, "pooled.json"), os.path.join(results_dir, "pooled.md")
  for path, text in zip(paths, (json.dumps(analysis, indent=2), markdown(analysis)), strict=True):
    with open(f"{path}.tmp", "w") as file:
      file.write(text)
    os.replace(f"{path}.tmp", path)
  return paths
