"""TFDS audio (spoken_digit, speech_commands) under tfds.testing.mock_data: the log-mel arrays equal
the offline loaders' for the same samples, FSDD's split comes from the file names, and the batches
are deterministic and sharded per host."""

import itertools

import ml_collections
import numpy as np
import pytest
import scipy.io.wavfile
import tensorflow_datasets as tfds

from mixupe_jax.data import DataError, audio
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train.defaults import default_config


def _spoken_digit_records(seed=0):
  """FSDD-named recordings: digits 0-3, indices 0-5 (0-4 are FSDD's test split)."""
  rng = np.random.default_rng(seed)
  return [{"audio": rng.integers(-2000, 2000, size=rng.integers(3000, 9000)).astype(np.int64),
           "audio/filename": f"{digit}_jackson_{index}.wav".encode(), "label": digit}
          for digit in range(4) for index in range(6)]


def test_tfds_spoken_digit_matches_the_offline_fsdd_loader(tmp_path):
  records = _spoken_digit_records()
  with tfds.testing.mock_data(as_data_source_fn=lambda *args, **kwargs: records):
    dataset = audio.load_tfds_audio("spoken_digit")
  # The same samples as 16-bit wav files, read by the offline loader.
  folder = tmp_path / "recordings"
  folder.mkdir()
  for record in records:
    scipy.io.wavfile.write(folder / record["audio/filename"].decode(), 8000,
                           record["audio"].astype(np.int16))
  offline = audio.load_fsdd(str(folder))
  assert dataset.num_classes == 10
  for split, count in (("train", 4), ("test", 20)):
    inputs, labels = dataset.splits[split]
    assert inputs.shape == (count, 97, 40, 1) and inputs.dtype == np.float32
    assert np.isfinite(inputs).all()
    np.testing.assert_allclose(inputs, offline.splits[split][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, offline.splits[split][1])


def test_tfds_spoken_digit_needs_fsdd_file_names():
  records = _spoken_digit_records()[:2]
  records[1] = {**records[1], "audio/filename": b"recording.wav"}
  with tfds.testing.mock_data(as_data_source_fn=lambda *args, **kwargs: records):
    with pytest.raises(DataError, match="recording.wav"):
      audio.load_tfds_audio("spoken_digit")


def test_tfds_speech_commands_has_its_three_splits_as_log_mel():
  with tfds.testing.mock_data(num_examples=6):
    dataset = audio.load_tfds_audio("speech_commands")
    source = tfds.data_source("speech_commands", split="validation")
    record = source[2]
  assert dataset.num_classes == 12
  for split in ("train", "validation", "test"):
    inputs, labels = dataset.splits[split]
    assert inputs.shape == (6, 98, 40, 1) and inputs.dtype == np.float32
    assert np.isfinite(inputs).all() and ((0 <= labels) & (labels < 12)).all()
  # 16-bit samples scaled to [-1, 1], padded to 1 s at 16 kHz, 25 ms windows, 10 ms hops.
  signal = np.zeros(16000, np.float32)
  samples = np.asarray(record["audio"], np.float64)[:16000] / 32767.0
  signal[:len(samples)] = samples
  expected = audio.log_mel_spectrogram(signal, 16000, fft_size=400, hop=160)
  np.testing.assert_allclose(dataset.splits["validation"][0][2, ..., 0], expected, rtol=1e-5,
                             atol=1e-5)


def _inputs(process_index, process_count=2, seed=0):
  config = default_config()
  config.dataset = "tfds:speech_commands"
  config.seed = seed
  config.standardize = True
  return inputs_lib.build_inputs(config, local_batch_size=4, local_eval_batch_size=8,
                                 process_index=process_index, process_count=process_count)


def test_tfds_audio_batches_are_deterministic_and_split_between_hosts():
  with tfds.testing.mock_data(num_examples=16):
    host0, host0_again, host1 = _inputs(0), _inputs(0), _inputs(1)
    assert host0.example_shape == (98, 40, 1) and host0.num_classes == 12
    assert set(host0.eval_batches) == {"validation", "test"}
    first = lambda data: list(itertools.islice(data.train_batches(0), 3))
    a, a_again, b = first(host0), first(host0_again), first(host1)
  for (x, y), (x_again, y_again) in zip(a, a_again):
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(y, y_again)
  x0, _ = a[0]
  x1, _ = b[0]
  assert x0.shape == (4, 98, 40, 1) and x0.dtype == np.float32
  # Each host reads its own rows of every global batch: no example is on both hosts at a step.
  for (x0, _), (x1, _) in zip(a, b):
    assert not {row.tobytes() for row in x0} & {row.tobytes() for row in x1}
