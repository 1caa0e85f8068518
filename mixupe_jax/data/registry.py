"""Datasets named by a string, as configs name them.

The names (`load(spec)`)::

  idx:<dir>                     MNIST / Fashion-MNIST idx(.gz) files
  imagefolder:<dir or zip>      <split>/<class>/<image> (e.g. the CIFAR-10 JPEG zip)
  cifar_pickle:<dir>            the official CIFAR-10/100 python pickles
  tinyimagenet:<dir or zip>     Tiny-ImageNet-200 as distributed (val/val_annotations.txt labels)
  fsdd:<dir or zip>             Free Spoken Digit Dataset wav files -> log-mel spectrograms
  speech_commands:<dir or zip>  Google Speech Commands as distributed -> log-mel spectrograms
  planetoid:<name>:<dir>        Planetoid citation graphs (cora, citeseer, pubmed)
  uci:<name>:<dir>              the six UCI sets of the Mixup paper (see tabular.UCI_DATASETS)
  csv:<file>[:label=<column>][:test=<file>][:delimiter=<c>]
                                any CSV table (see tabular.load_csv): the label column by
                                header name or index (default the last)
  npz:<file.npz>, npy:<folder>  prepared arrays x, y (or x_train, y_train, x_test, y_test)
  sklearn:<name>                scikit-learn's bundled digits / iris / wine / breast_cancer
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mixupe_jax.data import arrays, audio, graphs, idx, images, tabular
from mixupe_jax.data.base import ArrayDataset, DataError, GraphDataset

SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer")
SCHEMES = (
  "idx",
  "imagefolder",
  "cifar_pickle",
  "tinyimagenet",
  "fsdd",
  "speech_commands",
  "planetoid",
  "uci",
  "csv",
  "npz",
  "npy",
  "sklearn",
)
CSV_OPTIONS = ("label", "test", "delimiter")


def load_sklearn(name: str, *, test_fraction: float = 0.25, seed: int = 0) -> ArrayDataset:
  """A scikit-learn bundled dataset: stratified seeded split, features standardized on train."""
  if name not in SKLEARN_DATASETS:
    raise DataError(f"Unknown scikit-learn dataset {name!r}; valid: {', '.join(SKLEARN_DATASETS)}.")
  import sklearn.datasets

  features, labels = getattr(sklearn.datasets, f"load_{name}")(return_X_y=True)
  train, test = tabular.stratified_split(labels, test_fraction, seed)
  train_x, test_x = tabular.standardize(features[train], features[test])
  labels = labels.astype(np.int32)
  return ArrayDataset(
    f"sklearn:{name}",
    {
      "train": (train_x.astype(np.float32), labels[train]),
      "test": (test_x.astype(np.float32), labels[test]),
    },
    int(labels.max()) + 1,
  )


def dataset_path(spec: str) -> str | None:
  """The file or folder a spec reads (None for bundled data): where x_bar is cached."""
  scheme, _, rest = spec.partition(":")
  if scheme in ("planetoid", "uci"):
    return rest.partition(":")[2]
  if scheme == "csv":
    return rest.split(":")[0]
  return None if scheme == "sklearn" else rest


def _csv_options(spec: str) -> tuple[str, dict[str, str]]:
  """csv:<file>[:key=value]... -> (file, options); an unknown key is an error naming it."""
  path, *parts = spec.removeprefix("csv:").split(":")
  options = {}
  for part in parts:
    key, equals, value = part.partition("=")
    if not equals or key not in CSV_OPTIONS:
      raise DataError(
        f"{spec!r}: {part!r} is not an option; csv: takes "
        f"{', '.join(k + '=...' for k in CSV_OPTIONS)} after the file."
      )
    options[key] = {"\\t": "\t", "tab": "\t"}.get(value, value) if key == "delimiter" else value
  return path, options


def load(spec: str) -> ArrayDataset | GraphDataset:
  """The dataset a spec string names; a DataError lists the valid schemes."""
  scheme, _, rest = spec.partition(":")
  if scheme not in SCHEMES or not rest:
    raise DataError(
      f"Unknown dataset {spec!r}; valid forms: idx:<dir>, imagefolder:<path>, "
      "cifar_pickle:<dir>, tinyimagenet:<path>, fsdd:<path>, speech_commands:<path>, "
      "planetoid:<name>:<dir>, "
      "uci:<name>:<dir>, csv:<file>[:label=<column>][:test=<file>], npz:<file>, "
      "npy:<folder>, "
      f"sklearn:<{'|'.join(SKLEARN_DATASETS)}>."
    )
  if scheme in ("planetoid", "uci"):
    name, _, directory = rest.partition(":")
    if not directory:
      raise DataError(f"{spec!r}: expected {scheme}:<name>:<dir>.")
    return (
      graphs.load_planetoid(directory, name)
      if scheme == "planetoid"
      else tabular.load_uci(name, directory)
    )
  loaders: dict[str, Callable[[str], ArrayDataset]] = {
    "idx": idx.load_idx_dataset,
    "imagefolder": images.load_image_folder,
    "cifar_pickle": images.load_cifar_pickles,
    "tinyimagenet": images.load_tiny_imagenet,
    "fsdd": audio.load_fsdd,
    "speech_commands": audio.load_speech_commands,
  }
  if scheme == "sklearn":
    return load_sklearn(rest)
  if scheme == "csv":
    path, options = _csv_options(spec)
    return tabular.load_csv(
      path, label=options.get("label"), test=options.get("test"), delimiter=options.get("delimiter")
    )
  if scheme in ("npz", "npy"):
    return arrays.load_arrays(rest)
  return loaders[scheme](rest)
