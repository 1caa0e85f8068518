"""Directional derivatives of the logits by forward mode (`jax.jvp`): the heart of MixupE.

For a direction d_i per example, one `jax.jvp` of the batch function X -> f(X) gives

    J_f(X) D,  row i = sum_j (d f_i / d x_j) d_j,

which is J_f(x_i) d_i for per-example models, and which, for BatchNorm in train mode, also carries
the tangent through the batch statistics (as the official double-backward code does). The parameter
gradient of anything built on it is reverse-over-forward; there is no double backward.
"""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp

from mixupe_jax.models.apply import ApplyFn, ModelState, Params


def check_x_bar(x_bar: jax.Array, inputs: jax.Array) -> jax.Array:
  """x_bar must have the per-example input shape (optionally with a leading axis of 1)."""
  x_bar = jnp.asarray(x_bar)
  example_shape = tuple(inputs.shape[1:])
  if tuple(x_bar.shape) not in (example_shape, (1,) + example_shape):
    raise ValueError(f"x_bar has shape {tuple(x_bar.shape)} but the inputs' per-example shape "
                     f"is {example_shape} (x_bar is the training-set mean of one input).")
  return x_bar.reshape(example_shape).astype(inputs.dtype)


def logit_directional_derivative(
    apply_fn: ApplyFn,
    params: Params,
    model_state: ModelState,
    inputs: jax.Array,
    direction: jax.Array,
) -> tuple[jax.Array, jax.Array, ModelState]:
  """(f(X), J_f(X) D, new model state) by one `jax.jvp` along the direction D.

  The direction is stop-gradiented: only the Jacobian depends on the parameters.
  """
  chex.assert_equal_shape([inputs, direction])
  direction = jax.lax.stop_gradient(direction)

  def logits_of(x):
    return apply_fn(params, model_state, x)

  logits, logit_tangents, new_state = jax.jvp(logits_of, (inputs,), (direction,), has_aux=True)
  return logits, logit_tangents, new_state


def hidden_directional_derivative(
    apply_fn: ApplyFn,
    params: Params,
    model_state: ModelState,
    inputs: jax.Array,
    layer: int,
    h_bar: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, ModelState]:
  """(f(X), J_g(H) D, new state) with H the representation at `layer` and d_i = h_bar - h_i.

  g maps layer `layer` to the logits. h_bar defaults to the batch mean of H (stop-gradiented),
  the estimate of E_r[h(r)] available at a hidden layer. Implemented as one `jax.jvp` in a
  per-example scalar t injected at the layer: h_i -> h_i + t_i d_i, at t = 0 with tangent 1.
  """
  batch_size = inputs.shape[0]

  def logits_of(t):
    def shift(h):
      mean = jnp.mean(h, axis=0) if h_bar is None else h_bar
      d = jax.lax.stop_gradient(mean - h)
      return h + t.reshape((-1,) + (1,) * (h.ndim - 1)).astype(h.dtype) * d

    return apply_fn(params, model_state, inputs, hidden_layer=layer, hidden_transform=shift)

  zeros = jnp.zeros(batch_size, jnp.float32)
  logits, logit_tangents, new_state = jax.jvp(logits_of, (zeros,), (jnp.ones_like(zeros),),
                                              has_aux=True)
  return logits, logit_tangents, new_state


def directional_term(logits: jax.Array, logit_tangents: jax.Array,
                     soft_labels: jax.Array) -> jax.Array:
  """r_i = stopgrad(p_i - y_i)^T (J_f(x_i) d_i), float32 [B].

  Because cross-entropy has d l / d f = p - y, r_i is the first directional derivative of the
  loss, D_{d_i} l(x_i, y_i), with the parameter gradient taken through the Jacobian only.
  """
  chex.assert_equal_shape([logits, logit_tangents, soft_labels])
  residual = jax.lax.stop_gradient(jax.nn.softmax(logits) - soft_labels)
  return jnp.sum(residual * logit_tangents.astype(jnp.float32), axis=-1)


