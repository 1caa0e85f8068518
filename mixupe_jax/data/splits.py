"""The splits a training run derives from a loaded dataset, all seeded: a stratified training
subset, symmetric noise in the training labels, a stratified validation split carved from train,
and standardization fit on train. Splits are name -> (inputs [N, ...], labels [N])."""

from __future__ import annotations

import numpy as np

from mixupe_jax.data.tabular import standardize, stratified_split, stratified_subset

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def train_subset(splits: Splits, size: int, seed: int, name: str) -> Splits:
  """A stratified subset of exactly `size` training examples, drawn with `seed` (see
  `stratified_subset`); the other splits are unchanged."""
  if not size:
    return splits
  inputs, labels = splits["train"]
  if size > len(labels):
    raise ValueError(
      f"train_subset = {size} is more than the {len(labels)} training examples of {name}."
    )
  kept = stratified_subset(labels, size, seed)
  return {**splits, "train": (inputs[kept], labels[kept])}


def symmetric_label_noise(labels: np.ndarray, fraction: float, num_classes: int, seed: int):
  """Labels with exactly m = round(fraction N) of them wrong: m rows drawn uniformly without
  replacement, each moved to one of the other C - 1 classes uniformly,

      y_i <- (y_i + k_i) mod C,   k_i uniform on 1 .. C - 1,

  both draws from NumPy's generator seeded with `seed` alone (the rows and the k_i do not depend
  on the labels), so the same seed corrupts the same rows the same way. Returns (the noisy labels,
  the sorted indices of the rows changed).

  >>> import numpy as np
  >>> from mixupe_jax.data import splits
  >>> noisy, changed = splits.symmetric_label_noise(np.zeros(10, np.int64), 0.4, 3, seed=0)
  >>> len(changed), int((noisy != 0).sum())
  (4, 4)
  """
  if not 0 <= fraction <= 1:
    raise ValueError(f"label_noise must be in [0, 1], got {fraction}.")
  if fraction and num_classes < 2:
    raise ValueError(f"label_noise needs at least 2 classes to move a label to, got {num_classes}.")
  rng = np.random.default_rng(seed)
  changed = np.sort(rng.permutation(len(labels))[: round(fraction * len(labels))])
  shifts = rng.integers(1, num_classes, size=len(changed)) if len(changed) else changed
  noisy = np.array(labels, copy=True)
  noisy[changed] = (noisy[changed] + shifts) % num_classes
  return noisy, changed


def noisy_train_labels(splits: Splits, fraction: float, num_classes: int, seed: int) -> Splits:
  """The training split's labels under `symmetric_label_noise`; the other splits (test) as they
  were. A validation split carved afterwards carries the noise too."""
  if not fraction:
    return splits
  inputs, labels = splits["train"]
  return {
    **splits,
    "train": (inputs, symmetric_label_noise(labels, fraction, num_classes, seed)[0]),
  }


def split_for_validation(splits: Splits, fraction: float, seed: int) -> Splits:
  """Carves a seeded, stratified validation split out of the training split."""
  if not fraction:
    return splits
  inputs, labels = splits["train"]
  train, validation = stratified_split(labels, fraction, seed)
  return {
    **splits,
    "train": (inputs[train], labels[train]),
    "validation": (inputs[validation], labels[validation]),
  }


def standardized(splits: Splits, name: str) -> Splits:
  """z = (x - mean_train) / std_train per input position (e.g. per mel band and frame), fit on
  the training split only; float features only (images are normalized per channel instead)."""
  if splits["train"][0].dtype == np.uint8:
    raise ValueError(
      f"standardize=True is for float features; {name} holds uint8 images, "
      "which are normalized per channel already."
    )
  names = ["train"] + [split for split in splits if split != "train"]
  fitted = standardize(*(splits[split][0].reshape(len(splits[split][0]), -1) for split in names))
  return {
    split: (z.reshape(splits[split][0].shape).astype(np.float32), splits[split][1])
    for split, z in zip(names, fitted, strict=True)
  }
