"""The loaders on the real datasets in ../shared/data (skipped, naming what is missing, without it).

Set MIXUPE_JAX_DATA to point elsewhere."""

import os
import pathlib

import numpy as np
import pytest

from mixupe_jax import data
from mixupe_jax.data import tabular

DATA = pathlib.Path(os.environ.get(
    "MIXUPE_JAX_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))


def need(relative: str) -> str:
  path = DATA / relative
  if not path.exists():
    pytest.skip(f"real data not available: {path} is missing (set MIXUPE_JAX_DATA to the folder "
                "holding mnist/, fashion_mnist/, cifar10/, fsdd/, planetoid/ and uci/)")
  return str(path)


@pytest.mark.parametrize("folder", ["mnist", "fashion_mnist"])
def test_idx_datasets(folder):
  dataset = data.load(f"idx:{need(folder)}")
  assert dataset.inputs("train").shape == (60000, 28, 28, 1)
  assert dataset.inputs("test").shape == (10000, 28, 28, 1)
  assert dataset.inputs("train").dtype == np.uint8 and dataset.num_classes == 10
  np.testing.assert_array_equal(np.bincount(dataset.labels("test")) > 0, True)


@pytest.mark.slow
def test_cifar10_from_the_jpeg_zip():
  dataset = data.load(f"imagefolder:{need('cifar10/cifar10_jpeg.zip')}")
  assert dataset.inputs("train").shape == (50000, 32, 32, 3)
  assert dataset.inputs("test").shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(dataset.labels("train")), 5000)
  np.testing.assert_array_equal(np.bincount(dataset.labels("test")), 1000)
  assert dataset.class_names[0] == "airplane" and dataset.class_names[-1] == "truck"


def test_fsdd_spectrograms():
  dataset = data.load(f"fsdd:{need('fsdd/fsdd_recordings.zip')}")
  assert len(dataset.inputs("train")) == 2700 and len(dataset.inputs("test")) == 300
  assert dataset.inputs("train").shape[1:] == (97, 40, 1)
  assert np.all(np.isfinite(dataset.inputs("train")))
  np.testing.assert_array_equal(np.bincount(dataset.labels("test")), 30)


def test_cora():
  graph = data.load(f"planetoid:cora:{need('planetoid')}")
  assert graph.features.shape == (2708, 1433) and graph.num_classes == 7
  assert {k: len(v) for k, v in graph.split_indices.items()} == {
      "train": 140, "validation": 500, "test": 1000}
  assert graph.adjacency.nnz == 10556  # 5,278 undirected edges, as in Kipf & Welling's Cora.
  assert (graph.adjacency != graph.adjacency.T).nnz == 0
  np.testing.assert_array_equal(np.bincount(graph.labels[graph.split_indices["train"]]), 20)


@pytest.mark.parametrize("name", list(tabular.UCI_DATASETS))
def test_uci(name):
  dataset = data.load(f"uci:{name}:{need('uci')}")
  rows = len(dataset.inputs("train")) + len(dataset.inputs("test"))
  assert rows == tabular.UCI_DATASETS[name].expected_rows
  train = dataset.inputs("train")
  assert np.all(np.isfinite(train)) and np.all(np.isfinite(dataset.inputs("test")))
  # Standardized on the training split: numeric columns have mean 0 there.
  numeric = np.abs(train.std(0) - 1) < 1e-3
  np.testing.assert_allclose(train[:, numeric].mean(0), 0, atol=1e-4)
