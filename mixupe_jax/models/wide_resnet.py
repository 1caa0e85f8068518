"""Wide residual networks (Zagoruyko & Komodakis 2016), WRN-d-k for 32x32 / 64x64 inputs.

Depth d = 6n + 4: three stages of n pre-activation basic blocks with 16k, 32k, 64k channels;
WRN-28-10 (n = 4, k = 10) is the Mixup literature's large CIFAR model. Hidden layer k (1..3) is the
output of stage k; 0 is the input.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixupe_jax.models.apply import (
  HiddenTransform,
  check_hidden_layer,
  maybe_transform,
  output_dtype,
)
from mixupe_jax.models.preact_resnet import PreActBlock, conv_and_norm, residual_stages


class WideResNet(nn.Module):
  num_classes: int
  depth: int = 28
  widen_factor: int = 10
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
    if (self.depth - 4) % 6:
      raise ValueError(f"WideResNet depth must be 6n + 4 (e.g. 16, 22, 28), got {self.depth}.")
    blocks_per_stage = (self.depth - 4) // 6
    check_hidden_layer(hidden_layer, 3, "WideResNet")
    conv, norm = conv_and_norm(self.dtype, train, self.axis_name)
    h = maybe_transform(x.astype(self.dtype), 0, hidden_layer, hidden_transform)
    h = conv(16, (3, 3))(h)
    h = residual_stages(
      h,
      PreActBlock,
      (blocks_per_stage,) * 3,
      16 * self.widen_factor,
      norm,
      conv,
      hidden_layer,
      hidden_transform,
    )
    h = jnp.mean(nn.relu(norm()(h)), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype)(h).astype(output_dtype(self.dtype))


WideResNet28x10 = functools.partial(WideResNet, depth=28, widen_factor=10)
