"""The cheaper and leaner MixupE term: on a random fraction rho of the clean batch
(`term_fraction`), and with the clean pass rematerialized (`clean_pass_remat`)."""

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mixupe_jax import losses, mixing, parallel, regularizers
from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.models import MLP, flax_apply_fn, init_model
from mixupe_jax.models.apply import REMAT_POLICIES, couples_examples, rematerialized
from mixupe_jax.train import train_and_evaluate
from mixupe_jax.train.validation import ConfigError, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def per_example_problem():
  """A tanh MLP (example i's logits depend on x_i alone) on 6 examples, with a mixed batch."""
  key = jax.random.key(0)
  inputs = jax.random.normal(key, (6, 5))
  labels = jnp.array([0, 1, 2, 0, 1, 2])
  module = MLP(NUM_CLASSES, hidden_sizes=(8,), activation="tanh")
  params, state = init_model(module, key, inputs)
  mixed = mixing.mixup(jax.random.key(1), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  return inputs, labels, jnp.mean(inputs, 0) + 0.3, flax_apply_fn(module), params, state, mixed


def _penalty_and_gradient(problem, rows, **options):
  """P and dL/dparams (rescale off, so L = L_mix + eta m_1 P) with the term on `rows`."""
  inputs, labels, x_bar, apply_fn, params, state, mixed = problem
  rows = np.asarray(rows)

  def loss(p):
    return losses.mixupe_loss_fn(p, state, mixed, inputs[rows], labels[rows], x_bar,
                                 apply_fn=apply_fn, alpha=1.0, eta=1.0, rescale=False,
                                 num_classes=NUM_CLASSES, **options)

  (_, aux), gradient = jax.value_and_grad(loss, has_aux=True)(params)
  return float(aux.metrics["penalty"]), gradient


# tau = 0.0 puts the threshold inside the spread of r_i here (some examples enter, some not).
VERSIONS = [dict(variant="v1", threshold=0.0), dict(variant="v2"), dict(variant="v3")]


@pytest.mark.parametrize("options", VERSIONS, ids=lambda o: o["variant"])
@pytest.mark.slow
def test_the_subset_estimate_averages_to_the_full_term_over_every_subset(per_example_problem,
                                                                          options):
  """E_S[(1/k) sum_{i in S} w_i s_i] = (1/B) sum_i w_i s_i for S uniform of size k: enumerated
  exactly over all C(6, 3) = 20 subsets, the value and its parameter gradient."""
  full_penalty, full_gradient = _penalty_and_gradient(per_example_problem, range(6), **options)
  subsets = list(itertools.combinations(range(6), 3))
  results = [_penalty_and_gradient(per_example_problem, s, **options) for s in subsets]
  penalties = [p for p, _ in results]
  assert len(set(np.round(penalties, 6))) > 1  # The subsets really differ.
  np.testing.assert_allclose(np.mean(penalties), full_penalty, rtol=1e-5, atol=1e-7)
  mean_gradient = jax.tree.map(lambda *g: np.mean(g, axis=0), *[g for _, g in results])
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               mean_gradient, full_gradient)


def test_the_drawn_subset_is_uniform_and_its_loss_averages_to_the_full_term(per_example_problem):
  """Through make_loss_fn with rho = 1/2: k = 3 distinct rows with their labels; each example
  drawn with probability 1/2; the mean penalty over many keys is the full one within 4 standard
  errors."""
  inputs, labels, x_bar, apply_fn, params, state, _ = per_example_problem
  chosen_inputs, chosen_labels = regularizers.subsample_examples(
      jax.random.key(3), inputs, labels, fraction=0.5)
  rows = [int(np.flatnonzero((np.asarray(inputs) == np.asarray(x)).all(1))[0])
          for x in chosen_inputs]
  assert len(set(rows)) == 3 and list(np.asarray(labels)[rows]) == list(chosen_labels)
  keys = jax.random.split(jax.random.key(4), 4000)
  draws = jax.vmap(lambda k: jax.random.permutation(k, 6)[:3])(keys)
  counts = np.bincount(np.asarray(draws).ravel(), minlength=6) / len(keys)
  np.testing.assert_allclose(counts, 0.5, atol=4 * np.sqrt(0.25 / len(keys)))

  options = dict(alpha=1.0, eta=1.0, variant="v1", threshold=0.0, rescale=False, x_bar=x_bar)
  full = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES, **options)
  half = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES,
                             term_fraction=0.5, **options)
  penalty = lambda fn: jax.jit(jax.vmap(
      lambda k: fn(params, state, inputs, labels, k)[1].metrics["penalty"]))
  keys = jax.random.split(jax.random.key(5), 400)
  full_penalties, half_penalties = np.asarray(penalty(full)(keys)), np.asarray(penalty(half)(keys))
  # Only the subset is random in the penalty: rho = 1 gives one value whatever the key.
  np.testing.assert_allclose(full_penalties, full_penalties[0], rtol=1e-6)
  error = half_penalties.std() / np.sqrt(len(keys))
  assert abs(half_penalties.mean() - full_penalties[0]) < 4 * error
  # The mixing (hence L_mix) is that of rho = 1 for the same key.
  mix_loss = lambda fn: fn(params, state, inputs, labels, keys[0])[1].metrics["mixup_loss"]
  assert float(mix_loss(full)) == float(mix_loss(half))


def test_the_subset_is_drawn_with_the_documented_key_and_only_below_one(per_example_problem):
  """term_subsample gets fold_in(key, 2), as documented, for rho < 1, and is never called at
  rho = 1 (the term is then on the batch itself, in its order)."""
  inputs, labels, x_bar, apply_fn, params, state, _ = per_example_problem
  calls = []

  def spy(key, x, y):
    calls.append(jax.random.key_data(key))
    return x[:3], y[:3]

  key = jax.random.key(5)
  for fraction in (1.0, 0.5):
    loss_fn = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES, eta=1.0,
                                  x_bar=x_bar, term_fraction=fraction, term_subsample=spy)
    loss_fn(params, state, inputs, labels, key)
    assert len(calls) == (0 if fraction == 1.0 else 1), fraction
  np.testing.assert_array_equal(calls[0], jax.random.key_data(jax.random.fold_in(key, 2)))


def test_the_subset_size_and_bad_fractions():
  assert [regularizers.subsample_size(32, rho) for rho in (0.25, 0.01, 1.0)] == [8, 1, 32]
  for bad in (0.0, -0.5, 1.5, float("nan")):
    with pytest.raises(ValueError, match=f"term_fraction must be in \\(0, 1\\], got {bad}"):
      regularizers.subsample_size(8, bad)
  apply_fn = lambda p, s, x: (x, s)
  with pytest.raises(ValueError, match="term_fraction=0.5 applies to method 'mixupe' only"):
    losses.make_loss_fn("manifold_mixupe", apply_fn=apply_fn, num_classes=2, eta=1.0,
                        term_fraction=0.5)


def test_per_device_subsets_stay_on_their_devices():
  """On 8 devices, rho = 1/4 of a batch of 32: each device keeps one of its own 4 rows, the
  result stays sharded, and the compiled program moves no rows between devices."""
  mesh = parallel.data_mesh()
  assert mesh.size == 8
  subsample = parallel.subsample_per_shard(
      functools.partial(regularizers.subsample_examples, fraction=0.25), mesh)
  inputs = parallel.shard_batch(jnp.arange(32.0)[:, None], mesh)
  labels = parallel.shard_batch(jnp.arange(32), mesh)
  step = jax.jit(subsample)
  chosen, chosen_labels = step(jax.random.key(0), inputs, labels)
  rows = np.asarray(chosen_labels)
  assert rows.shape == (8,) and np.array_equal(rows // 4, np.arange(8))
  np.testing.assert_array_equal(np.asarray(chosen)[:, 0], rows)
  assert chosen.sharding.spec == PartitionSpec(parallel.DATA_AXIS)
  text = step.lower(jax.random.key(0), inputs, labels).compile().as_text()
  assert "all-gather" not in text and "all-to-all" not in text
  # The shard index is folded into the key: the 8 devices do not all keep the same offset.
  offsets = {tuple(np.asarray(step(jax.random.key(k), inputs, labels)[1]) % 4) for k in range(4)}
  assert any(len(set(o)) > 1 for o in offsets)


@pytest.fixture(scope="module")
def batch_norm_problem():
  """The train-mode BatchNorm MLP (batch-coupled: the official split takes its own path) on 8
  examples, with a mixed batch."""
  from conftest import make_model
  key = jax.random.key(0)
  inputs = jax.random.normal(key, (8, 5))
  labels = jnp.arange(8) % NUM_CLASSES
  module, params, state = make_model("mlp_bn", key, inputs, NUM_CLASSES)
  mixed = mixing.mixup(jax.random.key(1), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  return inputs, labels, flax_apply_fn(module), params, state, mixed


@pytest.mark.parametrize("split", ["official", "joint"])
@pytest.mark.slow
def test_a_rematerialized_clean_pass_has_the_same_loss_and_gradient(split, batch_norm_problem):
  """On the BatchNorm MLP, v1 with a threshold that selects about half the batch."""
  inputs, labels, apply_fn, params, state, mixed = batch_norm_problem

  def loss(p, remat):
    return losses.mixupe_loss_fn(p, state, mixed, inputs, labels, jnp.mean(inputs, 0),
                                 apply_fn=apply_fn, alpha=1.0, eta=1.0, variant="v1",
                                 threshold=0.0, term_split=split, num_classes=NUM_CLASSES,
                                 clean_pass_remat=remat)

  plain = jax.value_and_grad(lambda p: loss(p, None), has_aux=True)(params)
  assert 0 < float(plain[0][1].metrics["active_fraction"]) < 1
  for policy in ("dots_saveable", "nothing_saveable"):
    remat = jax.value_and_grad(lambda p: loss(p, policy), has_aux=True)(params)
    np.testing.assert_allclose(remat[0][0], plain[0][0], rtol=1e-6)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7),
                 (remat[1], remat[0][1].model_state), (plain[1], plain[0][1].model_state))
  # The option is really applied: the gradient's program holds a rematerialized call.
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: loss(p, "dots_saveable")[0]))(params)
  assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)
  assert "checkpoint" not in str(jax.make_jaxpr(jax.grad(lambda p: loss(p, None)[0]))(params))


def test_manifold_mixupe_rematerializes_its_clean_pass_too(batch_norm_problem):
  """The option reaches the hidden-layer loss: the gradient's program holds a rematerialized call
  with it and none without, and the loss is the same."""
  inputs, labels, apply_fn, params, state, mixed = batch_norm_problem

  def loss(p, remat):
    return losses.manifold_mixupe_loss_fn(p, state, mixed, inputs, labels,
                                          apply_fn=apply_fn, layer=1, alpha=1.0,
                                          eta=1.0, threshold=0.0, num_classes=NUM_CLASSES,
                                          clean_pass_remat=remat)[0]

  np.testing.assert_allclose(loss(params, "dots_saveable"), loss(params, None), rtol=1e-6)
  program = lambda remat: str(jax.make_jaxpr(jax.grad(lambda p: loss(p, remat)))(params))
  assert "checkpoint" in program("dots_saveable") or "remat" in program("dots_saveable")
  assert "checkpoint" not in program(None) and "remat" not in program(None)


def test_rematerialized_keeps_the_coupling_declaration_and_rejects_unknown_policies():
  apply_fn = lambda p, s, x: (x, s)
  apply_fn.couples_examples = False
  assert rematerialized(apply_fn, "dots_saveable").couples_examples is False
  with pytest.raises(ValueError, match="Unknown rematerialization policy 'dots'; valid names are "
                                       + ", ".join(REMAT_POLICIES)):
    losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=2, eta=1.0,
                        clean_pass_remat="dots")


def _digits_config(**fields):
  config = load_config_file(os.path.join(ROOT, "configs"), "digits_mlp.py")
  config.num_train_steps, config.progress_bar = 30, False
  for name, value in fields.items():
    config[name] = value
  return config


def test_the_config_fields_are_validated():
  for fields, message in [
      (dict(term_fraction=0.0), r"config.term_fraction = 0.0: expected a number in \(0, 1\]"),
      (dict(term_fraction=0.5, method="manifold_mixupe"),
       "config.term_fraction = 0.5: a subset of the clean batch applies to method 'mixupe' only"),
      (dict(clean_pass_remat="everything"),
       "config.clean_pass_remat = 'everything': valid values are dots_saveable")]:
    with pytest.raises(ConfigError, match=message):
      validate(_digits_config(**fields))


@pytest.mark.slow
def test_train_py_runs_with_both_options(tmp_path):
  """The loop passes both options to the loss (digits MLP, 30 steps): seeded, so the same
  config gives the same result, and the subset changes the run."""
  config = _digits_config(term_fraction=0.25, clean_pass_remat="dots_saveable", threshold=0.0)
  first = train_and_evaluate(config, str(tmp_path / "a"))
  assert first == train_and_evaluate(config, str(tmp_path / "b"))
  whole = train_and_evaluate(_digits_config(clean_pass_remat="dots_saveable", threshold=0.0),
                             str(tmp_path / "c"))
  assert whole["test"] != first["test"]


def test_rematerialized_applies_the_policy_asked_for_and_keeps_an_undeclared_function_coupled():
  """The program holds one rematerialized call, whose policy is the one named, or the one given
  as a policy itself; a function without a coupling declaration stays declared coupled (the
  always-correct default). Mutants that fail it (checked by hand): the policy dropped or None
  (the call then saves nothing), a policy object not taken as one, the undeclared default None,
  False or missing."""
  model = MLP(num_classes=NUM_CLASSES, hidden_sizes=(8,))
  inputs = jnp.ones((2, 4))
  params, state = init_model(model, jax.random.key(0), inputs)
  policies = jax.checkpoint_policies
  for policy, expected in (("dots_saveable", policies.dots_saveable),
                           ("everything_saveable", policies.everything_saveable),
                           (policies.nothing_saveable, policies.nothing_saveable)):
    remat = rematerialized(flax_apply_fn(model), policy)
    program = jax.make_jaxpr(lambda p, remat=remat: remat(p, state, inputs)[0])(params)
    used = [eqn.params["policy"] for eqn in program.eqns if "policy" in eqn.params]
    assert len(used) == 1 and used[0] is expected, (policy, used)
  undeclared = rematerialized(lambda p, s, x: (x, s), "dots_saveable")
  assert couples_examples(undeclared, {}) is True
