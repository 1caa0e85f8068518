"""UCI tables: CSV / ARFF data rows / space-separated, to standardized float32 features.

Preprocessing, fit on the training split only:
  * a cell is missing when it is one of MISSING ("?", empty, "NA", "N/A", "n/a", "NaN", "nan",
    "null", "NULL"); missing values are imputed with the training mean (numeric) or mode
    (categorical);
  * a column whose present values are all numbers is numeric; one with no numbers is categorical
    and becomes a one-hot block over the categories seen in training (an unseen category is all
    zeros); a column that mixes the two, or a number that is not finite ("inf", "1e400"), is an
    error naming the file, the line and the column (`check_columns`), never a silent guess;
  * numeric columns are standardized, z = (x - mean_train) / std_train (std 0 -> 1).
Labels are mapped to 0..K-1 in sorted order of the label values present in the whole file; with a
given test table, a test label the training table lacks is an error.
Where a dataset has no split of its own, a fixed seeded, stratified 80/20 split is made.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from mixupe_jax.data.base import ArrayDataset, DataError, require_file

MISSING = ("?", "", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL")


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


def read_table(path: str, delimiter: str | None) -> tuple[list[list[str]], list[int]]:
  """(data rows, their line numbers in the file) of a CSV, whitespace-separated or ARFF file
  (ARFF header lines, blank lines and % comments are skipped)."""
  require_file(path, "UCI table")
  rows, lines = [], []
  in_arff_header = False
  # utf-8-sig drops the byte-order mark that spreadsheet programs put before the first cell.
  with open(path, encoding="utf-8-sig", errors="replace") as file:
    for line_number, line in enumerate(file, start=1):
      line = line.strip()
      if not line or line.startswith("%"):
        continue
      if line.lower().startswith("@"):
        in_arff_header = not line.lower().startswith("@data")
        continue
      if in_arff_header:
        continue
      rows.append([cell.strip() for cell in line.split(delimiter)])
      lines.append(line_number)
  if not rows:
    raise DataError(f"{path} has no data rows.")
  if delimiter and all(len(row) == 1 for row in rows):
    found = [d for d in (";", "\t", "|", ",") if d != delimiter and d in rows[0][0]]
    raise DataError(f"{path}: no {delimiter!r} in its rows, so each row is one value"
                    + (f"; it looks {found[0]!r}-separated." if found else "."))
  widths = {len(row) for row in rows}
  if len(widths) != 1:
    width = max(widths, key=[len(r) for r in rows].count)
    bad = next(i for i, row in enumerate(rows) if len(row) != width)
    raise DataError(f"{path}: data row {bad + 1} has {len(rows[bad])} values; the others have "
                    f"{width} (line {lines[bad]}).")
  return rows, lines


def read_rows(path: str, delimiter: str | None) -> list[list[str]]:
  """The data rows of a table (see `read_table`)."""
  return read_table(path, delimiter)[0]


def check_columns(tables: list[tuple[str, list[list[str]], list[int]]]) -> None:
  """Every column of the (path, rows, line numbers) tables is numeric with finite values, or has
  no numbers at all (categorical); otherwise a DataError names the file, line and column."""
  width = len(tables[0][1][0])
  for column in range(width):
    cells = [(path, line, row[column]) for path, rows, lines in tables
             for row, line in zip(rows, lines) if row[column] not in MISSING]
    numeric = [_is_number(value) for _, _, value in cells]
    count = sum(numeric)
    if 0 < count < len(cells):
      # Point at the odd one out: the text in a mostly numeric column, or the reverse.
      odd = next(i for i, is_number in enumerate(numeric) if is_number != (count >= len(cells) / 2))
      path, line, value = cells[odd]
      raise DataError(
          f"{path} line {line}, column {column + 1}: {value!r} in a column where {count} of "
          f"{len(cells)} values are numbers; fix it, or write a missing value as one of "
          f"{', '.join(repr(m) for m in MISSING)}.")
    if count:
      for path, line, value in cells:
        if not np.isfinite(float(value)):
          raise DataError(f"{path} line {line}, column {column + 1}: {value!r} is not a finite "
                          "number.")


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
  paths = [os.path.join(directory, f) for f in spec.files]
  read = [read_table(path, spec.delimiter) for path in paths]
  tables, lines = [rows for rows, _ in read], [line_numbers for _, line_numbers in read]
  if spec.label_files:
    label_paths = [os.path.join(directory, f) for f in spec.label_files]
    label_tables = [read_table(path, None) for path in label_paths]
    labels = [[row[0] for row in rows] for rows, _ in label_tables]
    label_lines = [line_numbers for _, line_numbers in label_tables]
    for table, table_labels, path in zip(tables, labels, label_paths):
      if len(table) != len(table_labels):
        raise DataError(f"{path} has {len(table_labels)} labels for {len(table)} rows.")
  else:
    labels = [[row[-1] for row in table] for table in tables]
    tables = [[row[:-1] for row in table] for table in tables]
    label_paths, label_lines = paths, lines
  rows = sum(len(t) for t in tables)
  if spec.expected_rows is not None and rows != spec.expected_rows:
    raise DataError(f"UCI {name} in {directory} has {rows} rows; expected {spec.expected_rows}.")
  check_columns(list(zip(paths, tables, lines)))
  for path, table_labels, line_numbers in zip(label_paths, labels, label_lines):
    for label, line in zip(table_labels, line_numbers):
      if label in MISSING:
        raise DataError(f"{path} line {line}: the label is missing ({label!r}).")
  if len(tables) == 2:
    known = set(labels[0])
    unseen = [(label, line) for label, line in zip(labels[1], label_lines[1])
              if label not in known]
    if unseen:
      raise DataError(f"{label_paths[1]} line {unseen[0][1]}: label {unseen[0][0]!r} never "
                      f"occurs in the training table {label_paths[0]}.")
  all_labels = [label for table_labels in labels for label in table_labels]
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
