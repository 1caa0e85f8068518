"""Dataset containers and the error every loader raises for a bad file."""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from mixupe_jax.data import invariants
from mixupe_jax.data.errors import DataError


def require_tensorflow(what: str) -> None:
  """TensorFlow is an optional extra of the package; `what` needs it."""
  import importlib.util

  try:
    spec = importlib.util.find_spec("tensorflow")
  except (ImportError, ValueError):
    spec = None
  if spec is None:
    raise ImportError(
      f"{what} needs TensorFlow, which mixupe_jax installs only with its "
      "'tensorflow' extra: pip install 'mixupe_jax[tensorflow]' (or pip install "
      "tensorflow-cpu). `pip install -r requirements.txt` includes it."
    )


def require_file(path: str | os.PathLike, what: str) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(f"Missing {what}: {path} does not exist.")
  return path


# What operating systems and archivers add beside the data: macOS's resource forks (`__MACOSX/`,
# `._<name>`) and folder settings (`.DS_Store`), Windows' thumbnail caches and folder settings.
SYSTEM_FOLDERS = ("__MACOSX",)
SYSTEM_FILES = ("thumbs.db", "desktop.ini")


def is_system_entry(name: str) -> bool:
  """Whether a '/'-separated member name is such an artifact: a component that is hidden (starts
  with '.', which covers `._<name>` and `.DS_Store`) or a system folder, or a system file."""
  parts = [part for part in name.split("/") if part]
  return any(part.startswith(".") or part in SYSTEM_FOLDERS for part in parts) or (
    bool(parts) and parts[-1].lower() in SYSTEM_FILES
  )


def list_members(path: str, layout: str) -> tuple[list[str], Callable[[str], bytes]]:
  """(file names relative to `path`, '/'-separated; reader(name) -> bytes) for a folder (walked
  recursively) or a zip file, without the system entries `is_system_entry` names; `layout`
  describes the expected content for the error message."""
  if zipfile.is_zipfile(path):
    archive = zipfile.ZipFile(path)

    def read_member(name):
      try:
        return archive.read(name)
      except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}:{name} cannot be read from the archive ({error}).") from error

    return [
      n for n in archive.namelist() if not n.endswith("/") and not is_system_entry(n)
    ], read_member
  if os.path.isdir(path):
    names = [
      os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
      for root, _, files in os.walk(path)
      for f in files
    ]
    names = [name for name in names if not is_system_entry(name)]

    def read(name):
      with open(os.path.join(path, name), "rb") as file:
        return file.read()

    return names, read
  raise DataError(f"{path} is neither a folder nor a zip file of {layout}.")


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """A classification dataset held in memory: splits name -> (inputs [N, ...], labels int32 [N]).

  Images are uint8 [N, H, W, C]; features and spectrograms are float32. `source` is the file or
  folder it was read from (named in errors). Building one checks `invariants`.
  """

  name: str
  splits: dict[str, tuple[np.ndarray, np.ndarray]]
  num_classes: int
  class_names: tuple[str, ...] = ()
  source: str = ""

  def __post_init__(self):
    invariants.check_array_dataset(
      self.name, self.splits, self.num_classes, self.class_names, self.source
    )

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
  """Node classification on one graph: features [N, D], a symmetric adjacency, node index splits.
  Building one checks `invariants`."""

  name: str
  features: np.ndarray  # float32 [N, D]
  adjacency: Any  # scipy.sparse.csr_matrix [N, N], symmetric, no self-loops added
  labels: np.ndarray  # int32 [N]
  split_indices: dict[str, np.ndarray]  # "train" / "validation" / "test" -> int64 node ids
  num_classes: int
  source: str = ""

  def __post_init__(self):
    invariants.check_graph_dataset(
      self.name, self.features, self.labels, self.split_indices, self.num_classes, self.source
    )
