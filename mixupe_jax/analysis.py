r"""Mixup regularizes directional derivatives of all orders: the Taylor series of the Mixup loss.

By symmetrization (Zhang et al. 2021), for a loss l linear in the label:

.. math::

   L_{\mathrm{mix}} = \frac{1}{n} \sum_i
     \mathbb{E}_{\lambda \sim \mathrm{Beta}(\alpha + 1, \alpha)}\,
     \mathbb{E}_{r \sim \mathcal{D}_X}\, \ell\big(x_i + (1 - \lambda)(r - x_i), y_i\big)

and a Taylor expansion in :math:`t = 1 - \lambda` along :math:`d_i = r - x_i` gives:

.. math::

   L_{\mathrm{mix}} = L_{\mathrm{std}} + \sum_{k \ge 1} \frac{m_k}{k!}\, \frac{1}{n}
     \sum_i \mathbb{E}_r\big[D^k_{d_i} \ell(x_i, y_i)\big], \qquad
   m_k = \mathbb{E}\big[(1 - \lambda)^k\big]
     = \prod_{q=0}^{k-1} \frac{\alpha + q}{2\alpha + 1 + q}.

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

  Args:
    alpha: the Beta concentration of the mixing, >= 0.
    k: the order.

  Returns:
    m_k.

  >>> from mixupe_jax import analysis
  >>> analysis.mixing_moment(1.0, 1), analysis.mixing_moment(1.0, 2)  # 1/3, (1/3)(2/4)
  (0.3333333333333333, 0.16666666666666666)
  """
  alpha = check_alpha(alpha)
  return float(np.prod([(alpha + q) / (2 * alpha + 1 + q) for q in range(k)]))


def first_order_moment(alpha: float) -> float:
  """m_1 = alpha / (2 alpha + 1), the weight of the first-order term in the Mixup loss.

  Args:
    alpha: the Beta concentration of the mixing, >= 0.

  Returns:
    m_1.

  >>> from mixupe_jax import analysis
  >>> analysis.first_order_moment(0.5)
  0.25
  """
  return mixing_moment(alpha, 1)


def example_loss_from_logits(logits_fn: Callable[[jax.Array], jax.Array]) -> ExampleLoss:
  """l(x, y) = logsumexp(f(x)) - y . f(x) for a per-example logits function f: x -> [C].

  Args:
    logits_fn: f, one example to its logits [C].

  Returns:
    The `ExampleLoss` l(x, y).

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import analysis
  >>> loss = analysis.example_loss_from_logits(lambda x: jnp.zeros(4))
  >>> round(float(loss(jnp.ones(3), jnp.array([1.0, 0, 0, 0]))), 4)  # log 4
  1.3863
  """

  def loss(x, y):
    return optax.softmax_cross_entropy(logits_fn(x), y)

  return loss


def directional_derivatives(
  loss: ExampleLoss, x: jax.Array, y: jax.Array, direction: jax.Array, order: int
) -> jax.Array:
  """[D^1_d l(x, y), ..., D^K_d l(x, y)] by one jet (Taylor mode) along the line x + t d.

  Args:
    loss: l(x, y) for one example.
    x: the example.
    y: its soft label, [C].
    direction: d, x's shape.
    order: K.

  Returns:
    [K]: the derivatives of t -> l(x + t d, y) at t = 0, of order 1..K.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import analysis
  >>> cubic = lambda x, y: jnp.sum(x**3)  # d^k/dt^k (x + t d)^3 at t = 0: 3x^2 d, 6x d^2, 6 d^3
  >>> x, d = jnp.array(1.0), jnp.array(2.0)
  >>> derivatives = analysis.directional_derivatives(cubic, x, None, d, 3)
  >>> [round(float(value), 3) for value in derivatives]
  [6.0, 24.0, 48.0]
  """
  line_tangents = [direction] + [jnp.zeros_like(direction)] * (order - 1)
  _, series = jet.jet(lambda z: loss(z, y), (x,), (line_tangents,))
  return jnp.stack(series)


class TaylorSeries(NamedTuple):
  """L_std and the terms of the Mixup loss's Taylor series (`taylor_terms`)."""

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

  Args:
    loss: l(x, y) for one example.
    inputs: x, [n, ...].
    labels: soft labels, [n, C].
    alpha: the Beta concentration of the mixing.
    order: K, >= 1.
    reference_inputs: the sample r ranges over; default `inputs`.

  Returns:
    A `TaylorSeries`; its `partial_sums()` approach `mixup_loss_quadrature`'s value.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import analysis
  >>> weights = jax.random.normal(jax.random.key(0), (2, 3)) / 2
  >>> loss = analysis.example_loss_from_logits(lambda x: jnp.tanh(x @ weights))
  >>> x, y = jax.random.normal(jax.random.key(1), (6, 2)), jnp.eye(6, 3)
  >>> series = analysis.taylor_terms(loss, x, y, alpha=1.0, order=6)
  >>> mixup = analysis.mixup_loss_quadrature(loss, x, y, alpha=1.0)
  >>> gaps = abs(series.partial_sums() - mixup)
  >>> bool(gaps[-1] < gaps[0] / 10)  # six terms close most of the gap between L_std and L_mix
  True
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

  Args:
    loss: l(x, y) for one example.
    inputs: x, [n, ...].
    labels: soft labels, [n, C].
    alpha: the Beta concentration, >= 0 (0: the standard loss).
    num_nodes: the number of Gauss-Jacobi nodes.

  Returns:
    The Mixup loss, a scalar.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import analysis
  >>> squared = lambda x, y: jnp.sum(x**2)  # E[(lambda x_i + (1 - lambda) x_j)^2]
  >>> x, y = jnp.array([[1.0], [-1.0]]), jnp.eye(2)  # pairs i = j give 1, i != j give 1/3
  >>> round(float(analysis.mixup_loss_quadrature(squared, x, y, alpha=1.0)), 4)
  0.6667
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
  """A Monte-Carlo mean and its standard error."""

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
  """Monte-Carlo estimate of the Mixup loss over all pairs: lambda ~ Beta(alpha, alpha) sampled.

  Args:
    key: a `jax.random` key.
    loss: l(x, y) for one example.
    inputs: x, [n, ...].
    labels: soft labels, [n, C].
    alpha: the Beta concentration, >= 0.
    num_samples: how many lambdas are drawn.

  Returns:
    A `MonteCarloEstimate` (mean, standard error).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import analysis
  >>> squared = lambda x, y: jnp.sum(x**2)
  >>> x, y = jnp.array([[1.0], [-1.0]]), jnp.eye(2)
  >>> estimate = analysis.mixup_loss_monte_carlo(jax.random.key(0), squared, x, y, alpha=1.0,
  ...                                            num_samples=4096)
  >>> bool(abs(estimate.mean - 2 / 3) < 4 * estimate.standard_error)
  True
  """
  alpha = check_alpha(alpha)
  if alpha == 0:
    lambdas = jnp.ones(num_samples, jnp.float32)
  else:
    lambdas = jax.random.beta(key, alpha, alpha, (num_samples,), dtype=jnp.float32)
  values = jax.lax.map(lambda lam: _pairwise_mixup_loss(loss, inputs, labels, lam), lambdas)
  return MonteCarloEstimate(jnp.mean(values), jnp.std(values) / jnp.sqrt(num_samples))
