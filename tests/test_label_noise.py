"""Symmetric training-label noise (`config.label_noise`): exactly the documented fraction of the
training labels moved to another class, uniformly, from its own seed; the same noisy labels on
any number of processes; validation labels noisy too; test labels untouched."""

import numpy as np
import pytest
from scipy import stats

from mixupe_jax.data import splits as splits_lib
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train import validation
from mixupe_jax.train.defaults import default_config

CLASSES = 5


def test_exactly_the_fraction_is_moved_to_another_class_uniformly():
  """round(rho N) labels change, each to a different class; over many rows the class a label
  moves to is uniform over the other C - 1 (chi-square), and which rows change does not depend
  on the labels: the same seed changes the same rows of any label array."""
  labels = np.arange(20_000) % CLASSES
  noisy, changed = splits_lib.symmetric_label_noise(labels, 0.4, CLASSES, seed=3)
  assert len(changed) == 8_000 and np.array_equal(np.flatnonzero(noisy != labels), changed)
  shifts = (noisy[changed] - labels[changed]) % CLASSES
  counts = np.bincount(shifts, minlength=CLASSES)
  assert counts[0] == 0
  assert stats.chisquare(counts[1:]).pvalue > 1e-3
  other = np.zeros_like(labels)
  assert np.array_equal(splits_lib.symmetric_label_noise(other, 0.4, CLASSES, seed=3)[1], changed)
  again = splits_lib.symmetric_label_noise(labels, 0.4, CLASSES, seed=3)[0]
  assert np.array_equal(again, noisy)
  assert not np.array_equal(splits_lib.symmetric_label_noise(labels, 0.4, CLASSES, 4)[0], noisy)
  assert np.array_equal(splits_lib.symmetric_label_noise(labels, 0.0, CLASSES, 3)[0], labels)
  # The count is rounded to the nearest row (Python's round: 2.5 -> 2; 0.26 of 10 -> 3).
  assert len(splits_lib.symmetric_label_noise(labels[:10], 0.25, CLASSES, 0)[1]) == 2
  assert len(splits_lib.symmetric_label_noise(labels[:10], 0.26, CLASSES, 0)[1]) == 3


def inputs(tmp_path, *, noise, validation_fraction=0.0, process_index=0, process_count=1):
  rows = 200
  images = np.random.default_rng(0).integers(0, 255, (rows, 4, 4, 1), dtype=np.uint8)
  labels = np.arange(rows) % CLASSES
  path = tmp_path / "images.npz"
  if not path.exists():
    np.savez(path, x_train=images, y_train=labels, x_test=images[:40], y_test=labels[:40])
  config = default_config()
  config.dataset = f"npz:{path}"
  config.label_noise, config.label_noise_seed = noise, 7
  config.validation_fraction = validation_fraction
  validation.validate(config)
  return inputs_lib.build_inputs(config, local_batch_size=8, local_eval_batch_size=16,
                                 process_index=process_index, process_count=process_count)


def labels_of(batches):
  return np.concatenate([y[mask > 0] for _, y, mask in batches()])


def images_of(batches):
  return np.concatenate([x[mask > 0] for x, _, mask in batches()])


def test_the_training_path_corrupts_train_and_validation_labels_never_test(tmp_path):
  """Through `build_inputs`: with rho = 0.3 the training split (read in order) has exactly 60 of
  its 200 labels wrong, the same as `symmetric_label_noise` with the config's seed; with a
  validation split carved afterwards, train and validation together still hold those 60; the
  test labels are the file's."""
  clean = np.arange(200) % CLASSES
  data = inputs(tmp_path, noise=0.3)
  noisy = labels_of(data.train_eval_batches)
  assert np.sum(noisy != clean) == 60
  assert np.array_equal(noisy, splits_lib.symmetric_label_noise(clean, 0.3, CLASSES, 7)[0])
  np.testing.assert_array_equal(labels_of(data.eval_batches["test"]), clean[:40])
  carved = inputs(tmp_path, noise=0.3, validation_fraction=0.2)
  wrong = 0
  images = images_of(inputs(tmp_path, noise=0.0).train_eval_batches)
  for split in (carved.train_eval_batches, carved.eval_batches["validation"]):
    for image, label in zip(images_of(split), labels_of(split), strict=True):
      row = int(np.flatnonzero((images == image).all(axis=(1, 2, 3)))[0])
      wrong += int(label != clean[row])
  assert wrong == 60
  assert np.sum(labels_of(carved.eval_batches["validation"]) != 0) > 0


def test_the_noisy_labels_are_the_same_on_any_number_of_processes(tmp_path):
  """Process p of 2 reads rows p, p + 2, ... of the training split, and their noisy labels are
  the one-process run's rows p::2 (the noise is drawn before the data is sharded)."""
  one = labels_of(inputs(tmp_path, noise=0.4).train_eval_batches)
  for p in range(2):
    shard = inputs(tmp_path, noise=0.4, process_index=p, process_count=2)
    np.testing.assert_array_equal(labels_of(shard.train_eval_batches), one[p::2])


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_a_noise_fraction_outside_0_1_is_a_config_error(value):
  config = default_config()
  config.label_noise = value
  with pytest.raises(validation.ConfigError, match=r"config.label_noise = .*: expected a number in \[0, 1\]"):
    validation.validate(config)
