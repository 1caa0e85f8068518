"""UCI tables: CSV / ARFF data rows / space-separated, to standardized float32 features.

Preprocessing, fit on the training split only:
  * a column is categorical when any of its non-missing values is not a number; it becomes a
    one-hot block over the categories seen in training (an unseen category is all zeros);
  * missing values ("?" or empty) are imputed with the training mean (numeric) or mode (categorical);
  * numeric columns are standardized, z = (x - mean_train) / std_train (std 0 -> 1).
Labels are mapped to 0..K-1 in sorted order of the label values present in the whole file.
Where a dataset has no split of its own, a fixed seeded, stratified 80/20 split is made.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from mixupe_jax.data.base import ArrayDataset, DataError, require_file

MISSING = ("?", "")


@dataclasses.dataclass(frozen=True)
class UCISpec:
  files: tuple[str, ...]  # One table, or (train, test) tables with a given split.
  delimiter: str | None  # None: any whitespace.
  label_files: tuple[str, ...] = ()  # Labels in separate files (ARCENE).
  expected_rows: int | None = None


UCI_DATASETS = {
    "abalone": UCISpec(("abalone.csv",), ",", expected_rows=4177),
    "arcene": UCISpec(("arcene_train.data", "arcene_valid.data"), None,
                      label_files=("arcene_train.labels", "arcene_valid.labels"),
                      expected_rows=200),
    "arrhythmia": UCISpec(("arrhythmia.data",), ",", expected_rows=452),
    "htru2": UCISpec(("HTRU_2.csv",), ",", expected_rows=17898),
    "iris": UCISpec(("iris.csv",), ",", expected_rows=150),
    "phishing": UCISpec(("phishing_training_dataset.arff",), ",", expected_rows=11055),
}


def read_rows(path: str, delimiter: str | None) -> list[list[str]]:
  """Data rows of a CSV, whitespace-separated or ARFF file (ARFF header lines are skipped)."""
  require_file(path, "UCI table")
  rows = []
  in_arff_header = False
  with open(path, encoding="utf-8", errors="replace") as file:
    for line in file:
      line = line.strip()
      if not line or line.startswith("%"):
        continue
      if line.lower().startswith("@"):
        in_arff_header = not line.lower().startswith("@data")
        continue
      if in_arff_header:
        continue
      rows.append([cell.strip() for cell in line.split(delimiter)])
  if not rows:
    raise DataError(f"{path} has no data rows.")
  widths = {len(row) for row in rows}
  if len(widths) != 1:
    width = max(widths, key=[len(r) for r in rows].count)
    bad = next(i for i, row in enumerate(rows) if len(row) != width)
    raise DataError(f"{path}: data row {bad + 1} has {len(rows[bad])} values; the others have "
                    f"{width}.")
  return rows


def _is_number(value: str) -> bool:
  try:
    float(value)
    return True
  except ValueError:
    return False


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) row indices: a seeded `test_fraction` of every class goes to test."""
  rng = np.random.default_rng(seed)
  train, test = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    count = int(round(test_fraction * len(members)))
    test.extend(members[:count])
    train.extend(members[count:])
  return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(test, np.int64))


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
  """z = (x - mean_train) / std_train per column, for the train rows and each other array of rows
  (std 0 -> 1): (z_train, *z_others)."""
  mean, std = train.mean(axis=0), train.std(axis=0)
  std = np.where(std == 0, 1.0, std)
  return tuple((rows - mean) / std for rows in (train, *others))


def preprocess_columns(train_rows: list[list[str]], other_rows: list[list[str]], where: str
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Features of the train and the other rows, with every statistic fit on the train rows."""
  train_blocks, other_blocks = [], []
  for column in range(len(train_rows[0])):
    train_values = [row[column] for row in train_rows]
    other_values = [row[column] for row in other_rows]
    present = [v for v in train_values if v not in MISSING]
    if not present:
      continue  # A column missing in every training row carries no information.
    if all(_is_number(v) for v in present + [v for v in other_values if v not in MISSING]):
      mean = float(np.mean([float(v) for v in present]))
      to_float = lambda values: np.asarray(
          [mean if v in MISSING else float(v) for v in values], np.float64)[:, None]
      train_column, other_column = standardize(to_float(train_values), to_float(other_values))
      train_blocks.append(train_column)
      other_blocks.append(other_column)
    else:
      categories = sorted(set(present))
      mode = max(categories, key=present.count)
      to_onehot = lambda values: np.asarray(
          [[(mode if v in MISSING else v) == c for c in categories] for v in values], np.float64)
      train_blocks.append(to_onehot(train_values))
      other_blocks.append(to_onehot(other_values).reshape(len(other_values), len(categories)))
  if not train_blocks:
    raise DataError(f"{where}: no usable feature columns.")
  return (np.concatenate(train_blocks, 1).astype(np.float32),
          np.concatenate(other_blocks, 1).astype(np.float32))


def load_uci(name: str, directory: str, *, test_fraction: float = 0.2, seed: int = 0
             ) -> ArrayDataset:
  """One of UCI_DATASETS from `directory`; the label is the last column unless in label files."""
  if name not in UCI_DATASETS:
    raise DataError(f"Unknown UCI dataset {name!r}; valid: {', '.join(UCI_DATASETS)}.")
  spec = UCI_DATASETS[name]
  tables = [read_rows(os.path.join(directory, f), spec.delimiter) for f in spec.files]
  if spec.label_files:
    labels = [[row[0] for row in read_rows(os.path.join(directory, f), None)]
              for f in spec.label_files]
    for table, table_labels, file_name in zip(tables, labels, spec.label_files):
      if len(table) != len(table_labels):
        raise DataError(f"{os.path.join(directory, file_name)} has {len(table_labels)} labels "
                        f"for {len(table)} rows.")
  else:
    labels = [[row[-1] for row in table] for table in tables]
    tables = [[row[:-1] for row in table] for table in tables]
  rows = sum(len(t) for t in tables)
  if spec.expected_rows is not None and rows != spec.expected_rows:
    raise DataError(f"UCI {name} in {directory} has {rows} rows; expected {spec.expected_rows}.")
  all_labels = [label for table_labels in labels for label in table_labels]
  if any(label in MISSING for label in all_labels):
    raise DataError(f"UCI {name} in {directory} has rows with a missing label.")
  numeric = all(_is_number(label) for label in all_labels)
  classes = sorted(set(all_labels), key=float if numeric else str)
  label_ids = {label: index for index, label in enumerate(classes)}
  if len(tables) == 2:
    (train_rows, test_rows), (train_labels, test_labels) = tables, labels
  else:
    ids = np.asarray([label_ids[label] for label in labels[0]])
    train_index, test_index = stratified_split(ids, test_fraction, seed)
    train_rows = [tables[0][i] for i in train_index]
    test_rows = [tables[0][i] for i in test_index]
    train_labels = [labels[0][i] for i in train_index]
    test_labels = [labels[0][i] for i in test_index]
  train_x, test_x = preprocess_columns(train_rows, test_rows, f"UCI {name}")
  to_ids = lambda values: np.asarray([label_ids[v] for v in values], np.int32)
  return ArrayDataset(f"uci:{name}", {"train": (train_x, to_ids(train_labels)),
                                      "test": (test_x, to_ids(test_labels))},
                      len(classes), tuple(classes))
