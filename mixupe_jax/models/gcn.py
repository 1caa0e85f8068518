"""Graph convolutional network (Kipf & Welling 2017) for node classification, and the adapter that
makes a node subset look like a batch to the losses.

One layer: H' = A_hat H W, with A_hat = D^-1/2 (A + I) D^-1/2, applied as a weighted sum over the
edge list (scales to PubMed without a dense N x N matrix). Hidden layer k is the representation
after the k-th graph convolution and its ReLU; 0 is the node features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mixupe_jax.models.apply import (
  ApplyFn,
  HiddenTransform,
  check_hidden_layer,
  declare_coupling,
  dropout_rngs,
  maybe_transform,
  output_dtype,
)


def normalized_edges(adjacency: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(senders, receivers, weights) of A_hat = D^-1/2 (A + I) D^-1/2, from a scipy sparse A."""
  import scipy.sparse

  with_loops = scipy.sparse.coo_matrix(adjacency + scipy.sparse.eye(adjacency.shape[0]))
  degree = np.asarray(with_loops.sum(axis=1)).ravel()
  inverse_sqrt = 1.0 / np.sqrt(degree)
  weights = inverse_sqrt[with_loops.row] * with_loops.data * inverse_sqrt[with_loops.col]
  return (
    with_loops.col.astype(np.int32),
    with_loops.row.astype(np.int32),
    weights.astype(np.float32),
  )


class GCN(nn.Module):
  """Graph convolutions with ReLU between them; the last one outputs the logits.

  `edges` is (senders, receivers, weights) from `normalized_edges`; input x is [N, D] (all nodes).
  """

  num_classes: int
  edges: tuple[Any, Any, Any]
  hidden_sizes: Sequence[int] = (16,)
  # False: a dense readout after the last hidden layer, so that layer summarizes each node's whole
  # receptive field and mixing it (Manifold Mixup) mixes two nodes consistently; mixing earlier
  # puts node j's features in node i's neighbourhood while the label says j.
  propagate_output: bool = True
  # Dropout on the input of every dense layer in train mode (Kipf & Welling: 0.5).
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def propagate(self, h: jax.Array) -> jax.Array:
    senders, receivers, weights = (jnp.asarray(e) for e in self.edges)
    messages = h[senders] * weights[:, None].astype(h.dtype)
    return jax.ops.segment_sum(messages, receivers, num_segments=h.shape[0])

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    train: bool = True,
    hidden_layer: int | None = None,
    hidden_transform: HiddenTransform | None = None,
  ) -> jax.Array:
    check_hidden_layer(hidden_layer, len(self.hidden_sizes), "GCN")
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train or not self.dropout_rate)
    h = maybe_transform(x.astype(self.dtype), 0, hidden_layer, hidden_transform)
    for layer, size in enumerate(self.hidden_sizes, start=1):
      h = nn.relu(self.propagate(nn.Dense(size, dtype=self.dtype)(dropout(h))))
      h = maybe_transform(h, layer, hidden_layer, hidden_transform)
    logits = nn.Dense(self.num_classes, dtype=self.dtype)(dropout(h))
    if self.propagate_output:
      logits = self.propagate(logits)
    return logits.astype(output_dtype(self.dtype))


def node_apply_fn(
  module: nn.Module, features: Any, node_ids: Any, *, train: bool = True
) -> ApplyFn:
  """An `ApplyFn` whose batch is the nodes `node_ids` of one graph.

  apply_fn(params, state, node_inputs) writes node_inputs [len(node_ids), D] into the full feature
  matrix, runs the network over the whole graph and returns the logits of `node_ids`. A hidden
  transform (Manifold Mixup, the MixupE term at a hidden layer) acts on those nodes' rows only, so
  the mixing ops see an ordinary batch.
  """
  features, node_ids = jnp.asarray(features), jnp.asarray(node_ids)

  def apply_fn(params, model_state, node_inputs, hidden_layer=None, hidden_transform=None):
    x = features.astype(node_inputs.dtype).at[node_ids].set(node_inputs)
    transform = None
    if hidden_transform is not None:
      transform = lambda h: h.at[node_ids].set(hidden_transform(h[node_ids]))
    rngs, model_state = dropout_rngs(model_state, train)
    logits = module.apply(
      {"params": params},
      x,
      train=train,
      rngs=rngs,
      hidden_layer=hidden_layer,
      hidden_transform=transform,
    )
    return logits[node_ids], model_state

  return declare_coupling(apply_fn, True)  # A node's logits depend on its neighbours' features.
