"""The dataset invariants (mixupe_jax.data.invariants), table-driven: each violation applied to
every format that can express it, loaded through `data.load` as a config names it, must fail at
load with a DataError naming the dataset (its format's name or its file) and the split; archives
keep working beside the entries operating systems add; a non-finite loss at the first step
blames the data, not training."""

import io
import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from mixupe_jax import data
from mixupe_jax.data import DataError, invariants
from test_bad_inputs import (cifar_folder, fsdd_folder, idx_folder, image_folder, iris_folder,
                             planetoid_folder, png)
from test_data_formats import write_idx


def npz(root, x_train, y_train, x_test, y_test):
  path = root / "arrays.npz"
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return f"npz:{path}"


def npy(root, x_train, y_train, x_test, y_test):
  folder = root / "arrays"
  folder.mkdir()
  for key, value in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items():
    np.save(folder / f"{key}.npy", value)
  return f"npy:{folder}"


ROWS = np.arange(24, dtype=np.float32).reshape(6, 4)


def arrays_case(writer, x_test=ROWS[:2], y_train=(0, 1, 0, 1, 0, 1), y_test=(0, 1),
                x_train=ROWS):
  return lambda root: writer(root, np.asarray(x_train), np.asarray(y_train),
                             np.asarray(x_test), np.asarray(y_test))


def csv_case(test_rows):
  """A csv: table and a held-out test file (`test_rows`, label last)."""
  def build(root):
    train = "\n".join(f"{i},{i * 2},{'ab'[i % 2]}" for i in range(8))
    (root / "train.csv").write_text(train + "\n")
    (root / "test.csv").write_text("\n".join(test_rows) + ("\n" if test_rows else ""))
    return f"csv:{root / 'train.csv'}:test={root / 'test.csv'}"
  return build


def idx_case(train_images=(4, 2, 2), test_images=(2, 2, 2), **labels):
  def build(root):
    idx_folder(root, **labels)
    for prefix, shape in (("train", train_images), ("t10k", test_images)):
      write_idx(root / f"{prefix}-images-idx3-ubyte", np.zeros(shape, np.uint8))
    return f"idx:{root}"
  return build


def image_case(zipped, test_size=4, classes=("cat", "dog"), test_classes=None):
  def build(root):
    folder = root / "images"
    image_folder(folder, splits=("train",), classes=classes)
    image_folder(folder, splits=("test",), classes=test_classes or classes, size=test_size)
    if not zipped:
      return f"imagefolder:{folder}"
    path = root / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
      for file in sorted(folder.rglob("*.png")):
        archive.write(file, file.relative_to(folder).as_posix())
    return f"imagefolder:{path}"
  return build


def cifar_case(labels, test_labels=None):
  def build(root):
    cifar_folder(root, labels=labels)
    if test_labels is not None:
      batch = {b"data": np.zeros((len(test_labels), 3072), np.uint8), b"labels": list(test_labels)}
      (root / "test_batch").write_bytes(pickle.dumps(batch))
    return f"cifar_pickle:{root}"
  return build


def fsdd_case(names):
  return lambda root: f"fsdd:{fsdd_folder(root, names=names)}"


def iris_case(edit):
  return lambda root: f"uci:iris:{iris_folder(root, edit)}"


def planetoid_case(edit):
  return lambda root: f"planetoid:cora:{planetoid_folder(root, edit=edit)}"


def nan_feature(parts, index):
  parts["allx"] = parts["allx"].tolil()
  parts["allx"][3, 2] = np.nan
  parts["allx"] = parts["allx"].tocsr()


def one_training_class(parts, index):
  parts["ally"][:2] = np.eye(7)[[0, 0]]


def unseen_test_class(parts, index):
  parts["ally"] = np.eye(7)[np.arange(10) % 2]  # Training and validation nodes: classes 0, 1.
  parts["ty"] = np.eye(7)[[2, 2]]


def no_validation_nodes(parts, index):
  """allx holds the 2 training nodes only, so the standard validation nodes (after them in
  allx) do not exist: a 4-node graph, test nodes 2 and 3."""
  parts["allx"], parts["ally"] = parts["x"], parts["y"]
  parts["ty"] = np.eye(7)[[0, 1]]
  parts["graph"] = {node: [(node + 1) % 4] for node in range(4)}
  return [3, 2]


def tiny_imagenet_case(test_size):
  """Tiny-ImageNet's layout: train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
  def build(root):
    path = root / "tiny.zip"
    jpeg = _jpeg
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("tiny-imagenet-200/wnids.txt", "n01\nn02\n")
      for wnid in ("n01", "n02"):
        archive.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_0.JPEG", jpeg(64))
      archive.writestr("tiny-imagenet-200/val/images/val_0.JPEG", jpeg(test_size))
      archive.writestr("tiny-imagenet-200/val/val_annotations.txt",
                       "val_0.JPEG\tn01\t0\t0\t8\t8\n")
    return f"tinyimagenet:{path}"
  return build


def _jpeg(size):
  buffer = io.BytesIO()
  Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(buffer, format="JPEG")
  return buffer.getvalue()


TEST_SPLIT = r"(test|t10k)"
# (invariant, format, build(tmp_path) -> spec, regex the message must match: the dataset and the
# split). Formats that cannot express an invariant are absent from its rows: FSDD, Speech Commands
# and TFDS audio clip every recording to one spectrogram shape, CIFAR pickles hold 32x32x3 rows,
# integer pixel and wav formats cannot hold a NaN.
CASES = [
    # 1. Every split's examples share one shape.
    ("shape", "idx", idx_case(test_images=(2, 3, 3)),
     r"idx test \(.*\): example 0 has shape \(3, 3, 1\), but the training examples have "
     r"\(2, 2, 1\)"),
    ("shape", "imagefolder", image_case(zipped=False, test_size=5),
     r"imagefolder test \(.*images\): example 0 has shape \(5, 5, 3\).*\(4, 4, 3\)"),
    ("shape", "imagefolder zip", image_case(zipped=True, test_size=5),
     r"imagefolder test \(.*images.zip\): example 0 has shape \(5, 5, 3\)"),
    # Tiny-ImageNet's loader holds every image to 64x64 and names the file.
    ("shape", "tinyimagenet", tiny_imagenet_case(test_size=32),
     r"tiny.zip:tiny-imagenet-200/val/images/val_0.JPEG: expected a 64x64 RGB image, got "
     r"\(32, 32, 3\)"),
    ("shape", "npz", arrays_case(npz, x_test=np.zeros((2, 3), np.float32)),
     r"arrays.npz: x_train rows have shape \(4,\), x_test rows \(3,\)"),
    ("shape", "npy", arrays_case(npy, x_test=np.zeros((2, 3), np.float32)),
     r"arrays: x_train rows have shape \(4,\), x_test rows \(3,\)"),
    # 2. Features are finite.
    ("finite", "npz", arrays_case(npz, x_test=np.array([[0, 1, np.inf, 3], [0, 0, 0, 0]],
                                                       np.float32)),
     r"arrays.npz x_test: a non-finite value at \(0, 2\)"),
    # ("nan" in a CSV cell is a missing value, imputed from the training rows.)
    ("finite", "csv", csv_case(["1,inf,a", "2,3,b"]), r"test.csv.*(inf|finite)"),
    ("finite", "uci", iris_case(lambda rows: rows[3].__setitem__(1, "inf")),
     r"iris.csv.*(inf|finite)"),
    ("finite", "planetoid", planetoid_case(nan_feature),
     r"cora nodes \(.*\): input 3 holds nan"),
    # 3. Labels lie in the training classes.
    ("training classes", "idx", idx_case(train_labels=(0, 1, 3, 3), test_labels=(2, 1)),
     r"idx test \(.*\): example 0 has label 2, a class with no training example"),
    ("training classes", "idx beyond", idx_case(train_labels=(0, 1, 2, 3), test_labels=(0, 7)),
     r"t10k-labels.*label 7 \(example 1\) is not one of the training classes"),
    ("training classes", "imagefolder", image_case(zipped=False, test_classes=("cow",)),
     r"images: the classes of test differ from those of train"),
    ("training classes", "cifar_pickle", cifar_case(labels=(0, 1, 1), test_labels=(0, 1, 2)),
     r"cifar10 test \(.*\): example 2 has label 2 \('c'\), a class with no training example"),
    ("training classes", "fsdd", fsdd_case(("3_bob_0.wav", "1_bob_7.wav", "2_bob_8.wav")),
     r"fsdd test \(.*\): example 0 has label 3 \('3'\), a class with no training example"),
    ("training classes", "npz", arrays_case(npz, y_train=(0, 1, 0, 1, 0, 1), y_test=(0, 2)),
     r"arrays.npz.*(test|y_test).*2"),
    ("training classes", "csv", csv_case(["1,2,c", "2,3,a"]), r"test.csv.*'c'"),
    ("training classes", "planetoid", planetoid_case(unseen_test_class),
     r"cora test \(.*\): node 1[01] has label 2, a class with no training example"),
    # 4. At least 2 classes have training examples.
    ("two classes", "idx", idx_case(train_labels=(0, 0, 0, 0), test_labels=(0, 0)),
     r"idx train \(.*\): the training examples have 1 class \(0\)"),
    ("two classes", "imagefolder", image_case(zipped=False, classes=("cat",)),
     r"imagefolder train \(.*\): the training examples have 1 class \(0 \('cat'\)\)"),
    ("two classes", "cifar_pickle", cifar_case(labels=(0, 0, 0)),
     r"cifar10 train \(.*\): the training examples have 1 class \(0 \('a'\)\)"),
    ("two classes", "fsdd", fsdd_case(("3_bob_0.wav", "3_bob_7.wav")),
     r"fsdd train \(.*\): the training examples have 1 class \(3 \('3'\)\)"),
    ("two classes", "uci", iris_case(lambda rows: [row.__setitem__(-1, "c0") for row in rows]),
     r"uci:iris train \(.*\): the training examples have 1 class"),
    ("two classes", "npz", arrays_case(npz, y_train=(1, 1, 1, 1, 1, 1), y_test=(1, 1)),
     r"arrays:arrays.npz train \(.*\): the training examples have 1 class"),
    ("two classes", "planetoid", planetoid_case(one_training_class),
     r"cora train \(.*\): the training examples have 1 class \(0\)"),
    # 5. No split is empty.
    ("empty split", "idx", idx_case(test_images=(0, 2, 2), test_labels=()),
     r"idx test \(.*\): the split is empty"),
    ("empty split", "npz", arrays_case(npz, x_test=np.zeros((0, 4), np.float32),
                                       y_test=np.zeros(0, np.int64)),
     r"arrays:arrays.npz test \(.*\): the split is empty|x_test.*0"),
    ("empty split", "csv", csv_case([]), r"test.csv.*(empty|no rows|no data)"),
    ("empty split", "planetoid", planetoid_case(no_validation_nodes),
     r"cora validation \(.*\): the split has no nodes"),
]


@pytest.mark.parametrize("invariant, kind, build, message", CASES,
                         ids=[f"{invariant}-{kind}" for invariant, kind, *_ in CASES])
def test_a_broken_invariant_fails_at_load_naming_the_dataset_and_split(invariant, kind, build,
                                                                      message, tmp_path):
  spec = build(tmp_path)
  with pytest.raises(DataError, match=message):
    data.load(spec)


def test_every_invariant_is_checked_for_every_format_that_can_express_it():
  """The table above covers each invariant on idx, image folders and npz at least, and every
  format in at least one row (sklearn's bundled sets and the fixed-shape audio formats aside)."""
  invariants_covered = {invariant for invariant, *_ in CASES}
  assert invariants_covered == {"shape", "finite", "training classes", "two classes",
                                "empty split"}
  kinds = {kind.split()[0] for _, kind, *_ in CASES}
  assert {"idx", "imagefolder", "tinyimagenet", "cifar_pickle", "fsdd", "uci", "csv", "npz",
          "npy", "planetoid"} <= kinds


def test_the_invariants_hold_for_arrays_built_in_code():
  """ArrayDataset built directly (as a user's own loader would) is checked the same way."""
  x = np.zeros((4, 3), np.float32)
  with pytest.raises(DataError, match=r"mine test: example 0 has shape \(2,\)"):
    data.ArrayDataset("mine", {"train": (x, np.array([0, 1, 0, 1])),
                               "test": (np.zeros((2, 2), np.float32), np.array([0, 1]))}, 2)
  with pytest.raises(DataError, match=r"mine validation: example 1 has label 2 \('c'\)"):
    data.ArrayDataset("mine", {"train": (x, np.array([0, 1, 0, 1])),
                               "validation": (x[:2], np.array([0, 2]))}, 3, ("a", "b", "c"))
  data.ArrayDataset("mine", {"train": (x, np.array([0, 1, 0, 1]))}, 2)  # Valid: no error.


def test_carved_splits_hold_the_invariants_too(tmp_path):
  """A validation split that takes every example of a class leaves it with no training example:
  an error at set-up naming the split, not a class the model never trains on."""
  from mixupe_jax.train import inputs
  from mixupe_jax.train.defaults import default_config
  spec = arrays_case(npz, x_train=ROWS[:5], y_train=(0, 0, 1, 1, 2), x_test=ROWS[:3],
                     y_test=(0, 1, 2))(tmp_path)
  config = default_config()
  config.dataset, config.validation_fraction = spec, 0.6  # Class 2's one example: round(0.6) = 1.
  # The test split's class 2 is named first (splits are checked in order: train, test,
  # validation).
  with pytest.raises(DataError, match=r"arrays.npz test \(.*\): example 2 has label 2, a "
                                      r"class with no training example"):
    inputs.build_inputs(config, local_batch_size=2, local_eval_batch_size=2, process_index=0,
                        process_count=1)


# --- archives as users make them --------------------------------------------------------------

def _add_system_entries(archive, folder=""):
  """What macOS's Finder, its zip and Windows Explorer add beside the data."""
  archive.writestr(f"__MACOSX/{folder}._0.png", b"\x00\x05\x16\x07 resource fork")
  archive.writestr(f"{folder}.DS_Store", b"Bud1 folder settings")
  archive.writestr(f"{folder}._0.png", b"\x00\x05\x16\x07 AppleDouble")
  archive.writestr(f"{folder}Thumbs.db", b"\xd0\xcf\x11\xe0 thumbnails")
  archive.writestr(f"{folder}desktop.ini", b"[.ShellClassInfo]")


def test_an_image_zip_from_a_desktop_archiver_loads_only_its_images(tmp_path):
  path = tmp_path / "images.zip"
  with zipfile.ZipFile(path, "w") as archive:
    for split in ("train", "test"):
      for label, name in enumerate(("cat", "dog")):
        archive.writestr(f"pets/{split}/{name}/0.png", png(np.full((4, 4, 3), 50 * label,
                                                                   np.uint8)))
        _add_system_entries(archive, f"pets/{split}/{name}/")
  dataset = data.load(f"imagefolder:{path}")
  assert dataset.inputs("train").shape == (2, 4, 4, 3) and len(dataset.labels("test")) == 2
  assert dataset.class_names == ("cat", "dog")


def test_an_image_folder_with_hidden_and_system_files_loads_only_its_images(tmp_path):
  root = image_folder(tmp_path / "images")
  for folder in (root, root / "train" / "cat", root / "test" / "dog"):
    (folder / ".DS_Store").write_bytes(b"Bud1")
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
  (root / "train" / "cat" / ".hidden").mkdir()
  (root / "train" / "cat" / ".hidden" / "1.png").write_bytes(png(np.zeros((4, 4, 3), np.uint8)))
  dataset = data.load(f"imagefolder:{root}")
  assert len(dataset.labels("train")) == 2 and len(dataset.labels("test")) == 2


def test_an_fsdd_zip_with_resource_forks_loads_only_its_recordings(tmp_path):
  from test_data_formats import write_wav
  path = tmp_path / "fsdd.zip"
  with zipfile.ZipFile(path, "w") as archive:
    for name in ("1_bob_0.wav", "2_bob_1.wav", "1_bob_7.wav", "2_bob_8.wav"):
      buffer = io.BytesIO()
      write_wav(buffer, 8000, np.zeros(800))
      archive.writestr(f"recordings/{name}", buffer.getvalue())
      archive.writestr(f"__MACOSX/recordings/._{name}", b"\x00\x05\x16\x07")
      archive.writestr(f"recordings/._{name}", b"\x00\x05\x16\x07")
  dataset = data.load(f"fsdd:{path}")
  np.testing.assert_array_equal(dataset.labels("test"), [1, 2])
  np.testing.assert_array_equal(dataset.labels("train"), [1, 2])


@pytest.mark.parametrize("name, skipped", [
    ("__MACOSX/train/cat/._0.png", True), ("train/cat/._0.png", True), (".DS_Store", True),
    ("train/.DS_Store", True), ("train/cat/Thumbs.db", True), ("train/DESKTOP.INI", True),
    ("train/.hidden/0.png", True), ("train/cat/0.png", False), ("train/cat_0.png", False),
    ("recordings/1_bob_0.wav", False), ("_background_noise_/white.wav", False)])
def test_which_entries_are_system_entries(name, skipped):
  assert data.base.is_system_entry(name) is skipped


# --- errors that come from data -----------------------------------------------------------------

def test_a_non_finite_first_loss_blames_the_data_and_never_prints_step_none(tmp_path):
  """Values near float32's largest overflow the first forward pass: the loss of the very first
  batch is not finite. The message names step 1 and the dataset, suspects its inputs or labels,
  and says there is no checkpoint yet."""
  from mixupe_jax.train import train_and_evaluate
  from mixupe_jax.train.defaults import default_config
  rows = np.full((64, 4), 3e38, np.float32)
  spec = arrays_case(npz, x_train=rows, y_train=np.arange(64) % 2, x_test=rows[:8],
                     y_test=np.arange(8) % 2)(tmp_path)
  config = default_config()
  config.dataset, config.method, config.num_train_steps = spec, "erm", 3
  config.batch_size, config.eval_batch_size, config.progress_bar = 32, 8, False
  config.mixing_group_size = 4  # 8 simulated devices hold 4 rows each.
  with pytest.raises(FloatingPointError) as raised:
    train_and_evaluate(config, str(tmp_path / "run"))
  message = str(raised.value)
  assert "at step 1 (the first batch, before any update)" in message
  assert f"the inputs or labels of {spec} may be non-finite" in message
  assert "no checkpoint yet" in message and "None" not in message


def test_a_later_non_finite_loss_names_the_last_good_checkpoint():
  from mixupe_jax.train.actions import non_finite_loss_message
  message = non_finite_loss_message(float("nan"), 7, "sklearn:digits", 5, "/w/checkpoints")
  assert message == ("The training loss is nan at step 7 (the update from step 6); the update "
                     "diverged (a smaller learning_rate or eta may help). Training stopped; the "
                     "last good checkpoint is step 5 in /w/checkpoints.")
  assert invariants.check_labels_in(np.array([0, 1]), {0, 1}, (), "x") is None


def test_a_named_uci_set_of_another_layout_is_refused_naming_file_expected_and_found(tmp_path):
  """uci:iris read from a CSV whose label is the first column (the last is then petal width):
  150 rows, 4 columns, but 22 "classes", refused with the file, the 3 classes expected and the 22
  found; a column too many is refused the same way. The generic csv: form stays free."""
  rng = np.random.default_rng(1)
  widths = [f"{w:.1f}" for w in rng.choice(np.arange(0.1, 2.3, 0.1), 150)]
  species = [f"c{i % 3}" for i in range(150)]
  rows = [[name] + [f"{v:.2f}" for v in rng.normal(5, 1, 3)] + [width]
          for name, width in zip(species, widths, strict=True)]
  (tmp_path / "iris.csv").write_text("\n".join(",".join(row) for row in rows) + "\n")
  found = len(set(widths))
  assert found > 3
  with pytest.raises(DataError, match=rf"iris.csv: UCI iris has 3 classes, found {found}"):
    data.load(f"uci:iris:{tmp_path}")
  assert data.load(f"csv:{tmp_path / 'iris.csv'}").num_classes == found
  wide = tmp_path / "wide"
  wide.mkdir()
  iris_folder(wide, lambda rows: [row.insert(0, "1.0") for row in rows])
  with pytest.raises(DataError, match=r"wide/iris.csv: UCI iris has 4 features, found 5"):
    data.load(f"uci:iris:{wide}")


def test_an_empty_recording_is_refused_naming_it(tmp_path):
  """A wav with no samples in the FSDD folder is a DataError naming the file, not a dataset."""
  fsdd_folder(tmp_path, names=("1_bob_0.wav", "2_bob_7.wav"))
  import scipy.io.wavfile
  scipy.io.wavfile.write(tmp_path / "3_bob_8.wav", 8000, np.zeros(0, np.int16))
  with pytest.raises(DataError, match=r"3_bob_8.wav holds no samples"):
    data.load(f"fsdd:{tmp_path}")
