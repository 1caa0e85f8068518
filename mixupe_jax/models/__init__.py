"""Flax models and the apply-function protocol the losses use."""

from mixupe_jax.models.apply import ApplyFn, flax_apply_fn, init_model, nnx_apply_fn
from mixupe_jax.models.cnn import SmallCNN
from mixupe_jax.models.gcn import GCN, node_apply_fn, normalized_edges
from mixupe_jax.models.mlp import MLP
from mixupe_jax.models.preact_resnet import (
  PreActResNet,
  PreActResNet18,
  PreActResNet34,
  PreActResNet50,
)
from mixupe_jax.models.resnet import ResNet, ResNet50
from mixupe_jax.models.wide_resnet import WideResNet, WideResNet28x10

__all__ = [
  "ApplyFn",
  "flax_apply_fn",
  "init_model",
  "nnx_apply_fn",
  "MLP",
  "SmallCNN",
  "PreActResNet",
  "PreActResNet18",
  "PreActResNet34",
  "PreActResNet50",
  "ResNet",
  "ResNet50",
  "WideResNet",
  "WideResNet28x10",
  "GCN",
  "node_apply_fn",
  "normalized_edges",
]
