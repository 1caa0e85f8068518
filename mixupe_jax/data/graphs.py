"""Planetoid citation graphs (Cora, CiteSeer, PubMed; Yang et al. 2016) from `ind.<name>.*`.

x / tx / allx: features of the labeled training nodes / the test nodes / all non-test nodes;
y / ty / ally: their one-hot labels; graph: dict node -> neighbours; test.index: the ids of the
test nodes. The standard split: the first len(y) nodes train, the next 500 validation, and the
1,000 test.index nodes test. Nodes outside every split (CiteSeer's isolated test nodes) may have an
all-zero label row; they are labelled 0 and never trained or evaluated.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import scipy.sparse

from mixupe_jax.data import invariants
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


# The published feature and class counts of the Planetoid sets (Yang et al. 2016).
PUBLISHED = {
  "cora": {"features": 1433, "classes": 7},
  "citeseer": {"features": 3703, "classes": 6},
  "pubmed": {"features": 500, "classes": 3},
}
# Their nodes (CiteSeer's include the isolated test nodes that tx lacks), checked last.
PUBLISHED_NODES = {"cora": 2708, "citeseer": 3327, "pubmed": 19717}


def _check_parts(directory: str, name: str, parts: dict) -> None:
  """Types and shapes of the pickled parts; a DataError names the file that is off."""
  path = lambda part: os.path.join(directory, f"ind.{name}.{part}")
  for part in ("x", "tx", "allx", "y", "ty", "ally"):
    value = parts[part]
    if not (scipy.sparse.issparse(value) or isinstance(value, np.ndarray)) or value.ndim != 2:
      raise DataError(f"{path(part)}: expected a 2-D matrix, got {type(value).__name__}.")
  if not isinstance(parts["graph"], dict):
    raise DataError(
      f"{path('graph')}: expected a dict node -> neighbours, got {type(parts['graph']).__name__}."
    )
  for features, labels in (("x", "y"), ("tx", "ty"), ("allx", "ally")):
    if parts[features].shape[0] != parts[labels].shape[0]:
      raise DataError(
        f"{path(labels)} has {parts[labels].shape[0]} rows but {path(features)} "
        f"has {parts[features].shape[0]}."
      )
  widths = {parts[p].shape[1] for p in ("x", "tx", "allx")}
  classes = {parts[p].shape[1] for p in ("y", "ty", "ally")}
  if len(widths) != 1 or len(classes) != 1:
    raise DataError(
      f"{directory} ind.{name}.*: the feature widths {sorted(widths)} or the label "
      f"widths {sorted(classes)} of x/tx/allx and y/ty/ally differ."
    )
  if name in PUBLISHED:
    invariants.check_published(
      f"Planetoid {name}",
      path("allx"),
      {"features": next(iter(widths)), "classes": next(iter(classes))},
      PUBLISHED[name],
    )


def load_planetoid(directory: str, name: str = "cora") -> GraphDataset:
  """The standard split of `ind.<name>.*` in `directory`. Every node of a split must have a
  one-hot label row; a node id outside the graph is an error naming its file."""
  require_file(directory, "Planetoid folder")
  names = ("x", "y", "tx", "ty", "allx", "ally", "graph")
  parts = {part: _load(directory, name, part) for part in names}
  _check_parts(directory, name, parts)
  x, y, tx, ty, allx, ally, graph = (parts[part] for part in names)
  test_index = _load(directory, name, "test.index")
  index_path = os.path.join(directory, f"ind.{name}.test.index")
  if not len(test_index):
    raise DataError(f"{index_path} lists no test nodes.")
  test_sorted = np.sort(test_index)
  num_known = allx.shape[0]
  if test_sorted[0] < num_known:
    raise DataError(
      f"{index_path}: test node {test_sorted[0]} is among the {num_known} nodes of "
      "allx; test nodes come after them."
    )
  if name == "citeseer":
    # CiteSeer has isolated test nodes missing from tx: give them zero features and labels.
    full = np.arange(test_sorted.min(), test_sorted.max() + 1)
    tx_full = scipy.sparse.lil_matrix((len(full), tx.shape[1]))
    tx_full[test_sorted - test_sorted.min(), :] = tx
    ty_full = np.zeros((len(full), ty.shape[1]))
    ty_full[test_sorted - test_sorted.min(), :] = ty
    tx, ty = tx_full, ty_full
  num_nodes = num_known + tx.shape[0]
  if test_sorted[-1] >= num_nodes:
    raise DataError(
      f"{index_path}: test node {test_sorted[-1]} is beyond the {num_nodes} nodes of allx and tx."
    )
  features = scipy.sparse.vstack([allx, tx]).tolil()
  features[test_index, :] = features[test_sorted, :]
  labels_onehot = np.vstack(
    [
      np.asarray(ally.todense() if scipy.sparse.issparse(ally) else ally),
      np.asarray(ty.todense() if scipy.sparse.issparse(ty) else ty),
    ]
  )
  labels_onehot[test_index, :] = labels_onehot[test_sorted, :]
  rows = [node for node, neighbours in graph.items() for _ in neighbours]
  cols = [n for neighbours in graph.values() for n in neighbours]
  out_of_range = [n for n in rows + cols if not 0 <= n < num_nodes]
  if out_of_range:
    raise DataError(
      f"{os.path.join(directory, f'ind.{name}.graph')}: node {out_of_range[0]} is "
      f"outside the {num_nodes} nodes of the features."
    )
  adjacency = scipy.sparse.coo_matrix(
    (np.ones(len(rows), np.float32), (rows, cols)), shape=(num_nodes, num_nodes)
  ).tocsr()
  adjacency = ((adjacency + adjacency.T) > 0).astype(np.float32)
  adjacency.setdiag(0)
  adjacency.eliminate_zeros()
  num_train = len(y)
  # The standard validation nodes are the 500 after the training ones, among the labelled allx
  # nodes (fewer in a graph that small).
  splits = {
    "train": np.arange(num_train),
    "validation": np.arange(num_train, min(num_train + 500, num_known)),
    "test": test_sorted,
  }
  for split, nodes in splits.items():
    rows_of_split = labels_onehot[nodes]
    not_one_hot = np.flatnonzero((rows_of_split.sum(1) != 1) | (rows_of_split.max(1) != 1))
    if len(not_one_hot):
      node = int(nodes[not_one_hot[0]])
      source = f"ind.{name}.{'ty' if split == 'test' else 'ally'}"
      raise DataError(
        f"{os.path.join(directory, source)}: {split} node {node} has label row "
        f"{labels_onehot[node].tolist()}; expected one-hot (an all-zero row would "
        "silently become class 0)."
      )
  dataset = GraphDataset(
    name,
    np.asarray(features.todense(), np.float32),
    adjacency.tocsr(),
    np.argmax(labels_onehot, 1).astype(np.int32),
    splits,
    labels_onehot.shape[1],
    source=directory,
  )
  if name in PUBLISHED_NODES:
    invariants.check_published(
      f"Planetoid {name}",
      os.path.join(directory, f"ind.{name}.*"),
      {"nodes": num_nodes},
      {"nodes": PUBLISHED_NODES[name]},
      hint=invariants.WHOLE_SET,
    )
  return dataset


def row_normalized(features: np.ndarray) -> np.ndarray:
  """Each row divided by its sum (rows summing to 0 stay 0), as Kipf & Welling preprocess."""
  sums = features.sum(axis=1, keepdims=True)
  return (features / np.where(sums == 0, 1, sums)).astype(features.dtype)
