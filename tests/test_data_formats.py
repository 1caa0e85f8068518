"""Loader edge cases on small files the tests write: truncated, corrupt, wrong rate, missing values."""

import gzip
import io
import os
import pickle
import shutil
import wave
import zipfile

import numpy as np
import pytest
from PIL import Image

from mixupe_jax import data
from mixupe_jax.data import audio, idx, images, statistics, tabular
from mixupe_jax.data.base import ArrayDataset, DataError


def write_idx(path, array, type_code=0x08):
  header = bytes([0, 0, type_code, array.ndim]) + b"".join(
      int(n).to_bytes(4, "big") for n in array.shape)
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as file:
    file.write(header + array.astype(">u1").tobytes())


def write_wav(path, rate, samples, channels=1):
  with wave.open(path if isinstance(path, io.BytesIO) else str(path), "wb") as file:
    file.setnchannels(channels)
    file.setsampwidth(2)
    file.setframerate(rate)
    file.writeframes(np.asarray(samples, "<i2").tobytes())


def test_idx_roundtrip_and_truncation(tmp_path):
  images_array = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
  write_idx(tmp_path / "a.gz", images_array)
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "a.gz")), images_array)
  raw = (tmp_path / "a.gz").read_bytes()
  with gzip.open(tmp_path / "a.gz") as file:
    content = file.read()
  with gzip.open(tmp_path / "cut.gz", "wb") as file:
    file.write(content[:-7])
  with pytest.raises(DataError, match=r"cut.gz has 69 bytes but its header \(shape \(3, 4, 5\).*"
                                      r"needs 76: the file is truncated"):
    idx.read_idx(str(tmp_path / "cut.gz"))
  (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x03" + raw[4:])
  with pytest.raises(DataError, match=r"bad is not an idx file: bad magic number 01020803"):
    idx.read_idx(str(tmp_path / "bad"))
  with pytest.raises(DataError, match=r"Missing idx file: neither train-images-idx3-ubyte.gz"):
    idx.load_idx_dataset(str(tmp_path))


def test_idx_dataset_labels_out_of_range_name_the_split(tmp_path):
  for prefix in ("train", "t10k"):
    write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", np.zeros((4, 2, 2), np.uint8))
    write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3], np.uint8))
  dataset = idx.load_idx_dataset(str(tmp_path))
  assert dataset.inputs("train").shape == (4, 2, 2, 1) and dataset.num_classes == 4
  with pytest.raises(DataError, match=r"mnist test: label 9 is out of range \[0, 3\]"):
    ArrayDataset("mnist", {"test": (np.zeros((2, 1)), np.array([0, 9]))}, 4)


def test_wav_of_the_wrong_rate_or_channels_is_named(tmp_path):
  write_wav(tmp_path / "3_alice_7.wav", 16000, np.zeros(800))
  with pytest.raises(DataError, match=r"3_alice_7.wav has sample rate 16000 Hz; expected 8000"):
    audio.load_fsdd(str(tmp_path))
  os.remove(tmp_path / "3_alice_7.wav")
  write_wav(tmp_path / "3_alice_7.wav", 8000, np.zeros(1600), channels=2)
  with pytest.raises(DataError, match=r"3_alice_7.wav has 2 channels; expected mono"):
    audio.load_fsdd(str(tmp_path))


def test_fsdd_split_by_index_and_zip(tmp_path):
  tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)).astype(np.int16)
  archive = zipfile.ZipFile(tmp_path / "recordings.zip", "w")
  # Test classes must have training examples (data.invariants), so each digit is in both splits.
  for digit, speaker, index in [(1, "bob", 0), (2, "bob", 4), (2, "bob", 5), (1, "eve", 49)]:
    buffer = io.BytesIO()
    write_wav(buffer, 8000, tone)
    archive.writestr(f"recordings/{digit}_{speaker}_{index}.wav", buffer.getvalue())
  archive.close()
  dataset = audio.load_fsdd(str(tmp_path / "recordings.zip"))
  np.testing.assert_array_equal(dataset.labels("test"), [1, 2])
  np.testing.assert_array_equal(dataset.labels("train"), [1, 2])
  assert dataset.inputs("train").shape == (2, 97, 40, 1)


def test_log_mel_of_a_tone_peaks_in_the_band_of_its_frequency():
  rate, frequency = 8000, 1000.0
  spectrogram = audio.log_mel_spectrogram(np.sin(2 * np.pi * frequency * np.arange(8000) / rate),
                                          rate)
  filters = audio.mel_filterbank(40, 256, rate)
  bin_of_tone = int(round(frequency / (rate / 2) * 128))
  assert np.argmax(spectrogram.mean(0)) == np.argmax(filters[:, bin_of_tone])
  # The filters tile the spectrum: between the first and last centre they sum to one.
  total = filters.sum(0)
  np.testing.assert_allclose(total[10:120], 1.0, atol=1e-5)


def test_uci_missing_values_are_imputed_from_training_rows_only(tmp_path):
  rows = ["1.0,a,0", "3.0,b,0", "?,a,1", "5.0,?,1", "100.0,b,0", "7.0,a,1"]
  table = tmp_path / "t.csv"
  table.write_text("\n".join(rows) + "\n")
  parsed = tabular.read_rows(str(table), ",")
  train, other = [r[:-1] for r in parsed[:4]], [r[:-1] for r in parsed[4:]]
  train_x, other_x = tabular.preprocess_columns(train, other, "t")
  # Column 0: training mean of 1, 3, 5 is 3 (the test row's 100 does not enter it), std of
  # [1, 3, 3, 5] is sqrt(2); the missing value becomes 3, i.e. z = 0.
  np.testing.assert_allclose(train_x[:, 0], np.array([-2, 0, 0, 2]) / np.sqrt(2), rtol=1e-6)
  np.testing.assert_allclose(other_x[:, 0], np.array([97, 4]) / np.sqrt(2), rtol=1e-6)
  # Column 1: categorical, one-hot over {a, b}; the missing value takes the mode "a".
  np.testing.assert_array_equal(train_x[:, 1:], [[1, 0], [0, 1], [1, 0], [1, 0]])
  np.testing.assert_array_equal(other_x[:, 1:], [[0, 1], [1, 0]])


def test_uci_ragged_row_and_arff_header(tmp_path):
  (tmp_path / "r.csv").write_text("1,2,0\n3,4\n5,6,1\n")
  with pytest.raises(DataError, match=r"r.csv: data row 2 has 2 values; the others have 3"):
    tabular.read_rows(str(tmp_path / "r.csv"), ",")
  (tmp_path / "h.arff").write_text("@relation x\n@attribute a numeric\n@data\n1,0\n% note\n2,1\n")
  assert tabular.read_rows(str(tmp_path / "h.arff"), ",") == [["1", "0"], ["2", "1"]]


def test_image_folder_and_its_errors(tmp_path):
  for split in ("train", "test"):
    for label, colour in (("cat", 10), ("dog", 200)):
      folder = tmp_path / "imgs" / split / label
      folder.mkdir(parents=True)
      for n in range(2):
        Image.fromarray(np.full((4, 4, 3), colour + n, np.uint8)).save(folder / f"{n}.png")
  dataset = images.load_image_folder(str(tmp_path / "imgs"))
  assert dataset.class_names == ("cat", "dog")
  assert dataset.inputs("train").shape == (4, 4, 4, 3)
  np.testing.assert_array_equal(dataset.inputs("test")[:, 0, 0, 0], [10, 11, 200, 201])
  (tmp_path / "imgs" / "test" / "dog" / "2.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=r"test/dog/2.png is not a readable image"):
    images.load_image_folder(str(tmp_path / "imgs"))
  with pytest.raises(DataError, match=r"imgs/train has no train, test folder .*found: none"):
    images.load_image_folder(str(tmp_path / "imgs" / "train"))


def write_cifar10(folder, rows):
  """CIFAR-10's pickles with `rows` images per batch file (the published 10,000: 50,000 train and
  10,000 test); the first three rows of each random, the rest black; labels cycle 0-9."""
  rng = np.random.default_rng(0)
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    data = np.zeros((rows, 3072), np.uint8)
    data[:3] = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = {b"data": data, b"labels": [i % 10 for i in range(rows)]}
    (folder / name).write_bytes(pickle.dumps(batch))
  names = [bytes([c]) for c in b"abcdefghij"]  # CIFAR-10's 10 classes.
  (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


def test_cifar_pickles(tmp_path):
  """The published set loads (channel-major rows become HWC images); a set of another size is a
  DataError naming the split, the published count and the one found."""
  write_cifar10(tmp_path, 10000)
  dataset = images.load_cifar_pickles(str(tmp_path))
  assert dataset.inputs("train").shape == (50000, 32, 32, 3) and dataset.class_names[:3] == ("a", "b", "c")
  assert len(dataset.labels("test")) == 10000
  first = pickle.loads((tmp_path / "test_batch").read_bytes())[b"data"][0]
  np.testing.assert_array_equal(dataset.inputs("test")[0, :, :, 0], first[:1024].reshape(32, 32))
  (tmp_path / "test_batch").write_bytes(b"garbage")
  with pytest.raises(DataError, match=r"test_batch is not a readable CIFAR pickle"):
    images.load_cifar_pickles(str(tmp_path))
  write_cifar10(tmp_path, 30)
  with pytest.raises(DataError, match=r"cifar_pickles0: CIFAR-10 has 50000 train rows, found 150; "
                     r"is it the published file, the whole set \(a subset loads through a generic"):
    images.load_cifar_pickles(str(tmp_path))


def test_x_bar_streams_and_caches_atomically(tmp_path, monkeypatch):
  inputs = np.random.default_rng(0).normal(size=(1001, 3, 2)).astype(np.float32)
  np.testing.assert_allclose(data.x_bar(inputs, batch_size=64), inputs.mean(0), atol=1e-6)
  scaled = data.x_bar(inputs, preprocess=lambda b: 2 * b + 1, batch_size=100)
  np.testing.assert_allclose(scaled, 2 * inputs.mean(0) + 1, atol=1e-5)
  monkeypatch.setenv("MIXUPE_JAX_CACHE", str(tmp_path / "chosen"))
  assert statistics.cache_path_for(str(tmp_path / "set.zip"), "set").startswith(
      str(tmp_path / "chosen" / "x_bar-"))
  monkeypatch.delenv("MIXUPE_JAX_CACHE")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  # Never next to the data, even where its folder is writable (a shared data folder may be).
  path = statistics.cache_path_for(str(tmp_path / "set.zip"), "set|preprocess-v1")
  assert path.startswith(str(tmp_path / "home" / ".cache" / "mixupe_jax" / "x_bar-"))
  calls = []
  first = statistics.cached_x_bar(path, lambda: calls.append(1) or inputs.mean(0))
  second = statistics.cached_x_bar(path, lambda: calls.append(1) or inputs.mean(0))
  assert calls == [1] and np.array_equal(first, second)
  assert [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")] == []
  assert [p for p in os.listdir(tmp_path) if "x_bar" in p] == []
  assert statistics.cache_path_for(str(tmp_path / "set.zip"), "other") != path
  assert data.dataset_path("uci:iris:/data/uci") == "/data/uci"
  assert data.dataset_path("fsdd:/data/fsdd.zip") == "/data/fsdd.zip"
  assert data.dataset_path("sklearn:digits") is None


def test_stratified_split_is_seeded_and_keeps_class_proportions():
  labels = np.repeat([0, 1, 2], [50, 30, 20])
  train, test = tabular.stratified_split(labels, 0.2, seed=3)
  np.testing.assert_array_equal(np.bincount(labels[test]), [10, 6, 4])
  assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
  np.testing.assert_array_equal(test, tabular.stratified_split(labels, 0.2, seed=3)[1])
  assert not np.array_equal(test, tabular.stratified_split(labels, 0.2, seed=4)[1])


def test_unknown_dataset_specs_list_the_valid_ones():
  with pytest.raises(DataError, match=r"Unknown dataset 'mnist'; valid forms: idx:<dir>"):
    data.load("mnist")
  with pytest.raises(DataError, match=r"Unknown UCI dataset 'adult'; valid: abalone, arcene"):
    data.load("uci:adult:/tmp")
  with pytest.raises(DataError, match=r"Unknown scikit-learn dataset 'boston'"):
    data.load("sklearn:boston")
  with pytest.raises(DataError, match=r"Missing image folder or zip: /nonexistent"):
    data.load("imagefolder:/nonexistent")


def test_a_plain_file_is_neither_folder_nor_zip(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(DataError, match=r"notes.txt is neither a folder nor a zip file of "
                                      r"\{digit\}_\{speaker\}_\{index\}.wav files"):
    audio.load_fsdd(str(tmp_path / "notes.txt"))
  with pytest.raises(DataError, match=r"notes.txt is neither a folder nor a zip file of "
                                      r"<split>/<class>/<image>"):
    images.load_image_folder(str(tmp_path / "notes.txt"))


def _jpeg(color):
  buffer = io.BytesIO()
  Image.fromarray(np.full((64, 64, 3), color, np.uint8)).save(buffer, format="PNG")
  return buffer.getvalue()


def _tiny_imagenet_zip(path, wnids):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("tiny-imagenet-200/wnids.txt", "".join(f"{w}\n" for w in wnids))
    for wnid, color in (("n01", 10), ("n02", 200)):
      for index in range(3):
        archive.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{index}.JPEG",
                         _jpeg(color))
      archive.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "ignored")
    archive.writestr("tiny-imagenet-200/val/images/val_0.JPEG", _jpeg(200))
    archive.writestr("tiny-imagenet-200/val/images/val_1.JPEG", _jpeg(10))
    archive.writestr("tiny-imagenet-200/val/val_annotations.txt",
                     "val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t1\t5\t5\n")


def test_tiny_imagenet_layout_from_a_zip(tmp_path, monkeypatch):
  """Its 200 classes (images of two of them here); a wnids.txt of another count, or another number
  of images than the published 100,000 and 10,000, is a DataError naming the file, the published
  count and the one found."""
  path = str(tmp_path / "tiny-imagenet-200.zip")
  _tiny_imagenet_zip(path, ["n02", "n01"] + [f"n9{i:03d}" for i in range(198)])
  with pytest.raises(DataError, match=r"tiny-imagenet-200.zip: Tiny-ImageNet-200 has 100000 "
                     r"train rows, found 6; is it the published file, the whole set"):
    data.load(f"tinyimagenet:{path}")
  # The published layout at 8 images: its counts set to theirs.
  monkeypatch.setitem(images.PUBLISHED_ROWS, "Tiny-ImageNet-200", {"train": 6, "test": 2})
  dataset = data.load(f"tinyimagenet:{path}")
  assert dataset.class_names[:2] == ("n02", "n01") and dataset.num_classes == 200
  train_x, train_y = dataset.splits["train"]
  assert train_x.shape == (6, 64, 64, 3) and train_x.dtype == np.uint8
  # wnids.txt order defines the label: n02 -> 0 (bright), n01 -> 1 (dark).
  assert set(train_y[train_x[:, 0, 0, 0] > 100]) == {0} and set(train_y[train_x[:, 0, 0, 0] < 100]) == {1}
  np.testing.assert_array_equal(dataset.splits["test"][1], [0, 1])
  _tiny_imagenet_zip(path, ["n02", "n01"])
  with pytest.raises(DataError, match=r"wnids.txt: Tiny-ImageNet-200 has 200 classes, found 2"):
    data.load(f"tinyimagenet:{path}")


def test_tiny_imagenet_bad_annotation_names_the_line(tmp_path):
  root = tmp_path / "tiny"
  (root / "val" / "images").mkdir(parents=True)
  (root / "wnids.txt").write_text("n01\n")
  (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
  with pytest.raises(DataError, match="line 1.*'val_0.JPEG\\\\tn99"):
    data.load(f"tinyimagenet:{root}")
  with pytest.raises(DataError, match="no wnids.txt"):
    data.load(f"tinyimagenet:{root / 'val'}")


def _wav_bytes(rate, samples):
  buffer = io.BytesIO()
  with wave.open(buffer, "wb") as file:
    file.setnchannels(1)
    file.setsampwidth(2)
    file.setframerate(rate)
    file.writeframes(np.asarray(samples, np.int16).tobytes())
  return buffer.getvalue()


def speech_commands_folder(root, version="v0.02"):
  """The published layout with one short recording per word (yes and no: three speakers each),
  background noise and the two split lists."""
  tone = (8000 * np.sin(np.arange(16000) * 0.1)).astype(np.int16)
  for word in audio.SPEECH_COMMANDS_WORDS[version]:
    (root / word).mkdir(parents=True)
    for speaker in ("aa", "bb", "cc") if word in ("yes", "no") else ("aa",):
      (root / word / f"{speaker}_nohash_0.wav").write_bytes(_wav_bytes(16000, tone[:12000]))
  (root / "_background_noise_").mkdir()
  (root / "_background_noise_" / "noise.wav").write_bytes(_wav_bytes(16000, tone))
  (root / "validation_list.txt").write_text("yes/bb_nohash_0.wav\n")
  (root / "testing_list.txt").write_text("no/cc_nohash_0.wav\nyes/cc_nohash_0.wav\n")
  return root


@pytest.mark.parametrize("version", ["v0.01", "v0.02"])
def test_speech_commands_layout_and_standard_split(tmp_path, monkeypatch, version):
  """The published layout and split; a version of another number of recordings than published
  (64,721 in v0.01, 105,829 in v0.02) is a DataError naming both counts."""
  root = speech_commands_folder(tmp_path / f"speech_commands_{version}", version)
  words = audio.SPEECH_COMMANDS_WORDS[version]
  published = {"v0.01": 64721, "v0.02": 105829}[version]
  with pytest.raises(DataError, match=rf"\(word folders\): Speech Commands {version} has "
                     rf"{published} recordings, found {len(words) + 4}; is it the published"):
    data.load(f"speech_commands:{root}")
  # The layout at one recording per word (three for yes and no): its count set to theirs.
  monkeypatch.setitem(audio.SPEECH_COMMANDS_ROWS, version, len(words) + 4)
  dataset = data.load(f"speech_commands:{root}")
  assert dataset.class_names == tuple(sorted(words)) and dataset.num_classes == len(words)
  assert {s: len(y) for s, (_, y) in dataset.splits.items()} == {
      "train": len(words) + 1, "validation": 1, "test": 2}
  assert dataset.inputs("train").shape[1:] == (98, 40, 1)  # 1 s padded: 1 + (16000 - 400) // 160.
  np.testing.assert_array_equal(dataset.labels("validation"), [sorted(words).index("yes")])
  (root / "testing_list.txt").unlink()
  with pytest.raises(DataError, match="no testing_list.txt"):
    data.load(f"speech_commands:{root}")


def test_speech_commands_of_another_word_set_is_refused_naming_the_words(tmp_path):
  """A folder missing a published word, or holding one of its own, is a DataError naming the
  folder, the version, what was expected and what was found."""
  root = speech_commands_folder(tmp_path / "missing", "v0.01")
  shutil.rmtree(root / "sheila")
  with pytest.raises(DataError, match=r"missing.*: Speech Commands v0.01 has 30 classes, found 29"):
    data.load(f"speech_commands:{root}")
  root = speech_commands_folder(tmp_path / "renamed", "v0.01")
  (root / "sheila").rename(root / "hello")
  with pytest.raises(DataError, match=r"v0.01 has the words bed, .*missing \['sheila'\], "
                                      r"extra \['hello'\]"):
    data.load(f"speech_commands:{root}")
  root = speech_commands_folder(tmp_path / "partial", "v0.01")
  (root / "learn").mkdir()  # A v0.02 word: read as v0.02, four words short.
  (root / "learn" / "aa_nohash_0.wav").write_bytes((root / "no" / "aa_nohash_0.wav").read_bytes())
  with pytest.raises(DataError, match="Speech Commands v0.02 has 35 classes, found 31"):
    data.load(f"speech_commands:{root}")
