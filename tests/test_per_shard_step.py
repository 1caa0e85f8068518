"""The per-shard train step (`make_train_step(..., axis_name=...)`): each device computes the loss
of its shard, every reduction over the batch is explicit over the mesh axis, and the gradient is
all-reduced once. It trains what the global form (XLA partitioning the loss of the global batch,
the step before it) trains, on 1, 2 and 8 devices."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from mixupe_jax import aot, losses, parallel, regularizers
from mixupe_jax.models import MLP, SmallCNN, flax_apply_fn, init_model
from mixupe_jax.models.mlp import Dropout
from mixupe_jax.train import step as step_lib

NUM_CLASSES = 3
BATCH = 32
GROUP = 4
AXIS = parallel.DATA_AXIS

# Each method with options that exercise what the per-shard form must reduce: the official
# split's per-example r_i under train-mode BatchNorm with a threshold that selects some of them
# (exact), v3's logit term (fast), a subset of each group (term_fraction), the term at a hidden
# layer with its batch-mean target (manifold MixupE).
CASES = {
  "erm": ("erm", {}),
  "mixup": ("mixup", {}),
  "exact_official_split": ("mixupe", {"variant": "v1", "threshold": 0.0}),
  "fast": ("mixupe", {"variant": "v3"}),
  "term_fraction": ("mixupe", {"variant": "v1", "threshold": 0.0, "term_fraction": 0.5}),
  "manifold_mixupe": ("manifold_mixupe", {"variant": "v1", "threshold": float("inf")}),
  "regmixup": ("regmixup", {}),
}


def batch():
  x = jax.random.normal(jax.random.key(0), (BATCH, 8, 8, 1))
  return np.asarray(x), (np.arange(BATCH) % NUM_CLASSES).astype(np.int32)


RUNS = {}


def train(devices, per_shard, method, options, *, steps=3, module=None, dtype=None):
  """(state, metrics per step) after `steps` steps of SGD with momentum on `devices` devices
  (the runs of the default module are kept: several tests compare against the same run)."""
  key = (devices, per_shard, method, repr(options), steps, dtype)
  if module is None and key in RUNS:
    return RUNS[key]
  run = _train(devices, per_shard, method, options, steps=steps, module=module, dtype=dtype)
  if module is None:
    RUNS[key] = run
  return run


def _train(devices, per_shard, method, options, *, steps, module, dtype):
  x, y = batch()
  mesh = parallel.data_mesh(jax.devices()[:devices])
  axis = AXIS if per_shard else None
  module = module or SmallCNN(NUM_CLASSES, channels=(4, 8))
  params, model_state = init_model(module, jax.random.key(1), x[:1], jax.random.key(3))
  options = dict(options)
  fraction = options.pop("term_fraction", 1.0)
  mixer = losses.make_mixer("mixup", alpha=1.0, num_classes=NUM_CLASSES)
  subsample = functools.partial(regularizers.subsample_examples, fraction=fraction)
  if per_shard:
    mixer = parallel.shard_mixer(mixer, "group", AXIS, GROUP)
    subsample = parallel.shard_subsample(subsample, "group", AXIS, GROUP)
  else:
    mixer = parallel.mixer_for_scope(mixer, mesh, "group", group_size=GROUP)
    subsample = parallel.subsample_for_scope(subsample, mesh, "group", group_size=GROUP)
  regularized = method in ("mixupe", "manifold_mixupe")
  loss_fn = losses.make_loss_fn(
    method,
    apply_fn=flax_apply_fn(module.clone(axis_name=axis)),
    num_classes=NUM_CLASSES,
    x_bar=x.mean(0),
    mixer=mixer,
    term_subsample=subsample,
    manifold_layers=(0, 1, 2),
    mixupe=regularizers.MixupEOptions(eta=0.5, term_fraction=fraction, **options)
    if regularized
    else None,
    axis_name=axis,
  )
  optimizer = optax.sgd(0.1, momentum=0.9)
  train_step = step_lib.make_train_step(
    loss_fn, optimizer, optax.constant_schedule(0.1), mesh, jax.random.key(2), axis_name=axis,
    gradient_dtype=dtype)
  state = parallel.replicate(
    step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params)),
    mesh)
  history = []
  for _ in range(steps):
    state, metrics = train_step(state, *step_lib.global_batch((x, y), mesh))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def assert_same_run(run, expected, rtol=2e-5, atol=2e-6):
  (state, history), (expected_state, expected_history) = run, expected
  for name, leaf, wanted in zip(["params", "model_state"], (state.params, state.model_state),
                                (expected_state.params, expected_state.model_state)):
    for a, b in zip(jax.tree.leaves(leaf), jax.tree.leaves(wanted), strict=True):
      np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
  for metrics, wanted in zip(history, expected_history, strict=True):
    assert set(metrics) == set(wanted)
    for key in metrics:
      np.testing.assert_allclose(metrics[key], wanted[key], rtol=1e-4, atol=1e-6, err_msg=key)


# With groups of 4 in a batch of 32: one shard of 8 groups, shards of several groups (2 devices;
# 4 devices would be the same case again), and shards of one group each (8 devices).
@pytest.mark.parametrize("devices", [1, 2, 8])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.slow
def test_the_per_shard_step_trains_what_the_global_step_trains(case, devices):
  """Parameters, BatchNorm's running statistics and every metric after 3 steps equal the global
  form's on one device (float32 rounding), for every method. The official split's r_i must be
  example i's own (a shift t shared across shards sums them: the selected fraction moves), the
  penalty, the term's statistics and the rescaling factor the global batch's."""
  run = train(devices, True, *CASES[case])
  # The reference: the global form on one device, the step as it was before the per-shard form.
  assert_same_run(run, train(1, False, *CASES[case]))
  if case == "exact_official_split":  # The threshold selects some examples, not all.
    assert 0.2 < run[1][0]["active_fraction"] < 0.8


@pytest.mark.slow
def test_dropout_masks_are_the_global_batch_s_on_any_number_of_devices():
  """An MLP with dropout trains the same on 8 devices per shard as on 1 device in the global
  form: each shard's mask is its rows of the global batch's mask (`models.mlp.Dropout`), which on
  one device is flax's `nn.Dropout`'s mask, bit for bit."""
  module = MLP(NUM_CLASSES, hidden_sizes=(16,), dropout_rate=0.5)
  expected = train(1, False, "mixup", {}, module=module)
  assert_same_run(train(8, True, "mixup", {}, module=module), expected)

  def wrapped(layer):
    class Wrapped(nn.Module):
      @nn.compact
      def __call__(self, x):
        return layer(0.5, deterministic=False)(x)
    return Wrapped()

  x = np.ones((BATCH, 7), np.float32)
  rngs = {"dropout": jax.random.key(5)}
  ours = wrapped(Dropout).apply({}, x, rngs=rngs)
  np.testing.assert_array_equal(ours, wrapped(nn.Dropout).apply({}, x, rngs=rngs))
  assert 0.3 < np.mean(ours == 0) < 0.7


def test_the_gradient_is_summed_once_in_the_named_dtype():
  """`sum_over_devices`: the sum of every device's gradient, in float32 exactly (as numpy adds
  them), in bfloat16 each device's part rounded to bfloat16 first; the result keeps the leaves'
  dtype. An unknown dtype is an error naming it."""
  mesh = parallel.data_mesh(jax.devices()[:8])
  parts = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)

  def summed(dtype):
    function = jax.shard_map(
      lambda g: step_lib.sum_over_devices({"w": g[0]}, AXIS, dtype)["w"], mesh=mesh,
      in_specs=PartitionSpec(AXIS), out_specs=PartitionSpec())
    return np.asarray(jax.jit(function)(parts))

  np.testing.assert_allclose(summed(None), parts.sum(0), rtol=1e-6)
  np.testing.assert_allclose(summed("float32"), parts.sum(0), rtol=1e-6)
  rounded = np.asarray(jnp.asarray(parts, jnp.bfloat16).astype(np.float32))
  bf16 = summed("bfloat16")
  assert bf16.dtype == np.float32
  # bfloat16 sums of bfloat16 parts: within bfloat16's rounding of the exact sum of the parts.
  np.testing.assert_allclose(bf16, rounded.sum(0), rtol=2**-7, atol=2**-7)
  assert not np.allclose(bf16, parts.sum(0), rtol=1e-6, atol=0)
  with pytest.raises(ValueError, match="float16"):
    summed("float16")


def test_the_bfloat16_all_reduce_trains_close_to_the_float32_one():
  """With the gradient summed in bfloat16 the run stays within bfloat16's rounding of the float32
  run after 3 steps (and is not identical to it: the option does act)."""
  expected = train(8, True, *CASES["mixup"])
  run = train(8, True, "mixup", {}, dtype="bfloat16")
  leaves = zip(jax.tree.leaves(run[0].params), jax.tree.leaves(expected[0].params), strict=True)
  differences = [np.max(np.abs(a - b)) for a, b in leaves]
  assert 0 < max(differences) < 2e-2


def all_reduce_bytes(per_shard, method, options):
  """(all-reduced bytes, gather-like bytes, float32 gradient bytes) of the CNN's step, 8 devices,
  as XLA:CPU compiles it."""
  x, y = batch()
  mesh = parallel.data_mesh(jax.devices()[:8])
  axis = AXIS if per_shard else None
  module = SmallCNN(NUM_CLASSES, channels=(4, 8), axis_name=axis)
  params, model_state = init_model(SmallCNN(NUM_CLASSES, channels=(4, 8)), jax.random.key(1),
                                   x[:1])
  mixer = losses.make_mixer("mixup", alpha=1.0, num_classes=NUM_CLASSES)
  mixer = (parallel.shard_mixer(mixer, "group", AXIS, GROUP) if per_shard
           else parallel.mixer_for_scope(mixer, mesh, "group", group_size=GROUP))
  loss_fn = losses.make_loss_fn(method, apply_fn=flax_apply_fn(module), num_classes=NUM_CLASSES,
                                x_bar=x.mean(0), mixer=mixer, axis_name=axis, **options)
  optimizer = optax.sgd(0.1)
  train_step = step_lib.make_train_step(loss_fn, optimizer, optax.constant_schedule(0.1), mesh,
                                        jax.random.key(2), axis_name=axis)
  state = parallel.replicate(
    step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params)),
    mesh)
  compiled = train_step.lower(state, *step_lib.global_batch((x, y), mesh)).compile()
  collectives = aot.summarize_collectives(aot.collectives_of(compiled.as_text()))
  gathers = sum(collectives[k]["bytes"] for k in ("all-gather", "all-to-all", "reduce-scatter"))
  gradient = sum(4 * leaf.size for leaf in jax.tree.leaves(params))
  return collectives["all-reduce"]["bytes"], gathers, gradient


@pytest.mark.parametrize("method,options", [
  ("mixup", {}),
  ("mixupe", {"eta": 0.5, "variant": "v1", "threshold": 0.0}),
  ("mixupe", {"eta": 0.5, "variant": "v3"}),
  ("regmixup", {}),
])
@pytest.mark.slow
def test_every_method_all_reduces_the_gradient_once(method, options):
  """On 8 devices (XLA:CPU) the per-shard step all-reduces the gradient's bytes once, plus
  BatchNorm's statistics and the scalar metrics (under 1 KB here), and gathers nothing; the
  global form of MixupE all-reduces each pass's gradient separately (twice the gradient or
  more), which is what the per-shard form removes."""
  reduced, gathered, gradient = all_reduce_bytes(True, method, options)
  assert gathered == 0
  batch_norm = 2 * 4 * (4 + 8) * 2  # Mean and mean of squares, float32, both layers, both passes.
  assert gradient <= reduced <= gradient + batch_norm + 1024
  if method == "mixupe":
    assert all_reduce_bytes(False, method, options)[0] >= 2 * gradient


def test_a_per_shard_loss_needs_a_pairing_within_the_shard():
  """The per-shard mixer pairs within a device or a group: "global" and "auto" are clear errors,
  and "group" needs its size."""
  mixer = losses.make_mixer("mixup", alpha=1.0, num_classes=NUM_CLASSES)
  for scope in ("global", "auto"):
    with pytest.raises(ValueError, match="per-shard mixer pairs within a device or a group"):
      parallel.shard_mixer(mixer, scope)
  with pytest.raises(ValueError, match="needs mixing_group_size"):
    parallel.shard_subsample(regularizers.subsample_examples, "group")


def test_the_training_system_steps_per_shard_exactly_where_the_batch_is_split():
  """`parallel.step_axis`: the data axis on several devices for the device and group scopes
  (and "auto", which is "device" there), the global form on one device and for "global"."""
  one, eight = (parallel.data_mesh(jax.devices()[:n]) for n in (1, 8))
  assert [parallel.step_axis(eight, s) for s in ("group", "device", "auto", "global")] == [
    AXIS, AXIS, AXIS, None]
  assert [parallel.step_axis(one, s) for s in ("group", "device", "global")] == [None] * 3


@pytest.mark.slow
def test_a_per_shard_loss_mixes_and_subsamples_each_shard_by_default():
  """`make_loss_fn(axis_name=...)` without a mixer or subset pairs and subsamples within each
  device with the device's index folded into the key (the "device" scope), not the same draw on
  every shard: its loss equals the explicit per-device mixer's, and differs from the loss whose
  mixer ignores the shard."""
  x, y = batch()
  mesh = parallel.data_mesh(jax.devices()[:8])
  module = SmallCNN(NUM_CLASSES, channels=(4, 8), axis_name=AXIS)
  params, model_state = init_model(SmallCNN(NUM_CLASSES, channels=(4, 8)), jax.random.key(1),
                                   x[:1])
  plain = losses.make_mixer("mixup", alpha=1.0, num_classes=NUM_CLASSES)
  options = regularizers.MixupEOptions(eta=0.5, threshold=0.0, term_fraction=0.5)

  def loss_of(**mixing):
    loss_fn = losses.make_loss_fn("mixupe", apply_fn=flax_apply_fn(module),
                                  num_classes=NUM_CLASSES, x_bar=x.mean(0), mixupe=options,
                                  axis_name=AXIS, **mixing)
    gradients = step_lib.per_shard_gradients(loss_fn, mesh, AXIS)
    (loss, _), _ = jax.jit(gradients)(params, model_state,
                                      *step_lib.global_batch((x, y), mesh), jax.random.key(4))
    return float(loss)

  subsample = functools.partial(regularizers.subsample_examples, fraction=0.5)
  per_device = loss_of(mixer=parallel.shard_mixer(plain, "device", AXIS),
                       term_subsample=parallel.shard_subsample(subsample, "device", AXIS))
  assert loss_of() == per_device
  assert loss_of(mixer=plain, term_subsample=subsample) != per_device
