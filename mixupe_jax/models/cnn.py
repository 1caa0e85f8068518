"""A small convolutional network with BatchNorm, for 28x28 images and log-mel spectrograms."""

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


class SmallCNN(nn.Module):
  """[conv3x3 - BatchNorm - ReLU - maxpool2] per stage, global average pool, dense classifier.

  Hidden layer k (1..len(channels)) is the output of stage k; 0 is the input.
  """

  num_classes: int
  channels: Sequence[int] = (32, 64)
  # "average": global average pooling (position-free); "flatten": keep where each feature is,
  # which spectrograms need (a frequency band's position is its meaning).
  readout: str = "average"
  dtype: jnp.dtype = jnp.float32
  # Inside a per-shard train step (`train.make_train_step(..., axis_name=...)`): the mesh axis
  # the batch is split over, so that BatchNorm's batch statistics are the global batch's.
  axis_name: str | None = None

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    train: bool = True,
    hidden_layer: int | None = None,
    hidden_transform: HiddenTransform | None = None,
  ) -> jax.Array:
    check_hidden_layer(hidden_layer, len(self.channels), "SmallCNN")
    h = x.astype(self.dtype)
    h = maybe_transform(h, 0, hidden_layer, hidden_transform)
    for stage, width in enumerate(self.channels, start=1):
      h = nn.Conv(width, (3, 3), use_bias=False, dtype=self.dtype)(h)
      h = nn.BatchNorm(
        use_running_average=not train, momentum=0.9, dtype=self.dtype, axis_name=self.axis_name
      )(h)
      h = nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2))
      h = maybe_transform(h, stage, hidden_layer, hidden_transform)
    if self.readout not in ("average", "flatten"):
      raise ValueError(f"Unknown readout {self.readout!r}; valid: average, flatten.")
    h = jnp.mean(h, axis=(1, 2)) if self.readout == "average" else h.reshape(h.shape[0], -1)
    return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(output_dtype(self.dtype))
