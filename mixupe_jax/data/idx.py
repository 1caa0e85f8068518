"""The idx format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or not.

Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions n, then n big-endian
uint32 sizes, then the data in row-major order.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from mixupe_jax.data.base import ArrayDataset, DataError, require_file

_TYPES: dict[int, type | str] = {
  0x08: np.uint8,
  0x09: np.int8,
  0x0B: ">i2",
  0x0C: ">i4",
  0x0D: ">f4",
  0x0E: ">f8",
}


def read_idx(path: str) -> np.ndarray:
  """Reads one idx(.gz) file into an array, checking its header against its size."""
  require_file(path, "idx file")
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as file:
      raw = file.read()
  except (OSError, EOFError) as error:
    raise DataError(f"{path} is not a readable idx file ({error}).") from error
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
    raise DataError(f"{path} is not an idx file: bad magic number {raw[:4].hex()}.")
  dtype, ndim = np.dtype(_TYPES[raw[2]]), raw[3]
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f"{path} is truncated: its header declares {ndim} dimensions.")
  shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", ndim, offset=4))
  expected = header_size + int(np.prod(shape)) * dtype.itemsize
  if len(raw) != expected:
    raise DataError(
      f"{path} has {len(raw)} bytes but its header (shape {shape}, {dtype}) "
      f"needs {expected}: the file is truncated or corrupt."
    )
  return np.frombuffer(raw, dtype, offset=header_size).reshape(shape)


def _find(directory: str, stem: str) -> str:
  for name in (stem + ".gz", stem):
    if os.path.exists(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise DataError(f"Missing idx file: neither {stem}.gz nor {stem} in {directory}.")


def load_idx_dataset(directory: str, name: str = "idx") -> ArrayDataset:
  """MNIST-style directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] -> uint8 [N,28,28,1].

  The classes are 0..max of the training labels; a test label outside them is an error naming
  the file (it would otherwise add a class no example trains).
  """
  require_file(directory, "idx dataset directory")
  splits, label_files = {}, {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise DataError(
        f"{directory} {split}: expected images [N, H, W] and labels [N], got "
        f"{images.shape} and {labels.shape}."
      )
    if images.dtype != np.uint8:
      raise DataError(f"{images_path}: images of type {images.dtype}; expected uint8 pixels.")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
      raise DataError(
        f"{labels_path}: labels must be integers >= 0, got type {labels.dtype} "
        f"and minimum {labels.min() if labels.size else 'none'}."
      )
    splits[split] = (images[..., None], labels.astype(np.int32))
    label_files[split] = labels_path
  train_labels = splits["train"][1]
  # An empty training split is named by the dataset invariants (ArrayDataset).
  num_classes = int(train_labels.max()) + 1 if train_labels.size else 1
  test_labels = splits["test"][1]
  if test_labels.size and test_labels.max() >= num_classes:
    bad = int(test_labels.max())
    raise DataError(
      f"{label_files['test']}: label {bad} (example "
      f"{int(np.argmax(test_labels == bad))}) is not one of the training classes "
      f"0..{num_classes - 1} of {label_files['train']}."
    )
  return ArrayDataset(name, splits, num_classes, source=directory)
