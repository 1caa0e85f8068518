r"""x_bar, the training-set mean of the preprocessed inputs: one streaming pass, cached.

.. math::

   \bar x = \frac{1}{N} \sum_n x_n \quad \text{over every training example of every host,}

accumulated in float64 batch by batch, so the data never needs to be in memory at once. With
several processes, each streams its own shard and the means are combined weighted by the counts.

The cache file is named by what x_bar depends on: the caller's fingerprint (spec, split, seed,
augmentation) and the data itself (`content_signature`: the size and modification time of every
file), so changed files are never answered with a stale mean. It is written with the process's
umask (readable by whoever may read the data), and a cache file that cannot be read is
recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable

import numpy as np


def streaming_mean(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
  """(mean over the leading axis of all batches, number of examples), in one pass."""
  total: np.ndarray | None = None
  count = 0
  for batch in batches:
    batch = np.asarray(batch)
    partial = batch.sum(axis=0, dtype=np.float64)
    total = partial if total is None else total + partial
    count += len(batch)
  if total is None or not count:
    raise ValueError("Cannot take the mean of an empty dataset.")
  return total / count, count


def combine_across_processes(local_mean: np.ndarray, local_count: int) -> np.ndarray:
  """The global mean from per-process means, weighted by the per-process example counts."""
  import jax  # Imported here: the data package does not need jax otherwise.

  if jax.process_count() == 1:
    return local_mean
  from jax.experimental import multihost_utils

  sums = multihost_utils.process_allgather(local_mean * local_count)
  counts = multihost_utils.process_allgather(np.asarray(local_count, np.float64))
  return np.sum(sums, axis=0) / np.sum(counts)


def array_batches(
  inputs: np.ndarray, batch_size: int, preprocess: Callable[[np.ndarray], np.ndarray] | None = None
):
  for start in range(0, len(inputs), batch_size):
    batch = inputs[start : start + batch_size]
    yield batch if preprocess is None else preprocess(batch)


# Earlier versions cached x_bar next to the dataset as `<dataset>.x_bar-<hash>.npy`; such files
# left in a data folder are not part of its content.
CACHE_MARK = ".x_bar-"


def content_signature(path: str) -> str:
  """A digest of the size and modification time of `path`, or of every file under it (x_bar
  cache files excluded): it changes when the data does."""
  entries = []
  if os.path.isdir(path):
    for root, folders, files in os.walk(path):
      folders.sort()
      for name in sorted(files):
        if CACHE_MARK in name:
          continue
        status = os.stat(os.path.join(root, name))
        relative = os.path.relpath(os.path.join(root, name), path)
        entries.append(f"{relative}|{status.st_size}|{status.st_mtime_ns}")
  elif os.path.exists(path):
    status = os.stat(path)
    entries.append(f"|{status.st_size}|{status.st_mtime_ns}")
  return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def cache_path_for(dataset_path: str | None, fingerprint: str) -> str:
  """`x_bar-<hash>.npy` under $MIXUPE_JAX_CACHE when it is set, else under ~/.cache/mixupe_jax:
  never next to the dataset, whose folder may be shared or read-only. The hash covers
  `fingerprint` and the data's content signature."""
  if dataset_path:
    fingerprint = f"{fingerprint}|content={content_signature(dataset_path)}"
  digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
  folder = os.environ.get("MIXUPE_JAX_CACHE") or os.path.expanduser("~/.cache/mixupe_jax")
  return os.path.join(folder, f"x_bar-{digest}.npy")


def cached_x_bar(path: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
  """Loads x_bar from `path`, or computes and saves it there atomically (never a partial file);
  an unreadable cache file is computed again and replaced."""
  if os.path.exists(path):
    try:
      return np.load(path)
    except (OSError, ValueError, EOFError) as error:
      logging.warning("The cached x_bar %s cannot be read (%s); computing it again.", path, error)
  value = np.asarray(compute(), np.float32)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as file:
      np.save(file, value)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; others may read the data.
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return value


def streamed_x_bar(
  batches: Callable[[], Iterable[np.ndarray]], *, cache_path: str | None = None
) -> np.ndarray:
  """x_bar over `batches()` (this process's preprocessed training inputs), averaged across
  processes, cached at `cache_path` when given.

  With several processes the cache is bypassed: the means are combined by a collective every
  process must join, which a cache hit on one host would skip.
  """

  def compute():
    mean, count = streaming_mean(batches())
    return combine_across_processes(mean, count)

  import jax  # Imported here: the data package does not need jax otherwise.

  if cache_path is None or jax.process_count() > 1:
    return np.asarray(compute(), np.float32)
  return cached_x_bar(cache_path, compute)


def x_bar(
  inputs: np.ndarray,
  *,
  preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
  batch_size: int = 4096,
  cache_path: str | None = None,
) -> np.ndarray:
  """x_bar of `inputs` after `preprocess`, streamed in batches, averaged across processes."""
  return streamed_x_bar(
    lambda: array_batches(inputs, batch_size, preprocess), cache_path=cache_path
  )
