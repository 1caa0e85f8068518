"""The loss interface: composition with jit/vmap/grad, BatchNorm state, all methods, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixupe_jax import losses, mixing, regularizers

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def cnn_problem():
  from conftest import make_model
  key = jax.random.key(0)
  inputs = jax.random.normal(key, (8, 8, 8, 1))
  labels = jnp.arange(8) % NUM_CLASSES
  module, params, state = make_model("cnn", key, inputs, NUM_CLASSES)
  from mixupe_jax.models import flax_apply_fn
  return inputs, labels, jnp.mean(inputs, 0), flax_apply_fn(module), params, state


ALL_METHODS = [("erm", {}), ("mixup", {}), ("manifold_mixup", {}),
               ("mixupe", dict(eta=0.5, variant="v1", threshold=1.0)),
               ("mixupe", dict(eta=0.5, variant="v2")), ("mixupe", dict(eta=0.5, variant="v3")),
               ("mixupe", dict(eta=0.5, variant="v4")),
               ("manifold_mixupe", dict(eta=0.5, variant="v2"))]


@pytest.mark.parametrize("method,options", ALL_METHODS,
                         ids=[f"{m}-{o.get('variant', '')}" for m, o in ALL_METHODS])
@pytest.mark.slow
def test_every_method_composes_with_jit_and_vmap(method, options, cnn_problem):
  """Each method's gradient under vmap over keys equals the one-key gradient; values and
  gradients are pinned against hand computations in the tests below and in test_regularizers /
  test_official_split."""
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  loss_fn = losses.make_loss_fn(method, apply_fn=apply_fn, num_classes=NUM_CLASSES, alpha=1.0,
                                x_bar=x_bar, **options)
  grad_fn = jax.jit(jax.grad(lambda p, k: loss_fn(p, state, inputs, labels, k)[0]))
  keys = jax.random.split(jax.random.key(1), 3)
  batched = jax.jit(jax.vmap(grad_fn, in_axes=(None, 0)))(params, keys)
  for index, key in enumerate(keys):
    single = grad_fn(params, key)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=1e-6),
                 jax.tree.map(lambda b: b[index], batched), single)
  # The same key gives the same loss (determinism).
  first = loss_fn(params, state, inputs, labels, keys[0])[0]
  assert float(first) == float(loss_fn(params, state, inputs, labels, keys[0])[0])


def test_mixupe_runs_both_passes_in_train_mode_updating_batchnorm(cnn_problem):
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  _, aux = losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, apply_fn=apply_fn,
                                 alpha=1.0, eta=0.5, num_classes=NUM_CLASSES)
  _, after_mixed = apply_fn(params, state, mixed.inputs)
  _, after_both = apply_fn(params, after_mixed, inputs)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), aux.model_state,
               after_both)
  mixup_state = losses.mixup_loss_fn(params, state, mixed, apply_fn=apply_fn)[1].model_state
  assert not np.allclose(jax.tree.leaves(mixup_state)[0], jax.tree.leaves(after_both)[0])


def test_eta_zero_is_mixup_plus_the_clean_pass(cnn_problem):
  """As in the official code, MixupE with eta = 0 still runs the clean pass in train mode: the loss
  and its gradient are Mixup's, its metrics Mixup's (`mixup_loss`, the name every Mixup loss
  logs), the BatchNorm state has seen both batches."""
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)

  def mixup(p):
    return losses.mixup_loss_fn(p, state, mixed, apply_fn=apply_fn)

  (mix_loss, mix_aux), mix_grad = jax.value_and_grad(mixup, has_aux=True)(params)
  _, after_both = apply_fn(params, mix_aux.model_state, inputs)
  assert not np.allclose(jax.tree.leaves(mix_aux.model_state)[0], jax.tree.leaves(after_both)[0])
  for variant in ("v1", "v3"):
    def mixupe(p):
      return losses.mixupe_loss_fn(p, state, mixed, inputs, labels, x_bar, apply_fn=apply_fn,
                                   alpha=1.0, eta=0.0, variant=variant, num_classes=NUM_CLASSES)

    (loss, aux), grad = jax.value_and_grad(mixupe, has_aux=True)(params)
    assert float(loss) == float(mix_loss) and aux.metrics == {"mixup_loss": loss}
    jax.tree.map(np.testing.assert_array_equal, grad, mix_grad)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), aux.model_state,
                 after_both)
  manifold = losses.manifold_mixupe_loss_fn(params, state, mixed, inputs, labels,
                                            apply_fn=apply_fn, layer=1, alpha=1.0, eta=0.0,
                                            num_classes=NUM_CLASSES)[1].model_state
  _, after_manifold = losses.manifold_mixup_loss_fn(params, state, mixed, inputs,
                                                    apply_fn=apply_fn, layer=1)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6), manifold,
               apply_fn(params, after_manifold.model_state, inputs)[1])


def test_manifold_layer_zero_is_input_mixup(cnn_problem):
  inputs, labels, _, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  mix_loss, mix_aux = losses.mixup_loss_fn(params, state, mixed, apply_fn=apply_fn)
  assert mix_aux.metrics == {"mixup_loss": mix_loss}
  manifold_zero = losses.manifold_mixup_loss_fn(params, state, mixed, inputs, apply_fn=apply_fn,
                                                layer=0)[0]
  np.testing.assert_allclose(manifold_zero, mix_loss, rtol=1e-5)
  manifold_hidden, aux = losses.manifold_mixup_loss_fn(params, state, mixed, inputs,
                                                       apply_fn=apply_fn, layer=1)
  assert abs(float(manifold_hidden - mix_loss)) > 1e-6
  assert aux.metrics == {"mixup_loss": manifold_hidden}  # The name every Mixup loss logs.
  unmixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=0.0, num_classes=NUM_CLASSES)
  manifold_unmixed = losses.manifold_mixup_loss_fn(params, state, unmixed, inputs,
                                                   apply_fn=apply_fn, layer=1)[0]
  erm = losses.erm_loss_fn(params, state, inputs, labels, apply_fn=apply_fn,
                           num_classes=NUM_CLASSES)[0]
  np.testing.assert_allclose(manifold_unmixed, erm, rtol=1e-6)


def test_manifold_mixupe_joint_term_at_hidden_layer(cnn_problem):
  """At hidden layer k the joint statistic is stopgrad(p - y)^T J_g(H) (mean(h) - h), every h_i
  moved together (the official split is pinned in test_official_split.py)."""
  inputs, labels, _, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  _, aux = losses.manifold_mixupe_loss_fn(params, state, mixed, inputs, labels, apply_fn=apply_fn,
                                          layer=1, alpha=1.0, eta=0.5, variant="v2",
                                          term_split="joint", num_classes=NUM_CLASSES)
  _, mixed_state = apply_fn(params, state, inputs, hidden_layer=1,
                            hidden_transform=functools.partial(mixing.mix_like, lam=mixed.lam,
                                                               partner=mixed.partner))
  soft = jax.nn.one_hot(labels, NUM_CLASSES)

  def b_dot_logits(t):
    shift = lambda h: h + t * jax.lax.stop_gradient(jnp.mean(h, 0) - h)
    logits = apply_fn(params, mixed_state, inputs, hidden_layer=1, hidden_transform=shift)[0]
    return logits

  step = 1e-3
  tangents = (b_dot_logits(step) - b_dot_logits(-step)) / (2 * step)
  b = jax.nn.softmax(b_dot_logits(0.0)) - soft
  r = jnp.sum(b * tangents, -1)
  np.testing.assert_allclose(aux.metrics["penalty"], jnp.mean(jnp.abs(r)), rtol=2e-2)


@pytest.mark.parametrize("change,message", [
    (dict(alpha=-1.0), r"alpha must be .* got -1.0"),
    (dict(eta=-0.1), r"eta must be .* got -0.1"),
    (dict(variant="v7"), r"Unknown MixupE variant 'v7'"),
    (dict(x_bar=jnp.zeros((7, 7, 1))), r"x_bar has shape \(7, 7, 1\).*\(8, 8, 1\)"),
    (dict(x_bar=None), r"Variant 'v1' needs x_bar"),
    (dict(clean_labels=jnp.zeros((8, 4))), r"Labels of shape \(8, 4\) do not match logits .*\(8, 3\)"),
    (dict(clean_labels=jnp.array([0, 1, 2, 3, 0, 1, 2, 0])), r"Label 3 is out of range"),
    (dict(variant="v2", threshold=-1.0), r"variant 'v2' has no threshold .* got threshold=-1.0"),
    (dict(variant="v4", threshold=0.5), r"variant 'v4' has no threshold .* got threshold=0.5"),
    (dict(threshold=float("nan")), r"threshold must be a number or \+-inf, got nan"),
    (dict(term_split="batch"), r"Unknown term_split 'batch'; valid values are official, joint"),
])
def test_bad_input_is_a_clear_error(change, message, cnn_problem):
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  kwargs = dict(clean_inputs=inputs, clean_labels=labels, x_bar=x_bar, alpha=1.0, eta=0.5,
                variant="v1", num_classes=None if "clean_labels" in change else NUM_CLASSES)
  if "clean_labels" in change and change["clean_labels"].dtype != jnp.float32:
    kwargs["num_classes"] = NUM_CLASSES
  kwargs.update(change)
  with pytest.raises(ValueError, match=message):
    losses.mixupe_loss_fn(params, state, mixed, apply_fn=apply_fn, **kwargs)


def test_mixup_labels_must_match_logits(cnn_problem):
  inputs, _, _, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, jnp.arange(8) % 5, alpha=1.0, num_classes=5)
  with pytest.raises(ValueError, match=r"Labels of shape \(8, 5\) do not match logits"):
    losses.mixup_loss_fn(params, state, mixed, apply_fn=apply_fn)


def test_the_default_mixer_is_mixup_and_passes_its_options_on():
  x, y = jnp.arange(24.0).reshape(8, 3), jnp.arange(8) % 3
  default = losses.make_mixer(alpha=1.0, num_classes=3)(jax.random.key(0), x, y)
  mixup = mixing.mixup(jax.random.key(0), x, y, alpha=1.0, num_classes=3)
  jax.tree.map(np.testing.assert_array_equal, default, mixup)
  per_example = losses.make_mixer("mixup", alpha=1.0, num_classes=3, granularity="example")
  lam = per_example(jax.random.key(0), x, y).lam
  np.testing.assert_array_equal(
      lam, mixing.mixup(jax.random.key(0), x, y, alpha=1.0, num_classes=3,
                        granularity="example").lam)
  assert len(np.unique(np.asarray(lam))) == 8  # One lambda per example, not one per batch.


def _value_and_gradient(fn, params):
  """(the loss and every gradient entry as one vector, aux) of fn: params -> (loss, aux)."""
  (loss, aux), grad = jax.value_and_grad(fn, has_aux=True)(params)
  return np.concatenate([np.ravel(loss)] + [np.ravel(g) for g in jax.tree.leaves(grad)]), aux


@pytest.mark.slow
def test_make_loss_fn_defaults_are_the_documented_options(cnn_problem):
  """Each default equals its documented value given explicitly, and differs from another value
  (so the default reaches the loss); without eta, MixupE is Mixup (eta = 0). Compared by the
  value and the gradient (with `rescale` the value alone is |L_mix|), on a tanh MLP: on the
  bias-free BatchNorm CNN a whole-batch shift leaves no term to see."""
  from conftest import make_model
  from mixupe_jax.models import flax_apply_fn
  inputs, labels = cnn_problem[:2]
  inputs = inputs.reshape(inputs.shape[0], -1)
  x_bar = jnp.mean(inputs, 0)
  module, params, state = make_model("mlp", jax.random.key(0), inputs, NUM_CLASSES)
  apply_fn = flax_apply_fn(module)

  def result(method="mixupe", **options):
    loss_fn = losses.make_loss_fn(method, apply_fn=apply_fn, num_classes=NUM_CLASSES,
                                  x_bar=x_bar, **options)
    return _value_and_gradient(
        lambda p: loss_fn(p, state, inputs, labels, jax.random.key(3)), params)[0]

  same = lambda a, b: np.array_equal(result(**a), result(**b))
  every = dict(eta=0.5, threshold=float("inf"))  # Every r_i enters, so each option shows.
  no_threshold = dict(threshold=float("inf"))  # With tau = -1 no r_i may pass, hiding eta.
  assert np.array_equal(result(**no_threshold), result("mixup"))
  assert not same(no_threshold, every)
  assert same(dict(eta=0.5), dict(eta=0.5, threshold=None)) and not same(dict(eta=0.5), every)
  documented = dict(variant=("v1", "v2"), rescale=(True, False),
                    scale_by_moment=(True, False), flip_sign=(False, True))
  for name, (default, other) in documented.items():
    options = every if name != "variant" else dict(eta=0.5)  # v2 has no threshold.
    assert same(options, {**options, name: default}), name
    assert not same(options, {**options, name: other}), name


def test_make_loss_fn_manifold_mixupe_puts_the_term_at_the_drawn_layer():
  """With one listed layer k, make_loss_fn's manifold MixupE is manifold_mixupe_loss_fn at k,
  term included (value and gradient), and another k gives another gradient."""
  from conftest import make_model
  from mixupe_jax.models import flax_apply_fn
  key = jax.random.key(7)
  inputs = jax.random.normal(key, (8, 5))
  labels = jnp.arange(8) % NUM_CLASSES
  module, params, state = make_model("mlp", key, inputs, NUM_CLASSES)
  apply_fn = flax_apply_fn(module)
  fixed = mixing.mixup(jax.random.key(1), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  options = dict(alpha=1.0, eta=0.5, variant="v1", threshold=float("inf"))

  def gradient_of(layer, through_make_loss_fn):
    if through_make_loss_fn:
      loss_fn = losses.make_loss_fn("manifold_mixupe", apply_fn=apply_fn,
                                    num_classes=NUM_CLASSES, mixer=lambda k, x, y: fixed,
                                    manifold_layers=(layer,), **options)
      fn = lambda p: loss_fn(p, state, inputs, labels, jax.random.key(0))
    else:
      fn = lambda p: losses.manifold_mixupe_loss_fn(p, state, fixed, inputs, labels,
                                                    apply_fn=apply_fn, layer=layer,
                                                    num_classes=NUM_CLASSES, **options)
    vector, aux = _value_and_gradient(fn, params)
    assert float(aux.metrics["active_fraction"]) == 1.0
    return vector

  for layer in (1, 2):
    np.testing.assert_array_equal(gradient_of(layer, True), gradient_of(layer, False))
  assert not np.allclose(gradient_of(1, True), gradient_of(2, True))


def test_make_loss_fn_mixes_with_alpha_one_by_default(cnn_problem):
  """The documented default alpha = 1: the same loss as alpha=1.0 given, not as alpha=2."""
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  for method, options in (("mixup", {}), ("mixupe", dict(eta=0.5, x_bar=x_bar))):
    loss = lambda **alpha: losses.make_loss_fn(method, apply_fn=apply_fn, num_classes=NUM_CLASSES,
                                               **options, **alpha)(
        params, state, inputs, labels, jax.random.key(3))[0]
    assert float(loss()) == float(loss(alpha=1.0)) != float(loss(alpha=2.0)), method


def test_make_loss_fn_rejects_unknown_names(cnn_problem):
  apply_fn = cnn_problem[3]
  with pytest.raises(ValueError, match=r"Unknown method 'cutout'; valid methods are erm, mixup"):
    losses.make_loss_fn("cutout", apply_fn=apply_fn, num_classes=3)
  with pytest.raises(ValueError, match=r"Unknown MixupE variant 'v0'"):
    losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=3, variant="v0")
  with pytest.raises(ValueError, match=r"Unknown mixer 'mixer'"):
    losses.make_mixer("mixer", alpha=1.0, num_classes=3)
  with pytest.raises(ValueError, match=r"variant 'v2' has no threshold"):
    losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=3, variant="v2", threshold=1.0)
  with pytest.raises(ValueError, match=r"Unknown term_split 'both'"):
    losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=3, term_split="both")


@pytest.mark.parametrize("variant", ["v2", "v4"])
def test_v2_and_v4_accept_no_threshold_or_infinity_and_ignore_it(variant, cnn_problem):
  """The official code ignores the threshold in v2 and v4: unset and +inf give the same loss."""
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  values = [losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, apply_fn=apply_fn,
                                  alpha=1.0, eta=0.5, variant=variant, threshold=threshold,
                                  rescale=False, num_classes=NUM_CLASSES)[1].metrics
            for threshold in (None, float("inf"))]
  assert float(values[0]["active_fraction"]) == 1.0
  assert float(values[0]["penalty"]) == float(values[1]["penalty"]) != 0.0


def assert_gradient_along_a_random_direction(gradient, value_fn, params, *, seed, epsilon,
                                             rtol, atol=0.0):
  """gradient . v equals the central difference (f(theta + eps v) - f(theta - eps v)) / 2 eps of
  `value_fn` along a random normal direction v (float64)."""
  rng = np.random.default_rng(seed)
  along = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), params)
  moved = lambda sign: jax.tree.map(lambda a, v: a + sign * epsilon * v, params, along)
  expected = (value_fn(moved(1)) - value_fn(moved(-1))) / (2 * epsilon)
  got = sum(jnp.sum(g * v) for g, v in zip(jax.tree.leaves(gradient), jax.tree.leaves(along)))
  np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind,variant,tau", [("mlp", "v2", None), ("mlp_bn", "v1", 0.0)])
@pytest.mark.slow
def test_hidden_layer_term_gradient_equals_finite_differences_with_the_direction_held(
    kind, variant, tau):
  """The Manifold MixupE term's parameter gradient treats d_i = h_bar - h_i as a constant:
  grad . v equals the central difference along v of

      g(theta) = (1/B) sum_i w_i sum_k b_k . (F_k(H(theta) + s e_i d_i) - F_k(H(theta) - s e_i d_i)) / 2s

  with b, d and the weights w fixed at theta_0 and the inner derivative also a central difference
  (example i moved alone: the official r_i, equal to the joint one without BatchNorm). The
  per-example MLP takes the single-jvp path, the BatchNorm MLP (v1, finite tau) the official one."""
  from conftest import make_model
  with jax.enable_x64(True):
    key = jax.random.key(3)
    inputs = jax.random.normal(key, (8, 5), jnp.float64)
    labels = jnp.arange(8) % NUM_CLASSES
    module, params, state = make_model(kind, key, inputs, NUM_CLASSES, dtype=jnp.float64)
    from mixupe_jax.models import flax_apply_fn
    apply_fn = flax_apply_fn(module)
    mixed = mixing.mixup(jax.random.key(4), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
    _, after_mixed = losses.manifold_mixup_loss_fn(params, state, mixed, inputs,
                                                   apply_fn=apply_fn, layer=1)
    after_mixed = after_mixed.model_state
    soft = jax.nn.one_hot(labels, NUM_CLASSES, dtype=jnp.float64)

    def regularizer(p):
      return losses.manifold_mixupe_loss_fn(
          p, state, mixed, inputs, labels, apply_fn=apply_fn, layer=1, alpha=1.0, eta=1.0,
          variant=variant, threshold=tau, rescale=False, scale_by_moment=False,
          num_classes=NUM_CLASSES)[1].metrics["regularizer"]

    def logits_moved(p, shift):
      return apply_fn(p, after_mixed, inputs, hidden_layer=1, hidden_transform=shift)[0]

    hidden = []
    logits_moved(params, lambda h: hidden.append(h) or h)
    h0 = hidden[0]
    direction = jnp.mean(h0, 0) - h0  # d_i at theta_0, held fixed below.
    residual = jax.nn.softmax(logits_moved(params, lambda h: h)) - soft
    step = 1e-4
    one_hot_rows = jnp.eye(8, dtype=jnp.float64)[:, :, None]

    def values(p):
      moved = lambda sign, i: logits_moved(p, lambda h: h + sign * step * one_hot_rows[i] * direction)
      return jnp.array([jnp.sum(residual * (moved(1, i) - moved(-1, i))) / (2 * step)
                        for i in range(8)])

    r0 = values(params)
    weights = jnp.sign(r0) if variant == "v2" else (r0 < tau).astype(jnp.float64)
    if variant == "v1":
      assert 0 < float(jnp.sum(weights)) < 8  # tau = 0 selects part of the batch.
    np.testing.assert_allclose(regularizer(params), jnp.sum(weights * r0) / 8, rtol=1e-6)
    assert_gradient_along_a_random_direction(
        jax.grad(regularizer)(params), lambda p: jnp.sum(weights * values(p)) / 8, params,
        seed=0, epsilon=1e-4, rtol=1e-5)


HAND_METHODS = [("erm", {}), ("mixup", {}), ("manifold_mixup", {}),
                ("mixupe", dict(eta=0.5, variant="v3", threshold=0.0, rescale=False))]


@pytest.mark.parametrize("method,options", HAND_METHODS,
                         ids=[m + o.get("variant", "") for m, o in HAND_METHODS])
def test_loss_values_by_hand_and_gradients_by_finite_differences(method, options):
  """make_loss_fn's value against the formula written out (cross-entropy of the mixed batch, the
  hidden layer mixed by hand, v3's -eta m_1 (1/B) sum_{u_i < tau} u_i with p differentiated), and
  its gradient against a central difference of that formula along a random direction (float64).
  The mixer returns a fixed mixed batch, so the key plays no part."""
  from conftest import make_model
  from mixupe_jax.models import flax_apply_fn
  with jax.enable_x64(True):
    key = jax.random.key(6)
    inputs = jax.random.normal(key, (8, 5), jnp.float64)
    labels = jnp.arange(8) % NUM_CLASSES
    module, params, state = make_model("mlp", key, inputs, NUM_CLASSES, dtype=jnp.float64)
    apply_fn = flax_apply_fn(module)
    lam = jnp.asarray(np.linspace(0.2, 0.9, 8))
    partner = jnp.asarray([3, 0, 1, 2, 7, 4, 5, 6], jnp.int32)
    one_hot = np.eye(NUM_CLASSES)[np.asarray(labels)]
    mixed_labels = np.asarray(lam)[:, None] * one_hot + (1 - np.asarray(lam))[:, None] * \
        one_hot[np.asarray(partner)]
    mixed_inputs = lam[:, None] * inputs + (1 - lam[:, None]) * inputs[partner]
    fixed = mixing.MixedBatch(mixed_inputs, jnp.asarray(mixed_labels), lam, partner)
    loss_fn = losses.make_loss_fn(method, apply_fn=apply_fn, num_classes=NUM_CLASSES, alpha=1.0,
                                  mixer=lambda key, x, y: fixed, manifold_layers=(1,),
                                  **options)

    def log_softmax(z):
      return z - jax.scipy.special.logsumexp(z, axis=1, keepdims=True)

    def by_hand(p):
      if method == "erm":
        return -jnp.mean(jnp.sum(one_hot * log_softmax(apply_fn(p, state, inputs)[0]), 1))
      if method == "manifold_mixup":
        mix_hidden = lambda h: lam[:, None] * h + (1 - lam[:, None]) * h[partner]
        logits = apply_fn(p, state, inputs, hidden_layer=1, hidden_transform=mix_hidden)[0]
      else:
        logits = apply_fn(p, state, mixed_inputs)[0]
      value = -jnp.mean(jnp.sum(mixed_labels * log_softmax(logits), 1))
      if method == "mixupe":
        clean = apply_fn(p, state, inputs)[0]
        u = jnp.sum(clean * (one_hot - jnp.exp(log_softmax(clean))), 1)
        assert 0 < int(jnp.sum(u < 0)) < 8  # tau = 0 selects part of the batch.
        value = value - 0.5 * (1 / 3) * jnp.sum(jnp.where(u < 0, u, 0)) / 8
      return value

    loss = loss_fn(params, state, inputs, labels, jax.random.key(0))[0]
    np.testing.assert_allclose(loss, by_hand(params), rtol=1e-12)
    gradient = jax.grad(lambda p: loss_fn(p, state, inputs, labels, jax.random.key(0))[0])(params)
    assert_gradient_along_a_random_direction(gradient, by_hand, params, seed=1, epsilon=1e-5,
                                             rtol=1e-6, atol=1e-9)


def test_erm_returns_the_updated_state_and_names_its_metrics(cnn_problem):
  """ERM in train mode: BatchNorm's statistics move, and the metrics are the cross-entropy and
  the accuracy of the batch (by hand)."""
  inputs, labels, _, apply_fn, params, state = cnn_problem
  loss, aux = losses.erm_loss_fn(params, state, inputs, labels, apply_fn=apply_fn,
                                 num_classes=NUM_CLASSES)
  logits, expected_state = apply_fn(params, state, inputs)
  jax.tree.map(np.testing.assert_array_equal, aux.model_state, expected_state)
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(aux.model_state),
                                                      jax.tree.leaves(state)))
  assert set(aux.metrics) == {"cross_entropy", "accuracy"}
  logits = np.asarray(logits, np.float64)
  log_probabilities = logits - np.log(np.sum(np.exp(logits), 1, keepdims=True))
  by_hand = -np.mean(log_probabilities[np.arange(8), np.asarray(labels)])
  np.testing.assert_allclose(aux.metrics["cross_entropy"], by_hand, rtol=1e-5)
  np.testing.assert_allclose(loss, by_hand, rtol=1e-5)
  np.testing.assert_allclose(aux.metrics["accuracy"],
                             np.mean(logits.argmax(1) == np.asarray(labels)))


def test_manifold_mixupe_defaults_are_the_official_options(cnn_problem):
  """Unset options equal v1, the official split, the m_1 scaling and the rescaling (value
  sign(L) |L_mix|), and each of them changes the result when switched (tau = 0 here, so that
  the term is not empty at this layer; its default is pinned in test_regularizers)."""
  inputs, labels, _, apply_fn, params, state = cnn_problem
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  common = dict(apply_fn=apply_fn, layer=1, alpha=1.0, eta=2.0, threshold=0.0,
                num_classes=NUM_CLASSES)
  run = lambda **options: losses.manifold_mixupe_loss_fn(params, state, mixed, inputs, labels,
                                                         **common, **options)
  default_loss, default_aux = run()
  official = dict(variant="v1", term_split="official", rescale=True,
                  scale_by_moment=True, flip_sign=False)
  loss, aux = run(**official)
  assert float(loss) == float(default_loss)
  jax.tree.map(np.testing.assert_array_equal, aux.metrics, default_aux.metrics)
  np.testing.assert_allclose(abs(float(default_loss)), float(default_aux.metrics["mixup_loss"]),
                             rtol=1e-6)
  assert float(default_aux.metrics["rescale_factor"]) != 1.0
  for change in (dict(rescale=False), dict(scale_by_moment=False), dict(flip_sign=True),
                 dict(term_split="joint")):
    assert float(run(**{**official, **change})[1].metrics["unscaled_loss"]) != float(
        default_aux.metrics["unscaled_loss"]) or change == dict(rescale=False), change
  assert float(run(**{**official, "rescale": False})[0]) == float(
      default_aux.metrics["unscaled_loss"])


def test_the_options_object_is_the_keywords_validated_once(cnn_problem):
  """`MixupEOptions` built from a config holds its fields; `make_loss_fn(mixupe=options)` is the
  loss of the same keywords; a bad option is an OptionError naming its field for the config and
  keeping the library's message."""
  from mixupe_jax.train.defaults import default_config
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  config = default_config()
  config.eta, config.variant, config.threshold, config.flip_sign = 0.3, "exact", 0.5, True
  config.term_split, config.rescale, config.scale_by_moment = "joint", False, False
  options = regularizers.MixupEOptions.from_config(config)
  assert options == regularizers.MixupEOptions(
      eta=0.3, variant="exact", threshold=0.5, term_split="joint", rescale=False,
      scale_by_moment=False, flip_sign=True, term_fraction=1.0, clean_pass_remat=None)
  assert options.threshold_in_effect == 0.5 and options.chosen_variant.name == "v1"
  keywords = dict(eta=0.3, variant="exact", threshold=0.5, term_split="joint", rescale=False,
                  scale_by_moment=False, flip_sign=True)
  by_options = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES,
                                   x_bar=x_bar, mixupe=options)
  by_keywords = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES,
                                    x_bar=x_bar, **keywords)
  key = jax.random.key(5)
  loss_a, aux_a = by_options(params, state, inputs, labels, key)
  loss_b, aux_b = by_keywords(params, state, inputs, labels, key)
  assert float(loss_a) == float(loss_b) and float(aux_a.metrics["penalty"]) != 0
  for field, value, expected in [("eta", -1.0, "expected a number in [0, inf)"),
                                 ("variant", "v9", "valid values are v1, v2, v3, v4, exact, fast"),
                                 ("term_fraction", 0.0, "expected a number in (0, 1]"),
                                 ("clean_pass_remat", "all", "valid values are dots_saveable")]:
    with pytest.raises(regularizers.OptionError) as raised:
      regularizers.MixupEOptions(**{field: value})
    assert (raised.value.field, raised.value.value) == (field, value)
    assert raised.value.expected.startswith(expected)
  with pytest.raises(regularizers.OptionError, match="eta must be a finite number >= 0, got -1"):
    regularizers.MixupEOptions(eta=-1.0)


def test_rescaling_leaves_an_exactly_zero_loss_unscaled():
  """Where L = L_mix + eta m_1 P is exactly 0, abs(L_mix) / abs(L) is 0 / 0: the factor is 1
  (the `rescale_factor` metric a run logs) and the loss 0, both finite. Here a saturated linear
  model on unmixed labels: the cross-entropy and every residual P - Y underflow to 0."""
  labels = jnp.array([0, 1, 2, 0])
  one_hot = jax.nn.one_hot(labels, NUM_CLASSES)
  apply_fn = lambda w, state, x: (x @ w, state)
  unmixed = mixing.MixedBatch(one_hot, one_hot, jnp.ones(4), jnp.arange(4))
  for variant in ("v1", "v3", "fast"):
    loss, aux = losses.mixupe_loss_fn(
        1e4 * jnp.eye(NUM_CLASSES), {}, unmixed, one_hot, labels, one_hot.mean(0),
        apply_fn=apply_fn, alpha=1.0, eta=1.0, variant=variant, threshold=float("inf"),
        num_classes=NUM_CLASSES)
    assert float(aux.metrics["unscaled_loss"]) == 0.0, variant
    assert float(aux.metrics["rescale_factor"]) == 1.0 and float(loss) == 0.0, variant


def test_a_per_example_float32_model_s_loss_and_metrics_are_float32_under_x64():
  """Without batch-coupled layers, the loss and every metric of MixupE follow the model's float32
  under x64 too (x64's default float is float64), the fraction of examples past tau included.
  (The official per-example path keeps its r_i in x64's float64: `directional._zero_shift`.)"""
  from mixupe_jax.models.apply import declare_coupling
  with jax.enable_x64(True):
    labels = jnp.array([0, 1, 2, 0, 1])
    inputs = jax.random.normal(jax.random.key(0), (5, 4), jnp.float32)
    apply_fn = declare_coupling(lambda w, state, x: (jnp.tanh(x @ w), state), False)
    weights = jax.random.normal(jax.random.key(1), (4, NUM_CLASSES), jnp.float32)
    mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
    for variant in ("v1", "v2", "v3", "v4"):
      loss, aux = losses.mixupe_loss_fn(
          weights, {}, mixed, inputs, labels, inputs.mean(0), apply_fn=apply_fn, alpha=1.0,
          eta=0.5, variant=variant, num_classes=NUM_CLASSES)
      dtypes = {name: value.dtype for name, value in aux.metrics.items()}
      assert loss.dtype == jnp.float32 and set(dtypes.values()) == {jnp.dtype("float32")}, (
          variant, dtypes)


def test_mixupe_logs_the_documented_metrics_and_the_clean_accuracy_by_hand():
  """The metric names a run logs (mixupe_loss_fn's docstring), and `clean_accuracy`, the fraction
  of clean examples whose logits' argmax is their label, against numpy."""
  labels = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  inputs = jax.random.normal(jax.random.key(5), (8, 4))
  weights = jax.random.normal(jax.random.key(6), (4, NUM_CLASSES))
  apply_fn = lambda w, state, x: (jnp.tanh(x @ w), state)
  mixed = mixing.mixup(jax.random.key(2), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  expected = np.mean(np.argmax(np.tanh(np.asarray(inputs) @ np.asarray(weights)), 1) == labels)
  assert 0 < expected < 1
  for variant in ("v1", "v3"):
    _, aux = losses.mixupe_loss_fn(weights, {}, mixed, inputs, labels, inputs.mean(0),
                                   apply_fn=apply_fn, alpha=1.0, eta=0.5, variant=variant,
                                   num_classes=NUM_CLASSES)
    assert set(aux.metrics) == {
        "mixup_loss", "regularizer", "penalty", "unscaled_loss", "rescale_factor", "term_mean",
        "term_std", "term_min", "term_max", "active_fraction", "clean_accuracy"}, variant
    np.testing.assert_allclose(aux.metrics["clean_accuracy"], expected, rtol=1e-6)


def test_the_mixupe_options_have_one_door(cnn_problem):
  """An options object and a MixupE keyword set away from its default are an error naming the
  keyword, in `mixupe_loss_fn`, `manifold_mixupe_loss_fn` and `make_loss_fn` (before, the object
  silently won); the object alone, or the keywords alone, work; without either eta is required
  by the loss functions, and `make_loss_fn` takes 0 (Mixup with the clean pass)."""
  inputs, labels, x_bar, apply_fn, params, state = cnn_problem
  options = regularizers.MixupEOptions(eta=0.3)
  mixed = mixing.mixup(jax.random.key(1), inputs, labels, alpha=1.0, num_classes=NUM_CLASSES)
  common = dict(apply_fn=apply_fn, alpha=1.0, num_classes=NUM_CLASSES)
  for keyword in (dict(eta=0.1), dict(variant="v3"), dict(flip_sign=True),
                  dict(clean_pass_remat="dots_saveable"), dict(threshold=0.5)):
    name = next(iter(keyword))
    with pytest.raises(ValueError, match=f"options= and {name}=.* were both passed"):
      losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, options=options,
                            **common, **keyword)
    with pytest.raises(ValueError, match=f"options= and {name}="):
      losses.manifold_mixupe_loss_fn(params, state, mixed, inputs, labels, layer=1,
                                     options=options, **common, **keyword)
    with pytest.raises(ValueError, match=f"options= and {name}="):
      losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES, x_bar=x_bar,
                          mixupe=options, **keyword)
  with pytest.raises(ValueError, match="options= and term_fraction=0.5"):
    losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES, x_bar=x_bar,
                        mixupe=options, term_fraction=0.5)
  by_object = losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar,
                                    options=options, **common)[0]
  by_keyword = losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, eta=0.3,
                                     **common)[0]
  assert float(by_object) == float(by_keyword)
  with pytest.raises(ValueError, match="eta is required"):
    losses.mixupe_loss_fn(params, state, mixed, inputs, labels, x_bar, **common)
  loss_fn = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=NUM_CLASSES,
                                x_bar=x_bar)
  _, aux = loss_fn(params, state, inputs, labels, jax.random.key(2))
  assert set(aux.metrics) == {"mixup_loss"}  # eta 0: the clean pass, nothing else.
