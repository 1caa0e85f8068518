"""Tables to standardized float32 features: the six UCI sets of the Mixup paper by name, and any
CSV file (`load_csv`). CSV / ARFF data rows / space-separated; quoted cells as in CSV.

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

import csv
import dataclasses
import os

import numpy as np

from mixupe_jax.data import invariants
from mixupe_jax.data.base import ArrayDataset, DataError, require_file

MISSING = ("?", "", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL")


@dataclasses.dataclass(frozen=True)
class UCISpec:
  files: tuple[str, ...]  # One table, or (train, test) tables with a given split.
  delimiter: str | None  # None: any whitespace.
  label_files: tuple[str, ...] = ()  # Labels in separate files (ARCENE).
  expected_rows: int | None = None
  # The published shape: columns besides the label, and the classes present in the data.
  features: int | None = None
  classes: int | None = None


UCI_DATASETS = {
  "abalone": UCISpec(("abalone.csv",), ",", expected_rows=4177, features=8, classes=28),
  "arcene": UCISpec(
    ("arcene_train.data", "arcene_valid.data"),
    None,
    label_files=("arcene_train.labels", "arcene_valid.labels"),
    expected_rows=200,
    features=10000,
    classes=2,
  ),
  # Labels 1-16 are defined, 13 occur.
  "arrhythmia": UCISpec(("arrhythmia.data",), ",", expected_rows=452, features=279, classes=13),
  "htru2": UCISpec(("HTRU_2.csv",), ",", expected_rows=17898, features=8, classes=2),
  "iris": UCISpec(("iris.csv",), ",", expected_rows=150, features=4, classes=3),
  "phishing": UCISpec(
    ("phishing_training_dataset.arff",), ",", expected_rows=11055, features=30, classes=2
  ),
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
      cells = next(csv.reader([line], delimiter=delimiter)) if delimiter else line.split()
      rows.append([cell.strip() for cell in cells])
      lines.append(line_number)
  if not rows:
    raise DataError(f"{path} has no data rows.")
  if delimiter and all(len(row) == 1 for row in rows):
    found = [d for d in (";", "\t", "|", ",") if d != delimiter and d in rows[0][0]]
    raise DataError(
      f"{path}: no {delimiter!r} in its rows, so each row is one value"
      + (f"; it looks {found[0]!r}-separated." if found else ".")
    )
  widths = {len(row) for row in rows}
  if len(widths) != 1:
    width = max(widths, key=[len(r) for r in rows].count)
    bad = next(i for i, row in enumerate(rows) if len(row) != width)
    raise DataError(
      f"{path}: data row {bad + 1} has {len(rows[bad])} values; the others have "
      f"{width} (line {lines[bad]})."
    )
  return rows, lines


def read_rows(path: str, delimiter: str | None) -> list[list[str]]:
  """The data rows of a table (see `read_table`)."""
  return read_table(path, delimiter)[0]


def check_columns(tables: list[tuple[str, list[list[str]], list[int]]]) -> None:
  """Every column of the (path, rows, line numbers) tables is numeric with finite values, or has
  no numbers at all (categorical); otherwise a DataError names the file, line and column."""
  width = len(tables[0][1][0])
  for column in range(width):
    cells = [
      (path, line, row[column])
      for path, rows, lines in tables
      for row, line in zip(rows, lines, strict=True)
      if row[column] not in MISSING
    ]
    numeric = [_is_number(value) for _, _, value in cells]
    count = sum(numeric)
    if 0 < count < len(cells):
      # Point at the odd one out: the text in a mostly numeric column, or the reverse.
      odd = next(i for i, is_number in enumerate(numeric) if is_number != (count >= len(cells) / 2))
      path, line, value = cells[odd]
      raise DataError(
        f"{path} line {line}, column {column + 1}: {value!r} in a column where {count} of "
        f"{len(cells)} values are numbers; fix it, or write a missing value as one of "
        f"{', '.join(repr(m) for m in MISSING)}."
      )
    if count:
      for path, line, value in cells:
        if not np.isfinite(float(value)):
          raise DataError(
            f"{path} line {line}, column {column + 1}: {value!r} is not a finite number."
          )


def _is_number(value: str) -> bool:
  try:
    float(value)
    return True
  except ValueError:
    return False


def stratified_split(
  labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) row indices: a seeded `test_fraction` of every class goes to test."""
  rng = np.random.default_rng(seed)
  train: list[int] = []
  test: list[int] = []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    count = int(round(test_fraction * len(members)))
    test.extend(members[:count])
    train.extend(members[count:])
  return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(test, np.int64))


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
  """Sorted row indices of exactly `size` rows, drawn with `seed`: class c keeps
  n_c = floor(size * N_c / N) rows, and the rows left over go one each to the classes with the
  largest remainders (Hamilton's rule), so every class keeps its share to within one row."""
  rng = np.random.default_rng(seed)
  classes, counts = np.unique(labels, return_counts=True)
  quotas = size * counts / len(labels)
  kept = np.floor(quotas).astype(np.int64)
  kept[np.argsort(-(quotas - kept), kind="stable")[: size - kept.sum()]] += 1
  chosen = [
    rng.permutation(np.flatnonzero(labels == label))[:count]
    for label, count in zip(classes, kept, strict=True)
  ]
  return np.sort(np.concatenate(chosen).astype(np.int64))


def standardize(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
  """z = (x - mean_train) / std_train per column, for the train rows and each other array of rows
  (std 0 -> 1): (z_train, z_other_1, ...)."""
  mean, std = train.mean(axis=0), train.std(axis=0)
  std = np.where(std == 0, 1.0, std)
  return tuple((rows - mean) / std for rows in (train, *others))


def preprocess_columns(
  train_rows: list[list[str]], other_rows: list[list[str]], where: str
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

      def to_float(values, mean=mean):
        return np.asarray([mean if v in MISSING else float(v) for v in values], np.float64)[:, None]

      train_column, other_column = standardize(to_float(train_values), to_float(other_values))
      train_blocks.append(train_column)
      other_blocks.append(other_column)
    else:
      categories = sorted(set(present))
      mode = max(categories, key=present.count)

      def to_onehot(values, mode=mode, categories=categories):
        return np.asarray(
          [[(mode if v in MISSING else v) == c for c in categories] for v in values], np.float64
        )

      train_blocks.append(to_onehot(train_values))
      other_blocks.append(to_onehot(other_values).reshape(len(other_values), len(categories)))
  if not train_blocks:
    raise DataError(f"{where}: no usable feature columns.")
  return (
    np.concatenate(train_blocks, 1).astype(np.float32),
    np.concatenate(other_blocks, 1).astype(np.float32),
  )


def load_uci(
  name: str, directory: str, *, test_fraction: float = 0.2, seed: int = 0
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
    for table, table_labels, path in zip(tables, labels, label_paths, strict=True):
      if len(table) != len(table_labels):
        raise DataError(f"{path} has {len(table_labels)} labels for {len(table)} rows.")
  else:
    labels = [[row[-1] for row in table] for table in tables]
    tables = [[row[:-1] for row in table] for table in tables]
    label_paths, label_lines = paths, lines
  rows = sum(len(t) for t in tables)
  if spec.expected_rows is not None and rows != spec.expected_rows:
    raise DataError(f"UCI {name} in {directory} has {rows} rows; expected {spec.expected_rows}.")
  check_columns(list(zip(paths, tables, lines, strict=True)))
  for path, table_labels, line_numbers in zip(label_paths, labels, label_lines, strict=True):
    for label, line in zip(table_labels, line_numbers, strict=True):
      if label in MISSING:
        raise DataError(f"{path} line {line}: the label is missing ({label!r}).")
  if len(tables) == 2:
    known = set(labels[0])
    unseen = [
      (label, line)
      for label, line in zip(labels[1], label_lines[1], strict=True)
      if label not in known
    ]
    if unseen:
      raise DataError(
        f"{label_paths[1]} line {unseen[0][1]}: label {unseen[0][0]!r} never "
        f"occurs in the training table {label_paths[0]}."
      )
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
  dataset = ArrayDataset(
    f"uci:{name}",
    {"train": (train_x, to_ids(train_labels)), "test": (test_x, to_ids(test_labels))},
    len(classes),
    tuple(classes),
    source=directory,
  )
  # After the invariants every dataset meets: then the published shape of this one.
  published = {"features": spec.features, "classes": spec.classes}
  invariants.check_published(
    f"UCI {name}",
    paths[0],
    {"features": len(tables[0][0]), "classes": len(classes)},
    {key: value for key, value in published.items() if value is not None},
  )
  return dataset


CSV_DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(path: str) -> str | None:
  """The delimiter among CSV_DELIMITERS that splits most of the first 20 lines into one number
  (> 1) of cells (a ragged line is then reported by `read_table`); None (whitespace) when none
  does."""
  require_file(path, "CSV file")
  with open(path, encoding="utf-8-sig", errors="replace") as file:
    sample = [line for line in (file.readline() for _ in range(50)) if line.strip()][:20]
  best, best_score = None, (0, 1)
  for delimiter in CSV_DELIMITERS:
    widths = [len(next(csv.reader([line], delimiter=delimiter))) for line in sample]
    width = max(set(widths), key=widths.count)
    score = (widths.count(width), width)
    if width > 1 and widths.count(width) >= 0.8 * len(sample) and score > best_score:
      best, best_score = delimiter, score
  return best


def _looks_like_header(rows: list[list[str]]) -> bool:
  """The first row is a header when none of its cells is a number while some column's other
  values are all numbers (or, with no numeric column, when its cells all differ from every value
  below them: names, not categories)."""
  first, rest = rows[0], rows[1:]
  if not rest or any(_is_number(cell) for cell in first):
    return False
  numeric = [
    all(_is_number(row[c]) for row in rest if row[c] not in MISSING)
    and any(row[c] not in MISSING for row in rest)
    for c in range(len(first))
  ]
  if any(numeric):
    return True
  return all(all(cell != row[c] for row in rest) for c, cell in enumerate(first))


def _label_index(label: str | int | None, header: list[str] | None, width: int, path: str) -> int:
  if label is None:
    return width - 1
  if isinstance(label, str) and not label.lstrip("-").isdigit():
    if header is None:
      raise DataError(
        f"{path} has no header row, so the label column cannot be named "
        f"{label!r}; give its index instead (0-based, -1 = last)."
      )
    if label not in header:
      raise DataError(f"{path} has no column {label!r}; its columns are {', '.join(header)}.")
    return header.index(label)
  index = int(label)
  if not -width <= index < width:
    raise DataError(f"{path}: label column {index} is out of range for its {width} columns.")
  return index % width


def _csv_part(path: str, delimiter: str | None, label: str | int | None):
  """(feature rows, labels, line numbers, header) of one CSV file."""
  rows, lines = read_table(path, delimiter)
  header = None
  if _looks_like_header(rows):
    header, rows, lines = rows[0], rows[1:], lines[1:]
  index = _label_index(label, header, len(rows[0]), path)
  labels = [row[index] for row in rows]
  features = [row[:index] + row[index + 1 :] for row in rows]
  for value, line in zip(labels, lines, strict=True):
    if value in MISSING:
      raise DataError(f"{path} line {line}: the label is missing ({value!r}).")
  return features, labels, lines, header


def load_csv(
  path: str,
  *,
  label: str | int | None = None,
  test: str | None = None,
  delimiter: str | None = None,
  test_fraction: float = 0.2,
  seed: int = 0,
) -> ArrayDataset:
  """Any CSV table: one label column (a name from the header or an index; default the last),
  every other column a feature, preprocessed as the UCI sets are (numeric or categorical columns,
  missing values imputed and standardization fit on the training rows only). The delimiter is
  detected (`,` `;` tab `|`, else whitespace) and so is a header row. String or integer labels
  become 0..K-1 in sorted order. `test` is a held-out file of the same layout (its labels must
  occur in training); without it a seeded, stratified `test_fraction` of the rows is held out."""
  delimiter = delimiter or sniff_delimiter(path)
  features, labels, lines, header = _csv_part(path, delimiter, label)
  parts = [(path, features, lines)]
  if test is not None:
    test_features, test_labels, test_lines, test_header = _csv_part(test, delimiter, label)
    if (header is None) != (test_header is None) or (header and header != test_header):
      raise DataError(
        f"{test} does not have the columns of {path} "
        f"({test_header or 'no header'} vs {header or 'no header'})."
      )
    if len(test_features[0]) != len(features[0]):
      raise DataError(
        f"{test} has {len(test_features[0]) + 1} columns; {path} has {len(features[0]) + 1}."
      )
    known = set(labels)
    unseen = [
      (value, line)
      for value, line in zip(test_labels, test_lines, strict=True)
      if value not in known
    ]
    if unseen:
      raise DataError(f"{test} line {unseen[0][1]}: label {unseen[0][0]!r} never occurs in {path}.")
    parts.append((test, test_features, test_lines))
  check_columns(parts)
  numeric = all(_is_number(value) for value in labels)
  classes = sorted(set(labels), key=float if numeric else str)
  if len(classes) < 2:
    raise DataError(
      f"{path}: the label column holds one class ({classes[0]!r}); a classifier needs two or more."
    )
  label_ids = {value: index for index, value in enumerate(classes)}
  to_ids = lambda values: np.asarray([label_ids[v] for v in values], np.int32)
  if test is not None:
    train_rows, test_rows, train_labels, test_labels = features, test_features, labels, test_labels
  else:
    train_index, test_index = stratified_split(to_ids(labels), test_fraction, seed)
    train_rows, test_rows = [features[i] for i in train_index], [features[i] for i in test_index]
    train_labels = [labels[i] for i in train_index]
    test_labels = [labels[i] for i in test_index]
  train_x, test_x = preprocess_columns(train_rows, test_rows, path)
  return ArrayDataset(
    f"csv:{os.path.basename(path)}",
    {"train": (train_x, to_ids(train_labels)), "test": (test_x, to_ids(test_labels))},
    len(classes),
    tuple(classes),
    source=path,
  )
