"""Arrays a user has prepared: `x`/`y` (a seeded, stratified split is made) or `x_train`,
`y_train`, `x_test`, `y_test`, in one `.npz` file or as `.npy` files in a folder.

Inputs: uint8 images [N, H, W, C] are kept as images (normalized per channel by the pipeline);
any other numeric array becomes float32 features (integers and booleans included) and must be
finite. Labels: integer class ids >= 0 (the classes are 0..max of the training labels), or
strings (sorted into 0..K-1). Files are read with `allow_pickle=False`.
"""

from __future__ import annotations

import os

import numpy as np

from mixupe_jax.data.base import ArrayDataset, DataError, is_system_entry, require_file
from mixupe_jax.data.tabular import stratified_split

KEY_SETS = (("x_train", "y_train", "x_test", "y_test"), ("x", "y"))


def _inputs(x: np.ndarray, where: str) -> np.ndarray:
  if x.dtype == np.uint8 and x.ndim == 4:
    return x
  if x.dtype.kind not in "biuf":
    raise DataError(f"{where}: inputs of dtype {x.dtype}; expected numbers.")
  x = x.astype(np.float32)
  if x.size and not np.all(np.isfinite(x)):
    position = tuple(int(p) for p in np.argwhere(~np.isfinite(x))[0])
    raise DataError(f"{where}: a non-finite value at {position}.")
  return x


def _label_ids(
  train: np.ndarray, test: np.ndarray | None, where: str
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...], int]:
  """(train ids, test ids, class names, number of classes)."""
  for labels, split in ((train, "train"), (test, "test")):
    if labels is not None and labels.ndim != 1:
      raise DataError(f"{where}: {split} labels of shape {labels.shape}; expected [N] class ids.")
  if train.dtype.kind in "US":
    classes = sorted(set(train.tolist()))
    ids = {name: index for index, name in enumerate(classes)}
    unseen = sorted(set(test.tolist()) - set(classes)) if test is not None else []
    if unseen:
      raise DataError(f"{where}: test label {unseen[0]!r} never occurs in the training labels.")
    convert = lambda labels: np.asarray([ids[v] for v in labels.tolist()], np.int32)
    return (
      convert(train),
      None if test is None else convert(test),
      tuple(str(c) for c in classes),
      len(classes),
    )
  if train.dtype.kind not in "iu":
    raise DataError(
      f"{where}: labels of dtype {train.dtype}; expected integer class ids or strings."
    )
  if train.size and train.min() < 0:
    raise DataError(f"{where}: training label {int(train.min())} is negative.")
  num_classes = int(train.max()) + 1
  if test is not None:
    if test.dtype.kind not in "iu":
      raise DataError(f"{where}: test labels of dtype {test.dtype}; expected integers.")
    outside = test[(test < 0) | (test >= num_classes)]
    if outside.size:
      raise DataError(
        f"{where}: test label {int(outside[0])} is not one of the training classes "
        f"0..{num_classes - 1}."
      )
  return (train.astype(np.int32), None if test is None else test.astype(np.int32), (), num_classes)


def load_arrays(path: str, *, test_fraction: float = 0.2, seed: int = 0) -> ArrayDataset:
  """`path` is an .npz file or a folder of .npy files with the keys of KEY_SETS."""
  require_file(path, "array file (.npz) or folder of .npy files")
  if os.path.isdir(path):
    present = {
      name[:-4] for name in os.listdir(path) if name.endswith(".npy") and not is_system_entry(name)
    }
    read = lambda key: np.load(os.path.join(path, key + ".npy"), allow_pickle=False)
  else:
    try:
      archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
      raise DataError(f"{path} is not a readable .npz file ({error}).") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
      raise DataError(
        f"{path} holds one array; expected an .npz with x and y (or x_train, "
        "y_train, x_test, y_test)."
      )
    present, read = set(archive.files), archive.__getitem__
  keys = next((k for k in KEY_SETS if set(k) <= present), None)
  if keys is None:
    raise DataError(
      f"{path} has arrays {sorted(present) or 'none'}; expected x and y, or "
      "x_train, y_train, x_test and y_test."
    )
  try:
    arrays = {key: read(key) for key in keys}
  except (OSError, ValueError) as error:
    raise DataError(f"{path}: an array cannot be read ({error}).") from error
  for x_key, y_key in zip(keys[::2], keys[1::2], strict=True):
    if len(arrays[x_key]) != len(arrays[y_key]):
      raise DataError(
        f"{path}: {x_key} has {len(arrays[x_key])} rows but {y_key} has {len(arrays[y_key])}."
      )
  if len(keys) == 4:
    x_train, x_test = (
      _inputs(arrays["x_train"], f"{path} x_train"),
      _inputs(arrays["x_test"], f"{path} x_test"),
    )
    if x_train.shape[1:] != x_test.shape[1:]:
      raise DataError(
        f"{path}: x_train rows have shape {x_train.shape[1:]}, x_test rows {x_test.shape[1:]}."
      )
    y_train, y_test, names, num_classes = _label_ids(arrays["y_train"], arrays["y_test"], path)
  else:
    x = _inputs(arrays["x"], f"{path} x")
    y, _, names, num_classes = _label_ids(arrays["y"], None, path)  # No test labels yet.
    train, test = stratified_split(y, test_fraction, seed)
    x_train, x_test, y_train, y_test = x[train], x[test], y[train], y[test]
  name = f"arrays:{os.path.basename(os.path.normpath(path))}"
  assert y_test is not None  # Given with x_test, or split off x above.
  return ArrayDataset(
    name, {"train": (x_train, y_train), "test": (x_test, y_test)}, num_classes, names, source=path
  )
