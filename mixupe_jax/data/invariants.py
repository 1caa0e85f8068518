"""The invariants every loaded dataset satisfies, whatever its format, checked once when its
container is built (`ArrayDataset`, `GraphDataset`):

  1. no split is empty;
  2. every split's examples share one shape, train, validation and test alike;
  3. inputs are uint8 images or finite floating features;
  4. labels are integers in [0, num_classes), and every label of a split other than train is a
     class with training examples;
  5. at least 2 classes have training examples.

A violation is a `DataError` naming the dataset, the split, the file or folder read (where known)
and the first offending example, so a mistake in a file is reported at load, not as a shape error
in the model or a NaN loss in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixupe_jax.data.errors import DataError


def _where(name: str, split: str, source: str) -> str:
  return f"{name} {split}" + (f" ({source})" if source else "")


def check_inputs(inputs: np.ndarray, where: str) -> None:
  """Invariant 3: uint8 images or finite floating features; names the first non-finite value."""
  inputs = np.asarray(inputs)
  if inputs.dtype != np.uint8 and not np.issubdtype(inputs.dtype, np.floating):
    raise DataError(
      f"{where}: inputs of dtype {inputs.dtype}; expected uint8 images or floating features."
    )
  if np.issubdtype(inputs.dtype, np.floating) and inputs.size and not np.all(np.isfinite(inputs)):
    position = np.argwhere(~np.isfinite(inputs))[0]
    value = inputs[tuple(position)]
    raise DataError(
      f"{where}: input {int(position[0])} holds {value} at position "
      f"{tuple(int(p) for p in position[1:])}; inputs must be finite."
    )


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
  """Invariant 4, first half: integers in [0, num_classes); names the first one outside."""
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{where}: labels of dtype {labels.dtype}; expected integer class ids.")
  outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if outside.size:
    raise DataError(
      f"{where}: label {labels[outside[0]]} is out of range "
      f"[0, {num_classes - 1}] (example {int(outside[0])})."
    )


def check_training_classes(
  train_labels: np.ndarray, class_names: Sequence[str], where: str
) -> set[int]:
  """Invariant 5; returns the classes with training examples."""
  present = {int(label) for label in np.unique(train_labels)}
  if len(present) < 2:
    only = ", ".join(_class(label, class_names) for label in sorted(present)) or "none"
    raise DataError(
      f"{where}: the training examples have {len(present)} class ({only}); "
      "classification needs at least 2."
    )
  return present


def check_labels_in(
  labels: np.ndarray,
  present: set[int],
  class_names: Sequence[str],
  where: str,
  node_ids: np.ndarray | None = None,
) -> None:
  """Invariant 4, second half: every label is a class with training examples (examples are
  named by position, or by `node_ids` for a graph's split)."""
  unseen = np.flatnonzero(~np.isin(labels, sorted(present)))
  if unseen.size:
    label = int(labels[unseen[0]])
    example = (
      f"node {int(node_ids[unseen[0]])}" if node_ids is not None else f"example {int(unseen[0])}"
    )
    raise DataError(
      f"{where}: {example} has label {_class(label, class_names)}, "
      "a class with no training example."
    )


def _class(label: int, class_names: Sequence[str]) -> str:
  return f"{label} ({class_names[label]!r})" if label < len(class_names) else str(label)


def check_array_dataset(
  name: str,
  splits: dict[str, tuple[np.ndarray, np.ndarray]],
  num_classes: int,
  class_names: Sequence[str] = (),
  source: str = "",
) -> None:
  """Invariants 1-5 for in-memory splits name -> (inputs [N, ...], labels [N])."""
  for split, (inputs, labels) in splits.items():
    where = _where(name, split, source)
    if len(inputs) != len(labels):
      raise DataError(f"{where}: {len(inputs)} inputs but {len(labels)} labels.")
    if len(labels) == 0:
      raise DataError(f"{where}: the split is empty.")
    check_inputs(inputs, where)
    check_labels(labels, num_classes, where)
  if "train" not in splits:
    raise DataError(
      f"{name}"
      + (f" ({source})" if source else "")
      + f": no train split (it has {', '.join(splits) or 'none'})."
    )
  train_shape = np.asarray(splits["train"][0]).shape[1:]
  for split, (inputs, _) in splits.items():
    shape = np.asarray(inputs).shape[1:]
    if shape != train_shape:
      raise DataError(
        f"{_where(name, split, source)}: example 0 has shape {shape}, but the "
        f"training examples have {train_shape}; every split's examples must share "
        "one shape."
      )
  present = check_training_classes(splits["train"][1], class_names, _where(name, "train", source))
  for split, (_, labels) in splits.items():
    if split != "train":
      check_labels_in(np.asarray(labels), present, class_names, _where(name, split, source))


def check_graph_dataset(
  name: str,
  features: np.ndarray,
  labels: np.ndarray,
  split_indices: dict[str, np.ndarray],
  num_classes: int,
  source: str = "",
) -> None:
  """Invariants 1-5 for node classification: one feature row and label per node, each split a
  non-empty set of node ids in range."""
  where = _where(name, "nodes", source)
  if len(features) != len(labels):
    raise DataError(f"{where}: {len(features)} feature rows but {len(labels)} labels.")
  check_inputs(features, where)
  check_labels(labels, num_classes, where)
  if "train" not in split_indices:
    raise DataError(f"{where}: no train split (it has {', '.join(split_indices) or 'none'}).")
  for split, ids in split_indices.items():
    ids = np.asarray(ids)
    if ids.size == 0:
      raise DataError(f"{_where(name, split, source)}: the split has no nodes.")
    outside = np.flatnonzero((ids < 0) | (ids >= len(labels)))
    if outside.size:
      raise DataError(
        f"{_where(name, split, source)}: node id {int(ids[outside[0]])} is out of "
        f"range [0, {len(labels) - 1}]."
      )
  present = check_training_classes(
    labels[np.asarray(split_indices["train"])], (), _where(name, "train", source)
  )
  for split, ids in split_indices.items():
    if split != "train":
      ids = np.asarray(ids)
      check_labels_in(labels[ids], present, (), _where(name, split, source), node_ids=ids)


def check_published(
  name: str,
  where: str,
  found: dict[str, int],
  expected: dict[str, int],
  hint: str = "in its layout (label column, delimiter)",
) -> None:
  """A named dataset's shape against its published one (e.g. {"features": 4, "classes": 3,
  "rows": 150}): a DataError naming the file, what was expected and what was found, for a file of
  another layout (say a CSV whose label is in another column) that would otherwise load; `hint`
  says what to look at.

  >>> from mixupe_jax.data import invariants
  >>> invariants.check_published("iris", "iris.csv", {"classes": 22}, {"classes": 3})
  Traceback (most recent call last):
  mixupe_jax.data.errors.DataError: iris.csv: iris has 3 classes, found 22 ...
  """
  for key, value in expected.items():
    if found[key] != value:
      raise DataError(
        f"{where}: {name} has {value} {key}, found {found[key]}; is it the published file, {hint}?"
      )


# What a named set's count check suggests: a subset of a named set loads through a generic form.
WHOLE_SET = "the whole set (a subset loads through a generic form such as npz:)"


def check_published_rows(
  name: str, where: str, found: dict[str, int], expected: dict[str, int]
) -> None:
  """A named dataset's examples per split (or nodes of a graph) against the published whole set's:
  a DataError naming the file, the split, what was expected and what was found. A subset of a
  named set is loaded through a generic form instead (`npz:`, `imagefolder:`), which counts
  nothing.

  >>> from mixupe_jax.data import invariants
  >>> invariants.check_published_rows("CIFAR-10", "cifar", {"train": 15}, {"train": 50000})
  Traceback (most recent call last):
  mixupe_jax.data.errors.DataError: cifar: CIFAR-10 has 50000 train rows, found 15; ...
  """
  check_published(
    name,
    where,
    {f"{split} rows": count for split, count in found.items()},
    {f"{split} rows": count for split, count in expected.items()},
    hint=WHOLE_SET,
  )
