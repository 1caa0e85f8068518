"""Flax models and the apply-function protocol the losses use."""

from mixupe_jax.models.apply import ApplyFn, flax_apply_fn, init_model
from mixupe_jax.models.cnn import SmallCNN
from mixupe_jax.models.mlp import MLP
from mixupe_jax.models.preact_resnet import (PreActResNet, PreActResNet18, PreActResNet34,
                                             PreActResNet50)

__all__ = ["ApplyFn", "flax_apply_fn", "init_model", "MLP", "SmallCNN", "PreActResNet",
           "PreActResNet18", "PreActResNet34", "PreActResNet50"]
