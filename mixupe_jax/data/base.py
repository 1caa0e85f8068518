"""Dataset containers and the error every loader raises for a bad file."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np


class DataError(ValueError):
  """A missing, corrupt or malformed data file; the message names the file and the expectation."""


def require_file(path: str | os.PathLike, what: str) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(f"Missing {what}: {path} does not exist.")
  return path


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """A classification dataset held in memory: splits name -> (inputs [N, ...], labels int32 [N]).

  Images are uint8 [N, H, W, C]; features and spectrograms are float32.
  """

  name: str
  splits: dict[str, tuple[np.ndarray, np.ndarray]]
  num_classes: int
  class_names: tuple[str, ...] = ()

  def __post_init__(self):
    for split, (inputs, labels) in self.splits.items():
      if len(inputs) != len(labels):
        raise DataError(f"{self.name} {split}: {len(inputs)} inputs but {len(labels)} labels.")
      check_labels(labels, self.num_classes, f"{self.name} {split}")

  def inputs(self, split: str) -> np.ndarray:
    return self._split(split)[0]

  def labels(self, split: str) -> np.ndarray:
    return self._split(split)[1]

  def _split(self, split: str):
    if split not in self.splits:
      raise KeyError(f"{self.name} has no split {split!r}; it has {', '.join(self.splits)}.")
    return self.splits[split]


@dataclasses.dataclass(frozen=True)
class GraphDataset:
  """Node classification on one graph: features [N, D], a symmetric adjacency, node index splits."""

  name: str
  features: np.ndarray  # float32 [N, D]
  adjacency: Any  # scipy.sparse.csr_matrix [N, N], symmetric, no self-loops added
  labels: np.ndarray  # int32 [N]
  split_indices: dict[str, np.ndarray]  # "train" / "validation" / "test" -> int64 node ids
  num_classes: int

  def __post_init__(self):
    check_labels(self.labels, self.num_classes, self.name)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Labels must be integers in [0, num_classes)."""
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels.min() if labels.min() < 0 else labels.max()
    raise DataError(f"{where}: label {bad} is out of range [0, {num_classes - 1}].")
