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


class Dropout(nn.Module):
  """`nn.Dropout` (the same mask from the same key: x / (1 - rate) where kept, else 0) whose mask,
  on a shard of a batch split over the mesh axis `axis_name`, is the shard's rows of the GLOBAL
  batch's mask: every device draws the mask of all B rows from the shared key and keeps its own
  B / N, so a run's masks are the same on any number of devices."""

  rate: float
  deterministic: bool | None = None
  axis_name: str | None = None

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool | None = None) -> jax.Array:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep = 1.0 - self.rate
    key = self.make_rng("dropout")
    if self.axis_name is None:
      mask = jax.random.bernoulli(key, p=keep, shape=inputs.shape)
    else:
      rows = inputs.shape[0]
      shape = (rows * jax.lax.axis_size(self.axis_name),) + inputs.shape[1:]
      mask = jax.lax.dynamic_slice_in_dim(
        jax.random.bernoulli(key, p=keep, shape=shape),
        jax.lax.axis_index(self.axis_name) * rows,
        rows,
      )
    return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


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
  # Inside a per-shard train step (`train.make_train_step(..., axis_name=...)`): the mesh axis
  # the batch is split over, so that dropout's masks are the global batch's (see `Dropout`).
  axis_name: str | None = None

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
        h = Dropout(self.dropout_rate, deterministic=not train, axis_name=self.axis_name)(h)
      h = maybe_transform(h, layer, hidden_layer, hidden_transform)
    logits = nn.Dense(self.num_classes, use_bias=self.use_bias, dtype=self.dtype)(h)
    return logits.astype(output_dtype(self.dtype))
