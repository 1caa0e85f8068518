"""Planetoid citation graphs (Cora, CiteSeer, PubMed; Yang et al. 2016) from `ind.<name>.*`.

x / tx / allx: features of the labeled training nodes / the test nodes / all non-test nodes;
y / ty / ally: their one-hot labels; graph: dict node -> neighbours; test.index: the ids of the
test nodes. The standard split: the first len(y) nodes train, the next 500 validation, and the
1,000 test.index nodes test.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import scipy.sparse

from mixupe_jax.data.base import DataError, GraphDataset, require_file


def _load(directory: str, name: str, part: str):
  path = require_file(os.path.join(directory, f"ind.{name}.{part}"), "Planetoid file")
  try:
    if part == "test.index":
      with open(path) as file:
        return np.asarray([int(line) for line in file if line.strip()], np.int64)
    with open(path, "rb") as file, warnings.catch_warnings():
      # The files pickle scipy.sparse.csr.csr_matrix, a path SciPy deprecates; nothing to fix here.
      warnings.simplefilter("ignore", DeprecationWarning)
      return pickle.load(file, encoding="latin1")
  except (pickle.UnpicklingError, ValueError, EOFError) as error:
    raise DataError(f"{path} is not a readable Planetoid {part} file ({error}).") from error


def load_planetoid(directory: str, name: str = "cora") -> GraphDataset:
  x, y, tx, ty, allx, ally, graph = (_load(directory, name, part)
                                     for part in ("x", "y", "tx", "ty", "allx", "ally", "graph"))
  test_index = _load(directory, name, "test.index")
  test_sorted = np.sort(test_index)
  if name == "citeseer":
    # CiteSeer has isolated test nodes missing from tx: give them zero features and labels.
    full = np.arange(test_sorted.min(), test_sorted.max() + 1)
    tx_full = scipy.sparse.lil_matrix((len(full), tx.shape[1]))
    tx_full[test_sorted - test_sorted.min(), :] = tx
    ty_full = np.zeros((len(full), ty.shape[1]))
    ty_full[test_sorted - test_sorted.min(), :] = ty
    tx, ty = tx_full, ty_full
  features = scipy.sparse.vstack([allx, tx]).tolil()
  features[test_index, :] = features[test_sorted, :]
  labels_onehot = np.vstack([ally, ty])
  labels_onehot[test_index, :] = labels_onehot[test_sorted, :]
  num_nodes = features.shape[0]
  rows = [node for node, neighbours in graph.items() for _ in neighbours]
  cols = [n for neighbours in graph.values() for n in neighbours]
  adjacency = scipy.sparse.coo_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                      shape=(num_nodes, num_nodes)).tocsr()
  adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
  adjacency.setdiag(0)
  adjacency.eliminate_zeros()
  num_train = len(y)
  splits = {"train": np.arange(num_train), "validation": np.arange(num_train, num_train + 500),
            "test": test_sorted}
  return GraphDataset(name, np.asarray(features.todense(), np.float32), adjacency.tocsr(),
                      np.argmax(labels_onehot, 1).astype(np.int32), splits,
                      labels_onehot.shape[1])
