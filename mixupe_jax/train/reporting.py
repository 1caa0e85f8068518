"""What a user watches: a JSON-lines log, TensorBoard event files, a progress bar, a final plot.

Only process 0 writes. Every record is {"step": s, "split": "train" | <eval split>, <metric>: v}.
TensorBoard events are written with tensorboardX (no TensorFlow needed); `tensorboard --logdir
<workdir>/tensorboard` shows them.
"""

from __future__ import annotations

import json
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
    if not self.enabled:
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


def read_log(path: str) -> list[dict[str, Any]]:
  with open(path) as file:
    return [json.loads(line) for line in file if line.strip()]


def plot_curves(log_path: str, image_path: str) -> str:
  """Train loss and every eval split's NLL and accuracy against the step, as a PNG."""
  import matplotlib
  matplotlib.use("Agg")  # Files only: no display needed.
  import matplotlib.pyplot as plt

  records = read_log(log_path)
  splits = sorted({r["split"] for r in records})
  figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
  for split in splits:
    rows = [r for r in records if r["split"] == split]
    steps = np.asarray([r["step"] for r in rows])
    name = "loss" if split == "train" else "nll"
    loss_axis.plot(steps, [r.get(name, np.nan) for r in rows], label=f"{split} {name}")
    if split != "train":
      accuracy_axis.plot(steps, [r.get("accuracy", np.nan) for r in rows], marker="o",
                         label=f"{split} accuracy")
  loss_axis.set(xlabel="step", ylabel="loss", title="Loss")
  accuracy_axis.set(xlabel="step", ylabel="top-1 accuracy", title="Accuracy")
  for axis in (loss_axis, accuracy_axis):
    axis.grid(alpha=0.3)
    axis.legend()
  figure.tight_layout()
  figure.savefig(image_path, dpi=110)
  plt.close(figure)
  return image_path
