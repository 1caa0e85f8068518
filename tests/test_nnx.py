"""Flax NNX through `nnx_apply_fn`: the MixupE loss, its gradient and the BatchNorm state of an NNX
BatchNorm CNN equal those of its linen twin (conftest's SmallCNN) with the same weights, and the
NNX model trains under jax.jit on 8 simulated devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mixupe_jax import losses, mixing, parallel
from mixupe_jax.models import flax_apply_fn, nnx_apply_fn
from mixupe_jax.models.apply import couples_examples, maybe_transform

NUM_CLASSES = 3


class NNXSmallCNN(nnx.Module):
  """The linen SmallCNN(channels=(4, 8)): [conv3x3 - BatchNorm - ReLU - maxpool2] x 2, average,
  dense."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 4, (3, 3), use_bias=False, rngs=rngs)
    self.norm1 = nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.conv2 = nnx.Conv(4, 8, (3, 3), use_bias=False, rngs=rngs)
    self.norm2 = nnx.BatchNorm(8, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.dense = nnx.Linear(8, NUM_CLASSES, rngs=rngs)

  def __call__(self, x):
    for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
      x = nnx.max_pool(nnx.relu(norm(conv(x))), (2, 2), strides=(2, 2))
    return self.dense(jnp.mean(x, axis=(1, 2)))


# NNX path -> linen path of the same weight.
NAMES = {("conv1", "kernel"): ("Conv_0", "kernel"), ("conv2", "kernel"): ("Conv_1", "kernel"),
         ("norm1", "scale"): ("BatchNorm_0", "scale"), ("norm1", "bias"): ("BatchNorm_0", "bias"),
         ("norm2", "scale"): ("BatchNorm_1", "scale"), ("norm2", "bias"): ("BatchNorm_1", "bias"),
         ("dense", "kernel"): ("Dense_0", "kernel"), ("dense", "bias"): ("Dense_0", "bias")}
STATS = {("norm1", "mean"): ("BatchNorm_0", "mean"), ("norm1", "var"): ("BatchNorm_0", "var"),
         ("norm2", "mean"): ("BatchNorm_1", "mean"), ("norm2", "var"): ("BatchNorm_1", "var")}


def twins(key):
  """(linen apply, params, state), (NNX apply, params, state) with the same weights."""
  from conftest import make_model
  inputs = jax.random.normal(key, (8, 8, 8, 1))
  module, params, state = make_model("cnn", key, inputs, NUM_CLASSES)
  model = NNXSmallCNN(nnx.Rngs(1))
  for (layer, name), (linen_layer, linen_name) in NAMES.items():
    getattr(getattr(model, layer), name)[...] = params[linen_layer][linen_name]
  stats = state["batch_stats"]
  for (layer, name), (linen_layer, linen_name) in STATS.items():
    getattr(getattr(model, layer), name)[...] = stats[linen_layer][linen_name] + 0.1
  state = {"batch_stats": jax.tree.map(lambda v: v + 0.1, stats)}  # Not the initial values.
  return (flax_apply_fn(module), params, state), nnx_apply_fn(model)


def nnx_value(tree, path):
  return tree[path[0]][path[1]][...]


def assert_same(nnx_tree, linen_tree, names, rtol):
  for path, linen_path in names.items():
    np.testing.assert_allclose(nnx_value(nnx_tree, path), linen_tree[linen_path[0]][linen_path[1]],
                               rtol=rtol, atol=1e-6, err_msg=str(path))


@pytest.mark.slow
def test_nnx_mixupe_loss_gradient_and_state_equal_the_linen_twin(key):
  (linen_apply, linen_params, linen_state), (nnx_apply, nnx_params, nnx_state) = twins(key)
  inputs = jax.random.normal(jax.random.fold_in(key, 2), (8, 8, 8, 1))
  labels = jnp.arange(8) % NUM_CLASSES
  mixed = mixing.mixup(jax.random.key(3), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  x_bar = jnp.mean(inputs, 0)
  for variant, threshold in (("v1", 0.0), ("v3", None)):
    def loss(params, state, apply_fn):
      return losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, apply_fn=apply_fn,
                                   alpha=1.0, eta=0.5, variant=variant, threshold=threshold,
                                   num_classes=NUM_CLASSES)

    (linen_loss, linen_aux), linen_grad = jax.value_and_grad(loss, has_aux=True)(
        linen_params, linen_state, linen_apply)
    (nnx_loss, nnx_aux), nnx_grad = jax.value_and_grad(loss, has_aux=True)(
        nnx_params, nnx_state, nnx_apply)
    np.testing.assert_allclose(nnx_loss, linen_loss, rtol=1e-6)
    for metric in ("penalty", "term_mean", "active_fraction"):
      np.testing.assert_allclose(nnx_aux.metrics[metric], linen_aux.metrics[metric], rtol=1e-5,
                                 atol=1e-7)
    assert_same(nnx_grad, linen_grad, NAMES, rtol=1e-4)
    # Both passes updated the running statistics, in the same way.
    assert_same(nnx_aux.model_state, linen_aux.model_state["batch_stats"], STATS, rtol=1e-5)
  assert nnx_apply.couples_examples(nnx_state)  # Train-mode BatchNorm: the official split.


def test_nnx_eval_mode_uses_the_running_statistics_and_keeps_them():
  model = NNXSmallCNN(nnx.Rngs(0))
  apply_fn, params, state = nnx_apply_fn(model, train=False)
  inputs = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  logits, new_state = apply_fn(params, state, inputs)
  one_by_one = jnp.concatenate([apply_fn(params, state, inputs[i:i + 1])[0] for i in range(4)])
  np.testing.assert_allclose(logits, one_by_one, rtol=1e-5, atol=1e-6)  # Per example.
  jax.tree.map(np.testing.assert_array_equal, new_state, state)
  assert not apply_fn.couples_examples(state)


@pytest.mark.slow
def test_nnx_model_trains_under_jit_on_eight_devices(key):
  """A jitted optax step of the NNX model, batch sharded over the 8 simulated devices, equals the
  same step on one device, and training lowers the loss."""
  _, (apply_fn, params, state) = twins(key)
  inputs = jax.random.normal(key, (32, 8, 8, 1))
  labels = jnp.arange(32) % NUM_CLASSES
  loss_fn = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES, alpha=1.0,
                                eta=0.5, variant="v1", threshold=0.0, x_bar=jnp.mean(inputs, 0))
  optimizer = optax.sgd(0.05, momentum=0.9)

  @jax.jit
  def step(params, state, opt_state, inputs, labels, step_key):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, inputs, labels,
                                                                   step_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), aux.model_state, opt_state, loss

  mesh = parallel.data_mesh()
  assert mesh.size == 8
  sharded = (*parallel.replicate((params, state, optimizer.init(params)), mesh),
             *parallel.shard_batch((inputs, labels), mesh))
  single = jax.device_put((params, state, optimizer.init(params), inputs, labels),
                          jax.devices()[0])
  first_sharded = step(*sharded, jax.random.key(0))
  first_single = step(*single, jax.random.key(0))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               first_sharded, first_single)
  carry, losses_seen = first_sharded[:3], []
  for index in range(1, 30):
    *carry, loss = step(*carry, *sharded[3:], jax.random.key(index))
    losses_seen.append(float(loss))
  assert all(np.isfinite(losses_seen))
  assert np.mean(losses_seen[-5:]) < np.mean(losses_seen[:5])


class CountingMLP(nnx.Module):
  """Linear - tanh - linear with hidden layer 1 open to the manifold methods, counting its calls
  in a state variable of its own."""

  def __init__(self, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(4, 5, rngs=rngs)
    self.out = nnx.Linear(5, NUM_CLASSES, rngs=rngs)
    self.calls = nnx.Variable(jnp.zeros((), jnp.int32))

  def __call__(self, x, hidden_layer=None, hidden_transform=None):
    self.calls[...] += 1
    h = maybe_transform(jnp.tanh(self.hidden(x)), 1, hidden_layer, hidden_transform)
    return self.out(h)


def test_nnx_apply_passes_hidden_keywords_keeps_state_in_eval_and_honours_the_declaration():
  """The hidden-layer keywords reach the module (Manifold Mixup mixes there): doubling layer 1
  gives the readout of twice the hidden features, by hand. Eval mode returns the state it was
  given (a variable the module changes on every call stays put), train mode the updated one. An
  explicit `couples_examples` overrides the inference from BatchNorm. Mutants that fail it
  (checked by hand): the keywords dropped, eval returning the updated state, the declaration
  ignored."""
  model = CountingMLP(nnx.Rngs(0))
  inputs = jax.random.normal(jax.random.key(1), (3, 4))
  apply_fn, params, state = nnx_apply_fn(model)
  logits, new_state = apply_fn(params, state, inputs, hidden_layer=1,
                               hidden_transform=lambda h: 2 * h)
  by_hand = 2 * jnp.tanh(inputs @ model.hidden.kernel[...] + model.hidden.bias[...])
  np.testing.assert_allclose(logits, by_hand @ model.out.kernel[...] + model.out.bias[...],
                             rtol=1e-5, atol=1e-6)
  assert int(new_state["calls"][...]) == 1
  eval_fn, params, state = nnx_apply_fn(model, train=False)
  assert int(eval_fn(params, state, inputs)[1]["calls"][...]) == 0
  cnn = NNXSmallCNN(nnx.Rngs(0))
  for declared in (False, True):
    declared_fn, _, cnn_state = nnx_apply_fn(cnn, couples_examples=declared)
    assert couples_examples(declared_fn, cnn_state) is declared
  assert couples_examples(apply_fn, state) is False  # No BatchNorm: inferred per example.
