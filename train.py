"""Trains and evaluates a model as a config says:

    python train.py                                          # digits MLP, MixupE (the default)
    python train.py --config=configs/imagenet_resnet50.py --workdir=/tmp/imagenet
    python train.py --config=configs/cifar10_preactresnet18.py --config.method=mixup
    python train.py --config=configs/uci_mlp.py:abalone --config.eta=0.5

Rerunning with the same --workdir resumes from its latest checkpoint. A mistake in a flag, the
config, the data or the workdir ends with one line naming it (exit status 2), not a traceback.
"""

import logging
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from mixupe_jax import xla_cpu

xla_cpu.configure()  # Before JAX's first computation: XLA reads its flags once.

from mixupe_jax.data import DataError  # noqa: E402
from mixupe_jax.train import reporting, train_and_evaluate  # noqa: E402
from mixupe_jax.train.checkpoint import CheckpointError  # noqa: E402
from mixupe_jax.train.validation import ConfigError  # noqa: E402
from mixupe_jax.train.workdir import WorkdirInUse  # noqa: E402


def _stop(message: str, status: int = 2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def _one_line(error: BaseException) -> str:
  return " ".join(str(error).replace("\\n", " ").split())


def _unknown_field(error: BaseException) -> str:
  """ml_collections' KeyError for a misspelled field, as one sentence."""
  text = str(error).replace("\\", "")
  field = re.search(r"'([\w.]+)'", text)
  suggestion = re.search(r'Did you mean "([\w.]+)"', text)
  message = f"the config has no field {field.group(1) if field else text!r}"
  return message + (f"; did you mean {suggestion.group(1)!r}?" if suggestion else ".")


try:
  # ml_collections reads the --config.<field> overrides here, so a misspelled field fails here.
  config_flags.DEFINE_config_file(
    "config", "configs/digits_mlp.py", "Training configuration file.", lock_config=True
  )
except (AttributeError, KeyError) as error:
  _stop(f"bad --config override: {_unknown_field(error)}")
flags.DEFINE_string(
  "workdir", None, "Checkpoints, metrics and plots go here (default: workdir/<config name>)."
)


class _DropLibraryInfo(logging.Filter):
  """orbax logs every step of every save at INFO; keep its warnings, drop the rest."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def parse_flags(argv):
  """absl's flag parsing, with ml_collections' override errors (a misspelled field, a value of the
  wrong type) in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _stop(f"{error} (see --helpshort)")
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    _stop(f"bad --config override: {_one_line(error)}")


def main(argv):
  logging.getLogger("absl").addFilter(_DropLibraryInfo())
  reporting.quiet_tpu_probe()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = flags.FLAGS.config
  try:
    name = config.name  # The config file is loaded on first use.
  except OSError as error:
    _stop(f"cannot load the config file: {_one_line(error)}")
  workdir = flags.FLAGS.workdir or f"workdir/{name}"
  try:
    summary = train_and_evaluate(config, workdir)
  except (ConfigError, DataError, WorkdirInUse) as error:
    _stop(str(error))
  except CheckpointError as error:
    _stop(str(error), status=1)
  except FloatingPointError as error:  # A non-finite loss: the message names the step.
    _stop(str(error), status=1)
  for split, metrics in summary.items():
    if isinstance(metrics, dict):
      print(f"{split}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
  print(f"Checkpoints, metrics.jsonl, tensorboard/ and curves.png are in {workdir}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
