"""Spoken digits: wav files (FSDD naming `{digit}_{speaker}_{index}.wav`) to log-mel spectrograms.

    mel(f) = 2595 log10(1 + f / 700)                     (HTK mel scale)
    S[t, m] = log(sum_k |STFT[t, k]|^2 W[m, k] + 1e-6)    (Hann window, triangular mel filters W)

Every clip is zero-padded or cut to `duration` seconds, so all spectrograms share one shape
[frames, num_mels, 1]. FSDD's own split: index 0-4 of each speaker and digit is test, 5-49 train.
"""

from __future__ import annotations

import io
import re

import numpy as np
import scipy.io.wavfile

from mixupe_jax.data.base import ArrayDataset, DataError, list_members, require_file

FSDD_NAME = re.compile(r"(?:^|/)(\d)_([A-Za-z]+)_(\d+)\.wav$")


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


def log_mel_spectrogram(signal: np.ndarray, sample_rate: int, *, fft_size: int = 256,
                        hop: int = 80, num_mels: int = 40) -> np.ndarray:
  """log-mel spectrogram [frames, num_mels] of a mono float signal."""
  if len(signal) < fft_size:
    signal = np.pad(signal, (0, fft_size - len(signal)))
  frames = 1 + (len(signal) - fft_size) // hop
  index = np.arange(fft_size)[None] + hop * np.arange(frames)[:, None]
  windowed = signal[index] * np.hanning(fft_size)[None]
  power = np.abs(np.fft.rfft(windowed, axis=-1)) ** 2
  return np.log(power @ mel_filterbank(num_mels, fft_size, sample_rate).T + 1e-6).astype(
      np.float32)


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
  if np.issubdtype(samples.dtype, np.integer):
    return samples.astype(np.float32) / np.iinfo(samples.dtype).max
  return samples.astype(np.float32)


def load_fsdd(path: str, *, sample_rate: int = 8000, duration: float = 1.0,
              test_indices: range = range(5), name: str = "fsdd") -> ArrayDataset:
  """The Free Spoken Digit Dataset from its recordings folder or zip -> float32 [N, T, 40, 1]."""
  require_file(path, "FSDD recordings folder or zip")
  members, read = list_members(path, "{digit}_{speaker}_{index}.wav files")
  length = int(round(duration * sample_rate))
  splits = {"train": ([], []), "test": ([], [])}
  for member in sorted(members):
    match = FSDD_NAME.search(member)
    if not match:
      continue
    digit, _, index = match.groups()
    signal = read_wav(read(member), f"{path}:{member}", sample_rate)[:length]
    signal = np.pad(signal, (0, length - len(signal)))
    split = "test" if int(index) in test_indices else "train"
    splits[split][0].append(log_mel_spectrogram(signal, sample_rate)[..., None])
    splits[split][1].append(int(digit))
  if not splits["train"][0]:
    raise DataError(f"{path} holds no {{digit}}_{{speaker}}_{{index}}.wav files.")
  arrays = {split: (np.stack(x) if x else np.zeros((0,)), np.asarray(y, np.int32))
            for split, (x, y) in splits.items()}
  return ArrayDataset(name, arrays, 10, tuple(str(d) for d in range(10)))


def load_speech_commands(path: str, *, sample_rate: int = 16000, duration: float = 1.0,
                         name: str = "speech_commands") -> ArrayDataset:
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
    root = found[0][:-len(file_name)]
    lists[split] = {root + line.strip() for line in read(found[0]).decode().splitlines()
                    if line.strip()}
  wavs = sorted(m for m in members if m.endswith(".wav") and "_background_noise_" not in m
                and len(m.split("/")) >= 2)
  class_names = tuple(sorted({m.split("/")[-2] for m in wavs}))
  if not class_names:
    raise DataError(f"{path} holds no <word>/<file>.wav recordings.")
  label_of = {word: index for index, word in enumerate(class_names)}
  length = int(round(duration * sample_rate))
  splits = {"train": ([], []), "validation": ([], []), "test": ([], [])}
  for member in wavs:
    signal = read_wav(read(member), f"{path}:{member}", sample_rate)[:length]
    signal = np.pad(signal, (0, length - len(signal)))
    split = next((s for s, names in lists.items() if member in names), "train")
    spectrogram = log_mel_spectrogram(signal, sample_rate, fft_size=400, hop=160)
    splits[split][0].append(spectrogram[..., None])
    splits[split][1].append(label_of[member.split("/")[-2]])
  arrays = {split: (np.stack(x) if x else np.zeros((0, 1 + (length - 400) // 160, 40, 1),
                                                   np.float32), np.asarray(y, np.int32))
            for split, (x, y) in splits.items()}
  return ArrayDataset(name, arrays, len(class_names), class_names)
