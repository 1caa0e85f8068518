"""Bad inputs, table-driven: every loader, the mixing ops and the config. Each case builds a
broken input in a temporary folder and asserts a clear error that names the file, the value or
the field, or checks the documented handling (integer images are mixed in float32)."""

import io
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from PIL import Image

from mixupe_jax import data, mixing
from mixupe_jax.data import ArrayDataset, DataError, audio, graphs, idx, images, tabular
from mixupe_jax.train import validation
from mixupe_jax.train.defaults import default_config
from test_data_formats import write_idx, write_wav


# --- writers of small, valid datasets that the cases then break -------------------------------

def idx_folder(root, train_labels=(0, 1, 2, 3), test_labels=(0, 1), float_pixels=False):
  for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
    path = root / f"{prefix}-images-idx3-ubyte"
    if float_pixels:  # Type code 0x0D: big-endian float32.
      header = bytes([0, 0, 0x0D, 3]) + b"".join(int(n).to_bytes(4, "big")
                                                  for n in (len(labels), 2, 2))
      path.write_bytes(header + np.zeros((len(labels), 2, 2), ">f4").tobytes())
    else:
      write_idx(path, np.zeros((len(labels), 2, 2), np.uint8))
    write_idx(root / f"{prefix}-labels-idx1-ubyte", np.asarray(labels, np.uint8))
  return str(root)


def png(array, mode=None):
  buffer = io.BytesIO()
  Image.fromarray(array, mode).save(buffer, format="PNG")
  return buffer.getvalue()


def image_folder(root, splits=("train", "test"), classes=("cat", "dog"), size=4):
  for split in splits:
    for index, name in enumerate(classes):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      (folder / "0.png").write_bytes(png(np.full((size, size, 3), 40 * index, np.uint8)))
  return root


def cifar_folder(root, labels=(0, 1, 2), data=None,
                 names=tuple(bytes([c]) for c in b"abcdefghij")):
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batch = {b"data": np.zeros((3, 3072), np.uint8) if data is None else data,
             b"labels": list(labels)}
    (root / name).write_bytes(pickle.dumps(batch))
  (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": list(names)}))
  return str(root)


def fsdd_folder(root, names=("1_bob_0.wav", "2_bob_7.wav"), rate=8000, channels=1):
  for name in names:
    write_wav(root / name, rate, np.zeros(800 * channels), channels=channels)
  return str(root)


def iris_folder(root, edit=None):
  """uci:iris with its 150 rows (4 numbers and a label); `edit(rows)` breaks them."""
  rng = np.random.default_rng(0)
  rows = [[f"{v:.2f}" for v in rng.normal(5, 1, 4)] + [f"c{i % 3}"] for i in range(150)]
  if edit:
    edit(rows)
  (root / "iris.csv").write_text("\n".join(",".join(row) for row in rows) + "\n")
  return str(root)


def arcene_folder(root, valid_labels=("1", "-1")):
  (root / "arcene_train.data").write_text("\n".join("1 2 3" for _ in range(100)) + "\n")
  (root / "arcene_valid.data").write_text("\n".join("1 2 3" for _ in range(100)) + "\n")
  (root / "arcene_train.labels").write_text("\n".join(["1", "-1"] * 50) + "\n")
  (root / "arcene_valid.labels").write_text(
      "\n".join(list(valid_labels) * (100 // len(valid_labels))) + "\n")
  return str(root)


def planetoid_folder(root, name="cora", edit=None):
  """A 12-node graph in the Planetoid layout: 2 labelled training nodes, 10 'allx' nodes (of which
  the first 2 train), 500-node validation shrunk to what exists, test nodes 10 and 11."""
  rng = np.random.default_rng(0)
  # Cora's published width (1,433 features, 7 label columns), three classes present.
  width, classes = 1433, 3
  onehot = lambda ids: np.eye(7)[np.asarray(ids) % classes]
  parts = {
      "x": scipy.sparse.csr_matrix(rng.random((2, width))), "y": onehot([0, 1]),
      "allx": scipy.sparse.csr_matrix(rng.random((10, width))), "ally": onehot(range(10)),
      "tx": scipy.sparse.csr_matrix(rng.random((2, width))), "ty": onehot([1, 2]),
      "graph": {node: [(node + 1) % 12] for node in range(12)},
  }
  index = [11, 10]
  if edit:
    index = edit(parts, index) or index
  for part, value in parts.items():
    (root / f"ind.{name}.{part}").write_bytes(pickle.dumps(value))
  (root / f"ind.{name}.test.index").write_text("\n".join(map(str, index)) + "\n")
  return str(root)


def zero_label(parts, index):
  parts["ally"][1] = 0


def index_out_of_range(parts, index):
  return [10, 99]


def neighbour_out_of_range(parts, index):
  parts["graph"][3] = [40]


def wrong_label_count(parts, index):
  parts["ty"] = parts["ty"][:1]


# --- the table ---------------------------------------------------------------------------------

def loader_cases():
  """(id, build(tmp_path) -> a call that must fail, error type, message regex)."""
  def corrupt_zip(root):
    path = root / "images.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
      for split in ("train", "test"):
        archive.writestr(f"{split}/cat/0.png", png(np.zeros((4, 4, 3), np.uint8)))
    raw = bytearray(path.read_bytes())
    raw[40:48] = b"\xff" * 8  # Inside the first member's local header.
    path.write_bytes(bytes(raw))
    return lambda: images.load_image_folder(str(path))

  def sixteen_bit(root):
    image_folder(root)
    wide = Image.fromarray(np.full((4, 4), 60000, np.uint16))
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    (root / "train" / "cat" / "0.png").write_bytes(buffer.getvalue())
    return lambda: images.load_image_folder(str(root))

  def two_sizes(root):
    image_folder(root)
    (root / "train" / "dog" / "1.png").write_bytes(png(np.zeros((5, 5, 3), np.uint8)))
    return lambda: images.load_image_folder(str(root))

  def corrupt_image(root):
    image_folder(root)
    (root / "test" / "dog" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return lambda: images.load_image_folder(str(root))

  def classes_differ(root):
    image_folder(root)
    image_folder(root, splits=("test",), classes=("cow",))
    return lambda: images.load_image_folder(str(root))

  def uci_cell(value, row=17, column=2):
    def build(root):
      def edit(rows):
        rows[row][column] = value
      return lambda: tabular.load_uci("iris", iris_folder(root, edit))
    return build

  def uci_missing_label(root):
    def edit(rows):
      rows[4][-1] = "?"
    return lambda: tabular.load_uci("iris", iris_folder(root, edit))

  def uci_ragged(root):
    def edit(rows):
      rows[9] = rows[9][:3]
    return lambda: tabular.load_uci("iris", iris_folder(root, edit))

  def uci_extra_row(root):
    def edit(rows):
      rows.append(rows[0])
    return lambda: tabular.load_uci("iris", iris_folder(root, edit))

  def cifar(**kwargs):
    return lambda root: (lambda: images.load_cifar_pickles(cifar_folder(root, **kwargs)))

  def cifar_missing_key(root):
    cifar_folder(root)
    (root / "data_batch_3").write_bytes(pickle.dumps({b"labels": [0]}))
    return lambda: images.load_cifar_pickles(str(root))

  def speech_without_lists(root):
    (root / "yes").mkdir()
    write_wav(root / "yes" / "a_nohash_0.wav", 16000, np.zeros(1600))
    return lambda: audio.load_speech_commands(str(root))

  def planetoid(edit):
    return lambda root: (lambda: graphs.load_planetoid(planetoid_folder(root, edit=edit), "cora"))

  def planetoid_garbage(root):
    planetoid_folder(root)
    (root / "ind.cora.allx").write_bytes(b"not a pickle")
    return lambda: graphs.load_planetoid(str(root), "cora")

  def planetoid_wrong_type(root):
    planetoid_folder(root)
    (root / "ind.cora.graph").write_bytes(pickle.dumps([1, 2, 3]))
    return lambda: graphs.load_planetoid(str(root), "cora")

  def planetoid_renamed(root):
    planetoid_folder(root, name="Cora")
    return lambda: graphs.load_planetoid(str(root), "cora")

  return [
      ("idx: test label 200 outside the 10 training classes",
       lambda root: lambda: idx.load_idx_dataset(idx_folder(root, tuple(range(10)), (1, 200))),
       DataError, r"t10k-labels-idx1-ubyte: label 200 \(example 1\) is not one of the training "
                  r"classes 0..9"),
      ("idx: float pixels",
       lambda root: lambda: idx.load_idx_dataset(idx_folder(root, float_pixels=True)),
       DataError, r"train-images-idx3-ubyte: images of type >f4; expected uint8"),
      ("idx: a missing labels file",
       lambda root: (idx_folder(root), os.remove(root / "t10k-labels-idx1-ubyte"),
                     lambda: idx.load_idx_dataset(str(root)))[-1],
       DataError, r"Missing idx file: neither t10k-labels-idx1-ubyte.gz nor t10k-labels"),
      ("idx: images and labels of different lengths",
       lambda root: (idx_folder(root), write_idx(root / "t10k-labels-idx1-ubyte",
                                                 np.zeros(5, np.uint8)),
                     lambda: idx.load_idx_dataset(str(root)))[-1],
       DataError, r"test: expected images \[N, H, W\] and labels \[N\], got \(2, 2, 2\) and"),
      ("idx: a file that is not idx",
       lambda root: ((root / "x").write_bytes(b"GIF89a...."), lambda: idx.read_idx(str(root / "x")))[-1],
       DataError, r"x is not an idx file: bad magic number 47494638"),
      ("imagefolder: corrupt image", corrupt_image, DataError,
       r"test/dog/0.png is not a readable image"),
      ("imagefolder: 16-bit pixels", sixteen_bit, DataError,
       r"train/cat/0.png has I;16 pixels \(more than 8 bits\)"),
      ("imagefolder: two image sizes", two_sizes, DataError,
       r"train: images of different shapes"),
      ("imagefolder: classes differ between splits", classes_differ, DataError,
       r"the classes of test differ from those of train"),
      ("imagefolder: no test folder",
       lambda root: (image_folder(root, splits=("train",)),
                     lambda: images.load_image_folder(str(root)))[-1],
       DataError, r"has no test folder of <class>/<image> files \(found: train\)"),
      ("imagefolder: a corrupt zip member", corrupt_zip, DataError,
       r"images.zip:train/cat/0.png cannot be read from the archive"),
      ("imagefolder: a tar file is neither folder nor zip",
       lambda root: ((root / "x.tar").write_bytes(b"\0" * 1024),
                     lambda: images.load_image_folder(str(root / "x.tar")))[-1],
       DataError, r"x.tar is neither a folder nor a zip file of <split>/<class>/<image>"),
      ("cifar: label 12 with 10 class names", cifar(labels=(0, 1, 12)), DataError,
       r"train: label 12 is not one of the 10 classes of .*batches.meta"),
      ("cifar: 3 class names, not CIFAR-10's 10", cifar(names=(b"a", b"b", b"c")), DataError,
       r"batches.meta: CIFAR-10 has 10 classes, found 3; is it the published file"),
      ("planetoid: cora with 5 features, not 1,433",
       planetoid(lambda parts, index: parts.update(
           {p: scipy.sparse.csr_matrix(parts[p].toarray()[:, :5]) for p in ("x", "tx", "allx")})),
       DataError, r"ind.cora.allx: Planetoid cora has 1433 features, found 5"),
      ("planetoid: cora with 12 nodes, not 2,708",
       planetoid(lambda parts, index: parts.update(x=parts["allx"][:3], y=parts["ally"][:3])),
       DataError, r"ind.cora.\*: Planetoid cora has 2708 nodes, found 12; is it the published "
       r"file, the whole set"),
      ("cifar: 3 images per batch, not 10,000", cifar(), DataError,
       r"CIFAR-10 has 50000 train rows, found 15; is it the published file, the whole set"),
      ("cifar: data of the wrong width", cifar(data=np.zeros((3, 100), np.uint8)), DataError,
       r"data_batch_1: expected uint8 data \[N, 3072\], got uint8 \(3, 100\)"),
      ("cifar: a batch without data", cifar_missing_key, DataError,
       r"data_batch_3: expected a dict with b'data' and b'labels'"),
      ("cifar: fewer labels than images", cifar(labels=(0, 1)), DataError,
       r"data_batch_1: \(2,\) labels for 3 images"),
      ("cifar: garbage pickle",
       lambda root: (cifar_folder(root), (root / "test_batch").write_bytes(b"junk"),
                     lambda: images.load_cifar_pickles(str(root)))[-1],
       DataError, r"test_batch is not a readable CIFAR pickle"),
      ("fsdd: no test recordings",
       lambda root: lambda: audio.load_fsdd(fsdd_folder(root, ("1_bob_7.wav", "2_bob_9.wav"))),
       DataError, r"holds no test recordings: FSDD's test split is index 0-4 .*2 training"),
      ("fsdd: no training recordings",
       lambda root: lambda: audio.load_fsdd(fsdd_folder(root, ("1_bob_0.wav",))),
       DataError, r"holds no \{digit\}_\{speaker\}_\{index\}.wav files with an index outside 0-4"),
      ("fsdd: wrong sample rate",
       lambda root: lambda: audio.load_fsdd(fsdd_folder(root, rate=44100)),
       DataError, r"1_bob_0.wav has sample rate 44100 Hz; expected 8000 Hz"),
      ("fsdd: stereo",
       lambda root: lambda: audio.load_fsdd(fsdd_folder(root, channels=2)),
       DataError, r"1_bob_0.wav has 2 channels; expected mono"),
      ("fsdd: a corrupt wav",
       lambda root: (fsdd_folder(root), (root / "2_bob_7.wav").write_bytes(b"RIFF0000WAVE"),
                     lambda: audio.load_fsdd(str(root)))[-1],
       DataError, r"2_bob_7.wav is not a readable wav file"),
      ("speech commands: no split lists", speech_without_lists, DataError,
       r"has no validation_list.txt \(the standard Speech Commands split\)"),
      ("uci: a stray token in a numeric column", uci_cell("abc"), DataError,
       r"iris.csv line 18, column 3: 'abc' in a column where 149 of 150 values are numbers"),
      ("uci: an infinite cell", uci_cell("inf", row=3, column=0), DataError,
       r"iris.csv line 4, column 1: 'inf' is not a finite number"),
      ("uci: an overflowing cell", uci_cell("1e400", row=5, column=1), DataError,
       r"iris.csv line 6, column 2: '1e400' is not a finite number"),
      ("uci: a missing label", uci_missing_label, DataError,
       r"iris.csv line 5: the label is missing \('\?'\)"),
      ("uci: a ragged row", uci_ragged, DataError,
       r"iris.csv: data row 10 has 3 values; the others have 5"),
      ("uci: the wrong number of rows", uci_extra_row, DataError,
       r"UCI iris in .* has 151 rows; expected 150"),
      ("uci: a test label the training table lacks",
       lambda root: lambda: tabular.load_uci("arcene", arcene_folder(root, ("1", "2"))),
       DataError, r"arcene_valid.labels line 2: label '2' never occurs in the training table"),
      ("uci: fewer labels than rows",
       lambda root: (arcene_folder(root), (root / "arcene_valid.labels").write_text("1\n"),
                     lambda: tabular.load_uci("arcene", str(root)))[-1],
       DataError, r"arcene_valid.labels has 1 labels for 100 rows"),
      ("uci: a semicolon-separated file",
       lambda root: (iris_folder(root), (root / "iris.csv").write_text(
           (root / "iris.csv").read_text().replace(",", ";")),
                     lambda: tabular.load_uci("iris", str(root)))[-1],
       DataError, r"iris.csv: no ',' in its rows, so each row is one value; it looks ';'-separated"),
      ("uci: a header row",
       lambda root: (iris_folder(root), (root / "iris.csv").write_text(
           "sepal_length,sepal_width,petal_length,petal_width,species\n"
           + (root / "iris.csv").read_text()),
                     lambda: tabular.load_uci("iris", str(root)))[-1],
       DataError, r"UCI iris in .* has 151 rows; expected 150"),
      ("uci: an empty table",
       lambda root: ((root / "iris.csv").write_text("\n% nothing\n"),
                     lambda: tabular.load_uci("iris", str(root)))[-1],
       DataError, r"iris.csv has no data rows"),
      ("planetoid: an all-zero label row of a training node", planetoid(zero_label), DataError,
       r"ind.cora.ally: train node 1 has label row \[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0\]; expected one-hot"),
      ("planetoid: a test node beyond the graph", planetoid(index_out_of_range), DataError,
       r"ind.cora.test.index: test node 99 is beyond the 12 nodes"),
      ("planetoid: a neighbour beyond the graph", planetoid(neighbour_out_of_range), DataError,
       r"ind.cora.graph: node 40 is outside the 12 nodes"),
      ("planetoid: labels and features of different lengths", planetoid(wrong_label_count),
       DataError, r"ind.cora.ty has 1 rows but .*ind.cora.tx has 2"),
      ("planetoid: garbage instead of a pickle", planetoid_garbage, DataError,
       r"ind.cora.allx is not a readable Planetoid allx file"),
      ("planetoid: a list where the graph dict belongs", planetoid_wrong_type, DataError,
       r"ind.cora.graph: expected a dict node -> neighbours, got list"),
      ("planetoid: files under another name", planetoid_renamed, DataError,
       r"Missing Planetoid file: .*ind.cora.x does not exist"),
      ("tinyimagenet: no wnids.txt",
       lambda root: ((root / "tiny" / "train").mkdir(parents=True),
                     lambda: images.load_tiny_imagenet(str(root / "tiny")))[-1],
       DataError, r"tiny has no wnids.txt: not a Tiny-ImageNet folder or zip"),
      ("tinyimagenet: no val annotations",
       lambda root: ((root / "tiny").mkdir(), (root / "tiny" / "wnids.txt").write_text("n01\n"),
                     lambda: images.load_tiny_imagenet(str(root / "tiny")))[-1],
       DataError, r"has no val/val_annotations.txt \(the labels of the val images\)"),
      ("sklearn: an unknown set", lambda root: lambda: data.load("sklearn:boston"),
       DataError, r"Unknown scikit-learn dataset 'boston'; valid: digits, iris, wine"),
      ("registry: an unknown scheme", lambda root: lambda: data.load("parquet:/tmp/x.parquet"),
       DataError, r"Unknown dataset 'parquet:/tmp/x.parquet'; valid forms: idx:<dir>"),
      ("registry: planetoid without a folder", lambda root: lambda: data.load("planetoid:cora"),
       DataError, r"'planetoid:cora': expected planetoid:<name>:<dir>"),
      ("arrays: a NaN feature",
       lambda root: lambda: ArrayDataset("t", {"train": (np.array([[0.0], [np.nan]]),
                                                         np.array([0, 1]))}, 2),
       DataError, r"t train: input 1 holds nan at position \(0,\); inputs must be finite"),
      ("arrays: integer features",
       lambda root: lambda: ArrayDataset("t", {"train": (np.array([[1], [2]]), np.array([0, 1]))},
                                         2),
       DataError, r"t train: inputs of dtype int64; expected uint8 images or floating features"),
      ("arrays: float labels",
       lambda root: lambda: ArrayDataset("t", {"train": (np.zeros((2, 1), np.float32),
                                                         np.array([0.0, 1.0]))}, 2),
       DataError, r"t train: labels of dtype float64; expected integer class ids"),
  ]


LOADER_CASES = loader_cases()


@pytest.mark.parametrize("build,error,message", [case[1:] for case in LOADER_CASES],
                         ids=[case[0] for case in LOADER_CASES])
def test_a_bad_data_file_is_a_clear_error(build, error, message, tmp_path):
  call = build(tmp_path)
  with pytest.raises(error, match=message):
    call()


def mixing_cases():
  key = jax.random.key(0)
  x = jnp.zeros((4, 3))
  y = jnp.arange(4) % 2
  return [
      ("mixup: alpha < 0", lambda: mixing.mixup(key, x, y, alpha=-0.5, num_classes=2),
       r"alpha must be a finite number >= 0 .*got -0.5"),
      ("mixup: label 5 with 2 classes",
       lambda: mixing.mixup(key, x, jnp.array([0, 1, 5, 0]), alpha=1.0, num_classes=2),
       r"Label 5 is out of range for num_classes=2"),
      ("mixup: integer labels without num_classes", lambda: mixing.mixup(key, x, y, alpha=1.0),
       r"Integer labels need num_classes"),
      ("mixup: an unknown granularity",
       lambda: mixing.mixup(key, x, y, alpha=1.0, num_classes=2, granularity="pixel"),
       r"Unknown granularity 'pixel'"),
      ("mixup: pair granularity with a permutation",
       lambda: mixing.mixup(key, x, y, alpha=1.0, num_classes=2, granularity="pair"),
       r"granularity='pair' needs an involutive pairing"),
      ("cutmix: an axis out of range",
       lambda: mixing.cutmix(key, x, y, alpha=1.0, num_classes=2, spatial_axes=(3,)),
       r"spatial_axes \(3,\) must name axes in \[1, 1\]"),
      ("mixup_or_cutmix: a switch probability of 2",
       lambda: mixing.mixup_or_cutmix(key, x, y, mixup_alpha=1.0, cutmix_alpha=1.0,
                                      switch_prob=2.0, num_classes=2),
       r"switch_prob must lie in \[0, 1\], got 2.0"),
      ("label smoothing of 1", lambda: mixing.mixup(key, x, y, alpha=1.0, num_classes=2,
                                                   label_smoothing=1.0),
       r"label_smoothing must lie in \[0, 1\), got 1.0"),
  ]


MIXING_CASES = mixing_cases()


@pytest.mark.parametrize("call,message", [case[1:] for case in MIXING_CASES],
                         ids=[case[0] for case in MIXING_CASES])
def test_a_bad_mixing_argument_is_a_clear_error(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_a_byte_order_mark_and_windows_line_ends_are_read_as_plain_csv(tmp_path):
  iris_folder(tmp_path)
  plain = tabular.load_uci("iris", str(tmp_path))
  text = (tmp_path / "iris.csv").read_text()
  (tmp_path / "iris.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
  converted = tabular.load_uci("iris", str(tmp_path))
  np.testing.assert_array_equal(converted.inputs("train"), plain.inputs("train"))
  np.testing.assert_array_equal(converted.labels("test"), plain.labels("test"))


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
  image_folder(tmp_path, size=4)
  tall = np.zeros((6, 4, 3), np.uint8)  # Stored 6 high, 4 wide; EXIF says rotate by 90 degrees.
  exif = Image.Exif()
  exif[0x0112] = 6
  buffer = io.BytesIO()
  Image.fromarray(tall).save(buffer, format="JPEG", exif=exif.tobytes())
  for split in ("train", "test"):
    for name in ("cat", "dog"):
      (tmp_path / split / name / "0.png").unlink()
      (tmp_path / split / name / "0.jpg").write_bytes(buffer.getvalue())
  assert images.load_image_folder(str(tmp_path)).inputs("train").shape[1:] == (4, 6, 3)


@pytest.mark.parametrize("mixer", ["mixup", "cutmix", "no_mixing"])
def test_integer_images_are_mixed_in_float32(mixer):
  """uint8 images: the documented handling is mixing in float32, never rounding lambda to 0/1."""
  key = jax.random.key(1)
  images_u8 = jax.random.randint(key, (6, 4, 4, 3), 0, 256).astype(jnp.uint8)
  labels = jnp.arange(6) % 3
  if mixer == "no_mixing":
    mixed = mixing.no_mixing(images_u8, labels, num_classes=3)
    np.testing.assert_array_equal(mixed.inputs, np.asarray(images_u8, np.float32))
    return
  mixed = getattr(mixing, mixer)(key, images_u8, labels, alpha=1.0, num_classes=3)
  assert mixed.inputs.dtype == jnp.float32
  as_float = np.asarray(images_u8, np.float32)
  partner = np.asarray(mixed.partner)
  if mixer == "mixup":
    lam = np.asarray(mixed.lam)[:, None, None, None]
    assert 0.0 < float(lam[0, 0, 0, 0]) < 1.0
    np.testing.assert_allclose(mixed.inputs, lam * as_float + (1 - lam) * as_float[partner],
                               rtol=1e-6, atol=1e-4)
  else:  # Every pixel is its own or its partner's, never rounded.
    own = np.isclose(mixed.inputs, as_float)
    other = np.isclose(mixed.inputs, as_float[partner])
    assert np.all(own | other)
  np.testing.assert_allclose(mixing.mix_like(images_u8, mixed.lam, mixed.partner)[0],
                             (np.asarray(mixed.lam)[0] * as_float[0]
                              + (1 - np.asarray(mixed.lam)[0]) * as_float[partner[0]]),
                             rtol=1e-6, atol=1e-4)


CONFIG_CASES = [
    ("gradient_all_reduce_dtype", "float16",
     r"config.gradient_all_reduce_dtype = 'float16': valid values are float32, bfloat16"),
    ("num_epochs", 0, r"config.num_epochs = 0: expected an integer >= 1"),
    ("num_epochs", -3, r"config.num_epochs = -3: expected an integer >= 1"),
    ("batch_size", 0, r"config.batch_size = 0: expected an integer >= 1"),
    ("eval_batch_size", -8, r"config.eval_batch_size = -8: expected an integer >= 1"),
    ("num_train_steps", -1, r"config.num_train_steps = -1: expected an integer >= 0"),
    ("validation_fraction", 1.5, r"config.validation_fraction = 1.5: expected a number in \[0, 1\)"),
    ("learning_rate", 0.0, r"config.learning_rate = 0.0: expected a number in \(0, inf\)"),
    ("learning_rate", float("nan"), r"config.learning_rate = nan: expected a number"),
    ("momentum", 1.0, r"config.momentum = 1.0: expected a number in \[0, 1\)"),
    ("alpha", -1.0, r"config.alpha = -1.0: expected a number in \[0, inf\)"),
    ("eta", float("inf"), r"config.eta = inf: expected a number in \[0, inf\)"),
    ("weight_decay", -1e-4, r"config.weight_decay = -0.0001: expected a number in \[0, inf\)"),
    ("decay_factor", 0.0, r"config.decay_factor = 0.0: expected a number in \(0, 1\]"),
    ("decay_epochs", (150, 100), r"config.decay_epochs = \(150, 100\): expected increasing"),
    ("keep_checkpoints", 0, r"config.keep_checkpoints = 0: expected an integer >= 1"),
    ("checkpoint_every_steps", 0, r"config.checkpoint_every_steps = 0: expected an integer"),
    ("log_every_steps", 0, r"config.log_every_steps = 0: expected an integer >= 1"),
    ("input_threads", 0, r"config.input_threads = 0: expected an integer >= 1"),
    ("input_workers", -1, r"config.input_workers = -1: expected an integer >= 0"),
    ("crop_padding", -4, r"config.crop_padding = -4: expected an integer >= 0"),
    ("dataset", "mnist", r"config.dataset = 'mnist': expected tfds:<name> or one of the forms"),
    ("dataset", "tfds:mnist", r"config.dataset = 'tfds:mnist': TFDS datasets here are"),
    ("method", "mixupp", r"config.method = 'mixupp': valid values are erm, mixup, mixupe"),
    ("variant", "v9", r"config.variant = 'v9': valid values are v1, v2, v3, v4, exact, fast"),
    ("term_split", "batch", r"config.term_split = 'batch': valid values are official, joint"),
    ("optimizer", "rmsprop", r"config.optimizer = 'rmsprop': valid values are sgd, adam"),
    ("schedule", "linear", r"config.schedule = 'linear': valid values are step, cosine, constant"),
    ("augment", "autoaugment", r"config.augment = 'autoaugment': valid values are none"),
    ("x_bar_inputs", "both", r"config.x_bar_inputs = 'both': valid values are augmented"),
    ("dtype", "float8", r"config.dtype = 'float8': valid values are float32, bfloat16"),
    ("mixer", "mixout", r"config.mixer = 'mixout': valid values are mixup, cutmix"),
    ("manifold_layers", (), r"config.manifold_layers = \(\): expected a non-empty list"),
]


@pytest.mark.parametrize("field,value,message", CONFIG_CASES,
                         ids=[f"{field}={value!r}" for field, value, _ in CONFIG_CASES])
def test_a_bad_config_field_is_one_clear_error(field, value, message):
  config = default_config()
  config[field] = value
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(config)


def test_the_config_checks_cover_the_nested_and_combined_fields():
  config = default_config()
  config.model.name = "vgg"
  with pytest.raises(validation.ConfigError, match=r"config.model.name = 'vgg': valid models"):
    validation.validate(config)
  config = default_config()
  config.variant, config.threshold = "v2", -1.0
  with pytest.raises(validation.ConfigError, match=r"variant 'v2' has no threshold"):
    validation.validate(config)
  config = default_config()
  config.mixer_options.granularity = "pixel"
  with pytest.raises(validation.ConfigError, match=r"mixer_options.granularity = 'pixel'"):
    validation.validate(config)
  config = default_config()
  config.mixer_options.prob = 2.0
  with pytest.raises(validation.ConfigError,
                     match=r"mixer_options.prob = 2.0: expected a number in \[0, 1\]"):
    validation.validate(config)
  config = default_config()
  config.mixer_options.box_minmax = (0.8, 0.2)
  with pytest.raises(validation.ConfigError,
                     match=r"mixer_options.box_minmax = \(0.8, 0.2\): expected 0 < min <= max"):
    validation.validate(config)
  config = default_config()
  config.mixer_options.switch_per_lambda = "yes"
  with pytest.raises(validation.ConfigError,
                     match=r"mixer_options.switch_per_lambda = 'yes': expected True or False"):
    validation.validate(config)
  config = default_config()
  config.num_epochs, config.num_train_steps = 0, 5  # A step budget needs no epochs.
  validation.validate(config)
  validation.validate(default_config())
