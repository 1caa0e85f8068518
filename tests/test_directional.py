"""The joint jvp term r_i = stopgrad(p_i - y_i)^T [J_F(X) D]_i (the whole batch moved along D)
against independent computations: reverse mode (jax.grad of stopgrad(b_i) . f_i, dotted with the
direction) and central finite differences, on an MLP and on a CNN with BatchNorm in train and in
eval mode. The official per-example form (one example moved at a time) is pinned in
test_official_split.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixupe_jax import directional, mixing

NUM_CLASSES = 3


def _batch(kind, key):
  shape = (6, 10) if kind == "mlp" else (6, 8, 8, 2)
  inputs = jax.random.normal(key, shape)
  labels = mixing.to_soft_labels(jnp.arange(6) % NUM_CLASSES, NUM_CLASSES)
  x_bar = jnp.mean(jax.random.normal(jax.random.fold_in(key, 1), shape), axis=0)
  return inputs, labels, x_bar


CASES = [("mlp", True), ("cnn", True), ("cnn", False)]


@pytest.mark.parametrize("kind,train", CASES, ids=["mlp", "cnn-bn-train", "cnn-bn-eval"])
@pytest.mark.slow
def test_joint_jvp_term_equals_reverse_mode_per_example(kind, train, key, make, apply_of):
  inputs, labels, x_bar = _batch(kind, key)
  module, params, state = make(kind, key, inputs, NUM_CLASSES)
  apply_fn = apply_of(module, train=train)
  direction = x_bar[None] - inputs
  logits, tangents, _ = directional.logit_directional_derivative(
      apply_fn, params, state, inputs, direction)
  r = directional.directional_term(logits, tangents, labels)

  residual = jax.nn.softmax(logits) - labels  # b_i, a constant here.

  def bf_i(x, i):  # b_i . f(X)_i: in train mode f_i depends on the whole batch X.
    return jnp.dot(residual[i], apply_fn(params, state, x)[0][i])

  expected = [jnp.sum(jax.grad(bf_i)(inputs, i) * direction) for i in range(inputs.shape[0])]
  np.testing.assert_allclose(r, np.asarray(expected), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("kind,train", CASES, ids=["mlp", "cnn-bn-train", "cnn-bn-eval"])
@pytest.mark.slow
def test_jvp_equals_central_finite_differences(kind, train, key, make, apply_of):
  """The float32 jvp against float64 central differences (step 1e-5, so ReLU and max-pool kinks
  are almost never crossed); the float64 jvp matches them to ~1e-8."""
  inputs, _, x_bar = _batch(kind, key)
  module, params, state = make(kind, key, inputs, NUM_CLASSES)
  direction = x_bar[None] - inputs
  _, tangents32, _ = directional.logit_directional_derivative(
      apply_of(module, train=train), params, state, inputs, direction)

  with jax.enable_x64(True):
    to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
    module64 = module.clone(dtype=jnp.float64)
    apply64 = apply_of(module64, train=train)
    params64, state64, inputs64, direction64 = to64((params, state, inputs, direction))
    _, tangents64, _ = directional.logit_directional_derivative(
        apply64, params64, state64, inputs64, direction64)
    step = 1e-5

    def logits_at(t):
      return apply64(params64, state64, inputs64 + t * direction64)[0]

    finite_difference = np.asarray((logits_at(step) - logits_at(-step)) / (2 * step))
    assert tangents64.dtype == jnp.float64
    np.testing.assert_allclose(tangents64, finite_difference, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(tangents32, finite_difference, rtol=1e-4, atol=1e-5)


def test_train_mode_tangent_flows_through_batch_statistics(key, make, apply_of):
  """In train mode the term sees the batch statistics; in eval mode it does not: they differ,
  and with a per-example direction the train-mode row i depends on the other examples."""
  inputs, labels, x_bar = _batch("cnn", key)
  module, params, state = make("cnn", key, inputs, NUM_CLASSES)
  direction = x_bar[None] - inputs
  train_tangents = directional.logit_directional_derivative(
      flax_apply := apply_of(module, train=True), params, state, inputs, direction)[1]
  eval_tangents = directional.logit_directional_derivative(
      apply_of(module, train=False), params, state, inputs, direction)[1]
  assert not np.allclose(train_tangents, eval_tangents, atol=1e-3)
  # Moving only example 1 changes example 0's train-mode output, not its eval-mode output.
  only_one = direction.at[0].set(0.0).at[2:].set(0.0)
  train_row0 = directional.logit_directional_derivative(
      flax_apply, params, state, inputs, only_one)[1][0]
  eval_row0 = directional.logit_directional_derivative(
      apply_of(module, train=False), params, state, inputs, only_one)[1][0]
  assert np.max(np.abs(train_row0)) > 1e-5
  np.testing.assert_allclose(eval_row0, 0.0, atol=1e-7)


def test_hidden_layer_jvp_equals_finite_differences(key, make, apply_of):
  """The term at a hidden layer: derivative of g along d_i = mean(h) - h_i at layer k."""
  inputs, _, _ = _batch("mlp", key)
  module, params, state = make("mlp", key, inputs, NUM_CLASSES)
  apply_fn = apply_of(module)
  _, tangents, _ = directional.hidden_directional_derivative(apply_fn, params, state, inputs, 1)

  def logits_at(t):
    shift = lambda h: h + t * (jnp.mean(h, axis=0) - h)
    return apply_fn(params, state, inputs, hidden_layer=1, hidden_transform=shift)[0]

  step = 1e-2
  finite_difference = (logits_at(step) - logits_at(-step)) / (2 * step)
  np.testing.assert_allclose(tangents, finite_difference, rtol=2e-3, atol=2e-4)


def test_hidden_layer_jvp_towards_a_given_h_bar_equals_finite_differences(key, make, apply_of):
  """With a target h_bar given (not the batch mean), d_i = h_bar - h_i."""
  inputs, _, _ = _batch("mlp", key)
  module, params, state = make("mlp", key, inputs, NUM_CLASSES)
  apply_fn = apply_of(module)
  h_bar = jnp.linspace(-1.0, 1.0, 16)
  _, tangents, _ = directional.hidden_directional_derivative(apply_fn, params, state, inputs, 1,
                                                             h_bar=h_bar)

  def logits_at(t):
    shift = lambda h: h + t * (h_bar - h)
    return apply_fn(params, state, inputs, hidden_layer=1, hidden_transform=shift)[0]

  step = 1e-2
  finite_difference = (logits_at(step) - logits_at(-step)) / (2 * step)
  np.testing.assert_allclose(tangents, finite_difference, rtol=2e-3, atol=2e-4)
  _, towards_mean, _ = directional.hidden_directional_derivative(apply_fn, params, state, inputs, 1)
  assert not np.allclose(tangents, towards_mean, atol=1e-3)


def test_hidden_layer_zero_with_mean_direction_equals_input_jvp(key, make, apply_of):
  inputs, _, _ = _batch("cnn", key)
  module, params, state = make("cnn", key, inputs, NUM_CLASSES)
  apply_fn = apply_of(module)
  _, at_input, _ = directional.logit_directional_derivative(
      apply_fn, params, state, inputs, jnp.mean(inputs, 0)[None] - inputs)
  _, at_layer0, _ = directional.hidden_directional_derivative(apply_fn, params, state, inputs, 0)
  np.testing.assert_allclose(at_input, at_layer0, rtol=1e-5, atol=1e-6)


def test_x_bar_shape_mismatch_is_a_clear_error():
  with pytest.raises(ValueError, match=r"x_bar has shape \(5,\).*\(10,\)"):
    directional.check_x_bar(jnp.zeros(5), jnp.zeros((4, 10)))


def test_the_joint_term_is_float32_for_low_precision_logits_and_keeps_float64():
  """r_i by hand, sum_c (softmax(f) - y)_c t_c, computed in float32 from bfloat16 logits and
  tangents (the documented dtype, under x64 too), and in float64 for float64 inputs."""
  rng = np.random.default_rng(0)
  logits, tangents = (rng.normal(size=(4, 3)) * 2 for _ in range(2))
  labels = np.eye(3)[[0, 1, 2, 0]]

  def by_hand(f, t):
    p = np.exp(f - f.max(-1, keepdims=True))
    return np.sum((p / p.sum(-1, keepdims=True) - labels) * t, axis=-1)

  narrow = [jnp.asarray(a, jnp.bfloat16) for a in (logits, tangents)]
  expected = by_hand(*(np.asarray(a, np.float64) for a in narrow))
  for x64 in (False, True):
    with jax.enable_x64(x64):
      term = directional.directional_term(*narrow, jnp.asarray(labels, jnp.float32))
      assert term.dtype == jnp.float32, x64
      np.testing.assert_allclose(term, expected, rtol=1e-5, atol=1e-6)
  with jax.enable_x64(True):
    wide = directional.directional_term(jnp.asarray(logits), jnp.asarray(tangents),
                                        jnp.asarray(labels))
    assert wide.dtype == jnp.float64
    np.testing.assert_allclose(wide, by_hand(logits, tangents), rtol=1e-12)


def test_a_float32_model_stays_float32_under_x64_whatever_x_bar_and_t_are():
  """Under x64, t = 0 is float64 (so the per-example values r are float64) and a user's x_bar may
  be numpy's float64, but the model sees its own float32 inputs: with an apply function that
  would compute in float64 if handed float64, the logits, tangents and parameter gradient stay
  float32. x_bar of shape [1, ...] is the same x_bar."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    weights = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
    inputs = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    labels = jnp.asarray(np.eye(2)[[0, 1, 1, 0]], jnp.float32)
    x_bar = np.asarray(inputs, np.float64).mean(0) + 0.5  # float64, as numpy computes it.
    apply_fn = lambda w, state, x: (jnp.tanh(x @ w), state)  # No cast: float64 in, float64 out.

    def official(w, target):
      logits, r, total, _ = directional.official_weighted_term(
          directional.input_shift(apply_fn), w, {}, inputs, target, labels, jnp.ones_like)
      return total, (logits, r)

    (total, (logits, r)), gradient = jax.value_and_grad(official, has_aux=True)(weights, x_bar)
    assert logits.dtype == jnp.float32 and gradient.dtype == jnp.float32
    assert r.dtype == jnp.float64 and total.dtype == jnp.float64
    (_, (_, r_row)), gradient_row = jax.value_and_grad(official, has_aux=True)(weights,
                                                                              x_bar[None])
    np.testing.assert_array_equal(r_row, r)
    np.testing.assert_array_equal(gradient_row, gradient)
    checked = directional.check_x_bar(x_bar, inputs)
    assert checked.dtype == jnp.float32
    np.testing.assert_array_equal(directional.check_x_bar(x_bar[None], inputs), checked)
    logits, tangents, _ = directional.logit_directional_derivative(
        apply_fn, weights, {}, inputs, checked[None] - inputs)
    assert logits.dtype == jnp.float32 and tangents.dtype == jnp.float32
    np.testing.assert_allclose(r, directional.directional_term(logits, tangents, labels),
                               rtol=1e-5)  # A linear-in-examples model: official = joint.


def test_the_official_term_differentiates_with_integer_model_state():
  """Integer leaves in the model state (dropout's key data, step counters) get float0
  cotangents: the gradient is taken, and equals the one without them. The state is a constant
  of the term: its gradient is zero, of the tangent dtype of each leaf."""
  weights = jnp.arange(6.0).reshape(3, 2) / 6
  inputs, labels = jnp.eye(4, 3), jnp.eye(4, 2)
  apply_fn = lambda w, state, x: (jnp.tanh(x @ w) * state["scale"], state)

  def total(w, state):
    return directional.official_weighted_term(directional.input_shift(apply_fn), w, state,
                                              inputs, inputs.mean(0), labels, jnp.ones_like)[2]

  plain = jax.grad(total)(weights, {"scale": jnp.float32(2.0)})
  with_integers = jax.grad(total)(
      weights, {"scale": jnp.float32(2.0), "key": jnp.arange(2, dtype=jnp.uint32),
                "count": jnp.zeros((3,), jnp.int32)})
  np.testing.assert_array_equal(with_integers, plain)
  assert float(jnp.abs(plain).sum()) > 0
  state_gradient = jax.grad(total, argnums=1, allow_int=True)(
      weights, {"scale": jnp.float32(2.0), "count": jnp.zeros((3,), jnp.int32)})
  assert state_gradient["scale"].dtype == jnp.float32 and float(state_gradient["scale"]) == 0
  assert state_gradient["count"].dtype == jax.dtypes.float0
