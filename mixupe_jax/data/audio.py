r"""Spoken digits: wav files (FSDD naming `{digit}_{speaker}_{index}.wav`) to log-mel spectrograms,
on the HTK mel scale with a Hann window and triangular mel filters W:

.. math::

   \mathrm{mel}(f) = 2595 \log_{10}(1 + f / 700), \qquad
   S[t, m] = \log\Big(\sum_k \big|\mathrm{STFT}[t, k]\big|^2 W[m, k] + 10^{-6}\Big)

Every clip is zero-padded or cut to `duration` seconds, so all spectrograms share one shape
[frames, num_mels, 1]. FSDD's own split: index 0-4 of each speaker and digit is test, 5-49 train.

The same features come from TFDS (`load_tfds_audio`: `spoken_digit`, which is FSDD with one
"train" split, so the file names give FSDD's split; `speech_commands`, with its own three splits).
The clips are small (1 s), so they are decoded once into memory and go through the same array
pipeline as the offline loaders; every host decodes them and then reads only its own shard.
"""

from __future__ import annotations

import io
import re

import numpy as np
import scipy.io.wavfile

from mixupe_jax.data import invariants
from mixupe_jax.data.base import (
  ArrayDataset,
  DataError,
  list_members,
  require_file,
  require_tensorflow,
)

FSDD_NAME = re.compile(r"(?:^|/)(\d)_([A-Za-z]+)_(\d+)\.wav$")
# 32 ms / 25 ms windows with 10 ms hops at 8 kHz / 16 kHz.
FSDD_WINDOWS = {"fft_size": 256, "hop": 80}
SPEECH_COMMANDS_WINDOWS = {"fft_size": 400, "hop": 160}
# The published word folders (Warden 2018): v0.01's 30 words; v0.02 adds five.
_V001_WORDS = tuple(
  "bed bird cat dog down eight five four go happy house left marvin nine no off on one right "
  "seven sheila six stop three tree two up wow yes zero".split()
)
# The utterances in each published version's word folders, every split: v0.01's 51,088 training,
# 6,798 validation and 6,835 test (its 64,727 files less the 6 of _background_noise_); v0.02's
# 84,843, 9,981 and 11,005 (Warden 2018).
SPEECH_COMMANDS_ROWS = {"v0.01": 64721, "v0.02": 105829}
SPEECH_COMMANDS_WORDS = {
  "v0.01": _V001_WORDS,
  "v0.02": _V001_WORDS + ("backward", "follow", "forward", "learn", "visual"),
}


def mel_filterbank(num_mels: int, fft_size: int, sample_rate: int) -> np.ndarray:
  """Triangular filters [num_mels, fft_size // 2 + 1], equally spaced on the HTK mel scale."""
  to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2), num_mels + 2))
  frequencies = np.linspace(0.0, sample_rate / 2, fft_size // 2 + 1)
  low, center, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  rising = (frequencies - low) / (center - low)
  falling = (high - frequencies) / (high - center)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(
  signal: np.ndarray, sample_rate: int, *, fft_size: int = 256, hop: int = 80, num_mels: int = 40
) -> np.ndarray:
  """log-mel spectrogram [frames, num_mels] of a mono float signal."""
  if len(signal) < fft_size:
    signal = np.pad(signal, (0, fft_size - len(signal)))
  frames = 1 + (len(signal) - fft_size) // hop
  index = np.arange(fft_size)[None] + hop * np.arange(frames)[:, None]
  windowed = signal[index] * np.hanning(fft_size)[None]
  power = np.abs(np.fft.rfft(windowed, axis=-1)) ** 2
  return np.log(power @ mel_filterbank(num_mels, fft_size, sample_rate).T + 1e-6).astype(np.float32)


def clip_spectrogram(
  signal: np.ndarray, sample_rate: int, duration: float, *, fft_size: int, hop: int
) -> np.ndarray:
  """A mono float signal, zero-padded or cut to `duration` s -> log-mel [frames, 40, 1]."""
  length = int(round(duration * sample_rate))
  signal = np.pad(signal[:length], (0, max(0, length - len(signal))))
  return log_mel_spectrogram(signal, sample_rate, fft_size=fft_size, hop=hop)[..., None]


def read_wav(data: bytes, where: str, sample_rate: int) -> np.ndarray:
  """A mono wav at `sample_rate` -> float32 in [-1, 1]."""
  try:
    rate, samples = scipy.io.wavfile.read(io.BytesIO(data))
  except Exception as error:
    raise DataError(f"{where} is not a readable wav file ({error}).") from error
  if rate != sample_rate:
    raise DataError(f"{where} has sample rate {rate} Hz; expected {sample_rate} Hz.")
  if samples.ndim != 1:
    raise DataError(f"{where} has {samples.shape[1]} channels; expected mono.")
  if not samples.size:
    raise DataError(f"{where} holds no samples (an empty recording).")
  if np.issubdtype(samples.dtype, np.integer):
    return samples.astype(np.float32) / np.iinfo(samples.dtype).max
  return samples.astype(np.float32)


def load_fsdd(
  path: str,
  *,
  sample_rate: int = 8000,
  duration: float = 1.0,
  test_indices: range = range(5),
  name: str = "fsdd",
) -> ArrayDataset:
  """The Free Spoken Digit Dataset from its recordings folder or zip -> float32 [N, T, 40, 1]."""
  require_file(path, "FSDD recordings folder or zip")
  members, read = list_members(path, "{digit}_{speaker}_{index}.wav files")
  splits: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
  for member in sorted(members):
    match = FSDD_NAME.search(member)
    if not match:
      continue
    digit, _, index = match.groups()
    signal = read_wav(read(member), f"{path}:{member}", sample_rate)
    split = "test" if int(index) in test_indices else "train"
    splits[split][0].append(clip_spectrogram(signal, sample_rate, duration, **FSDD_WINDOWS))
    splits[split][1].append(int(digit))
  if not splits["train"][0]:
    raise DataError(
      f"{path} holds no {{digit}}_{{speaker}}_{{index}}.wav files with an index "
      f"outside {test_indices.start}-{test_indices.stop - 1} (the training split)."
    )
  if not splits["test"][0]:
    raise DataError(
      f"{path} holds no test recordings: FSDD's test split is index "
      f"{test_indices.start}-{test_indices.stop - 1} of every digit and speaker "
      f"({len(splits['train'][0])} training recordings found)."
    )
  return ArrayDataset(
    name,
    _stack_splits(splits, sample_rate, duration, FSDD_WINDOWS),
    10,
    tuple(str(d) for d in range(10)),
    source=path,
  )


def load_speech_commands(
  path: str, *, sample_rate: int = 16000, duration: float = 1.0, name: str = "speech_commands"
) -> ArrayDataset:
  """Google Speech Commands (v0.01 or v0.02) as distributed: `<word>/<speaker>_nohash_<n>.wav`,
  with `validation_list.txt` and `testing_list.txt` naming the held-out files (the standard
  split); every word folder is a class (`_background_noise_` excluded). -> float32
  [N, 98, 40, 1] log-mel spectrograms of 1 s (25 ms windows, 10 ms hop at 16 kHz)."""
  require_file(path, "Speech Commands folder or tar-extracted zip")
  members, read = list_members(path, "<word>/<speaker>_nohash_<n>.wav files and the split lists")
  lists = {}
  for split, file_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
    found = [m for m in members if m.split("/")[-1] == file_name]
    if not found:
      raise DataError(f"{path} has no {file_name} (the standard Speech Commands split).")
    root = found[0][: -len(file_name)]
    lists[split] = {
      root + line.strip() for line in read(found[0]).decode().splitlines() if line.strip()
    }
  wavs = sorted(
    m
    for m in members
    if m.endswith(".wav") and "_background_noise_" not in m and len(m.split("/")) >= 2
  )
  class_names = tuple(sorted({m.split("/")[-2] for m in wavs}))
  if not class_names:
    raise DataError(f"{path} holds no <word>/<file>.wav recordings.")
  _check_speech_commands_words(path, class_names)
  label_of = {word: index for index, word in enumerate(class_names)}
  splits: dict[str, tuple[list, list]] = {
    "train": ([], []),
    "validation": ([], []),
    "test": ([], []),
  }
  for member in wavs:
    signal = read_wav(read(member), f"{path}:{member}", sample_rate)
    split = next((s for s, names in lists.items() if member in names), "train")
    splits[split][0].append(
      clip_spectrogram(signal, sample_rate, duration, **SPEECH_COMMANDS_WINDOWS)
    )
    splits[split][1].append(label_of[member.split("/")[-2]])
  empty = [split for split, (inputs, _) in splits.items() if not inputs]
  if empty:
    raise DataError(
      f"{path} has no {' or '.join(empty)} recordings (the split lists name files "
      "that are not there, or every file)."
    )
  dataset = ArrayDataset(
    name,
    _stack_splits(splits, sample_rate, duration, SPEECH_COMMANDS_WINDOWS),
    len(class_names),
    class_names,
    source=path,
  )
  version = _speech_commands_version(class_names)
  invariants.check_published(
    f"Speech Commands {version}",
    f"{path} (word folders)",
    {"recordings": len(wavs)},
    {"recordings": SPEECH_COMMANDS_ROWS[version]},
    hint=invariants.WHOLE_SET,
  )
  return dataset


def _speech_commands_version(words: tuple[str, ...]) -> str:
  """v0.02 if any of its five new words is a word folder, else v0.01."""
  added = set(SPEECH_COMMANDS_WORDS["v0.02"]) - set(SPEECH_COMMANDS_WORDS["v0.01"])
  return "v0.02" if added & set(words) else "v0.01"


def _check_speech_commands_words(path: str, words: tuple[str, ...]) -> None:
  """The word folders are one published version's (v0.02 if any of its five new words is
  there): its count, then its words; a DataError names the folder, the version and the words
  missing or extra."""
  version = _speech_commands_version(words)
  published = SPEECH_COMMANDS_WORDS[version]
  name, where = f"Speech Commands {version}", f"{path} (word folders)"
  invariants.check_published(
    name,
    where,
    {"classes": len(words)},
    {"classes": len(published)},
    hint="one word folder per published word",
  )
  missing, extra = sorted(set(published) - set(words)), sorted(set(words) - set(published))
  if missing or extra:
    raise DataError(
      f"{where}: {name} has the words {', '.join(published)}; missing {missing}, extra {extra}."
    )


def _stack_splits(splits, sample_rate: int, duration: float, windows: dict[str, int]):
  """{split: (list of spectrograms, list of labels)} -> {split: (float32 [N, T, 40, 1], int32)}."""
  frames = 1 + (int(round(duration * sample_rate)) - windows["fft_size"]) // windows["hop"]
  return {
    split: (np.stack(x) if x else np.zeros((0, frames, 40, 1), np.float32), np.asarray(y, np.int32))
    for split, (x, y) in splits.items()
  }


# TFDS audio: (sample rate, analysis windows). 16-bit PCM samples scale to [-1, 1] as read_wav does.
TFDS_AUDIO_DATASETS = {
  "spoken_digit": (8000, FSDD_WINDOWS),
  "speech_commands": (16000, SPEECH_COMMANDS_WINDOWS),
}
PCM16_FULL_SCALE = float(np.iinfo(np.int16).max)


def load_tfds_audio(
  name: str, data_dir: str | None = None, *, duration: float = 1.0, test_indices: range = range(5)
) -> ArrayDataset:
  """`spoken_digit` or `speech_commands` through `tfds.data_source` (prepared ArrayRecord files,
  `tfds.data_source(name, data_dir=...)` downloads and prepares them where there is internet)
  -> the same log-mel arrays as `load_fsdd` / `load_speech_commands`."""
  if name not in TFDS_AUDIO_DATASETS:
    raise DataError(
      f"Unknown TFDS audio dataset {name!r}; valid: {', '.join(TFDS_AUDIO_DATASETS)}."
    )
  require_tensorflow(f"tfds:{name} (TFDS's audio builders import TensorFlow)")
  import tensorflow_datasets as tfds

  sample_rate, windows = TFDS_AUDIO_DATASETS[name]
  has_test = name == "speech_commands"
  names = ("train", "validation", "test") if has_test else ("train",)
  splits: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
  if has_test:
    splits["validation"] = ([], [])
  label_feature = tfds.builder(name, data_dir=data_dir).info.features["label"]
  for split in names:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    for index in range(len(source)):
      record = source[index]
      signal = np.asarray(record["audio"]).astype(np.float32) / PCM16_FULL_SCALE
      target = split
      if not has_test:  # spoken_digit: FSDD's split by the recording's index in its file name.
        file_name = record["audio/filename"]
        file_name = file_name.decode() if isinstance(file_name, bytes) else str(file_name)
        match = FSDD_NAME.search(file_name)
        if not match:
          raise DataError(
            f"tfds:{name} record {index} has file name {file_name!r}; expected "
            "{digit}_{speaker}_{index}.wav, which gives FSDD's train/test split."
          )
        target = "test" if int(match.group(3)) in test_indices else "train"
      splits[target][0].append(clip_spectrogram(signal, sample_rate, duration, **windows))
      splits[target][1].append(int(record["label"]))
  # ArrayDataset checks every label against num_classes.
  return ArrayDataset(
    f"tfds:{name}",
    _stack_splits(splits, sample_rate, duration, windows),
    label_feature.num_classes,
    tuple(label_feature.names),
    source=data_dir or "",
  )
