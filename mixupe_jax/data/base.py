"""Dataset containers and the error every loader raises for a bad file."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Any, Callable

import numpy as np


class DataError(ValueError):
  """A missing, corrupt or malformed data file; the message names the file and the expectation."""


def require_file(path: str | os.PathLike, what: str) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(f"Missing {what}: {path} does not exist.")
  return path


def list_members(path: str, layout: str) -> tuple[list[str], Callable[[str], bytes]]:
  """(file names relative to `path`, '/'-separated; reader(name) -> bytes) for a folder (walked
  recursively) or a zip file; `layout` describes the expected content for the error message."""
  if zipfile.is_zipfile(path):
    archive = zipfile.ZipFile(path)
    return [n for n in archive.namelist() if not n.endswith("/")], archive.read
  if os.path.isdir(path):
    names = [os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
             for root, _, files in os.walk(path) for f in files]

    def read(name):
      with open(os.path.join(path, name), "rb") as file:
        return file.read()

    return names, read
  raise DataError(f"{path} is neither a folder nor a zip file of {layout}.")


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
