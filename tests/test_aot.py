"""Compile-only accelerator checks: the MixupE-exact train step of a small BatchNorm CNN, compiled
by the TPU compiler (libtpu) and by XLA:GPU (JAX's CUDA plugin) for 8 chips they have never seen,
all-reduces the gradient once and gathers nothing; and `mixupe_jax.aot`'s reading of a compiled
program (collectives by dtype, targets, the GPU description).

The compilers come with `pip install -e ".[aot]"` (CI installs it). Where one is missing the test
says which and skips; JAX must start with JAX_PLATFORMS=cpu for the CUDA plugin to register
without a GPU (conftest.py sets it).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mixupe_jax import aot, losses, parallel, regularizers
from mixupe_jax.models import SmallCNN, flax_apply_fn, init_model
from mixupe_jax.train import step as step_lib

# libtpu admits one process at a time: this module is the suite's only TPU compilation, so the
# pytest-xdist workers never contend for it (a process outside the suite holding it skips it).
NUM_CLASSES = 10
AXIS = parallel.DATA_AXIS


def compiled_mixupe_exact_step(target: str, per_chip: int = 8):
  """The per-shard MixupE-exact (official split, tau = -1) step of a bfloat16 BatchNorm CNN on
  16x16x3 images with mixing groups of 8, compiled for `target`; (report, float32 gradient
  bytes, BatchNorm channels)."""
  try:
    mesh = aot.data_mesh(target, AXIS)
  except aot.ToolchainMissing as error:
    pytest.skip(str(error))
  module = SmallCNN(NUM_CLASSES, channels=(16, 32), dtype=jnp.bfloat16)
  sample = jnp.zeros((1, 16, 16, 3))
  params, model_state = jax.eval_shape(
    functools.partial(init_model, module), jax.random.key(0), sample)
  mixer = parallel.shard_mixer(
    losses.make_mixer("mixup", alpha=1.0, num_classes=NUM_CLASSES), "group", AXIS, 8)
  loss_fn = losses.make_loss_fn(
    "mixupe", apply_fn=flax_apply_fn(module.clone(axis_name=AXIS)), num_classes=NUM_CLASSES,
    x_bar=jnp.zeros((16, 16, 3)), mixer=mixer, axis_name=AXIS,
    mixupe=regularizers.MixupEOptions(eta=0.1, variant="v1", threshold=-1.0))
  optimizer = optax.sgd(0.1, momentum=0.9)
  step = step_lib.make_train_step(loss_fn, optimizer, optax.constant_schedule(0.1), mesh,
                                  jax.random.key(1), axis_name=AXIS)
  replicated, batch = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
  state = step_lib.TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, model_state,
                              jax.eval_shape(optimizer.init, params))
  state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                       state)
  size = per_chip * mesh.size
  images = jax.ShapeDtypeStruct((size, 16, 16, 3), jnp.float32, sharding=batch)
  labels = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=batch)
  report = aot.report(step.lower(state, images, labels).compile())
  gradient = sum(4 * np.prod(a.shape) for a in jax.tree.leaves(params))
  channels = sum(np.prod(a.shape) for a in jax.tree.leaves(model_state)) // 2
  return report, gradient, channels


@pytest.mark.parametrize("target", ["tpu:v4:2x2x2", "cuda:h100:1x1x8"])
@pytest.mark.slow
def test_the_accelerator_compilers_all_reduce_the_gradient_once(target):
  """On 8 TPU v4 chips and on 8 H100s the step all-reduces the float32 gradient's bytes once:
  what it all-reduces beyond them is BatchNorm's statistics (mean and mean of squares per
  channel for the mixed and the clean pass, with their tangents and cotangents: at most 16
  floats a channel) and scalar metrics, far below a second copy of the gradient, which the
  global form moves for MixupE. The TPU compiler combines the gradient into one op; XLA:GPU's
  combiner splits it over a few. Nothing is gathered, exchanged all-to-all or reduce-scattered."""
  report, gradient, channels = compiled_mixupe_exact_step(target)
  collectives = report["collectives"]
  for kind in ("all-gather", "all-to-all", "reduce-scatter", "collective-permute"):
    assert collectives[kind]["ops"] == 0, kind
  reduced = collectives["all-reduce"]
  assert set(reduced["by_dtype"]) == {"f32"}
  assert gradient <= reduced["bytes"] <= gradient + 16 * 4 * channels + 1024
  assert report["largest_collectives"][0]["bytes"] >= gradient // 2
  assert report["temp_bytes"] > 0 and report["argument_bytes"] > 0


def test_collectives_are_read_by_kind_and_dtype_once_per_op():
  """A synchronous all-reduce of a tuple counts each result; an asynchronous pair counts once,
  at its start, and where the start's result lists its operands before its outputs, only the
  outputs; layouts are not shapes."""
  hlo = "\n".join([
    "  %all-reduce.1 = (f32[64,3]{1,0:T(8,128)}, bf16[8]{0}) all-reduce(%a, %b), channel_id=1",
    "  %all-reduce-start.2 = (f32[4]{0}, f32[4]{0}) all-reduce-start(%c), channel_id=2",
    "  %all-reduce-start.3 = f32[10]{0} all-reduce-start(%d), channel_id=3",
    "  %all-reduce-done.3 = f32[10]{0} all-reduce-done(%all-reduce-start.3)",
    "  ROOT %all-gather.4 = s32[16]{0} all-gather(%e), dimensions={0}",
    "  %all-reduce.6 = (f32[7,7,3,64]{3,2,1,0}, f32[1000]{0}, /*index=2*/bf16[10,2]{1,0}, f32[]) "
    "all-reduce(%h, %i, %j, %k), channel_id=4, to_apply=%add",
    "  %all-gather-start.7 = (f32[4,8]{1,0}, f32[32,8]{1,0}) all-gather-start(%x), dimensions={0}",
    "  %all-gather-done.7 = f32[32,8]{1,0} all-gather-done(%all-gather-start.7)",
    "  %add.5 = f32[4]{0} add(%f, %g)",
  ])
  found = aot.collectives_of(hlo)
  assert [(c["kind"], c["by_dtype"]) for c in found] == [
    ("all-reduce", {"f32": 768, "bf16": 16}),
    ("all-reduce", {"f32": 16}),
    ("all-reduce", {"f32": 40}),
    ("all-gather", {"s32": 64}),
    ("all-reduce", {"f32": 4 * (7 * 7 * 3 * 64 + 1000 + 1), "bf16": 2 * 20}),
    ("all-gather", {"f32": 4 * 32 * 8}),
  ]
  summary = aot.summarize_collectives(found)
  tuple_bytes = 4 * (7 * 7 * 3 * 64 + 1000 + 1) + 2 * 20
  assert summary["all-reduce"] == {
    "ops": 4, "bytes": 840 + tuple_bytes,
    "by_dtype": {"f32": 824 + tuple_bytes - 40, "bf16": 16 + 40}}
  assert summary["all-to-all"]["ops"] == 0


def test_targets_are_parsed_or_refused_by_name():
  """Each documented target names its compiler and chip; a bad one is an error listing the
  valid forms."""
  assert aot.parse_target("tpu:v5e:8x8").chip.memory_bytes == 16 * 2**30
  assert aot.parse_target("tpu:v5p:2x2x2").compiler == "TPU"
  assert aot.parse_target("cuda:h100:1x8x8").compiler == "XLA:GPU"
  assert aot.parse_target("cpu:8").chip is None
  for bad in ("tpu:v3:2x2", "v4:2x2x2", "cuda:h100", "cuda:a100:1x1x8", "tpu:v4:big"):
    with pytest.raises(ValueError, match=f"Unknown target '{bad}'; valid: tpu:"):
      aot.parse_target(bad)


def test_the_gpu_description_says_what_the_h100_is():
  """The text proto XLA:GPU compiles for carries the H100's compute capability, SM count and
  memory, and the limits every CUDA GPU shares."""
  text = aot.gpu_target_config("h100")
  for line in ("core_count: 132", "device_memory_size: 84942979072",
               "cuda_compute_capability { major: 9 minor: 0 }", "threads_per_warp: 32",
               'platform_name: "CUDA"'):
    assert line in text
  with pytest.raises(ValueError, match="Unknown GPU 'b200'"):
    aot.gpu_target_config("b200")


def test_the_cpu_fallback_uses_this_process_s_devices():
  """cpu:N compiles on N of this process's simulated devices, and asking for more than it has
  says how to start it."""
  assert len(aot.target_devices("cpu:8")) == 8
  with pytest.raises(aot.ToolchainMissing, match="xla_force_host_platform_device_count=16"):
    aot.target_devices("cpu:16")
