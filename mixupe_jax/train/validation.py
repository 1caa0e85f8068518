"""A config is checked whole before anything is loaded or trained: every error names the field,
its value and what is allowed, in one line (`train.py` prints it without a traceback)."""

from __future__ import annotations

import math
from typing import Any

from mixupe_jax import losses, mixing, parallel, regularizers
from mixupe_jax.data import audio, pipeline, registry
from mixupe_jax.models.registry import DTYPES, MODELS, model_options
from mixupe_jax.train import inputs, optim
from mixupe_jax.train.errors import ConfigError
from mixupe_jax.train.step import GRADIENT_DTYPES


def _fail(field: str, value: Any, expected: str) -> None:
  raise ConfigError(f"config.{field} = {value!r}: {expected}.")


def _integer(config, field: str, minimum: int) -> None:
  value = config[field]
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(field, value, f"expected an integer >= {minimum}")


def _number(
  config, field: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
  value = config[field]
  bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
  if not bad:
    bad = (
      value < low or value > high or (low_open and value == low) or (high_open and value == high)
    )
  if bad:
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    _fail(field, value, f"expected a number in {interval}")


def _choice(config, field: str, valid) -> None:
  if config[field] not in valid:
    _fail(field, config[field], f"valid values are {', '.join(map(str, valid))}")


def _dataset(spec: Any) -> None:
  if not isinstance(spec, str):
    _fail("dataset", spec, "expected a dataset spec string")
  scheme, _, rest = spec.partition(":")
  if scheme == "tfds":
    valid = pipeline.TFDS_IMAGE_DATASETS + tuple(audio.TFDS_AUDIO_DATASETS)
    if rest not in valid:
      _fail("dataset", spec, f"TFDS datasets here are {', '.join('tfds:' + n for n in valid)}")
  elif scheme not in registry.SCHEMES or not rest:
    _fail(
      "dataset",
      spec,
      "expected tfds:<name> or one of the forms " + ", ".join(f"{s}:..." for s in registry.SCHEMES),
    )


def validate(config) -> None:
  """Raises ConfigError for the first field that cannot work."""
  _data(config)
  _model(config)
  _method(config)
  _processes(config)
  _training(config)
  _mixer_options(config)


def _data(config) -> None:
  """The dataset and what the input pipeline makes of it."""
  _dataset(config.dataset)
  _integer(config, "image_size", 0)
  _integer(config, "train_subset", 0)
  _integer(config, "train_subset_seed", 0)
  _number(config, "label_noise", 0.0, 1.0)
  _integer(config, "label_noise_seed", 0)
  _number(config, "validation_fraction", 0.0, 1.0, high_open=True)
  _choice(config, "augment", inputs.AUGMENTATIONS)
  _integer(config, "crop_padding", 0)
  _integer(config, "input_threads", 1)
  _integer(config, "input_workers", 0)
  _choice(config, "x_bar_inputs", inputs.X_BAR_INPUTS)


def _model(config) -> None:
  """The model, its options and its dtype."""
  if not isinstance(config.model.get("name"), str) or config.model.name not in MODELS:
    _fail("model.name", config.model.get("name"), f"valid models are {', '.join(MODELS)}")
  options = model_options(config.model.name)
  unknown = sorted(set(config.model) - {"name"} - set(options))
  if unknown:
    raise ConfigError(
      f"config.model has {', '.join(unknown)}, which model {config.model.name!r} does not take "
      f"(its options: {', '.join(options)}); a model named on the command line keeps the "
      "config's options for its previous model, so change models in a config file "
      "(config.model = model_config(name, ...))."
    )
  _choice(config, "dtype", tuple(DTYPES))


def _method(config) -> None:
  """The method, its mixer and its MixupE options, and the step's collectives."""
  _choice(config, "method", losses.METHODS)
  _number(config, "alpha", 0.0, math.inf, high_open=True)
  try:  # The MixupE options are checked by the object the loss receives.
    regularizers.check_method_options(config.method, regularizers.MixupEOptions.from_config(config))
  except regularizers.OptionError as error:
    _fail(error.field, error.value, error.expected)
  _choice(config, "mixer", losses.MIXERS)
  _choice(config, "mixing_scope", parallel.MIXING_SCOPES)
  _choice(config, "gradient_all_reduce_dtype", tuple(GRADIENT_DTYPES))
  _integer(config, "mixing_group_size", 1)
  layers = tuple(config.manifold_layers)
  if not layers or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in layers):
    _fail("manifold_layers", layers, "expected a non-empty list of layer indices >= 0")


def _processes(config) -> None:
  """The multi-process job: heartbeat, process count and id."""
  _integer(config, "heartbeat_timeout_seconds", 1)
  for field in ("num_processes", "process_id"):
    if config[field] is not None:
      _integer(config, field, 1 if field == "num_processes" else 0)
  if (
    config.process_id is not None
    and config.num_processes is not None
    and config.process_id >= config.num_processes
  ):
    _fail("process_id", config.process_id, f"expected < num_processes = {config.num_processes}")


def _training(config) -> None:
  """Early stopping, batches, length, the optimizer and its schedule, the periodic actions."""
  _integer(config, "early_stopping_patience", 0)
  if config.best_eval_splits and not config.early_stopping_patience:
    _fail(
      "best_eval_splits",
      tuple(config.best_eval_splits),
      "it evaluates the best early-stopping checkpoint, so it needs early_stopping_patience > 0",
    )
  if config.mixup_off_epoch is not None:
    _integer(config, "mixup_off_epoch", 1)
  _integer(config, "batch_size", 1)
  _integer(config, "eval_batch_size", 1)
  _integer(config, "num_train_steps", 0)
  if not config.num_train_steps:
    _integer(config, "num_epochs", 1)
  _choice(config, "optimizer", optim.OPTIMIZERS)
  _number(config, "learning_rate", 0.0, math.inf, low_open=True, high_open=True)
  _number(config, "momentum", 0.0, 1.0, high_open=True)
  _number(config, "weight_decay", 0.0, math.inf, high_open=True)
  _choice(config, "schedule", optim.SCHEDULES)
  _choice(config, "weight_decay_scope", tuple(optim.WEIGHT_DECAY_SCOPES))
  _number(config, "warmup_epochs", 0.0, math.inf, high_open=True)
  boundaries = tuple(config.decay_epochs)
  if any(not isinstance(e, (int, float)) or e < 0 for e in boundaries) or list(
    boundaries
  ) != sorted(boundaries):
    _fail("decay_epochs", boundaries, "expected increasing epochs >= 0")
  _number(config, "decay_factor", 0.0, 1.0, low_open=True)
  for field in (
    "log_every_steps",
    "eval_every_epochs",
    "checkpoint_every_steps",
    "keep_checkpoints",
  ):
    _integer(config, field, 1)


def _mixer_options(config) -> None:
  """config.mixer_options, each as the mixer checks it."""
  options = dict(config.mixer_options)
  if "label_smoothing" in options:
    smoothing = options["label_smoothing"]
    if not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
      _fail("mixer_options.label_smoothing", smoothing, "expected a number in [0, 1)")
  if "prob" in options:
    try:
      mixing.check_probability(options["prob"], "prob")
    except ValueError:
      _fail("mixer_options.prob", options["prob"], "expected a number in [0, 1]")
  if "box_minmax" in options:
    try:
      mixing.check_box_minmax(options["box_minmax"])
    except ValueError:
      _fail("mixer_options.box_minmax", options["box_minmax"], "expected 0 < min <= max <= 1")
  for field in ("larger_share", "switch_per_lambda"):
    if field in options and not isinstance(options[field], bool):
      _fail(f"mixer_options.{field}", options[field], "expected True or False")
  for field, valid in (("granularity", mixing.GRANULARITIES), ("pairing", mixing.PAIRINGS)):
    if field in options and options[field] not in valid:
      _fail(f"mixer_options.{field}", options[field], f"valid values are {', '.join(valid)}")
