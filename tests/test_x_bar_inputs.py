"""x_bar over augmented or plain training inputs (config.x_bar_inputs), on CIFAR pickles the test
writes: the plain mean, the law an augmentation imposes on the mean, and independence of the
process count."""

import pickle

import numpy as np
import pytest

from mixupe_jax.data import images, pipeline
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train.defaults import default_config

NUM_TRAIN = 1000


@pytest.fixture(autouse=True)
def small_cifar(monkeypatch):
  """These folders are CIFAR-10's layout at a fraction of its size: its published counts (checked
  in tests/test_data_formats.py) set to theirs."""
  monkeypatch.setitem(images.PUBLISHED_ROWS, "CIFAR-10", {"train": NUM_TRAIN, "test": 8})


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
  """CIFAR pickles whose images are bright on the left, dark on the right, plus noise."""
  folder = tmp_path_factory.mktemp("cifar")
  rng = np.random.default_rng(0)
  ramp = np.linspace(230, 20, 32)[None, :, None]  # Columns: left to right.
  per_batch = NUM_TRAIN // 5
  for name, count in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", 8)]:
    images = np.clip(ramp + rng.normal(0, 20, (count, 32, 32, 3)), 0, 255).astype(np.uint8)
    data = images.transpose(0, 3, 1, 2).reshape(count, 3072)  # CIFAR's channel-major rows.
    (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1] * (count // 2)}))
  (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [bytes([c]) for c in b"abcdefghij"]}))
  return folder


def x_bar_of(folder, process_index=0, process_count=1, **changes):
  config = default_config()
  config.dataset = f"cifar_pickle:{folder}"
  config.augment = "crop_flip"
  for field, value in changes.items():
    config[field] = value
  built = inputs_lib.build_inputs(config, local_batch_size=8, local_eval_batch_size=8,
                                  process_index=process_index, process_count=process_count)
  batches = list(built.x_bar_batches())
  count = sum(len(b) for b in batches)
  return np.sum([b.sum(0, dtype=np.float64) for b in batches], 0) / count, count, built


def test_unaugmented_x_bar_is_the_mean_of_the_normalized_training_images(cifar_folder):
  from mixupe_jax.data import images
  train = images.load_cifar_pickles(str(cifar_folder)).inputs("train")
  normalize = pipeline.channel_normalizer(*pipeline.channel_statistics(train))
  plain, count, _ = x_bar_of(cifar_folder, x_bar_inputs="unaugmented")
  assert count == NUM_TRAIN
  np.testing.assert_allclose(plain, normalize(train).mean(0), atol=1e-5)
  # An augmentation that changes nothing leaves the augmented mean equal to it.
  identity, _, _ = x_bar_of(cifar_folder, crop_padding=0, flip=False)
  np.testing.assert_allclose(identity, plain, atol=1e-5)


def test_flip_augmented_x_bar_is_the_mean_symmetrized_left_right(cifar_folder):
  """Each image flipped with probability 1/2: E[x_bar] = (m + flip(m)) / 2 for the plain mean m.
  The images' left-right ramp makes m far from symmetric (about +-1.6 at the edges)."""
  plain, _, _ = x_bar_of(cifar_folder, x_bar_inputs="unaugmented")
  flipped, count, _ = x_bar_of(cifar_folder, crop_padding=0)
  symmetric = (plain + plain[:, ::-1]) / 2
  assert np.max(np.abs(plain - symmetric)) > 1.0
  assert count == NUM_TRAIN
  # The sampling error of a mean over 1000 coin flips: measured 0.024 at most, 0.006 on average.
  np.testing.assert_allclose(flipped, symmetric, atol=0.1)
  assert np.mean(np.abs(flipped - symmetric)) < 0.02


def test_augmented_x_bar_is_seeded_and_the_same_for_any_process_count(cifar_folder):
  whole, _, built = x_bar_of(cifar_folder)
  again, _, _ = x_bar_of(cifar_folder)
  np.testing.assert_array_equal(whole, again)
  other_seed, _, other = x_bar_of(cifar_folder, seed=1)
  assert not np.allclose(whole, other_seed, atol=1e-4)
  first, first_count, _ = x_bar_of(cifar_folder, process_index=0, process_count=2)
  second, second_count, _ = x_bar_of(cifar_folder, process_index=1, process_count=2)
  combined = (first * first_count + second * second_count) / (first_count + second_count)
  np.testing.assert_allclose(combined, whole, atol=1e-6)
  # Its cache file differs from the plain mean's and from another seed's.
  _, _, plain = x_bar_of(cifar_folder, x_bar_inputs="unaugmented")
  assert len({built.x_bar_fingerprint, other.x_bar_fingerprint,
              plain.x_bar_fingerprint}) == 3


def test_unknown_x_bar_inputs_is_a_clear_error(cifar_folder):
  with pytest.raises(ValueError, match=r"Unknown x_bar_inputs 'train'; valid: augmented, "
                     "unaugmented"):
    x_bar_of(cifar_folder, x_bar_inputs="train")


def test_a_changed_dataset_is_never_answered_with_a_stale_cached_x_bar(tmp_path, monkeypatch):
  """The cache is named by the data's content (file sizes and times): rewrite a file and x_bar
  is computed again; the file is created with the umask's mode; an unreadable one is replaced."""
  import os
  from mixupe_jax.data import images, statistics
  monkeypatch.setenv("MIXUPE_JAX_CACHE", str(tmp_path / "cache"))
  monkeypatch.setitem(images.PUBLISHED_ROWS, "CIFAR-10", {"train": 20, "test": 4})
  folder = tmp_path / "cifar"
  folder.mkdir()
  rng = np.random.default_rng(1)

  def write(scale):
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      images_ = (rng.integers(0, 256, (4, 3072)) * scale).astype(np.uint8)
      (folder / name).write_bytes(pickle.dumps({b"data": images_, b"labels": [0, 1, 0, 1]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [bytes([c]) for c in b"abcdefghij"]}))

  def cached_x_bar():
    config_changes = dict(x_bar_inputs="unaugmented")
    _, _, built = x_bar_of(folder, **config_changes)
    return np.asarray(inputs_lib.compute_x_bar(built)), built

  def plain_mean():
    train = images.load_cifar_pickles(str(folder)).inputs("train")
    normalize = pipeline.channel_normalizer(*pipeline.channel_statistics(train))
    return normalize(train).mean(0)

  write(1.0)
  first, built = cached_x_bar()
  np.testing.assert_allclose(first, plain_mean(), atol=1e-5)
  cache_files = list((tmp_path / "cache").iterdir())
  assert len(cache_files) == 1
  umask = os.umask(0)
  os.umask(umask)
  assert cache_files[0].stat().st_mode & 0o777 == 0o666 & ~umask
  write(0.5)  # Same path, same spec, new content.
  second, built = cached_x_bar()
  assert not np.allclose(second, first, atol=1e-3)
  np.testing.assert_allclose(second, plain_mean(), atol=1e-5)
  assert len(list((tmp_path / "cache").iterdir())) == 2
  # A cache file that cannot be read is computed again, not trusted.
  path = statistics.cache_path_for(built.dataset_path, built.x_bar_fingerprint)
  with open(path, "wb") as file:
    file.write(b"garbage")
  np.testing.assert_allclose(np.asarray(inputs_lib.compute_x_bar(built)), second, atol=1e-6)
  assert np.load(path).shape == second.shape
