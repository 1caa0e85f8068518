"""The MixupE regularizer: the four versions of the official code, selectable by name.

The loss is L = L_mix + eta * m_1 * P, with m_1 = alpha / (2 alpha + 1) and the penalty P one of

  "v1" (alias "exact"), the first directional derivative, thresholded (default tau = -1):
        r_i = stopgrad(p_i - y_i)^T J_f(x_i) stopgrad(x_bar - x_i)       (one jax.jvp)
        P   = +(1/B) sum_{i: r_i < tau} r_i
  "v2", v1 with |r_i| and no threshold:
        P   = +(1/B) sum_i |r_i|
  "v3" (alias "fast"), no derivative, p NOT stop-gradiented, thresholded (default tau = 1.0, the
        official README's CIFAR-100 recipe):
        u_i = f(x_i)^T (y_i - p_i)
        P   = -(1/B) sum_{i: u_i < tau} u_i
  "v4", v3 with p stop-gradiented and no threshold:
        P   = -(1/B) sum_i u_i

The sum is divided by the batch size B, not by the number of selected terms (as officially).

Why v3 approximates v1, and the sign: for a bias-free ReLU network f(x) = J_f(x) x, so with
x_bar = 0, r_i = -(p_i - y_i)^T f(x_i) = u_i. v1 ADDS +eta m_1 r while v3 SUBTRACTS eta m_1 u, so
in that case the two push the same quantity in opposite directions. Both are kept as published;
`flip_sign=True` negates P for either, so that the sign can be settled by experiment.
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Variant:
  """How one official version turns the per-example statistic into the penalty P."""

  name: str
  uses_derivative: bool  # r_i by jax.jvp (v1, v2) or u_i from the logits (v3, v4).
  default_threshold: float | None  # Keep only terms < tau; None: no threshold.
  absolute: bool  # Penalize |statistic| (v2).
  sign: float  # +1: L_mix + eta m_1 (...) (v1, v2); -1: L_mix - eta m_1 (...) (v3, v4).
  detach_probabilities: bool = True  # v3 lets the gradient flow through p in u_i.


VARIANTS = {
    "v1": Variant("v1", uses_derivative=True, default_threshold=-1.0, absolute=False, sign=1.0),
    "v2": Variant("v2", uses_derivative=True, default_threshold=None, absolute=True, sign=1.0),
    "v3": Variant("v3", uses_derivative=False, default_threshold=1.0, absolute=False, sign=-1.0,
                  detach_probabilities=False),
    "v4": Variant("v4", uses_derivative=False, default_threshold=None, absolute=False, sign=-1.0),
}
ALIASES = {"exact": "v1", "fast": "v3"}


def get_variant(name: str) -> Variant:
  """The variant for a name in VARIANTS or ALIASES; a ValueError lists the valid names."""
  canonical = ALIASES.get(name, name)
  if canonical not in VARIANTS:
    valid = ", ".join(list(VARIANTS) + [f"{alias} (= {target})" for alias, target in ALIASES.items()])
    raise ValueError(f"Unknown MixupE variant {name!r}; valid variants are {valid}.")
  return VARIANTS[canonical]


def logit_term(logits: jax.Array, soft_labels: jax.Array,
               detach_probabilities: bool = True) -> jax.Array:
  """u_i = f(x_i)^T (y_i - p_i), float32 [B]; p_i stop-gradiented unless told otherwise."""
  chex.assert_equal_shape([logits, soft_labels])
  probabilities = jax.nn.softmax(logits.astype(jnp.float32))
  if detach_probabilities:
    probabilities = jax.lax.stop_gradient(probabilities)
  return jnp.sum(logits.astype(jnp.float32) * (soft_labels - probabilities), axis=-1)


def penalty(statistic: jax.Array, variant: Variant, threshold: float | None = None,
            flip_sign: bool = False) -> tuple[jax.Array, jax.Array]:
  """(P, fraction of examples that enter P) for the per-example statistic r_i or u_i [B].

  P = sign * (1/B) sum_{i: s_i < tau} s_i, with s = |statistic| for v2; `threshold=None` uses
  the variant's default tau (none for v2 and v4).
  """
  chex.assert_rank(statistic, 1)
  tau = variant.default_threshold if threshold is None else threshold
  values = jnp.abs(statistic) if variant.absolute else statistic
  # The selection is a data-dependent mask, constant for the gradient (as officially).
  selected = jnp.ones_like(values, dtype=bool) if tau is None else values < tau
  total = jnp.sum(jnp.where(selected, values, 0.0)) / statistic.shape[0]
  sign = -variant.sign if flip_sign else variant.sign
  return sign * total, jnp.mean(selected.astype(jnp.float32))
