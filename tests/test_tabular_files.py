"""Any CSV (`csv:`) and prepared arrays (`npz:`, `npy:`): layouts people write, read as the UCI
sets are (train-only imputation and standardization, seeded stratified split), and trained."""

import numpy as np
import pytest

from mixupe_jax import data
from mixupe_jax.data import DataError, arrays, tabular
from mixupe_jax.train.defaults import default_config
from mixupe_jax.train.loop import train_and_evaluate

HEADER = "width;colour;height;species"
ROWS = ["1.0;red;10;setosa", "2.0;blue;?;versicolor", ";red;12;setosa", "4.0;green;13;virginica",
        "5.0;blue;14;versicolor", "6.0;red;15;virginica", "7.0;green;16;setosa",
        "8.0;blue;17;versicolor", "9.0;red;18;virginica", "10.0;green;19;setosa"]


def write(path, lines):
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_csv_with_header_semicolons_missing_cells_and_string_labels(tmp_path):
  path = write(tmp_path / "plants.csv", [HEADER] + ROWS)
  dataset = data.load(f"csv:{path}")
  assert dataset.class_names == ("setosa", "versicolor", "virginica")
  assert dataset.num_classes == 3
  train_x, train_y = dataset.splits["train"]
  test_x, test_y = dataset.splits["test"]
  # Classes of 4, 3 and 3 rows: round(0.2 * n) = 1 of each is held out.
  assert len(train_y) == 7 and sorted(test_y.tolist()) == [0, 1, 2]
  # width and height numeric, colour one-hot over 3 values: 5 features; standardized on train.
  assert train_x.shape[1] == 5
  np.testing.assert_allclose(train_x[:, [0, 4]].mean(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(train_x[:, [0, 4]].std(0), 1.0, atol=1e-6)
  assert np.all(np.isfinite(train_x)) and np.all(np.isfinite(test_x))
  # The same split for the same seed, another for another seed.
  again = tabular.load_csv(path)
  np.testing.assert_array_equal(again.labels("test"), test_y)


def test_csv_label_by_name_or_index_and_a_held_out_file(tmp_path):
  lines = [line.replace(";", ",") for line in [HEADER] + ROWS]
  # The label in the first column, named; the held-out file has the same layout.
  reordered = [",".join([line.split(",")[3]] + line.split(",")[:3]) for line in lines]
  train = write(tmp_path / "train.csv", reordered[:8])  # The header and 7 rows.
  test = write(tmp_path / "test.csv", [reordered[0]] + reordered[8:])  # The header and 3 rows.
  by_name = data.load(f"csv:{train}:label=species:test={test}")
  by_index = data.load(f"csv:{train}:label=0:test={test}")
  assert by_name.class_names == by_index.class_names == ("setosa", "versicolor", "virginica")
  np.testing.assert_array_equal(by_name.labels("test"), [1, 2, 0])  # versicolor, virginica, ...
  np.testing.assert_array_equal(by_name.inputs("test"), by_index.inputs("test"))
  assert by_name.inputs("train").shape == (7, 5)


def test_csv_without_header_with_integer_labels_and_tabs(tmp_path):
  rng = np.random.default_rng(0)
  lines = ["\t".join([f"{v:.3f}" for v in rng.normal(size=3)] + [str(i % 2 * 7)])
           for i in range(20)]
  dataset = data.load(f"csv:{write(tmp_path / 'numbers.tsv', lines)}")
  assert dataset.class_names == ("0", "7") and dataset.inputs("train").shape == (16, 3)


@pytest.mark.parametrize("lines,spec_suffix,message", [
    ([HEADER] + ROWS[:3] + ["4.0;green;virginica"] + ROWS[4:], "",
     r"data row 5 has 3 values; the others have 4 \(line 5\)"),
    ([HEADER] + ROWS, ":label=kind", r"has no column 'kind'; its columns are width, colour"),
    (ROWS, ":label=species", r"has no header row, so the label column cannot be named"),
    ([HEADER] + ROWS, ":label=9", r"label column 9 is out of range for its 4 columns"),
    ([HEADER] + ROWS, ":lable=species", r"'lable=species' is not an option; csv: takes label="),
    ([HEADER] + [row.replace("10;", "ten;") if row.startswith("1.0") else row for row in ROWS],
     "", r"line 2, column 3: 'ten' in a column where 8 of 9 values are numbers"),
    ([HEADER] + [row.rsplit(";", 1)[0] + ";" for row in ROWS[:1]] + ROWS[1:], "",
     r"line 2: the label is missing"),
    ([HEADER] + [row.rsplit(";", 1)[0] + ";setosa" for row in ROWS], "",
     r"the label column holds one class \('setosa'\)"),
], ids=["ragged row", "unknown column", "named label without header", "index out of range",
        "unknown option", "stray token", "missing label", "one class"])
def test_csv_mistakes_are_clear_errors(lines, spec_suffix, message, tmp_path):
  path = write(tmp_path / "bad.csv", lines)
  with pytest.raises(DataError, match=message):
    data.load(f"csv:{path}{spec_suffix}")


def test_a_test_file_with_an_unseen_label_is_an_error(tmp_path):
  train = write(tmp_path / "train.csv", [HEADER] + ROWS)
  test = write(tmp_path / "test.csv", [HEADER, "1.0;red;10;rose"])
  with pytest.raises(DataError, match=r"test.csv line 2: label 'rose' never occurs in"):
    data.load(f"csv:{train}:test={test}")


def test_npz_and_npy_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 4)).astype(np.float64)
  y = np.arange(50) % 5
  np.savez(tmp_path / "xy.npz", x=x, y=y)
  split = data.load(f"npz:{tmp_path / 'xy.npz'}")
  assert split.num_classes == 5 and split.inputs("train").dtype == np.float32
  rows = np.concatenate([split.inputs("train"), split.inputs("test")])
  np.testing.assert_allclose(np.sort(rows, 0), np.sort(x.astype(np.float32), 0))
  assert np.bincount(split.labels("test")).tolist() == [2] * 5  # Stratified 20%.
  images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
  names = np.array(["cat", "dog", "cat", "emu", "dog", "cat"])
  folder = tmp_path / "prepared"
  folder.mkdir()
  for key, value in dict(x_train=images[:4], y_train=names[:4], x_test=images[4:],
                         y_test=names[4:]).items():
    np.save(folder / f"{key}.npy", value)
  given = data.load(f"npy:{folder}")
  np.testing.assert_array_equal(given.inputs("train"), images[:4])  # uint8 images kept.
  assert given.class_names == ("cat", "dog", "emu")
  np.testing.assert_array_equal(given.labels("test"), [1, 0])


@pytest.mark.parametrize("arrays_,message", [
    (dict(x=np.zeros((3, 2)), labels=np.zeros(3, int)), r"has arrays \['labels', 'x'\]; expected"),
    (dict(x=np.zeros((3, 2)), y=np.zeros(4, int)), r"x has 3 rows but y has 4"),
    (dict(x=np.array([[0.0], [np.inf]]), y=np.array([0, 1])), r"x: a non-finite value at \(1, 0\)"),
    (dict(x=np.zeros((2, 1)), y=np.array([0.0, 1.0])), r"labels of dtype float64; expected"),
    (dict(x_train=np.zeros((2, 1)), y_train=np.array([0, 1]), x_test=np.zeros((1, 1)),
          y_test=np.array([4])), r"test label 4 is not one of the training classes 0..1"),
    (dict(x_train=np.zeros((2, 1)), y_train=np.array([0, 1]), x_test=np.zeros((1, 2)),
          y_test=np.array([0])), r"x_train rows have shape \(1,\), x_test rows \(2,\)"),
], ids=["wrong keys", "lengths", "non-finite", "float labels", "unseen test label", "shapes"])
def test_array_mistakes_are_clear_errors(arrays_, message, tmp_path):
  np.savez(tmp_path / "a.npz", **arrays_)
  with pytest.raises(DataError, match=message):
    arrays.load_arrays(str(tmp_path / "a.npz"))


@pytest.mark.slow
def test_a_csv_trains_end_to_end(tmp_path):
  rng = np.random.default_rng(1)
  lines = ["a,b,colour,label"] + [
      f"{rng.normal() + 2 * (i % 2):.3f},{rng.normal():.3f},{'red' if i % 3 else 'blue'},"
      f"{'yes' if i % 2 else 'no'}" for i in range(200)]
  config = default_config()
  config.dataset = f"csv:{write(tmp_path / 'table.csv', lines)}"
  config.batch_size, config.eval_batch_size, config.num_epochs = 16, 40, 8
  config.mixing_group_size = 2  # 8 simulated devices hold 2 rows each.
  config.learning_rate, config.progress_bar = 0.05, False
  summary = train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["test"]["accuracy"] > 0.7  # The classes differ by 2 standard deviations.
