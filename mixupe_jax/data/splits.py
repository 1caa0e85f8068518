"""The splits a training run derives from a loaded dataset, all seeded: a stratified training
subset, a stratified validation split carved from train, and standardization fit on train.
Splits are name -> (inputs [N, ...], labels [N])."""

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
