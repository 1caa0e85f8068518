"""Mixup regularizes directional derivatives of all orders: the Taylor series of the Mixup loss.

By symmetrization (Zhang et al. 2021), for a loss l linear in the label,

    L_mix = (1/n) sum_i E_{lambda ~ Beta(alpha+1, alpha)} E_{r ~ D_X}
              l(x_i + (1 - lambda)(r - x_i), y_i)

and a Taylor expansion in t = 1 - lambda along d_i = r - x_i gives

    L_mix = L_std + sum_{k >= 1} (m_k / k!) (1/n) sum_i E_r[ D^k_{d_i} l(x_i, y_i) ],
    m_k = E[(1 - lambda)^k] = prod_{q=0}^{k-1} (alpha + q) / (2 alpha + 1 + q).

`taylor_terms` evaluates the terms for k = 1..K by Taylor-mode AD (`jax.experimental.jet`) on
t -> l(x_i + t d_i, y_i); `mixup_loss_quadrature` and `mixup_loss_monte_carlo` evaluate the Mixup
loss itself over all pairs (i, j), so the partial sums can be compared with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.special
from jax.experimental import jet

from mixupe_jax.mixing import check_alpha

# l(x, y) for ONE example: x of the per-example input shape, y soft labels [C] -> scalar.
ExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]


def mixing_moment(alpha: float, k: int) -> float:
  """m_k = E[(1 - lambda)^k] for lambda ~ Beta(alpha + 1, alpha).

  m_k = prod_{q=0}^{k-1} (alpha + q) / (2 alpha + 1 + q); m_1 = alpha / (2 alpha + 1).
  """
  alpha = check_alpha(alpha)
  return float(np.prod([(alpha + q) / (2 * alpha + 1 + q) for q in range(k)]))


def first_order_moment(alpha: float) -> float:
  """m_1 = alpha / (2 alpha + 1), the weight of the first-order term in the Mixup loss."""
  return mixing_moment(alpha, 1)


def example_loss_from_logits(logits_fn: Callable[[jax.Array], jax.Array]) -> ExampleLoss:
  """l(x, y) = logsumexp(f(x)) - y . f(x) for a per-example logits function f: x -> [C]."""

  def loss(x, y):
    return optax.softmax_cross_entropy(logits_fn(x), y)

  return loss


def directional_derivatives(
  loss: ExampleLoss, x: jax.Array, y: jax.Array, direction: jax.Array, order: int
) -> jax.Array:
  """[D^1_d l(x, y), ..., D^K_d l(x, y)] by one jet (Taylor mode) along the line x + t d."""
  line_tangents = [direction] + [jnp.zeros_like(direction)] * (order - 1)
  _, series = jet.jet(lambda z: loss(z, y), (x,), (line_tangents,))
  return jnp.stack(series)


class TaylorSeries(NamedTuple):
  standard_loss: jax.Array  # L_std = (1/n) sum_i l(x_i, y_i).
  terms: jax.Array  # [K]: (m_k / k!) (1/n) sum_i E_r[D^k_{d_i} l(x_i, y_i)], k = 1..K.
  mean_derivatives: jax.Array  # [K]: (1/n) sum_i E_r[D^k_{d_i} l(x_i, y_i)].

  def partial_sums(self) -> jax.Array:
    """[K + 1]: L_std + sum of the first k terms, k = 0..K."""
    return self.standard_loss + jnp.concatenate([jnp.zeros(1), jnp.cumsum(self.terms)])


def taylor_terms(
  loss: ExampleLoss,
  inputs: jax.Array,
  labels: jax.Array,
  alpha: float,
  order: int = 6,
  reference_inputs: jax.Array | None = None,
) -> TaylorSeries:
  """The Taylor terms of the Mixup loss for k = 1..order, with r over `reference_inputs`.

  `reference_inputs` is the sample of D_X that r ranges over; it defaults to the batch itself,
  which makes the series converge to the Mixup loss over all pairs of the batch.
  """
  if order < 1:
    raise ValueError(f"order must be >= 1, got {order}.")
  chex.assert_rank(labels, 2)
  chex.assert_equal_shape_prefix([inputs, labels], 1)
  references = inputs if reference_inputs is None else reference_inputs

  def per_pair(x, y, r):
    return directional_derivatives(loss, x, y, r - x, order)

  def per_example(x, y):
    return jnp.mean(jax.vmap(lambda r: per_pair(x, y, r))(references), axis=0)

  mean_derivatives = jnp.mean(jax.lax.map(lambda xy: per_example(*xy), (inputs, labels)), axis=0)
  weights = jnp.asarray(
    [mixing_moment(alpha, k) / math.factorial(k) for k in range(1, order + 1)], jnp.float32
  )
  standard = jnp.mean(jax.vmap(loss)(inputs, labels))
  return TaylorSeries(standard, weights * mean_derivatives, mean_derivatives)


def _pairwise_mixup_loss(
  loss: ExampleLoss, inputs: jax.Array, labels: jax.Array, lam: jax.Array
) -> jax.Array:
  """(1/n^2) sum_{i,j} [lam l(x~_ij, y_i) + (1 - lam) l(x~_ij, y_j)],
  x~_ij = lam x_i + (1-lam) x_j."""

  def row(xy):
    x_i, y_i = xy

    def pair(x_j, y_j):
      mixed = lam * x_i + (1 - lam) * x_j
      return loss(mixed, lam * y_i + (1 - lam) * y_j)  # CE is linear in y.

    return jnp.mean(jax.vmap(pair)(inputs, labels))

  return jnp.mean(jax.lax.map(row, (inputs, labels)))


def mixup_loss_quadrature(
  loss: ExampleLoss, inputs: jax.Array, labels: jax.Array, alpha: float, num_nodes: int = 32
) -> jax.Array:
  """E_{lambda ~ Beta(alpha, alpha)} of the Mixup loss over all pairs, by Gauss-Jacobi quadrature.

  Exact up to the quadrature error, which vanishes quickly in num_nodes for smooth losses.
  """
  alpha = check_alpha(alpha)
  if alpha == 0:
    return jnp.mean(jax.vmap(loss)(inputs, labels))
  # Beta(alpha, alpha) on [0, 1] is the Jacobi weight (1 - u)^(alpha-1) (1 + u)^(alpha-1) on
  # [-1, 1].
  nodes, weights = scipy.special.roots_jacobi(num_nodes, alpha - 1, alpha - 1)
  lambdas = jnp.asarray((nodes + 1) / 2, jnp.float32)
  weights = jnp.asarray(weights / weights.sum(), jnp.float32)
  values = jax.lax.map(lambda lam: _pairwise_mixup_loss(loss, inputs, labels, lam), lambdas)
  return jnp.sum(weights * values)


class MonteCarloEstimate(NamedTuple):
  mean: jax.Array
  standard_error: jax.Array


def mixup_loss_monte_carlo(
  key: jax.Array,
  loss: ExampleLoss,
  inputs: jax.Array,
  labels: jax.Array,
  alpha: float,
  num_samples: int = 256,
) -> MonteCarloEstimate:
  """Monte-Carlo estimate of the Mixup loss over all pairs: lambda ~ Beta(alpha, alpha) sampled."""
  alpha = check_alpha(alpha)
  if alpha == 0:
    lambdas = jnp.ones(num_samples, jnp.float32)
  else:
    lambdas = jax.random.beta(key, alpha, alpha, (num_samples,), dtype=jnp.float32)
  values = jax.lax.map(lambda lam: _pairwise_mixup_loss(loss, inputs, labels, lam), lambdas)
  return MonteCarloEstimate(jnp.mean(values), jnp.std(values) / jnp.sqrt(num_samples))
