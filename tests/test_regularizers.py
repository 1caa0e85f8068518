"""Each official MixupE version against a hand-computed NumPy reference on a tiny fixed linear
model f(x) = x W + c, where J_f(x) = W^T, so r_i = (p_i - y_i)^T W^T (x_bar - x_i) by hand."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixupe_jax import analysis, losses, mixing, regularizers

W = np.array([[0.5, -1.0, 0.2], [1.5, 0.3, -0.7], [-0.4, 0.8, 1.1], [0.0, -0.6, 0.9]], np.float32)
C = np.array([0.1, -0.2, 0.05], np.float32)
X = np.array([[1.0, 0.0, -1.0, 2.0], [0.5, 1.5, 0.0, -1.0], [-2.0, 1.0, 0.5, 0.0],
              [0.3, -0.8, 1.2, 0.7], [1.1, 0.4, -0.3, -1.6], [-0.9, -1.2, 2.0, 0.1]], np.float32)
LABELS = np.array([0, 1, 2, 1, 0, 2])
X_BAR = np.array([0.2, -0.1, 0.4, 0.3], np.float32)
ALPHA, ETA = 1.0, 0.7


def linear_apply(params, model_state, inputs, **unused):
  return inputs @ params["w"] + params["c"], model_state


PARAMS = {"w": jnp.asarray(W), "c": jnp.asarray(C)}


def numpy_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def hand_reference(variant, mixed_inputs, mixed_labels, tau):
  """The official formula of each version, written out with NumPy."""
  y = np.eye(3, dtype=np.float32)[LABELS]
  mixed_logits = mixed_inputs @ W + C
  mix_loss = np.mean(-np.sum(mixed_labels * np.log(numpy_softmax(mixed_logits)), -1))
  f = X @ W + C
  p = numpy_softmax(f)
  r = np.sum((p - y) * ((X_BAR[None] - X) @ W), -1)  # (p - y)^T J_f (x_bar - x), J_f = W^T.
  u = np.sum(f * (y - p), -1)
  m1 = ALPHA / (2 * ALPHA + 1)
  batch = len(X)
  if variant == "v1":
    total = mix_loss + ETA * m1 * np.sum(r[r < tau]) / batch
  elif variant == "v2":
    total = mix_loss + ETA * m1 * np.sum(np.abs(r)) / batch
  elif variant == "v3":
    total = mix_loss - ETA * m1 * np.sum(u[u < tau]) / batch
  else:
    total = mix_loss - ETA * m1 * np.sum(u) / batch
  return mix_loss, total


@pytest.fixture
def mixed():
  return mixing.mixup(jax.random.key(3), jnp.asarray(X), jnp.asarray(LABELS), alpha=ALPHA,
                      num_classes=3)


@pytest.mark.parametrize("variant,tau", [("v1", -1.0), ("v1", 0.05), ("v2", None), ("v3", 1.0),
                                         ("v3", -0.2), ("v4", None)])
@pytest.mark.slow
def test_each_version_matches_hand_computed_reference(variant, tau, mixed):
  expected_mix, expected_total = hand_reference(variant, np.asarray(mixed.inputs),
                                                np.asarray(mixed.labels), tau)
  kwargs = dict(apply_fn=linear_apply, alpha=ALPHA, eta=ETA, variant=variant, threshold=tau,
                num_classes=3)
  unscaled, aux = losses.mixupe_loss_fn(PARAMS, {}, mixed, jnp.asarray(X), jnp.asarray(LABELS),
                                        jnp.asarray(X_BAR), rescale=False, **kwargs)
  np.testing.assert_allclose(aux.metrics["mixup_loss"], expected_mix, rtol=1e-6)
  np.testing.assert_allclose(unscaled, expected_total, rtol=1e-5)
  # The official rescaling: value |L_mix| (L > 0 here), gradient scaled by |L_mix| / |L|.
  rescaled, _ = losses.mixupe_loss_fn(PARAMS, {}, mixed, jnp.asarray(X), jnp.asarray(LABELS),
                                      jnp.asarray(X_BAR), rescale=True, **kwargs)
  np.testing.assert_allclose(rescaled, abs(expected_mix), rtol=1e-5)
  grad_scaled = jax.grad(lambda p: losses.mixupe_loss_fn(
      p, {}, mixed, X, LABELS, X_BAR, rescale=True, **kwargs)[0])(PARAMS)
  grad_plain = jax.grad(lambda p: losses.mixupe_loss_fn(
      p, {}, mixed, X, LABELS, X_BAR, rescale=False, **kwargs)[0])(PARAMS)
  factor = abs(expected_mix) / abs(expected_total)
  np.testing.assert_allclose(grad_scaled["w"], factor * grad_plain["w"], rtol=1e-5, atol=1e-7)


def test_v1_gradient_flows_only_through_the_jacobian(mixed):
  """grad of the v1 term = grad of (1/B) sum_i mask_i b_i^T W^T d_i with b, d, mask constant."""
  y = jax.nn.one_hot(LABELS, 3)
  tau = 10.0  # Keep every term.

  def by_hand(params):
    b = jax.lax.stop_gradient(jax.nn.softmax(X @ params["w"] + params["c"]) - y)
    return ETA * ALPHA / (2 * ALPHA + 1) * jnp.mean(jnp.sum(b * ((X_BAR - X) @ params["w"]), -1))

  def regularizer(params):
    return losses.mixupe_loss_fn(params, {}, mixed, X, LABELS, X_BAR, apply_fn=linear_apply,
                                 alpha=ALPHA, eta=ETA, variant="v1", threshold=tau,
                                 rescale=False, num_classes=3)[1].metrics["regularizer"]

  expected = jax.grad(by_hand)(PARAMS)
  got = jax.grad(regularizer)(PARAMS)
  np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got["c"], 0.0, atol=1e-7)  # d does not involve c; b is constant.


def test_v3_differs_from_v4_only_by_the_gradient_through_p(mixed):
  kwargs = dict(apply_fn=linear_apply, alpha=ALPHA, eta=ETA, threshold=np.inf, rescale=False,
                num_classes=3)

  def loss(params, variant):
    return losses.mixupe_loss_fn(params, {}, mixed, X, LABELS, X_BAR, variant=variant,
                                 **kwargs)[0]

  assert np.isclose(loss(PARAMS, "v3"), loss(PARAMS, "v4"), rtol=1e-6)
  grad_v3, grad_v4 = jax.grad(loss)(PARAMS, "v3"), jax.grad(loss)(PARAMS, "v4")
  assert not np.allclose(grad_v3["w"], grad_v4["w"], atol=1e-4)
  # v4 by hand: d/dtheta of -eta m1 mean(f^T (y - stopgrad p)).
  y = jax.nn.one_hot(LABELS, 3)

  def v4_term(params):
    f = X @ params["w"] + params["c"]
    p = jax.lax.stop_gradient(jax.nn.softmax(f))
    return -ETA * ALPHA / (2 * ALPHA + 1) * jnp.mean(jnp.sum(f * (y - p), -1))

  mix_grad = jax.grad(lambda p: losses.mixup_loss_fn(p, {}, mixed, apply_fn=linear_apply)[0])
  expected = jax.tree.map(jnp.add, mix_grad(PARAMS), jax.grad(v4_term)(PARAMS))
  np.testing.assert_allclose(grad_v4["w"], expected["w"], rtol=1e-5, atol=1e-7)


def test_v3_equals_v1_for_bias_free_relu_network_up_to_the_sign(key, make, apply_of):
  """f(x) = J_f(x) x for a bias-free ReLU net, so with x_bar = 0 the jvp term r_i equals the
  fast term u_i; v1 adds +eta m1 r, v3 subtracts eta m1 u: the regularizers are opposite."""
  inputs = jax.random.normal(key, (16, 5))
  labels = jnp.arange(16) % 3
  module, params, state = make("relu_mlp_no_bias", key, inputs, 3)
  apply_fn = apply_of(module)
  mixed = mixing.mixup(key, inputs, labels, alpha=ALPHA, num_classes=3)
  common = dict(apply_fn=apply_fn, alpha=ALPHA, eta=ETA, threshold=0.0, rescale=False,
                num_classes=3)
  x_bar = jnp.zeros(5)
  _, v1 = losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, variant="v1", **common)
  _, v3 = losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, variant="v3", **common)
  for statistic in ("term_mean", "term_min", "term_max", "active_fraction"):
    np.testing.assert_allclose(v1.metrics[statistic], v3.metrics[statistic], rtol=1e-5, atol=1e-7)
  assert 0 < float(v1.metrics["active_fraction"]) < 1
  np.testing.assert_allclose(v1.metrics["regularizer"], -v3.metrics["regularizer"], rtol=1e-5)
  _, v3_flipped = losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar,
                                        variant="v3", flip_sign=True, **common)
  np.testing.assert_allclose(v1.metrics["regularizer"], v3_flipped.metrics["regularizer"],
                             rtol=1e-5)


def test_moment_scaling_and_aliases(mixed):
  common = dict(apply_fn=linear_apply, alpha=ALPHA, eta=ETA, rescale=False, num_classes=3)
  with_moment = losses.mixupe_loss_fn(PARAMS, {}, mixed, X, LABELS, X_BAR, variant="v2", **common)
  without = losses.mixupe_loss_fn(PARAMS, {}, mixed, X, LABELS, X_BAR, variant="v2",
                                  scale_by_moment=False, **common)
  np.testing.assert_allclose(with_moment[1].metrics["regularizer"],
                             analysis.first_order_moment(ALPHA) * without[1].metrics["regularizer"],
                             rtol=1e-6)
  assert regularizers.get_variant("exact") is regularizers.VARIANTS["v1"]
  assert regularizers.get_variant("fast") is regularizers.VARIANTS["v3"]
  with pytest.raises(ValueError, match=r"Unknown MixupE variant 'v5'.*v1, v2, v3, v4"):
    regularizers.get_variant("v5")


def test_defaults_are_the_official_ones(mixed):
  """Unset options give the official v1: tau = -1 (here 3 of the 6 r_i lie below -1, 4 below 0),
  the m_1 scaling, the rescaling, the published sign; v3's tau is 1.0 (the README's recipe)."""
  assert regularizers.get_variant("v1").default_threshold == -1.0
  assert regularizers.get_variant("v3").default_threshold == 1.0
  expected_mix, expected_total = hand_reference("v1", np.asarray(mixed.inputs),
                                                np.asarray(mixed.labels), -1.0)
  loss, aux = losses.mixupe_loss_fn(PARAMS, {}, mixed, X, LABELS, X_BAR, apply_fn=linear_apply,
                                    alpha=ALPHA, eta=ETA, num_classes=3)
  np.testing.assert_allclose(aux.metrics["active_fraction"], 0.5)
  np.testing.assert_allclose(aux.metrics["unscaled_loss"], expected_total, rtol=1e-5)
  np.testing.assert_allclose(aux.metrics["regularizer"], expected_total - expected_mix, rtol=1e-5)
  np.testing.assert_allclose(loss, abs(expected_mix), rtol=1e-5)
  np.testing.assert_allclose(aux.metrics["rescale_factor"], expected_mix / expected_total,
                             rtol=1e-5)
  # v3's default keeps every u_i < 1 here (all six); tau = 0 would keep three.
  _, fast = losses.mixupe_loss_fn(PARAMS, {}, mixed, X, LABELS, X_BAR, apply_fn=linear_apply,
                                  alpha=ALPHA, eta=ETA, variant="fast", num_classes=3)
  np.testing.assert_allclose(fast.metrics["active_fraction"], 1.0)
  _, expected_fast = hand_reference("v3", np.asarray(mixed.inputs), np.asarray(mixed.labels), 1.0)
  np.testing.assert_allclose(fast.metrics["unscaled_loss"], expected_fast, rtol=1e-5)


@pytest.mark.parametrize("variant,tau,flip_sign", [("v1", -1.0, False), ("v3", 1.0, True)])
def test_rescaling_a_negative_loss_uses_its_magnitude(variant, tau, flip_sign, mixed):
  """A large eta makes L = L_mix + eta m_1 P negative (v1 adds the negative r_i < -1; flipped v3
  adds sum u_i < 0). The official rescaling, L * stopgrad(|L_mix| / |L|), then gives the value
  -|L_mix| and scales the gradient by |L_mix| / |L| > 0: the step keeps the direction of grad L."""
  eta = 6.0
  kwargs = dict(apply_fn=linear_apply, alpha=ALPHA, eta=eta, variant=variant, threshold=tau,
                flip_sign=flip_sign, num_classes=3)
  mix_loss = float(losses.mixup_loss_fn(PARAMS, {}, mixed, apply_fn=linear_apply)[0])
  unscaled = lambda p: losses.mixupe_loss_fn(p, {}, mixed, X, LABELS, X_BAR, rescale=False,
                                             **kwargs)[0]
  rescaled = lambda p: losses.mixupe_loss_fn(p, {}, mixed, X, LABELS, X_BAR, rescale=True,
                                             **kwargs)[0]
  total = float(unscaled(PARAMS))
  assert total < -0.5 and mix_loss > 0
  np.testing.assert_allclose(rescaled(PARAMS), -mix_loss, rtol=1e-5)
  factor = mix_loss / -total
  for name in PARAMS:
    np.testing.assert_allclose(jax.grad(rescaled)(PARAMS)[name],
                               factor * jax.grad(unscaled)(PARAMS)[name], rtol=1e-5, atol=1e-7)


def test_logit_term_holds_p_by_default():
  """u_i = f_i^T (y_i - p_i): by default p is a constant for the gradient, d u_i / d f_i = y_i - p_i;
  with detach_probabilities=False the gradient also flows through p."""
  logits = jnp.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0]])
  labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  p = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(regularizers.logit_term(logits, labels),
                             np.sum(np.asarray(logits) * (np.asarray(labels) - p), 1), rtol=1e-6)
  held = jax.grad(lambda f: jnp.sum(regularizers.logit_term(f, labels)))(logits)
  np.testing.assert_allclose(held, np.asarray(labels) - p, rtol=1e-6, atol=1e-7)
  flowing = jax.grad(lambda f: jnp.sum(regularizers.logit_term(f, labels, False)))(logits)
  assert not np.allclose(flowing, held, atol=1e-3)


def test_logit_term_computes_in_float32_or_wider():
  """bfloat16 logits give the float32 value of the same numbers; float64 logits stay float64."""
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(6, 5)) * 3, jnp.bfloat16)
  labels = jax.nn.one_hot(jnp.arange(6) % 5, 5)
  narrow = regularizers.logit_term(logits, labels)
  assert narrow.dtype == jnp.float32
  np.testing.assert_allclose(narrow, regularizers.logit_term(logits.astype(jnp.float32), labels),
                             rtol=1e-6)
  with jax.enable_x64(True):  # Under x64 too: float32 for bfloat16, float64 for float64.
    assert regularizers.logit_term(logits, labels).dtype == jnp.float32
    wide = regularizers.logit_term(jnp.asarray(rng.normal(size=(6, 5))), labels.astype(jnp.float64))
    assert wide.dtype == jnp.float64


def test_selection_weights_by_hand():
  """w_i = [s_i < tau] (strictly: s_i = tau is left out), sign(r_i) for v2, 1 for v4; `selected`
  is boolean and the weights keep the statistic's dtype (float32 under x64 too)."""
  statistic = jnp.array([-2.0, -1.0, 0.5, 0.0], jnp.float32)
  variant = regularizers.get_variant
  weights, selected = regularizers.selection_weights(statistic, variant("v1"), -1.0)
  assert weights.tolist() == [1.0, 0.0, 0.0, 0.0] and selected.tolist() == [1, 0, 0, 0]
  for name, expected in (("v2", [-1.0, -1.0, 1.0, 0.0]), ("v4", [1.0, 1.0, 1.0, 1.0])):
    weights, selected = regularizers.selection_weights(statistic, variant(name), None)
    assert weights.tolist() == expected and selected.dtype == jnp.bool_, name
    assert selected.tolist() == [True] * 4, name
  # The published signs by default: + for v1, v2; - for v3, v4.
  assert [regularizers.penalty_sign(variant(v)) for v in ("v1", "v2", "v3", "v4")] == [
      1.0, 1.0, -1.0, -1.0]
  with jax.enable_x64(True):
    for dtype in (jnp.float32, jnp.float64):
      for tau in (None, 0.0):
        weights, _ = regularizers.selection_weights(statistic.astype(dtype), variant("v1"), tau)
        assert weights.dtype == dtype, (dtype, tau)


@pytest.mark.parametrize("eta", [float("nan"), float("inf"), -0.5, True, "1", None])
def test_mixupe_options_reject_an_eta_that_is_not_a_finite_number_at_least_0(eta):
  """Mutants that fail it (checked by hand): the eta check's `or`s turned into `and`s (NaN and
  infinity would pass, or True, which is an int)."""
  with pytest.raises(regularizers.OptionError, match="eta must be a finite number >= 0") as raised:
    regularizers.MixupEOptions(eta=eta)
  assert raised.value.field == "eta" and raised.value.value is eta


def test_mixupe_options_hold_eta_and_term_fraction_as_python_floats():
  """Any real number is accepted, NumPy's float32 scalars included (what a sweep over
  np.linspace gives), and held as a Python float, so the options serialize to JSON.
  Mutants that fail it (checked by hand): the converted eta or term_fraction stored under another
  attribute name (the field then keeps the caller's int or np.float32)."""
  options = regularizers.MixupEOptions(eta=np.float32(0.5), term_fraction=np.float32(0.25))
  assert (type(options.eta), type(options.term_fraction)) == (float, float)
  assert json.loads(json.dumps(dataclasses.asdict(options)))["term_fraction"] == 0.25
  integers = regularizers.MixupEOptions(eta=2, term_fraction=1)
  assert (repr(integers.eta), repr(integers.term_fraction)) == ("2.0", "1.0")
