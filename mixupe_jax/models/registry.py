"""Models named by a string, as configs name them."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from mixupe_jax.models.cnn import SmallCNN
from mixupe_jax.models.gcn import GCN
from mixupe_jax.models.mlp import MLP
from mixupe_jax.models.preact_resnet import PreActResNet18, PreActResNet34, PreActResNet50
from mixupe_jax.models.resnet import ResNet50
from mixupe_jax.models.wide_resnet import WideResNet, WideResNet28x10

# A module class, or a partial of one that presets some of its fields.
MODELS: dict[str, Any] = {
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


# Module fields that are not options: set by the training system (classes, dtype, graph edges).
_NOT_OPTIONS = ("parent", "name", "num_classes", "dtype", "edges", "axis_name")


def model_options(name: str) -> dict[str, Any]:
  """Every option of model `name` with its default (the module's fields, with a preset's values,
  e.g. PreActResNet-18's stage sizes)."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid models are {', '.join(MODELS)}.")
  target: Any = MODELS[name]
  preset: dict[str, Any] = {}
  if isinstance(target, functools.partial):
    target, preset = target.func, dict(target.keywords)
  options = {
    field.name: field.default
    for field in dataclasses.fields(target)
    if field.name not in _NOT_OPTIONS and field.default is not dataclasses.MISSING
  }
  return {**options, **preset}


def model_config(name: str, **changes: Any) -> ml_collections.ConfigDict:
  """`config.model` for model `name`: its name and every option with its default, so that any
  option can be set from the command line (`--config.model.<option>=...`) on a locked config."""
  options = model_options(name)
  unknown = sorted(set(changes) - set(options))
  if unknown:
    raise ValueError(
      f"Model {name!r} has no option {', '.join(unknown)}; its options are {', '.join(options)}."
    )
  return ml_collections.ConfigDict({"name": name, **options, **changes})


def compute_dtype(name: str) -> Any:
  if name not in DTYPES:
    raise ValueError(f"Unknown dtype {name!r}; valid: {', '.join(DTYPES)}.")
  return DTYPES[name]


def build_model(
  name: str,
  *,
  num_classes: int,
  dtype: str = "float32",
  axis_name: str | None = None,
  **options: Any,
) -> nn.Module:
  """The model `name` with `options` as its fields; parameters stay float32 whatever `dtype`
  (the compute dtype: "bfloat16" is mixed precision on accelerators). `axis_name`, the mesh axis
  of a per-shard train step, reaches the models whose layers reduce over the batch (BatchNorm,
  dropout's global masks); the others compute nothing across examples and take none."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; valid models are {', '.join(MODELS)}.")
  valid = set(model_options(name)) | {"edges", "axis_name"}
  unknown = sorted(set(options) - valid)
  if unknown:
    raise ValueError(
      f"Model {name!r} has no option {', '.join(unknown)}; its options are "
      f"{', '.join(sorted(valid - {'edges', 'axis_name'}))}."
    )
  if axis_name is not None and "axis_name" in _fields(MODELS[name]):
    options["axis_name"] = axis_name
  return MODELS[name](num_classes=num_classes, dtype=compute_dtype(dtype), **options)


def _fields(target: Any) -> set[str]:
  target = target.func if isinstance(target, functools.partial) else target
  return {field.name for field in dataclasses.fields(target)}
