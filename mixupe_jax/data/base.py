"""Dataset containers and the error every loader raises for a bad file."""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import Any, Callable

import numpy as np


class DataError(ValueError):
  """A missing, corrupt or malformed data file; the message names the file and the expectation."""


def require_tensorflow(what: str) -> None:
  """TensorFlow is an optional extra of the package; `what` needs it."""
  import importlib.util
  try:
    spec = importlib.util.find_spec("tensorflow")
  except (ImportError, ValueError):
    spec = None
  if spec is None:
    raise ImportError(f"{what} needs TensorFlow, which mixupe_jax installs only with its "
                      "'tensorflow' extra: pip install 'mixupe_jax[tensorflow]' (or pip install "
                      "tensorflow-cpu). `pip install -r requirements.txt` includes it.")


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

    def read_member(name):
      try:
        return archive.read(name)
      except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}:{name} cannot be read from the archive ({error}).") from error

    return [n for n in archive.namelist() if not n.endswith("/")], read_member
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
      where = f"{self.name} {split}"
      if len(inputs) != len(labels):
        raise DataError(f"{where}: {len(inputs)} inputs but {len(labels)} labels.")
      check_inputs(inputs, where)
      check_labels(labels, self.num_classes, where)

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


def check_inputs(inputs: np.ndarray, where: str) -> None:
  """Inputs are uint8 images or finite floating features."""
  inputs = np.asarray(inputs)
  if inputs.dtype != np.uint8 and not np.issubdtype(inputs.dtype, np.floating):
    raise DataError(f"{where}: inputs of dtype {inputs.dtype}; expected uint8 images or floating "
                    "features.")
  if np.issubdtype(inputs.dtype, np.floating) and inputs.size and not np.all(np.isfinite(inputs)):
    position = np.argwhere(~np.isfinite(inputs))[0]
    value = inputs[tuple(position)]
    raise DataError(f"{where}: input {int(position[0])} holds {value} at position "
                    f"{tuple(int(p) for p in position[1:])}; inputs must be finite.")


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Labels must be integers in [0, num_classes)."""
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{where}: labels of dtype {labels.dtype}; expected integer class ids.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels.min() if labels.min() < 0 else labels.max()
    raise DataError(f"{where}: label {bad} is out of range [0, {num_classes - 1}].")
