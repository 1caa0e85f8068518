"""The apply-function protocol the losses use, and its adapter for Flax linen modules.

An apply function maps (params, model_state, inputs) to (logits, new_model_state):

    apply_fn(params, model_state, inputs, **hidden) -> (logits [B, C], new_model_state)

`model_state` holds the non-trainable collections (BatchNorm's `batch_stats`); it is `{}` for
models without state. Models that expose hidden layers (for Manifold Mixup and the MixupE term
at a hidden layer) accept `hidden_layer: int` and `hidden_transform: h -> h'`, applied to the
representation after block `hidden_layer` (0 is the input).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import flax.linen as nn
import jax

Params = Any
ModelState = dict[str, Any]


class ApplyFn(Protocol):

  def __call__(self, params: Params, model_state: ModelState, inputs: jax.Array,
               **hidden: Any) -> tuple[jax.Array, ModelState]:
    ...


def flax_apply_fn(module: nn.Module, *, train: bool = True) -> ApplyFn:
  """An `ApplyFn` for a linen module whose `__call__(x, train=...)` returns logits.

  In train mode every collection in `model_state` is mutable (BatchNorm uses and updates the batch
  statistics); in eval mode the state is used read-only and returned unchanged.
  """

  def apply_fn(params, model_state, inputs, **hidden):
    variables = {"params": params, **model_state}
    if train and model_state:
      logits, updates = module.apply(variables, inputs, train=True,
                                     mutable=list(model_state), **hidden)
      return logits, {**model_state, **updates}
    return module.apply(variables, inputs, train=train, **hidden), model_state

  return apply_fn


def init_model(module: nn.Module, key: jax.Array, sample_inputs: jax.Array
               ) -> tuple[Params, ModelState]:
  """Initializes a linen module; returns (params, model_state)."""
  variables = dict(module.init(key, sample_inputs, train=False))
  params = variables.pop("params")
  return params, variables


HiddenTransform = Callable[[jax.Array], jax.Array]


def maybe_transform(h: jax.Array, layer: int, hidden_layer: int | None,
                    hidden_transform: HiddenTransform | None) -> jax.Array:
  """Applies the hidden transform to h when this is the requested layer."""
  if hidden_layer == layer and hidden_transform is not None:
    return hidden_transform(h)
  return h


def check_hidden_layer(hidden_layer: int | None, num_layers: int, model_name: str) -> None:
  if hidden_layer is not None and not 0 <= hidden_layer <= num_layers:
    raise ValueError(f"{model_name} exposes hidden layers 0..{num_layers}, "
                     f"got hidden_layer={hidden_layer}.")


def output_dtype(compute_dtype: Any) -> Any:
  """Logits leave the model in float32 (float64 when computing in float64), whatever the
  compute dtype, so losses are never taken in bfloat16."""
  return jax.numpy.promote_types(compute_dtype, jax.numpy.float32)
