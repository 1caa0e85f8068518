"""A multilayer perceptron for tabular data (and for the small models of the tests)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixupe_jax.models.apply import (
  HiddenTransform,
  check_hidden_layer,
  maybe_transform,
  output_dtype,
)

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "softplus": nn.softplus}


class MLP(nn.Module):
  """Dense layers with an activation, then a linear classifier.

  Hidden layer k (1..len(hidden_sizes)) is the activation after the k-th dense layer; 0 is the
  (flattened) input. `use_bias=False` with ReLU gives a positively homogeneous network,
  f(x) = J_f(x) x, the case where the MixupE fast versions equal the exact term.
  """

  num_classes: int
  hidden_sizes: Sequence[int] = (256, 256)
  activation: str = "relu"
  use_bias: bool = True
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    train: bool = True,
    hidden_layer: int | None = None,
    hidden_transform: HiddenTransform | None = None,
  ) -> jax.Array:
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {self.activation!r}; valid: {', '.join(ACTIVATIONS)}.")
    check_hidden_layer(hidden_layer, len(self.hidden_sizes), "MLP")
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    h = maybe_transform(h, 0, hidden_layer, hidden_transform)
    for layer, size in enumerate(self.hidden_sizes, start=1):
      h = ACTIVATIONS[self.activation](nn.Dense(size, use_bias=self.use_bias, dtype=self.dtype)(h))
      if self.dropout_rate:
        h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
      h = maybe_transform(h, layer, hidden_layer, hidden_transform)
    logits = nn.Dense(self.num_classes, use_bias=self.use_bias, dtype=self.dtype)(h)
    return logits.astype(output_dtype(self.dtype))
