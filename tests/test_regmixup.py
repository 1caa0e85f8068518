"""RegMixup (Pinto et al. 2022): L = CE(f(x), y) + eta CE(f(x~), y~), pinned against NumPy by hand,
with MixupE's passes (mixed, then clean, BatchNorm in train mode)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixupe_jax import losses, mixing
from mixupe_jax.models import SmallCNN, flax_apply_fn, init_model


def softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def cross_entropy_and_gradient(x, soft, w, b):
  """(mean CE, dW, db) of logits x W + b against soft labels, by hand."""
  p = softmax(x @ w + b)
  ce = -np.mean(np.sum(soft * np.log(p), -1))
  residual = (p - soft) / len(x)
  return ce, x.T @ residual, residual.sum(0)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.slow
def test_regmixup_value_and_gradient_equal_the_hand_computation(eta):
  """A linear model: the loss is CE on the clean batch + eta CE on the mixed batch, and its
  gradient x^T (p - y) / B + eta x~^T (p~ - y~) / B (and the bias's), in float64 by hand."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 5)).astype(np.float32)
  y = rng.integers(0, 3, 16).astype(np.int32)
  params = {"w": rng.normal(size=(5, 3)).astype(np.float32),
            "b": rng.normal(size=3).astype(np.float32)}

  def apply_fn(params, model_state, inputs):
    return inputs @ params["w"] + params["b"], model_state

  mixed = mixing.mixup(jax.random.key(1), x, y, alpha=10.0, num_classes=3)
  loss_fn = lambda p: losses.regmixup_loss_fn(p, {}, mixed, x, y, apply_fn=apply_fn, eta=eta,
                                              num_classes=3)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
  clean, clean_w, clean_b = cross_entropy_and_gradient(x.astype(np.float64), np.eye(3)[y], w, b)
  mix, mix_w, mix_b = cross_entropy_and_gradient(np.asarray(mixed.inputs, np.float64),
                                                 np.asarray(mixed.labels, np.float64), w, b)
  np.testing.assert_allclose(loss, clean + eta * mix, rtol=1e-5)
  np.testing.assert_allclose(aux.metrics["cross_entropy"], clean, rtol=1e-5)
  np.testing.assert_allclose(aux.metrics["mixup_loss"], mix, rtol=1e-5)
  np.testing.assert_allclose(grads["w"], clean_w + eta * mix_w, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads["b"], clean_b + eta * mix_b, rtol=1e-4, atol=1e-6)


def test_make_loss_fn_runs_regmixup_with_one_mixed_and_one_clean_forward():
  """Through make_loss_fn (the training system's door): two forwards, the mixed batch then the
  clean one, eta from the keyword (default 1) or the options object."""
  calls = []

  def apply_fn(params, model_state, inputs):
    jax.debug.callback(lambda v: calls.append(np.asarray(v)), inputs)
    return inputs @ params, model_state

  x, y = np.eye(4, 3, dtype=np.float32), np.array([0, 1, 2, 0])
  loss_fn = losses.make_loss_fn("regmixup", apply_fn=apply_fn, num_classes=3)
  (loss, aux) = loss_fn(jnp.ones((3, 3)), {}, x, y, jax.random.key(0))
  jax.effects_barrier()
  assert len(calls) == 2
  np.testing.assert_array_equal(calls[1], x)
  assert not np.array_equal(calls[0], x)
  np.testing.assert_allclose(loss, aux.metrics["cross_entropy"] + aux.metrics["mixup_loss"],
                             rtol=1e-6)
  half = losses.make_loss_fn("regmixup", apply_fn=apply_fn, num_classes=3, eta=0.5)
  loss, aux = half(jnp.ones((3, 3)), {}, x, y, jax.random.key(0))
  np.testing.assert_allclose(loss, aux.metrics["cross_entropy"] + 0.5 * aux.metrics["mixup_loss"],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="eta must be a finite number >= 0, got -1.0"):
    losses.make_loss_fn("regmixup", apply_fn=apply_fn, num_classes=3, eta=-1.0)(
        jnp.ones((3, 3)), {}, x, y, jax.random.key(0))


def test_regmixup_under_batchnorm_runs_mixupe_s_passes():
  """With train-mode BatchNorm the model state after RegMixup is the one after MixupE at eta = 0
  (mixed pass, then the clean pass on its state), and differs from one pass alone."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)
  y = (np.arange(8) % 4).astype(np.int32)
  module = SmallCNN(4, channels=(4, 8))
  params, model_state = init_model(module, jax.random.key(1), x[:1])
  apply_fn = flax_apply_fn(module)
  key = jax.random.key(2)
  reg = losses.make_loss_fn("regmixup", apply_fn=apply_fn, num_classes=4)
  clean_pass = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=4, eta=0.0,
                                   x_bar=x.mean(0))
  mixup = losses.make_loss_fn("mixup", apply_fn=apply_fn, num_classes=4)
  reg_state = reg(params, model_state, x, y, key)[1].model_state
  both_state = clean_pass(params, model_state, x, y, key)[1].model_state
  one_state = mixup(params, model_state, x, y, key)[1].model_state
  jax.tree.map(np.testing.assert_array_equal, reg_state, both_state)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(reg_state),
                                                      jax.tree.leaves(one_state)))
