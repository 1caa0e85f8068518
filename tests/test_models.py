"""The training system's models: shapes, hidden layers, mixed precision, and the GCN's graph
convolution against a dense NumPy computation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from mixupe_jax.models import (GCN, ResNet, WideResNet, flax_apply_fn, init_model, node_apply_fn,
                               normalized_edges, registry)
from mixupe_jax.models.apply import DROPOUT_RNG, output_dtype


@pytest.mark.parametrize("module,layers", [
    (WideResNet(5, depth=10, widen_factor=1), 3),
    (ResNet(5, stage_sizes=(1, 1, 1, 1), width=4), 4),
])
@pytest.mark.slow
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


def test_logits_leave_every_model_in_float32_or_float64_whatever_the_compute_dtype():
  """`output_dtype`: float32 for bfloat16, float16 and float32 compute, float64 for float64 (by
  hand). Mutants that fail it (checked by hand): either argument of the promotion None (NumPy
  reads None as float64)."""
  expected = {jnp.bfloat16: jnp.float32, jnp.float16: jnp.float32, jnp.float32: jnp.float32,
              jnp.float64: jnp.float64}
  for compute, output in expected.items():
    assert output_dtype(compute) == output, compute


class DropoutBatchNormNet(nn.Module):
  """Dense - BatchNorm - ReLU - dropout - dense; `train` has no default, so the apply function
  and the initialization must say which mode they run in."""

  @nn.compact
  def __call__(self, x, *, train):
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(8)(x))
    return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(nn.relu(h)))


def test_a_model_with_batch_norm_and_dropout_initializes_in_eval_mode_and_trains_in_train_mode():
  """`init_model` runs the module in eval mode (dropout needs no key there); the train apply
  function runs it in train mode with dropout's key from the state: BatchNorm's running
  statistics move, the key advances, and the next call draws other masks; the eval apply
  function is deterministic and leaves the state. Mutants that fail it (checked by hand):
  init_model without the mode, the train apply without the mode or without dropout's key.
  (Initializing in train mode gives the same variables: listed as equivalent.)"""
  module = DropoutBatchNormNet()
  inputs = jax.random.normal(jax.random.key(0), (6, 4))
  params, state = init_model(module, jax.random.key(1), inputs[:1], jax.random.key(2))
  assert set(state) == {"batch_stats", DROPOUT_RNG}
  train_apply = flax_apply_fn(module)
  first_logits, first_state = train_apply(params, state, inputs)
  second_logits, second_state = train_apply(params, first_state, inputs)
  assert not np.allclose(first_logits, second_logits)  # Fresh dropout masks.
  assert not np.array_equal(first_state[DROPOUT_RNG], state[DROPOUT_RNG])
  assert not np.allclose(first_state["batch_stats"]["BatchNorm_0"]["mean"],
                         state["batch_stats"]["BatchNorm_0"]["mean"])
  np.testing.assert_array_equal(train_apply(params, state, inputs)[0], first_logits)
  eval_apply = flax_apply_fn(module, train=False)
  eval_logits, eval_state = eval_apply(params, second_state, inputs)
  np.testing.assert_array_equal(eval_apply(params, second_state, inputs)[0], eval_logits)
  jax.tree.map(np.testing.assert_array_equal, eval_state, second_state)


# Each registered model's own kind of layers, small enough that the eager init is quick.
SMALL_MODELS = {
  "mlp": ((2, 10), dict(hidden_sizes=(8, 8), dropout_rate=0.5)),
  "small_cnn": ((2, 12, 12, 1), dict(channels=(4, 8))),
  "preact_resnet18": ((2, 16, 16, 3), dict(stage_sizes=(1, 1), width=4)),
  "preact_resnet50": ((2, 16, 16, 3), dict(stage_sizes=(1, 1), width=4)),
  "wide_resnet": ((2, 16, 16, 3), dict(depth=10, widen_factor=1)),
  "resnet50": ((2, 32, 32, 3), dict(stage_sizes=(1, 1), width=4)),
  "gcn": ((12, 5), dict(edges=normalized_edges(_graph()[0]), dropout_rate=0.5)),
}


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_init_model_gives_the_bits_of_flax_s_eager_init(name):
  """`init_model` compiles the initialization as one program; its parameters and state are the
  eager `module.init`'s bit for bit, so runs stored before it was compiled re-run the same."""
  shape, options = SMALL_MODELS[name]
  module = registry.build_model(name, num_classes=3, **options)
  x = jax.random.normal(jax.random.key(1), shape)
  params, state = init_model(module, jax.random.key(2), x)
  eager = dict(module.init(jax.random.key(2), x, train=False))
  eager_params = eager.pop("params")
  assert jax.tree.structure((params, state)) == jax.tree.structure((eager_params, eager))
  for got, wanted in zip(jax.tree.leaves((params, state)), jax.tree.leaves((eager_params, eager)),
                         strict=True):
    assert got.dtype == wanted.dtype
    np.testing.assert_array_equal(got, wanted)
