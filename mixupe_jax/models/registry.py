"""Models named by a string, as configs name them."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mixupe_jax.models.cnn import SmallCNN
from mixupe_jax.models.gcn import GCN
from mixupe_jax.models.mlp import MLP
from mixupe_jax.models.preact_resnet import PreActResNet18, PreActResNet34, PreActResNet50
from mixupe_jax.models.resnet import ResNet50
from mixupe_jax.models.wide_resnet import WideResNet, WideResNet28x10

MODELS = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "preact_resnet18": PreActResNet18,
    "preact_resnet34": PreActResNet34,
    "preact_resnet50": PreActResNet50,
    "wide_resnet": WideResNet,
    "wide_resnet28_10": WideResNet28x10,
    "resnet50": ResNet50,
    "gcn": GCN,
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str) -> Any:
  if name not in DTYPES:
    raise ValueError(f"Unknown dtype {name!r}; valid: {', '.join(DTYPES)}.")
  return DTYPES[name]


def build_model(name: str, *, num_classes: int, dtype: str = "float32", **options: Any
                ) -> nn.Module:
  """The model `name` with `options` as its fields; parameters stay float32 whatever `dtype`
  (the compute dtype: "bfloat16" is mixed precision on accelerators)."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid models are {', '.join(MODELS)}.")
  try:
    return MODELS[name](num_classes=num_classes, dtype=compute_dtype(dtype), **options)
  except TypeError as error:
    raise ValueError(f"Bad options {sorted(options)} for model {name!r}: {error}") from error
