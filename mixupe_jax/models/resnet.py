"""ResNet-50 for ImageNet (He et al. 2016, the "v1.5" variant: stride on the 3x3 convolution).

Stem: 7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max-pool; bottleneck stages [3, 4, 6, 3] with
64..512 (x4) channels; the last BatchNorm of each block starts at zero scale (Goyal et al. 2017),
so every block starts as the identity, which large-batch training needs. Hidden layer k (1..4) is
the output of stage k; 0 is the input.
"""

from __future__ import annotations

import functools
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
from mixupe_jax.models.preact_resnet import conv_and_norm, residual_stages


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN(zero init), projection shortcut."""

  features: int
  strides: int
  norm: functools.partial
  conv: functools.partial

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = nn.relu(self.norm()(self.conv(self.features, (1, 1))(x)))
    out = nn.relu(self.norm()(self.conv(self.features, (3, 3), strides=self.strides)(out)))
    out = self.norm(scale_init=nn.initializers.zeros)(self.conv(4 * self.features, (1, 1))(out))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != 4 * self.features:
      shortcut = self.norm()(self.conv(4 * self.features, (1, 1), strides=self.strides)(x))
    return nn.relu(out + shortcut)


class ResNet(nn.Module):
  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
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
    check_hidden_layer(hidden_layer, len(self.stage_sizes), "ResNet")
    conv, norm = conv_and_norm(self.dtype, train, self.axis_name)
    h = maybe_transform(x.astype(self.dtype), 0, hidden_layer, hidden_transform)
    h = nn.relu(norm()(conv(self.width, (7, 7), strides=2)(h)))
    h = nn.max_pool(h, (3, 3), strides=(2, 2), padding="SAME")
    h = residual_stages(
      h, Bottleneck, self.stage_sizes, self.width, norm, conv, hidden_layer, hidden_transform
    )
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(output_dtype(self.dtype))


ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
