r"""Directional derivatives of the logits by forward mode (`jax.jvp`): the heart of MixupE.

Each example i moves along its own direction d_i by a scalar t_i, X(t) = X + t . D (row i is
x_i + t_i d_i), and F(X) are the logits of the whole batch. With b_k = stopgrad(p_k - y_k), the
first directional derivative of the loss has two per-example forms:

- official: example i moved ALONE; its effect on every example's logits counts. This is what the
  official code thresholds: row i of `autograd.grad(sum(f * b), x)`, times d_i.

  .. math::

     r_i = \frac{\partial}{\partial t_i} \Big[\sum_k b_k \cdot f_k\big(X(t)\big)\Big]_{t=0}
         = \big[J_F(X)^\top B\big]_i \cdot d_i

- joint: the WHOLE BATCH moved along D; example i's own logits.

  .. math::

     r_i = b_i \cdot \big[J_F(X)\, D\big]_i

Both sum to :math:`B^\top J_F(X)\, D`. Without batch-coupled layers (train-mode BatchNorm, a graph
convolution over the batch's nodes) J_F is block-diagonal and the two coincide example by example;
with them they differ (up to 100% per example, measured on a BatchNorm CNN), so any version that
thresholds or takes abs(r_i) optimizes a different objective under each.

Costs, never a double backward:
  * joint: one `jax.jvp` along D gives every r_i; the parameter gradient is reverse-over-forward.
  * official (`official_weighted_term`): `jax.linearize` in t shares one forward pass between the
    per-example values (the transposed linear map applied to B: they decide which examples enter
    and, for abs(r_i), with what sign: constant weights w) and the weighted sum
    sum_i w_i r_i = B^T J_F(X) (w . D) (the linear map applied to w). Its parameter gradient is
    reverse-over-forward, taken with a unit cotangent inside a `jax.custom_vjp` and scaled by the
    outer one: the backward pass then starts from B exactly, as the transposed map does, so XLA
    computes their shared chain of cotangents once. The step costs what the joint path costs
    (`benchmarks/step_cost.py`: the same FLOPs, the same time within noise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from mixupe_jax import parallel
from mixupe_jax.models.apply import ApplyFn, ModelState, Params

# (params, model_state, inputs, target, t [B]) -> (logits, new model state): the batch's logits
# with example i moved by t_i towards `target` (x_bar at the input; h_bar or None at a hidden
# layer). Every array is an argument, so that `official_weighted_term` can differentiate it.
Shift = Callable[[Params, ModelState, jax.Array, Any, jax.Array], tuple[jax.Array, ModelState]]


def check_x_bar(x_bar: jax.Array, inputs: jax.Array) -> jax.Array:
  """x_bar must have the per-example input shape (optionally with a leading axis of 1).

  Args:
    x_bar: the training-set mean input.
    inputs: the batch, [B, ...].

  Returns:
    x_bar with the per-example shape, in the inputs' dtype; a ValueError names both shapes
    when they do not fit.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> directional.check_x_bar(jnp.zeros((1, 3)), jnp.ones((4, 3))).shape
  (3,)
  """
  x_bar = jnp.asarray(x_bar)
  example_shape = tuple(inputs.shape[1:])
  if tuple(x_bar.shape) not in (example_shape, (1,) + example_shape):
    raise ValueError(
      f"x_bar has shape {tuple(x_bar.shape)} but the inputs' per-example shape "
      f"is {example_shape} (x_bar is the training-set mean of one input)."
    )
  return x_bar.reshape(example_shape).astype(inputs.dtype)


def check_labels_match_logits(logits: jax.Array, soft_labels: jax.Array) -> None:
  """Soft labels must have the logits' shape [B, C]; a ValueError names both shapes.

  Args:
    logits: [B, C].
    soft_labels: [B, C].

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> directional.check_labels_match_logits(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  Traceback (most recent call last):
  ValueError: Labels of shape (2, 4) do not match logits of shape (2, 3) ...
  """
  if logits.shape != soft_labels.shape:
    raise ValueError(
      f"Labels of shape {tuple(soft_labels.shape)} do not match logits of shape "
      f"{tuple(logits.shape)} (expected soft labels [batch, num_classes])."
    )


def result_dtype(dtype) -> jnp.dtype:
  """Losses and terms are float32 for low-precision logits, float64 when computing in float64.

  Args:
    dtype: the logits' dtype.

  Returns:
    float32, or float64 for float64 logits.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> directional.result_dtype(jnp.bfloat16)
  dtype('float32')
  """
  return jnp.promote_types(dtype, jnp.float32)


def _per_example(t: jax.Array, like: jax.Array) -> jax.Array:
  return t.reshape((-1,) + (1,) * (like.ndim - 1)).astype(like.dtype)


def _zero_shift(batch_size: int, axis_name: str | None = None) -> jax.Array:
  """t = 0 in the default float dtype (float64 under x64, so the per-example values keep it).

  Inside `jax.shard_map` over `axis_name`, t is this shard's (varying over the axis): a
  derivative in t is then each example's own, where an invariant t would sum its shards'."""
  zeros = jnp.zeros(batch_size, jax.dtypes.canonicalize_dtype(jnp.float64))
  return zeros if axis_name is None else jax.lax.pcast(zeros, axis_name, to="varying")


def logit_directional_derivative(
  apply_fn: ApplyFn,
  params: Params,
  model_state: ModelState,
  inputs: jax.Array,
  direction: jax.Array,
) -> tuple[jax.Array, jax.Array, ModelState]:
  """(F(X), J_F(X) D, new model state) by one `jax.jvp` along the direction D (the joint form).

  The direction is stop-gradiented: only the Jacobian depends on the parameters.

  Args:
    apply_fn: (params, model_state, x) -> (logits, new_model_state).
    params: the model's parameters.
    model_state: its non-trainable state.
    inputs: X, [B, ...].
    direction: D, X's shape.

  Returns:
    (logits [B, C], their tangents J_F(X) D [B, C], the model state after the pass).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> def apply_fn(params, model_state, x):  # a linear model: F(X) = X W
  ...   return x @ params, model_state
  >>> w, x = jnp.arange(6.0).reshape(3, 2), jnp.eye(4, 3)
  >>> logits, tangents, _ = directional.logit_directional_derivative(apply_fn, w, {}, x, -x)
  >>> bool(jnp.array_equal(tangents, -x @ w))  # linear: J_F(X) D = D W
  True
  """
  chex.assert_equal_shape([inputs, direction])
  direction = jax.lax.stop_gradient(direction)

  def logits_of(x):
    return apply_fn(params, model_state, x)

  logits, logit_tangents, new_state = jax.jvp(logits_of, (inputs,), (direction,), has_aux=True)
  return logits, logit_tangents, new_state


def input_shift(apply_fn: ApplyFn) -> Shift:
  """X + t . D at the input, d_i = stopgrad(x_bar - x_i): example i moved towards x_bar by t_i.

  Args:
    apply_fn: (params, model_state, x) -> (logits, new_model_state).

  Returns:
    A `Shift`: (params, model_state, inputs, x_bar, t [B]) -> (logits, new_model_state).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> def apply_fn(params, model_state, x):  # a linear model: F(X) = X W
  ...   return x @ params, model_state
  >>> w, x = jnp.arange(6.0).reshape(3, 2), jnp.eye(4, 3)
  >>> shift = directional.input_shift(apply_fn)
  >>> logits, _ = shift(w, {}, x, jnp.zeros(3), jnp.ones(4))  # t = 1 moves every x_i to x_bar
  >>> float(jnp.abs(logits).max())
  0.0
  """

  def logits_of(params, model_state, inputs, x_bar, t):
    direction = jax.lax.stop_gradient(check_x_bar(x_bar, inputs)[None] - inputs)
    return apply_fn(params, model_state, inputs + _per_example(t, inputs) * direction)

  return logits_of


def hidden_shift(apply_fn: ApplyFn, layer: int, axis_name: str | None = None) -> Shift:
  """h_i + t_i d_i injected at hidden layer `layer`, d_i = stopgrad(h_bar - h_i); h_bar (the
  target) None is the batch mean of H, the estimate of E_r[h(r)] available at a hidden layer.

  Args:
    apply_fn: an apply function taking `hidden_layer` and `hidden_transform` keywords.
    layer: the hidden layer k.
    axis_name: inside `jax.shard_map`, the mesh axis the batch is split over: the batch mean of
      H is the global batch's (`parallel.batch_mean`).

  Returns:
    A `Shift`: (params, model_state, inputs, h_bar or None, t [B]) -> (logits, new state).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> from mixupe_jax.models import MLP, flax_apply_fn, init_model
  >>> model = MLP(num_classes=2, hidden_sizes=(4,))
  >>> x = jax.random.normal(jax.random.key(0), (3, 5))
  >>> params, state = init_model(model, jax.random.key(1), x[:1])
  >>> shift = directional.hidden_shift(flax_apply_fn(model), layer=1)
  >>> moved, _ = shift(params, state, x, None, jnp.ones(3))  # every h_i moved to the batch mean
  >>> bool(jnp.allclose(moved, moved[0], atol=1e-6))
  True
  """

  def logits_of(params, model_state, inputs, h_bar, t):
    def shift(h):
      mean = parallel.batch_mean(h, axis_name) if h_bar is None else h_bar
      return h + _per_example(t, h) * jax.lax.stop_gradient(mean - h)

    return apply_fn(params, model_state, inputs, hidden_layer=layer, hidden_transform=shift)

  return logits_of


def hidden_directional_derivative(
  apply_fn: ApplyFn,
  params: Params,
  model_state: ModelState,
  inputs: jax.Array,
  layer: int,
  h_bar: jax.Array | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, ModelState]:
  """(F(X), J_g(H) D, new state) at hidden layer `layer` (see `hidden_shift`), the joint form:
  one `jax.jvp` in t at t = 0 with tangent 1 for every example.

  Args:
    apply_fn: an apply function taking `hidden_layer` and `hidden_transform` keywords.
    params: the model's parameters.
    model_state: its non-trainable state.
    inputs: X, [B, ...].
    layer: the hidden layer k.
    h_bar: the target at layer k; None: the batch mean of H.
    axis_name: as for `hidden_shift`.

  Returns:
    (logits [B, C], their tangents along D at layer k [B, C], the model state after the pass).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> from mixupe_jax.models import MLP, flax_apply_fn, init_model
  >>> model = MLP(num_classes=2, hidden_sizes=(4,))
  >>> x = jax.random.normal(jax.random.key(0), (3, 5))
  >>> params, state = init_model(model, jax.random.key(1), x[:1])
  >>> apply_fn = flax_apply_fn(model)
  >>> _, at_layer_0, _ = directional.hidden_directional_derivative(apply_fn, params, state, x, 0)
  >>> _, at_input, _ = directional.logit_directional_derivative(
  ...     apply_fn, params, state, x, x.mean(0) - x)  # layer 0 is the input
  >>> bool(jnp.allclose(at_layer_0, at_input, atol=1e-5))
  True
  """
  shift = hidden_shift(apply_fn, layer, axis_name)
  logits_of = functools.partial(shift, params, model_state, inputs, h_bar)
  zeros = _zero_shift(inputs.shape[0], axis_name)
  logits, logit_tangents, new_state = jax.jvp(
    logits_of, (zeros,), (jnp.ones_like(zeros),), has_aux=True
  )
  return logits, logit_tangents, new_state


def directional_term(
  logits: jax.Array, logit_tangents: jax.Array, soft_labels: jax.Array
) -> jax.Array:
  """The joint r_i = stopgrad(p_i - y_i)^T [J_F(X) D]_i, [B] (float32, or float64 under x64).

  Because cross-entropy has d l / d f = p - y, r_i is the first directional derivative of the
  loss, D_{d_i} l(x_i, y_i), with the parameter gradient taken through the Jacobian only.

  Args:
    logits: F(X), [B, C].
    logit_tangents: J_F(X) D, [B, C] (`logit_directional_derivative`).
    soft_labels: Y, [B, C].

  Returns:
    r, [B].

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> logits, labels = jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]])  # p - y = (-0.5, 0.5)
  >>> directional.directional_term(logits, jnp.array([[2.0, 4.0]]), labels).tolist()
  [1.0]
  """
  chex.assert_equal_shape([logits, logit_tangents, soft_labels])
  dtype = result_dtype(logits.dtype)
  residual = jax.lax.stop_gradient(jax.nn.softmax(logits.astype(dtype)) - soft_labels)
  return jnp.sum(residual * logit_tangents.astype(dtype), axis=-1)


def official_weighted_term(
  shift: Shift,
  params: Params,
  model_state: ModelState,
  inputs: jax.Array,
  target: Any,
  soft_labels: jax.Array,
  weights_of: Callable[[jax.Array], jax.Array],
  axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, ModelState]:
  r"""(F(X), official r [B], sum_i w_i r_i, new state), with w = weights_of(r) held constant.

  .. math::

     r_i = \frac{\partial}{\partial t_i} \Big[\sum_k b_k \cdot f_k\big(X(t)\big)\Big]
         = \big[J_F(X)^\top B\big]_i \cdot d_i, \qquad
     b_k = \mathrm{stopgrad}(p_k - y_k)

  The weighted sum is differentiable in `params` only (the inputs, the target and the labels
  enter as constants, as in the official code, which detaches them); its gradient is
  reverse-over-forward, never a double backward. F(X), r and the state are constants.

  Args:
    shift: `input_shift(apply_fn)` or `hidden_shift(apply_fn, layer)`.
    params: the model's parameters.
    model_state: its non-trainable state.
    inputs: X, [B, ...].
    target: x_bar for `input_shift`; h_bar or None for `hidden_shift`.
    soft_labels: Y, [B, C].
    weights_of: r -> w, [B] (the threshold's mask; for v2, sign(r)).
    axis_name: inside `jax.shard_map`, the mesh axis the batch is split over: the arrays are
      this shard's, the model's batch-coupled layers reduce over the axis, and r_i is still
      example i's (its effect on every example's logits, on every device); the weighted sum is
      the shard's part.

  Returns:
    (logits [B, C], the official r [B], sum_i w_i r_i, the model state after the pass).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import directional
  >>> def apply_fn(params, model_state, x):  # a linear model: F(X) = X W
  ...   return x @ params, model_state
  >>> w, x = jnp.arange(6.0).reshape(3, 2), jnp.eye(4, 3)
  >>> y, x_bar = jnp.eye(4, 2), x.mean(0)
  >>> _, r, total, _ = directional.official_weighted_term(
  ...     directional.input_shift(apply_fn), w, {}, x, x_bar, y, jnp.ones_like)
  >>> logits, tangents, _ = directional.logit_directional_derivative(
  ...     apply_fn, w, {}, x, x_bar - x)
  >>> joint = directional.directional_term(logits, tangents, y)
  >>> bool(jnp.allclose(r, joint)), bool(jnp.isclose(total, joint.sum()))  # no coupling: equal
  (True, True)
  """
  logits, values, weighted_sum, new_state = _official_term(
    shift, weights_of, axis_name, params, model_state, inputs, target, soft_labels
  )
  stop = jax.lax.stop_gradient
  return stop(logits), stop(values), weighted_sum, stop(new_state)


def _residual(logits: jax.Array, soft_labels: jax.Array) -> jax.Array:
  """B = stopgrad(P - Y), in the logits' dtype."""
  check_labels_match_logits(logits, soft_labels)
  probabilities = jax.nn.softmax(logits.astype(result_dtype(logits.dtype)))
  return jax.lax.stop_gradient(probabilities - soft_labels).astype(logits.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _official_term(shift, weights_of, axis_name, params, model_state, inputs, target, soft_labels):
  """Without differentiation: one reverse pass in t for the values, then their weighted sum."""
  zeros = _zero_shift(inputs.shape[0], axis_name)
  logits, backward, new_state = jax.vjp(
    lambda t: shift(params, model_state, inputs, target, t), zeros, has_aux=True
  )
  (values,) = backward(_residual(logits, soft_labels))
  values = values.astype(result_dtype(values.dtype))
  return logits, values, jnp.sum(weights_of(values) * values), new_state


def _official_term_forward(
  shift, weights_of, axis_name, params, model_state, inputs, target, soft_labels
):
  """The same values and sum, and the sum's parameter gradient for a unit cotangent."""
  zeros = _zero_shift(inputs.shape[0], axis_name)

  def weighted_sum(p):
    logits, linear, new_state = jax.linearize(
      lambda t: shift(p, model_state, inputs, target, t), zeros, has_aux=True
    )
    residual = _residual(logits, soft_labels)
    (values,) = jax.linear_transpose(linear, zeros)(residual)
    values = jax.lax.stop_gradient(values.astype(result_dtype(values.dtype)))
    weights = jax.lax.stop_gradient(weights_of(values))
    tangents = linear(weights.astype(zeros.dtype))
    return jnp.sum(residual * tangents), (logits, values, new_state)

  (total, (logits, values, new_state)), gradient = jax.value_and_grad(weighted_sum, has_aux=True)(
    params
  )
  outputs = (logits, values, total.astype(values.dtype), new_state)
  return outputs, gradient


def _official_term_backward(shift, weights_of, axis_name, gradient, cotangents):
  """Only the weighted sum carries a gradient, and only to the parameters: the state, inputs,
  target and labels are constants of the term (None: JAX's zero cotangent of a whole argument,
  float0 for its integer leaves)."""
  del shift, weights_of, axis_name
  sum_cotangent = cotangents[2]
  parameter_cotangent = jax.tree.map(lambda g: (sum_cotangent * g).astype(g.dtype), gradient)
  return parameter_cotangent, None, None, None, None


_official_term.defvjp(_official_term_forward, _official_term_backward)
