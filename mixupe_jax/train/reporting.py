"""What a user watches: a JSON-lines log, TensorBoard event files, a progress bar, a final plot.

Only process 0 writes. Every record is {"step": s, "split": "train" | <eval split>, <metric>: v}.
TensorBoard events are written with tensorboardX (no TensorFlow needed); `tensorboard --logdir
<workdir>/tensorboard` shows them.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"


class MetricLog:
  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tensorboard = None
    if enabled:
      from tensorboardX import SummaryWriter

      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
    if not self.enabled or self._tensorboard is None:
      return
    values = {name: float(value) for name, value in metrics.items()}
    with open(self.path, "a") as file:
      file.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    for name, value in values.items():
      self._tensorboard.add_scalar(f"{split}/{name}", value, int(step))
    self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


class _NoTPUProbe(logging.Filter):
  """JAX logs at INFO that it found no TPU on every CPU or GPU run; without a TPU asked for
  (JAX_PLATFORMS naming tpu) that line says nothing."""

  def filter(self, record):
    return not (
      record.levelno < logging.WARNING
      and "Unable to initialize backend 'tpu'" in record.getMessage()
    )


def quiet_tpu_probe() -> None:
  if "tpu" not in os.environ.get("JAX_PLATFORMS", "").lower():
    logging.getLogger("jax._src.xla_bridge").addFilter(_NoTPUProbe())


def read_log(path: str) -> list[dict[str, Any]]:
  with open(path) as file:
    return [json.loads(line) for line in file if line.strip()]


# What the "loss" of a training record is, by method: never to be read as the test NLL.
TRAINING_LOSS_LABELS = {
  "erm": "train: cross-entropy (ERM)",
  "mixup": "train: Mixup loss",
  "mixupe": "train: MixupE loss (= Mixup loss when rescaled)",
  "manifold_mixup": "train: Manifold Mixup loss",
  "manifold_mixupe": "train: Manifold MixupE loss (= Mixup loss when rescaled)",
}


def curves_figure(records: list[dict[str, Any]], *, title: str = "", method: str = ""):
  """The figure of `plot_curves`: the training loss and every eval split's NLL and accuracy."""
  import matplotlib

  matplotlib.use("Agg")  # Files only: no display needed.
  import matplotlib.pyplot as plt

  splits = sorted({r["split"] for r in records})
  figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.4))
  for split in splits:
    rows = [r for r in records if r["split"] == split]
    steps = np.asarray([r["step"] for r in rows])
    if split == "train":
      label = TRAINING_LOSS_LABELS.get(method, "train: training loss")
      loss_axis.plot(steps, [r.get("loss", np.nan) for r in rows], label=label)
    else:
      loss_axis.plot(steps, [r.get("nll", np.nan) for r in rows], label=f"{split}: NLL")
      accuracy_axis.plot(
        steps, [r.get("accuracy", np.nan) for r in rows], marker="o", label=f"{split}: accuracy"
      )
  loss_axis.set(xlabel="step", ylabel="loss", title="Loss")
  accuracy_axis.set(xlabel="step", ylabel="top-1 accuracy", title="Accuracy")
  for axis in (loss_axis, accuracy_axis):
    axis.grid(alpha=0.3)
    axis.legend()
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return figure


def plot_curves(log_path: str, image_path: str, *, title: str = "", method: str = "") -> str:
  """Train loss and every eval split's NLL and accuracy against the step, as a PNG titled
  `title`; the training loss is labelled by `method` (a Mixup loss is not a test NLL)."""
  import matplotlib.pyplot as plt

  figure = curves_figure(read_log(log_path), title=title, method=method)
  figure.savefig(image_path, dpi=110)
  plt.close(figure)
  return image_path
