"""Trains and evaluates a model as a config says:

    python train.py                                          # digits MLP, MixupE (the default)
    python train.py --config=configs/imagenet_resnet50.py --workdir=/tmp/imagenet
    python train.py --config=configs/cifar10_preactresnet18.py --config.method=mixup
    python train.py --config=configs/uci_mlp.py:abalone --config.eta=0.5

Rerunning with the same --workdir resumes from its latest checkpoint.
"""

import logging

from absl import app, flags
from ml_collections import config_flags

from mixupe_jax.train import train_and_evaluate

config_flags.DEFINE_config_file("config", "configs/digits_mlp.py", "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, metrics and plots go here "
                    "(default: workdir/<config name>).")


class _DropLibraryInfo(logging.Filter):
  """orbax logs every step of every save at INFO; keep its warnings, drop the rest."""

  def filter(self, record):
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  logging.getLogger("absl").addFilter(_DropLibraryInfo())
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or f"workdir/{config.name}"
  summary = train_and_evaluate(config, workdir)
  for split, metrics in summary.items():
    if isinstance(metrics, dict):
      print(f"{split}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
  print(f"Checkpoints, metrics.jsonl, tensorboard/ and curves.png are in {workdir}")


if __name__ == "__main__":
  app.run(main)
