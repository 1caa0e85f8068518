"""Pre-activation ResNets (He et al. 2016) for 32x32/64x64 inputs, as in the Mixup literature.

PreActResNet-18/34 use basic blocks [2, 2, 2, 2] / [3, 4, 6, 3]; PreActResNet-50 uses
bottleneck blocks [3, 4, 6, 3]. Stem: one 3x3 convolution (no downsampling, CIFAR style).
Hidden layer k (1..4) is the output of stage k; 0 is the input (Manifold Mixup's numbering).
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


def conv_and_norm(
  dtype: jnp.dtype, train: bool, axis_name: str | None = None
) -> tuple[functools.partial, functools.partial]:
  """The residual networks' layers: bias-free SAME convolutions and BatchNorm (momentum 0.9, as
  PyTorch's 0.1), both computing in `dtype`; BatchNorm's batch statistics are averaged over the
  mesh axis `axis_name` when the batch is split over it."""
  conv = functools.partial(nn.Conv, use_bias=False, padding="SAME", dtype=dtype)
  norm = functools.partial(
    nn.BatchNorm,
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    dtype=dtype,
    axis_name=axis_name,
  )
  return conv, norm


def residual_stages(
  h: jax.Array,
  block: type,
  stage_sizes: Sequence[int],
  width: int,
  norm,
  conv,
  hidden_layer: int | None,
  hidden_transform: HiddenTransform | None,
) -> jax.Array:
  """Stage s (from 0) has stage_sizes[s] blocks of width * 2^s channels, the first strided by 2
  for s > 0; the output of stage s is hidden layer s + 1. Call inside a compact method."""
  for stage, num_blocks in enumerate(stage_sizes):
    for index in range(num_blocks):
      strides = 2 if stage > 0 and index == 0 else 1
      h = block(width * 2**stage, strides, norm, conv)(h)
    h = maybe_transform(h, stage + 1, hidden_layer, hidden_transform)
  return h


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or 1x1 projection) shortcut."""

  features: int
  strides: int
  norm: functools.partial
  conv: functools.partial

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = nn.relu(self.norm()(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = self.conv(self.features, (1, 1), strides=self.strides)(out)
    out = self.conv(self.features, (3, 3), strides=self.strides)(out)
    out = self.conv(self.features, (3, 3))(nn.relu(self.norm()(out)))
    return out + shortcut


class PreActBottleneck(nn.Module):
  """BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (4x expansion)."""

  features: int
  strides: int
  norm: functools.partial
  conv: functools.partial

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = nn.relu(self.norm()(x))
    shortcut = x
    if self.strides != 1 or x.shape[-1] != 4 * self.features:
      shortcut = self.conv(4 * self.features, (1, 1), strides=self.strides)(out)
    out = self.conv(self.features, (1, 1))(out)
    out = self.conv(self.features, (3, 3), strides=self.strides)(nn.relu(self.norm()(out)))
    out = self.conv(4 * self.features, (1, 1))(nn.relu(self.norm()(out)))
    return out + shortcut


class PreActResNet(nn.Module):
  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
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
    check_hidden_layer(hidden_layer, len(self.stage_sizes), "PreActResNet")
    conv, norm = conv_and_norm(self.dtype, train, self.axis_name)
    block = PreActBottleneck if self.bottleneck else PreActBlock
    h = maybe_transform(x.astype(self.dtype), 0, hidden_layer, hidden_transform)
    h = conv(self.width, (3, 3))(h)
    h = residual_stages(
      h, block, self.stage_sizes, self.width, norm, conv, hidden_layer, hidden_transform
    )
    h = jnp.mean(nn.relu(norm()(h)), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(output_dtype(self.dtype))


PreActResNet18 = functools.partial(PreActResNet, stage_sizes=(2, 2, 2, 2))
PreActResNet34 = functools.partial(PreActResNet, stage_sizes=(3, 4, 6, 3))
PreActResNet50 = functools.partial(PreActResNet, stage_sizes=(3, 4, 6, 3), bottleneck=True)
