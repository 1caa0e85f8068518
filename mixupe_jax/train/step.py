"""The train and eval steps, jitted over a device mesh: batch sharded, everything else replicated.

The train step computes the gradient of the loss of the GLOBAL batch in one of two ways:

  per shard   (`axis_name` set; what the training system runs) the loss is computed on each
              device's shard inside `jax.shard_map` (`losses.make_loss_fn(..., axis_name=...)`:
              every mean over the batch, BatchNorm's statistics and the metrics reduced over the
              axis explicitly). Each device differentiates its own copy of the parameters, so its
              gradient is its shard's contribution to the global batch's, whatever passes the
              loss makes (MixupE's mixed pass, clean pass and term); the contributions are summed
              by ONE all-reduce, in `gradient_dtype`, as flax's ImageNet example and big_vision
              do.
  global      (`axis_name` None) the loss is a function of the global batch, jitted with the
              batch sharded; XLA's partitioner inserts the collectives, and all-reduces the
              gradient where each pass meets the replicated parameters (MixupE: two or three
              all-reduces of the gradient's size; docs/benchmarks.md).

The step's random key is fold_in(base_key, step), so a step's randomness depends only on the seed
and the step number: resuming from a checkpoint replays the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from mixupe_jax import evaluation, parallel
from mixupe_jax.losses import LossAux, LossFn
from mixupe_jax.models.apply import ApplyFn

Preprocess = Callable[[jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: the number of updates applied.
  params: Any
  model_state: Any
  opt_state: Any


class RunKeys(NamedTuple):
  init: jax.Array  # The parameters' initialization.
  dropout: jax.Array | None  # The model state's dropout key (None: the model has no dropout).
  step: jax.Array  # make_train_step's base_key: step t's loss draws from fold_in(step, t).


def run_keys(seed: int, dropout: bool) -> RunKeys:
  """The keys of a run with `seed`: (init, step) = split(key(seed)), dropout = fold_in(init, 1).

  With the step number they make every random choice of the model and the loss (the data order
  and augmentation derive from the seed in `data.pipeline`), so the same seed gives the same run,
  and no two of those choices, or two seeds' runs, share a stream.
  """
  init, step = jax.random.split(jax.random.key(seed))
  return RunKeys(init, jax.random.fold_in(init, 1) if dropout else None, step)


# The gradient all-reduce's dtype (`make_train_step(gradient_dtype=...)`, config
# `gradient_all_reduce_dtype`): None sums each gradient in its own dtype (the parameters',
# float32); "bfloat16" halves the bytes and rounds each device's contribution to 8 bits.
GRADIENT_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

Gradients = Callable[..., tuple[tuple[jax.Array, LossAux], Any]]


def sum_over_devices(grads: Any, axis_name: str, dtype: str | None = None) -> Any:
  """sum over the devices of `axis_name` of each device's gradient, in `dtype` (a name in
  GRADIENT_DTYPES; None: each leaf's own), returned in each leaf's own dtype: the step's one
  all-reduce (XLA combines the leaves into one op)."""
  if dtype is None:
    return jax.lax.psum(grads, axis_name)
  if dtype not in GRADIENT_DTYPES:
    raise ValueError(
      f"Unknown gradient all-reduce dtype {dtype!r}; valid: {', '.join(GRADIENT_DTYPES)}."
    )
  wire = jax.tree.map(lambda g: g.astype(GRADIENT_DTYPES[dtype]), grads)
  return jax.tree.map(lambda s, g: s.astype(g.dtype), jax.lax.psum(wire, axis_name), grads)


def per_shard_gradients(
  loss_fn: LossFn, mesh: Mesh, axis_name: str, gradient_dtype: str | None = None
) -> Gradients:
  """((loss, aux), grads) of a per-shard `loss_fn` (its means reduced over `axis_name`) for a
  batch sharded over `axis_name` of `mesh`, with ONE all-reduce of the gradient.

  Inside `jax.shard_map` each device differentiates its own copy of the parameters
  (`jax.lax.pcast(..., to="varying")`), so its gradient is d L / d theta_d, its shard's part of
  d L / d theta = sum_d d L / d theta_d (the loss L of the global batch); differentiating the
  replicated parameters instead would all-reduce each pass's part separately, where the pass
  meets them. `sum_over_devices` then adds the parts once."""
  batch, replicated = PartitionSpec(axis_name), PartitionSpec()

  def per_shard(params, model_state, inputs, labels, key):
    own = jax.lax.pcast(params, axis_name, to="varying")
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      own, model_state, inputs, labels, key
    )
    return (loss, aux), sum_over_devices(grads, axis_name, gradient_dtype)

  return jax.shard_map(
    per_shard,
    mesh=mesh,
    in_specs=(replicated, replicated, batch, batch, replicated),
    out_specs=replicated,
  )


def make_train_step(
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh: Mesh,
  base_key: jax.Array,
  preprocess: Preprocess | None = None,
  *,
  axis_name: str | None = None,
  gradient_dtype: str | None = None,
) -> Callable:
  """step(state, inputs, labels) -> (state, metrics); inputs/labels are global, batch-sharded.

  Args:
    loss_fn: loss_fn(params, model_state, inputs, labels, key) -> (loss, LossAux): of the
      global batch (`axis_name` None), or of a shard with its reductions over `axis_name`
      (`losses.make_loss_fn(..., axis_name=...)`).
    optimizer: the optax transformation.
    schedule: the learning-rate schedule, for the metrics.
    mesh: the device mesh; the batch is split over its axis `axis_name` (default
      `parallel.DATA_AXIS`).
    base_key: the loss's key at step t is fold_in(base_key, t).
    preprocess: maps the inputs as they arrive (e.g. uint8 images to normalized float32)
      before the loss sees them.
    axis_name: None: the global form; else the per-shard form over this mesh axis, with one
      gradient all-reduce (see the module's docstring).
    gradient_dtype: the per-shard form's all-reduce dtype (`sum_over_devices`).

  Returns:
    The jitted step; it donates the state.
  """
  if axis_name is None:
    gradients: Gradients = jax.value_and_grad(loss_fn, has_aux=True)
  else:
    gradients = per_shard_gradients(loss_fn, mesh, axis_name, gradient_dtype)

  def train_step(state: TrainState, inputs: jax.Array, labels: jax.Array):
    if preprocess is not None:
      inputs = preprocess(inputs)
    key = jax.random.fold_in(base_key, state.step)
    (loss, aux), grads = gradients(state.params, state.model_state, inputs, labels, key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
      "loss": loss,
      "learning_rate": schedule(state.step),
      "gradient_norm": optax.tree.norm(grads),
      **aux.metrics,
    }
    new_state = TrainState(state.step + 1, params, aux.model_state, opt_state)
    return new_state, metrics

  replicated = parallel.replicated_sharding(mesh)
  batch = parallel.batch_sharding(mesh, axis_name or parallel.DATA_AXIS)
  return jax.jit(
    train_step,
    in_shardings=(replicated, batch, batch),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )


def make_eval_step(apply_fn: ApplyFn, mesh: Mesh, preprocess: Preprocess | None = None) -> Callable:
  """step(state, inputs, labels, mask) -> summed metrics of the batch (see `evaluation`);
  `preprocess` as in `make_train_step`."""

  def eval_step(state: TrainState, inputs, labels, mask):
    if preprocess is not None:
      inputs = preprocess(inputs)
    logits, _ = apply_fn(state.params, state.model_state, inputs)
    return evaluation.batch_sums(logits, labels, mask)

  replicated, batch = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
  return jax.jit(
    eval_step, in_shardings=(replicated, batch, batch, batch), out_shardings=replicated
  )


def global_batch(local_arrays: tuple, mesh: Mesh) -> tuple[jax.Array, ...]:
  """This process's rows of the global batch -> global arrays sharded over the mesh's batch axis
  (`jax.make_array_from_process_local_data`; one process: a plain sharded device_put)."""
  sharding = parallel.batch_sharding(mesh)
  return tuple(jax.make_array_from_process_local_data(sharding, a) for a in local_arrays)
