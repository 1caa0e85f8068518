"""The train and eval steps, jitted over a device mesh: batch sharded, everything else replicated.

Under `jax.jit` with these shardings the step computes the loss of the GLOBAL batch (BatchNorm's
batch statistics included; the pairing of the mixing is global or per device, as the loss
function's mixer says: see `parallel.mixer_for_scope`); XLA inserts the collectives. The step's
random key is fold_in(base_key, step), so a step's randomness depends only on the seed and the
step number: resuming from a checkpoint replays the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import optax
from jax.sharding import Mesh

from mixupe_jax import evaluation, parallel
from mixupe_jax.losses import LossFn
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


def make_train_step(
  loss_fn: LossFn,
  optimizer: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh: Mesh,
  base_key: jax.Array,
  preprocess: Preprocess | None = None,
) -> Callable:
  """step(state, inputs, labels) -> (state, metrics); inputs/labels are global, batch-sharded.
  The loss's key at step t is fold_in(base_key, t). `preprocess` maps the inputs as they arrive
  (e.g. uint8 images to normalized float32) before the loss sees them."""

  def train_step(state: TrainState, inputs: jax.Array, labels: jax.Array):
    if preprocess is not None:
      inputs = preprocess(inputs)
    key = jax.random.fold_in(base_key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.model_state, inputs, labels, key
    )
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

  replicated, batch = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
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
