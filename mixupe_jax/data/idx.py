"""The idx format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or not.

Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions n, then n big-endian
uint32 sizes, then the data in row-major order.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from mixupe_jax.data.base import ArrayDataset, DataError, require_file

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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
    raise DataError(f"{path} has {len(raw)} bytes but its header (shape {shape}, {dtype}) "
                    f"needs {expected}: the file is truncated or corrupt.")
  return np.frombuffer(raw, dtype, offset=header_size).reshape(shape)


def _find(directory: str, stem: str) -> str:
  for name in (stem + ".gz", stem):
    if os.path.exists(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise DataError(f"Missing idx file: neither {stem}.gz nor {stem} in {directory}.")


def load_idx_dataset(directory: str, name: str = "idx") -> ArrayDataset:
  """MNIST-style directory: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] -> uint8 [N,28,28,1]."""
  require_file(directory, "idx dataset directory")
  splits = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise DataError(f"{directory} {split}: expected images [N, H, W] and labels [N], got "
                      f"{images.shape} and {labels.shape}.")
    splits[split] = (images[..., None], labels.astype(np.int32))
  num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
  return ArrayDataset(name, splits, num_classes)
