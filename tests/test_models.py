"""The training system's models: shapes, hidden layers, mixed precision, and the GCN's graph
convolution against a dense NumPy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from mixupe_jax.models import (GCN, ResNet, WideResNet, flax_apply_fn, init_model, node_apply_fn,
                               normalized_edges)


@pytest.mark.parametrize("module,layers", [
    (WideResNet(5, depth=10, widen_factor=1), 3),
    (ResNet(5, stage_sizes=(1, 1, 1, 1), width=4), 4),
])
def test_image_models_shapes_hidden_layers_and_bfloat16(module, layers):
  x = jnp.ones((2, 32, 32, 3))
  params, state = init_model(module, jax.random.key(0), x)
  logits, _ = flax_apply_fn(module)(params, state, x)
  assert logits.shape == (2, 5)
  for layer in range(layers + 1):  # Every advertised hidden layer is reachable.
    seen = []
    flax_apply_fn(module)(params, state, x, hidden_layer=layer,
                          hidden_transform=lambda h: seen.append(h.shape) or h)
    assert len(seen) == 1
  with pytest.raises(ValueError, match="hidden layers"):
    flax_apply_fn(module)(params, state, x, hidden_layer=layers + 1, hidden_transform=lambda h: h)
  half = module.clone(dtype=jnp.bfloat16)
  half_params, half_state = init_model(half, jax.random.key(0), x)
  assert {p.dtype for p in jax.tree.leaves(half_params)} == {jnp.dtype(jnp.float32)}
  assert flax_apply_fn(half)(half_params, half_state, x)[0].dtype == jnp.float32


def test_wide_resnet_depth_must_be_6n_plus_4():
  with pytest.raises(ValueError, match="6n \\+ 4.*got 27"):
    init_model(WideResNet(3, depth=27, widen_factor=1), jax.random.key(0), jnp.ones((1, 8, 8, 3)))


def _graph():
  rng = np.random.default_rng(0)
  upper = scipy.sparse.random(12, 12, density=0.3, random_state=1, format="csr")
  adjacency = ((upper + upper.T) > 0).astype(np.float32)
  adjacency.setdiag(0)
  adjacency.eliminate_zeros()
  return adjacency, rng.normal(size=(12, 5)).astype(np.float32)


def test_gcn_propagation_is_the_normalized_adjacency_product():
  adjacency, features = _graph()
  dense = adjacency.toarray() + np.eye(12)
  degree = dense.sum(1)
  a_hat = dense / np.sqrt(degree[:, None] * degree[None, :])
  module = GCN(3, edges=normalized_edges(adjacency), hidden_sizes=(4,))
  params, _ = init_model(module, jax.random.key(0), features)
  hidden = np.maximum(a_hat @ (features @ params["Dense_0"]["kernel"] +
                               params["Dense_0"]["bias"]), 0)
  expected = a_hat @ (hidden @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"])
  np.testing.assert_allclose(module.apply({"params": params}, features), expected, atol=1e-5)


def test_node_apply_fn_is_the_full_graph_restricted_to_the_nodes():
  adjacency, features = _graph()
  module = GCN(3, edges=normalized_edges(adjacency), hidden_sizes=(4,), propagate_output=False)
  params, _ = init_model(module, jax.random.key(0), features)
  ids = np.array([1, 4, 7])
  apply_fn = node_apply_fn(module, features, ids)
  logits, _ = apply_fn(params, {}, jnp.asarray(features[ids]))
  np.testing.assert_allclose(logits, module.apply({"params": params}, features)[ids], atol=1e-6)
  # A hidden transform sees only the batch's rows, and changing them changes only their paths.
  seen = []
  doubled, _ = apply_fn(params, {}, jnp.asarray(features[ids]), hidden_layer=1,
                        hidden_transform=lambda h: seen.append(h.shape) or 2 * h)
  assert seen == [(3, 4)]
  full = module.apply({"params": params}, features, hidden_layer=1,
                      hidden_transform=lambda h: h.at[ids].set(2 * h[ids]))
  np.testing.assert_allclose(doubled, full[ids], atol=1e-6)
