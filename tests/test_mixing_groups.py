"""Mixing groups (`mixing_scope = "group"`): the same run on 1, 2, 4 and 8 devices, and no gather.

The probe model of these tests records the mixed batch it sees (as in test_training_randomness):
the batch is the identity, x_i = e_i, so a mixed row lambda e_i + (1 - lambda) e_j(i) shows
lambda and the partner j(i) directly.
"""

import ast
import functools
import os
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixupe_jax import losses, parallel, regularizers
from mixupe_jax.experiments import runner
from mixupe_jax.models import SmallCNN, flax_apply_fn, init_model
from mixupe_jax.train import optim, validation
from mixupe_jax.train import step as step_lib
from mixupe_jax.train.defaults import default_config

NUM_CLASSES = 4
BATCH = 32
GROUP = 4


class Probe:
  """Linear logits of the flattened input; records every input it is applied to."""

  couples_examples = False

  def __init__(self):
    self.calls: list[np.ndarray] = []

  def __call__(self, params, model_state, inputs, hidden_layer=None, hidden_transform=None):
    x = inputs.reshape(inputs.shape[0], -1)
    jax.debug.callback(lambda value: self.calls.append(np.asarray(value)), x)
    return x @ params["w"], model_state


def scoped_loss_fn(apply_fn, mesh, scope, method="mixup", group_size=GROUP, term_fraction=1.0,
                   **options):
  mixer = parallel.mixer_for_scope(
      losses.make_mixer("mixup", alpha=1.0, num_classes=NUM_CLASSES), mesh, scope,
      group_size=group_size)
  subsample = parallel.subsample_for_scope(
      functools.partial(regularizers.subsample_examples, fraction=term_fraction), mesh, scope,
      group_size=group_size)
  return losses.make_loss_fn(method, apply_fn=apply_fn, num_classes=NUM_CLASSES, mixer=mixer,
                             term_subsample=subsample, term_fraction=term_fraction, **options)


def probe_records(devices, *, steps=3, **options):
  """Per step, the inputs the probe saw (the mixed batch first), on `devices` devices."""
  probe = Probe()
  mesh = parallel.data_mesh(jax.devices()[:devices])
  loss_fn = scoped_loss_fn(probe, mesh, "group", **options)
  optimizer, schedule = optax.sgd(0.0), optax.constant_schedule(0.0)
  params = {"w": jnp.zeros((BATCH, NUM_CLASSES))}
  state = parallel.replicate(step_lib.TrainState(jnp.zeros((), jnp.int32), params, {},
                                                 optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(0))
  batch = (np.eye(BATCH, dtype=np.float32), (np.arange(BATCH) % NUM_CLASSES).astype(np.int32))
  records = []
  for _ in range(steps):
    before = len(probe.calls)
    state, _ = train_step(state, *step_lib.global_batch(batch, mesh))
    jax.effects_barrier()
    records.append(probe.calls[before:])
  return records


def test_groups_pair_within_groups_with_one_lambda_and_fresh_pairs_every_step():
  """Every partner lies in its example's group of 4, the batch has one lambda, and the pairing
  changes from step to step and between groups."""
  records = probe_records(1, steps=4)
  pairings = []
  for calls in records:
    mixed = calls[0]
    others = mixed - np.diag(np.diag(mixed))
    moved = others.max(axis=1) > 0  # Rows with j(i) = i are e_i, whatever lambda is.
    partner = np.where(moved, others.argmax(axis=1), np.arange(BATCH))
    np.testing.assert_array_equal((partner // GROUP)[moved], (np.arange(BATCH) // GROUP)[moved])
    own = mixed[np.arange(BATCH), np.arange(BATCH)]
    np.testing.assert_allclose(own[moved], own[moved][0], rtol=1e-6)
    local = np.where(moved, partner % GROUP, np.arange(BATCH) % GROUP).reshape(-1, GROUP)
    assert len({tuple(row) for row in local}) > 1  # Groups draw their own pairings.
    pairings.append(tuple(local.ravel()))
  assert len(set(pairings)) == len(pairings)


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_groups_draw_the_same_mixed_batch_and_term_subset_on_any_device_count(devices):
  """With groups of 4, 1, 2, 4 and 8 devices (8 to 1 groups per device) see the same mixed batch
  and the same clean rows of the MixupE term (term_fraction 0.5: 2 of each group), every step.
  Fails if a group's draw depends on the device (for example `mix_per_group` passing the local
  group index instead of the global one)."""
  options = dict(method="mixupe", eta=0.1, variant="v1", threshold=float("inf"),
                 term_fraction=0.5, x_bar=np.zeros(BATCH, np.float32))
  def by_rows(calls):  # XLA may run the clean and the mixed pass in either order.
    return sorted(calls, key=len)

  reference = [by_rows(calls) for calls in probe_records(1, **options)]
  for step, calls in enumerate(probe_records(devices, **options)):
    assert [len(c) for c in by_rows(calls)] == [len(c) for c in reference[step]] == [16, 32]
    for seen, expected in zip(by_rows(calls), reference[step]):
      np.testing.assert_allclose(seen, expected, rtol=1e-6)
  clean_rows = np.argmax(reference[0][0], axis=1)
  np.testing.assert_array_equal(np.bincount(clean_rows // GROUP, minlength=BATCH // GROUP),
                                np.full(BATCH // GROUP, 2))


def trained_params(devices, method, steps=3, **options):
  """A BatchNorm CNN after `steps` SGD steps with groups of 4 on `devices` devices."""
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
  labels = (np.arange(32) % NUM_CLASSES).astype(np.int32)
  module = SmallCNN(NUM_CLASSES, channels=(4, 8))
  params, model_state = init_model(module, jax.random.key(1), inputs[:1])
  mesh = parallel.data_mesh(jax.devices()[:devices])
  loss_fn = scoped_loss_fn(flax_apply_fn(module), mesh, "group", method=method,
                           x_bar=inputs.mean(0), **options)
  schedule = optax.constant_schedule(0.05)
  optimizer = optim.make_optimizer(default_config(), schedule)
  state = parallel.replicate(step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state,
                                                 optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(2))
  for step in range(steps):
    batch = (np.roll(inputs, step, axis=0), np.roll(labels, step))
    state, metrics = train_step(state, *step_lib.global_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"]))
  return jax.tree.map(np.asarray, state.params)


@pytest.mark.parametrize("method, options", [
    ("mixup", {}),
    ("mixupe", dict(eta=1.0, variant="v1", threshold=0.0)),  # Official split, thresholded.
    ("mixupe", dict(eta=0.1, variant="v3")),
    ("regmixup", dict(eta=1.0)),
])
@pytest.mark.slow
def test_groups_train_the_same_parameters_on_1_2_4_and_8_devices(method, options):
  """Under train-mode BatchNorm (statistics over the global batch) the parameters after 3 steps
  agree on 1, 2, 4 and 8 devices to float32 tolerance; the device scope, whose pairs depend on
  the device count, does not (the check has teeth)."""
  reference = trained_params(1, method, **options)
  for devices in (2, 4, 8):
    for leaf, expected in zip(jax.tree.leaves(trained_params(devices, method, **options)),
                              jax.tree.leaves(reference)):
      np.testing.assert_allclose(leaf, expected, rtol=2e-4, atol=2e-6)


def test_the_device_scope_does_not_give_the_same_parameters_where_groups_do():
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
  labels = (np.arange(16) % NUM_CLASSES).astype(np.int32)
  module = SmallCNN(NUM_CLASSES, channels=(4, 8))
  params, model_state = init_model(module, jax.random.key(1), inputs[:1])
  results = []
  for devices in (1, 8):
    mesh = parallel.data_mesh(jax.devices()[:devices])
    loss_fn = scoped_loss_fn(flax_apply_fn(module), mesh, "device", method="mixup")
    value, _ = jax.jit(loss_fn)(params, model_state, inputs, labels, jax.random.key(3))
    results.append(float(value))
  assert abs(results[0] - results[1]) > 1e-4


def gathered_shapes(text):
  return re.findall(r"= (\S+) (?:all-gather|all-to-all)(?:-start)?\(", text)


def compiled_step_text(scope):
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
  labels = (np.arange(32) % NUM_CLASSES).astype(np.int32)
  module = SmallCNN(NUM_CLASSES, channels=(4, 8))
  params, model_state = init_model(module, jax.random.key(1), inputs[:1])
  mesh = parallel.data_mesh()
  loss_fn = scoped_loss_fn(flax_apply_fn(module), mesh, scope, method="mixupe", eta=1.0,
                           variant="v1", term_fraction=0.5, x_bar=inputs.mean(0))
  schedule = optax.constant_schedule(0.05)
  optimizer = optim.make_optimizer(default_config(), schedule)
  state = parallel.replicate(step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state,
                                                 optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(2))
  batch = step_lib.global_batch((inputs, labels), mesh)
  return train_step.lower(state, *batch).compile().as_text()


@pytest.mark.slow
def test_the_group_scope_step_gathers_neither_inputs_nor_labels():
  """On 8 devices (4 examples each, one group of 4 per device) the compiled MixupE step with a
  term subset has no all-gather or all-to-all of a batch-sized array; the global scope's has."""
  batch_shapes = ("f32[32,8,8,1]", "f32[32,4]", "s32[32]", "f32[32]", "f32[16,8,8,1]")
  grouped = gathered_shapes(compiled_step_text("group"))
  assert not [shape for shape in grouped if shape.startswith(batch_shapes)], grouped
  global_ = gathered_shapes(compiled_step_text("global"))
  assert any(shape.startswith("f32[32,8,8,1]") for shape in global_), global_


def test_a_per_device_batch_that_is_not_a_multiple_of_the_group_size_is_a_clear_error():
  mesh = parallel.data_mesh()
  with pytest.raises(ValueError, match=r"per-device batch 4 \(batch size 32 over 8 devices\) is "
                                       r"not a multiple of mixing_group_size 8"):
    parallel.check_group_size(32, mesh, 8)
  parallel.check_group_size(32, mesh, 4)
  config = default_config()
  config.mixing_scope, config.mixing_group_size = "group", 0
  with pytest.raises(validation.ConfigError, match=r"config.mixing_group_size = 0"):
    validation.validate(config)
  config.mixing_scope, config.mixing_group_size = "groups", 4
  with pytest.raises(validation.ConfigError, match=r"config.mixing_scope = 'groups'"):
    validation.validate(config)


CONFIGS_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.mark.parametrize("config_file", sorted(
    name for name in os.listdir(CONFIGS_DIR) if name.endswith(".py")))
def test_each_shipped_config_says_on_which_device_counts_its_run_is_the_same(config_file):
  """The default scope is "group", and each config's docstring names exactly the power-of-two
  device counts whose per-device batch holds whole groups (the others are an error)."""
  with open(os.path.join(CONFIGS_DIR, config_file)) as file:
    docstring = " ".join(ast.get_docstring(ast.parse(file.read())).split())
  config = runner.load_config_file(CONFIGS_DIR, config_file + (
      ":iris" if config_file == "uci_mlp.py" else ""))
  assert config.mixing_scope == "group"
  if config.dataset.startswith("planetoid:"):  # Full batch: one device, every scope global.
    assert "Full-batch: one device" in docstring
    return
  group = re.search(r"Mixing groups of (\d+) examples", docstring)
  assert group and int(group.group(1)) == config.mixing_group_size
  claim = re.search(r"the same run on ([\d, or]+) devices?", docstring)
  assert claim, f"{config_file} does not say on which device counts its run is the same"
  claimed = [int(count) for count in re.findall(r"\d+", claim.group(1))]
  covered = []
  for devices in (2 ** power for power in range(11)):
    try:
      parallel.check_group_size(config.batch_size, types.SimpleNamespace(size=devices),
                                config.mixing_group_size)
      covered.append(devices)
    except ValueError:
      pass
  assert claimed == covered
