"""MixupE v1/v2 under train-mode BatchNorm exactly as the official code computes them, in float64.

The official code gets r_i as row i of `autograd.grad(sum(f * b), x)` dotted with d_i (example i
moved alone), thresholds or takes |r_i|, and differentiates the result by a double backward. The
reference below follows those steps with reverse-over-reverse AD (allowed in tests, never in the
library), and the per-example values are also checked against central finite differences that
move one example at a time.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixupe_jax import directional, losses, mixing
from mixupe_jax.models import flax_apply_fn

NUM_CLASSES = 3
BATCH = 8
ALPHA, ETA = 1.0, 0.7
SHAPES = {"mlp_bn": (BATCH, 5), "cnn": (BATCH, 8, 8, 2)}


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def problem(kind, seed=0):
  """(apply_fn, params, state, inputs, labels, soft labels, x_bar, mixed batch), float64."""
  from conftest import make_model
  key = jax.random.key(seed)
  shape = SHAPES[kind]
  inputs = jax.random.normal(key, shape, jnp.float64)
  labels = jnp.arange(BATCH) % NUM_CLASSES
  module, params, state = make_model(kind, key, inputs, NUM_CLASSES, dtype=jnp.float64)
  x_bar = 0.5 * jnp.mean(jax.random.normal(jax.random.fold_in(key, 1), shape, jnp.float64), 0)
  mixed = mixing.mixup(jax.random.key(3), inputs, labels, alpha=ALPHA, num_classes=NUM_CLASSES)
  soft = jax.nn.one_hot(labels, NUM_CLASSES, dtype=jnp.float64)
  return flax_apply_fn(module), params, state, inputs, labels, soft, x_bar, mixed


def official_reference(params, apply_fn, state, mixed, inputs, soft, shift, tau, absolute,
                       rescale=True, layer=0):
  """The official `training_method` for MixupE v1 (tau) / v2 (absolute), step by step.

  `shift(params, state, t)` returns the clean logits with example i moved by t_i along d_i; the
  official r = d/dt [sum_k b_k . f_k] is taken by reverse mode and differentiated again. The
  mixed pass mixes at `layer` (0: the input). Returns (loss, (official r, unscaled loss)).
  """
  mixed_logits, state = mixed_pass(params, apply_fn, state, mixed, inputs, layer)
  mix_loss = jnp.mean(-jnp.sum(mixed.labels * jax.nn.log_softmax(mixed_logits), -1))
  zeros = jnp.zeros(BATCH)
  logits = shift(params, state, zeros)
  b = jax.lax.stop_gradient(jax.nn.softmax(logits) - soft)
  r = jax.grad(lambda t: jnp.sum(shift(params, state, t) * b))(zeros)
  if absolute:
    term = jnp.sum(jnp.abs(r)) / BATCH
  else:
    term = jnp.sum(jnp.where(jax.lax.stop_gradient(r) < tau, r, 0.0)) / BATCH
  total = mix_loss + ETA * ALPHA / (2 * ALPHA + 1) * term
  scale = jax.lax.stop_gradient(jnp.abs(mix_loss) / jnp.abs(total)) if rescale else 1.0
  return scale * total, (r, total)


def mixed_pass(params, apply_fn, state, mixed, inputs, layer=0):
  if layer == 0:
    return apply_fn(params, state, mixed.inputs)
  mix = functools.partial(mixing.mix_like, lam=mixed.lam, partner=mixed.partner)
  return apply_fn(params, state, inputs, hidden_layer=layer, hidden_transform=mix)


def input_shift_by_hand(apply_fn, inputs, x_bar):
  """Clean logits of X + t . (x_bar - X), written out independently of the library."""
  direction = x_bar[None] - inputs

  def shift(params, state, t):
    moved = inputs + t.reshape((-1,) + (1,) * (inputs.ndim - 1)) * direction
    return apply_fn(params, state, moved)[0]

  return shift


def hidden_shift_by_hand(apply_fn, inputs, layer):
  def shift(params, state, t):
    def transform(h):
      return h + t.reshape((-1,) + (1,) * (h.ndim - 1)) * jax.lax.stop_gradient(
          jnp.mean(h, 0) - h)

    return apply_fn(params, state, inputs, hidden_layer=layer, hidden_transform=transform)[0]

  return shift


def relative_error(tree, reference):
  leaves, expected = jax.tree.leaves(tree), jax.tree.leaves(reference)
  scale = max(float(jnp.max(jnp.abs(e))) for e in expected)
  return max(float(jnp.max(jnp.abs(a - e))) for a, e in zip(leaves, expected)) / scale


def taus_selecting_part(r):
  """Thresholds between sorted official values: select about 1/4, 1/2 and 3/4 of the batch."""
  ordered = np.sort(np.asarray(r))
  return [float(ordered[k - 1] + ordered[k]) / 2 for k in (2, 4, 6)]


@pytest.mark.parametrize("kind", ["mlp_bn", "cnn"])
@pytest.mark.slow
def test_official_values_equal_finite_differences_moving_one_example(kind):
  apply_fn, params, state, inputs, _, soft, x_bar, _ = problem(kind)
  logits, values, _, _ = directional.official_weighted_term(
      directional.input_shift(apply_fn), params, state, inputs, x_bar, soft, jnp.ones_like)
  assert values.dtype == jnp.float64
  b = jax.nn.softmax(logits) - soft
  direction = x_bar[None] - inputs

  def objective(i, step):  # sum_k b_k . f_k with only example i moved.
    moved = inputs.at[i].add(step * direction[i])
    return float(jnp.sum(b * apply_fn(params, state, moved)[0]))

  step = 1e-5
  finite = np.array([(objective(i, step) - objective(i, -step)) / (2 * step)
                     for i in range(BATCH)])
  np.testing.assert_allclose(values, finite, rtol=1e-6, atol=1e-9)
  # The joint form (whole batch moved) is a different per-example quantity here, same sum.
  _, tangents, _ = directional.logit_directional_derivative(apply_fn, params, state, inputs,
                                                            direction)
  joint = directional.directional_term(logits, tangents, soft)
  assert np.max(np.abs(np.asarray(joint) - finite)) > 1e-3 * np.max(np.abs(finite))
  np.testing.assert_allclose(jnp.sum(joint), jnp.sum(values), rtol=1e-9, atol=1e-12)


def test_official_values_at_a_hidden_layer_equal_finite_differences():
  apply_fn, params, state, inputs, _, soft, _, _ = problem("cnn")
  logits, values, _, _ = directional.official_weighted_term(
      directional.hidden_shift(apply_fn, layer=1), params, state, inputs, None, soft,
      jnp.ones_like)
  b = jax.nn.softmax(logits) - soft
  by_hand = hidden_shift_by_hand(apply_fn, inputs, 1)

  def objective(i, step):
    return float(jnp.sum(b * by_hand(params, state, jnp.zeros(BATCH).at[i].set(step))))

  step = 1e-5
  finite = [(objective(i, step) - objective(i, -step)) / (2 * step) for i in range(BATCH)]
  np.testing.assert_allclose(values, finite, rtol=1e-6, atol=1e-9)


def _library_loss(variant, tau, term_split, rescale, layer=0):
  def loss(params, apply_fn, state, mixed, inputs, labels, x_bar):
    common = dict(apply_fn=apply_fn, alpha=ALPHA, eta=ETA, variant=variant, threshold=tau,
                  term_split=term_split, rescale=rescale, num_classes=NUM_CLASSES)
    if layer:
      return losses.manifold_mixupe_loss_fn(params, state, mixed, inputs, labels, layer=layer,
                                            **common)
    return losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, **common)

  return loss


@pytest.mark.parametrize("kind", ["mlp_bn", "cnn"])
@pytest.mark.slow
def test_v1_and_v2_loss_and_gradient_equal_the_official_double_backward(kind):
  apply_fn, params, state, inputs, labels, soft, x_bar, mixed = problem(kind)
  shift = input_shift_by_hand(apply_fn, inputs, x_bar)
  reference = functools.partial(official_reference, apply_fn=apply_fn, state=state, mixed=mixed,
                                inputs=inputs, soft=soft, shift=shift)
  _, (r, _) = reference(params, tau=np.inf, absolute=False)
  cases = [("v1", tau) for tau in taus_selecting_part(r)] + [("v2", None)]
  joint_errors = []
  for variant, tau in cases:
    for rescale in (False, True):
      (expected, (_, expected_total)), expected_grad = jax.value_and_grad(
          reference, has_aux=True)(params, tau=tau, absolute=variant == "v2", rescale=rescale)
      arguments = (params, apply_fn, state, mixed, inputs, labels, x_bar)
      (loss, aux), grad = jax.value_and_grad(
          _library_loss(variant, tau, "official", rescale), has_aux=True)(*arguments)
      np.testing.assert_allclose(loss, expected, rtol=1e-9)
      np.testing.assert_allclose(aux.metrics["unscaled_loss"], expected_total, rtol=1e-9)
      assert relative_error(grad, expected_grad) < 1e-6, (variant, tau, rescale)
      joint_grad = jax.grad(lambda p: _library_loss(variant, tau, "joint", rescale)(
          p, *arguments[1:])[0])(params)
      joint_errors.append(relative_error(joint_grad, expected_grad))
  # The joint split is a different objective on this model (so the check above has teeth).
  assert max(joint_errors) > 1e-2


def test_official_state_is_the_state_after_both_passes():
  apply_fn, params, state, inputs, labels, _, x_bar, mixed = problem("cnn")
  _, aux = _library_loss("v1", 0.0, "official", True)(params, apply_fn, state, mixed, inputs,
                                                       labels, x_bar)
  _, after_mixed = apply_fn(params, state, mixed.inputs)
  _, after_both = apply_fn(params, after_mixed, inputs)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-12), aux.model_state,
               after_both)


def test_hidden_layer_v1_and_v2_equal_the_double_backward_reference():
  """The same at hidden layer 1 of the BatchNorm CNN, d_i = mean(h) - h_i (Manifold MixupE)."""
  apply_fn, params, state, inputs, labels, soft, x_bar, mixed = problem("cnn")

  reference = functools.partial(official_reference, apply_fn=apply_fn, state=state, mixed=mixed,
                                inputs=inputs, soft=soft,
                                shift=hidden_shift_by_hand(apply_fn, inputs, 1), layer=1)
  _, (r, _) = reference(params, tau=np.inf, absolute=False)
  for variant, tau in [("v1", taus_selecting_part(r)[1]), ("v2", None)]:
    (expected, _), expected_grad = jax.value_and_grad(reference, has_aux=True)(
        params, tau=tau, absolute=variant == "v2")
    (loss, _), grad = jax.value_and_grad(_library_loss(variant, tau, "official", True, layer=1),
                                         has_aux=True)(params, apply_fn, state, mixed, inputs,
                                                       labels, x_bar)
    np.testing.assert_allclose(loss, expected, rtol=1e-9)
    assert relative_error(grad, expected_grad) < 1e-6, variant


@pytest.mark.parametrize("variant,tau", [("v1", np.inf), ("v1", -np.inf)])
def test_without_a_per_example_choice_v1_is_the_official_sum(variant, tau):
  """v1 with tau = +-inf takes the single-jvp path even on BatchNorm models, and it equals the
  official double backward (the sums agree; with -inf nothing enters)."""
  apply_fn, params, state, inputs, labels, soft, x_bar, mixed = problem("cnn")
  reference = functools.partial(official_reference, apply_fn=apply_fn, state=state, mixed=mixed,
                                inputs=inputs, soft=soft,
                                shift=input_shift_by_hand(apply_fn, inputs, x_bar),
                                tau=tau, absolute=False)
  (expected, _), expected_grad = jax.value_and_grad(reference, has_aux=True)(params)
  (loss, aux), grad = jax.value_and_grad(_library_loss(variant, tau, "official", True),
                                         has_aux=True)(params, apply_fn, state, mixed, inputs,
                                                       labels, x_bar)
  np.testing.assert_allclose(loss, expected, rtol=1e-9)
  assert relative_error(grad, expected_grad) < 1e-6
  assert float(aux.metrics["active_fraction"]) == (1.0 if tau > 0 else 0.0)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_where_the_split_cannot_matter_both_paths_agree(variant):
  """BatchNorm in eval mode is per-example: the official path (forced by declaring the model
  coupled) and the single-jvp path give the same loss and gradient."""
  from conftest import make_model
  _, _, _, inputs, labels, _, x_bar, mixed = problem("cnn")
  module, params, state = make_model("cnn", jax.random.key(0), inputs, NUM_CLASSES,
                                     dtype=jnp.float64)
  per_example = flax_apply_fn(module, train=False)
  forced = flax_apply_fn(module, train=False, couples_examples=True)
  common = (params, state, mixed, inputs, labels, x_bar)
  tau = 0.0 if variant == "v1" else None
  loss = lambda p, fn: losses.mixupe_loss_fn(p, *common[1:], apply_fn=fn, alpha=ALPHA, eta=ETA,
                                             variant=variant, threshold=tau, rescale=False,
                                             num_classes=NUM_CLASSES)
  (fast, fast_aux), fast_grad = jax.value_and_grad(loss, has_aux=True)(params, per_example)
  (slow, slow_aux), slow_grad = jax.value_and_grad(loss, has_aux=True)(params, forced)
  np.testing.assert_allclose(fast, slow, rtol=1e-12)
  np.testing.assert_allclose(fast_aux.metrics["term_std"], slow_aux.metrics["term_std"],
                             rtol=1e-10)
  assert relative_error(fast_grad, slow_grad) < 1e-10
  assert 0.0 < float(fast_aux.metrics["active_fraction"]) <= 1.0


def _takes_the_official_path(loss_fn, params) -> bool:
  """The official path is the one with the custom parameter gradient (see `directional`)."""
  return "custom_vjp_call" in str(jax.make_jaxpr(lambda p: loss_fn(p)[0])(params))


def test_the_single_jvp_path_is_taken_exactly_where_the_split_cannot_matter():
  apply_fn, params, state, inputs, labels, _, x_bar, mixed = problem("cnn")

  def official(fn, model_params, model_state, variant, tau, term_split="official"):
    return _takes_the_official_path(lambda p: losses.mixupe_loss_fn(
        p, model_state, mixed, inputs, labels, x_bar, apply_fn=fn, alpha=ALPHA, eta=ETA,
        variant=variant, threshold=tau, term_split=term_split, num_classes=NUM_CLASSES),
        model_params)

  # Train-mode BatchNorm with a per-example choice: the official path, unless asked for joint.
  assert official(apply_fn, params, state, "v1", 0.0)
  assert official(apply_fn, params, state, "v2", None)
  assert not official(apply_fn, params, state, "v1", 0.0, term_split="joint")
  # No per-example choice (the sums agree): the single jvp.
  assert not official(apply_fn, params, state, "v1", np.inf)
  assert not official(apply_fn, params, state, "v1", -np.inf)
  from conftest import make_model
  module, cnn_params, cnn_state = make_model("cnn", jax.random.key(0), inputs, NUM_CLASSES,
                                             dtype=jnp.float64)
  # No coupling: eval-mode BatchNorm, or a model without state; declared coupling is honoured.
  assert not official(flax_apply_fn(module, train=False), cnn_params, cnn_state, "v1", 0.0)
  assert official(flax_apply_fn(module, train=False, couples_examples=True), cnn_params,
                  cnn_state, "v1", 0.0)
  module, mlp_params, _ = make_model("mlp", jax.random.key(0), inputs, NUM_CLASSES,
                                     dtype=jnp.float64)
  assert not official(flax_apply_fn(module), mlp_params, {}, "v2", None)
  # A bare apply function says nothing: assumed coupled (always correct).
  bare = lambda p, s, x, **hidden: flax_apply_fn(module)(p, s, x, **hidden)
  assert official(bare, mlp_params, {}, "v2", None)


def test_the_official_path_costs_the_flops_of_the_joint_path():
  """The values' transposed map and the gradient's backward pass share their cotangent chain, so
  the official split adds (almost) nothing to the compiled step's FLOPs (a separate transpose would
  add a whole input-gradient pass: more than 10% of this model's MixupE gradient)."""
  apply_fn, params, state, inputs, labels, _, x_bar, mixed = problem("cnn")

  def flops(term_split):
    loss = lambda p: losses.mixupe_loss_fn(
        p, state, mixed, inputs, labels, x_bar, apply_fn=apply_fn, alpha=ALPHA, eta=ETA,
        variant="v1", threshold=0.0, term_split=term_split, num_classes=NUM_CLASSES)[0]
    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    analysis = compiled.cost_analysis()
    return (analysis[0] if isinstance(analysis, list) else analysis)["flops"]

  assert flops("official") < 1.02 * flops("joint")


@pytest.mark.parametrize("variant", ["v1", "v2", "v3", "v4"])
def test_float64_end_to_end(variant):
  """Under x64 with a float64 model nothing is cast down: the loss, the term and its statistics
  are float64, and v1/v2 equal the float64 reference to 1e-12."""
  apply_fn, params, state, inputs, labels, soft, x_bar, mixed = problem("mlp_bn")
  tau = {"v1": 0.0, "v3": 1.0}.get(variant)
  loss, aux = _library_loss(variant, tau, "official", False)(params, apply_fn, state, mixed,
                                                             inputs, labels, x_bar)
  assert loss.dtype == jnp.float64
  for name in ("mixup_loss", "penalty", "term_mean", "term_std"):
    assert aux.metrics[name].dtype == jnp.float64, name
  if variant in ("v1", "v2"):
    _, (_, expected) = official_reference(params, apply_fn, state, mixed, inputs, soft,
                                          input_shift_by_hand(apply_fn, inputs, x_bar), tau,
                                          variant == "v2", rescale=False)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
