r"""The MixupE regularizer: the four versions of the official code, selectable by name.

The loss is :math:`L = L_{\mathrm{mix}} + \eta\, m_1 P`, with
:math:`m_1 = \alpha / (2\alpha + 1)` and the penalty P one of:

- "v1" (alias "exact"), the first directional derivative, thresholded (default tau = -1), with
  the official per-example value :math:`r_i` (:math:`\Pi` the batch's probabilities, Y its
  labels):

  .. math::

     r_i = \big[J_F(X)^\top \mathrm{stopgrad}(\Pi - Y)\big]_i \cdot
       \mathrm{stopgrad}(\bar x - x_i), \qquad
     P = +\frac{1}{B} \sum_{i:\, r_i < \tau} r_i

- "v2", v1 with :math:`|r_i|` and no threshold: :math:`P = +\frac{1}{B} \sum_i |r_i|`.
- "v3" (alias "fast"), no derivative, p NOT stop-gradiented, thresholded (default tau = 1.0, the
  official README's CIFAR-100 recipe):

  .. math::

     u_i = f(x_i)^\top (y_i - p_i), \qquad P = -\frac{1}{B} \sum_{i:\, u_i < \tau} u_i

- "v4", v3 with p stop-gradiented and no threshold: :math:`P = -\frac{1}{B} \sum_i u_i`.

The sum is divided by the batch size B, not by the number of selected terms (as officially).
Every version is written P = sign * (1/B) sum_i w_i s_i with constant weights w
(`selection_weights`), which is how the official thresholded sums are differentiated without a
double backward.

Which r_i is thresholded: with train-mode BatchNorm (or a graph) the logits of the batch couple
the examples and r_i has an official and a joint form (see `directional`); they have the same sum,
so they give the same P for v1 with tau = +inf and differ only where a per-example choice is made
(`split_matters`: a finite tau, or abs(r_i)). The losses use the official form there by default.

Why v3 approximates v1, and the sign: for a bias-free ReLU network f(x) = J_f(x) x, so with
x_bar = 0, r_i = -(p_i - y_i)^T f(x_i) = u_i. v1 ADDS +eta m_1 r while v3 SUBTRACTS eta m_1 u, so
in that case the two push the same quantity in opposite directions. Both are kept as published;
`flip_sign=True` negates P for either, so that the sign can be settled by experiment.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

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
  "v3": Variant(
    "v3",
    uses_derivative=False,
    default_threshold=1.0,
    absolute=False,
    sign=-1.0,
    detach_probabilities=False,
  ),
  "v4": Variant("v4", uses_derivative=False, default_threshold=None, absolute=False, sign=-1.0),
}
ALIASES = {"exact": "v1", "fast": "v3"}


def get_variant(name: str) -> Variant:
  """The variant for a name in VARIANTS or ALIASES; a ValueError lists the valid names.

  Args:
    name: "v1", "v2", "v3", "v4", or an alias ("exact" = v1, "fast" = v3).

  Returns:
    The `Variant`.

  >>> from mixupe_jax import regularizers
  >>> regularizers.get_variant("fast").name, regularizers.get_variant("fast").default_threshold
  ('v3', 1.0)
  """
  canonical = ALIASES.get(name, name)
  if canonical not in VARIANTS:
    valid = ", ".join(
      list(VARIANTS) + [f"{alias} (= {target})" for alias, target in ALIASES.items()]
    )
    raise ValueError(f"Unknown MixupE variant {name!r}; valid variants are {valid}.")
  return VARIANTS[canonical]


def logit_term(
  logits: jax.Array, soft_labels: jax.Array, detach_probabilities: bool = True
) -> jax.Array:
  """u_i = f(x_i)^T (y_i - p_i), [B]: the statistic of v3 and v4.

  Args:
    logits: f(x), [B, C].
    soft_labels: y, [B, C].
    detach_probabilities: stop the gradient through p_i = softmax(f(x_i)) (v4; v3 does not).

  Returns:
    u, [B], in float32 (float64 when the logits are).

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import regularizers
  >>> regularizers.logit_term(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]])).tolist()  # p uniform
  [0.0]
  """
  chex.assert_equal_shape([logits, soft_labels])
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  probabilities = jax.nn.softmax(logits)
  if detach_probabilities:
    probabilities = jax.lax.stop_gradient(probabilities)
  return jnp.sum(logits * (soft_labels - probabilities), axis=-1)


def effective_threshold(variant: Variant, threshold: float | None) -> float | None:
  """The tau in effect: `threshold`, or the variant's default when None.

  v2 and v4 have no threshold: the official code ignores one there, so a finite threshold passed
  to them is an error rather than a silently different objective (None or +inf are accepted).

  Args:
    variant: the `Variant`.
    threshold: tau, or None for the variant's default.

  Returns:
    tau, or None where the variant has no threshold.

  >>> from mixupe_jax import regularizers
  >>> v1 = regularizers.get_variant("v1")
  >>> regularizers.effective_threshold(v1, None), regularizers.effective_threshold(v1, 0.5)
  (-1.0, 0.5)
  """
  if threshold is not None:
    threshold = float(threshold)
    if math.isnan(threshold):
      raise ValueError(f"threshold must be a number or +-inf, got {threshold}.")
  if variant.default_threshold is None:
    if threshold is not None and threshold != math.inf:
      raise ValueError(
        f"MixupE variant {variant.name!r} has no threshold (the official code ignores it), "
        f"got threshold={threshold}; leave it unset, or use "
        f"{'v1' if variant.uses_derivative else 'v3'}, which is {variant.name} with a threshold."
      )
    return None
  return variant.default_threshold if threshold is None else threshold


def split_matters(variant: Variant, tau: float | None) -> bool:
  """Whether the official and the joint per-example r_i (see `directional`) can give different
  penalties. They always have the same sum, so only a per-example choice sees the difference: a
  finite threshold, or abs(r_i) (v2).

  Args:
    variant: the `Variant`.
    tau: the threshold in effect (`effective_threshold`).

  Returns:
    True where the split changes the penalty.

  >>> from mixupe_jax import regularizers
  >>> v1 = regularizers.get_variant("v1")
  >>> regularizers.split_matters(v1, -1.0), regularizers.split_matters(v1, float("inf"))
  (True, False)
  """
  return variant.absolute or (tau is not None and math.isfinite(tau))


def selection_weights(
  statistic: jax.Array, variant: Variant, tau: float | None
) -> tuple[jax.Array, jax.Array]:
  """(w, selected) with sum_i w_i s_i the penalty's sum over the statistic s = r or u [B]::

      thresholded (v1, v3):  w_i = [s_i < tau]
      v2:                    w_i = sign(r_i), so that sum_i w_i r_i = sum_i |r_i|
      v4:                    w_i = 1

  Both are constants for the gradient: the selection is data-dependent, as officially.

  Args:
    statistic: s, [B].
    variant: the `Variant`.
    tau: the threshold in effect, or None.

  Returns:
    (w [B], selected [B] bool): the weights and which examples the penalty takes in.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import regularizers
  >>> v1 = regularizers.get_variant("v1")
  >>> weights, selected = regularizers.selection_weights(jnp.array([-2.0, 0.5]), v1, -1.0)
  >>> weights.tolist(), selected.tolist()
  ([1.0, 0.0], [True, False])
  """
  chex.assert_rank(statistic, 1)
  statistic = jax.lax.stop_gradient(statistic)
  values = jnp.abs(statistic) if variant.absolute else statistic
  selected = jnp.ones_like(values, dtype=bool) if tau is None else values < tau
  weights = selected.astype(statistic.dtype)
  if variant.absolute:
    weights = weights * jnp.sign(statistic)
  return weights, selected


def penalty_sign(variant: Variant, flip_sign: bool = False) -> float:
  """+1 for L_mix + eta m_1 (...) (v1, v2), -1 for L_mix - eta m_1 (...) (v3, v4); or flipped.

  Args:
    variant: the `Variant`.
    flip_sign: negate the published sign.

  Returns:
    +1.0 or -1.0.

  >>> from mixupe_jax import regularizers
  >>> regularizers.penalty_sign(regularizers.get_variant("v1"), flip_sign=True)
  -1.0
  """
  return -variant.sign if flip_sign else variant.sign


def check_term_fraction(fraction: float) -> float:
  """rho must be in (0, 1].

  Args:
    fraction: rho.

  Returns:
    rho as a float; a ValueError names a value outside (0, 1].

  >>> from mixupe_jax import regularizers
  >>> regularizers.check_term_fraction(0.25)
  0.25
  """
  fraction = float(fraction)
  if not 0 < fraction <= 1:
    raise ValueError(
      f"term_fraction must be in (0, 1], got {fraction} (1 computes the term on "
      "the whole clean batch)."
    )
  return fraction


TERM_SPLITS = ("official", "joint")


class OptionError(ValueError):
  """A MixupE option that cannot work. `str()` is the message for a caller of the library;
  `field`, `value` and `expected` let a config validator say the same about its field."""

  def __init__(self, field: str, value, expected: str, message: str):
    super().__init__(message)
    self.field, self.value, self.expected = field, value, expected


@dataclasses.dataclass(frozen=True)
class MixupEOptions:
  """Every option of the MixupE term, validated once when built (an `OptionError` names the
  first bad one); the names are the config's fields. See `losses.mixupe_loss_fn` for each one's
  meaning: the penalty's weight `eta` (times m_1 with `scale_by_moment`), the official version
  `variant` and its threshold tau (`threshold`, None: the version's default), which per-example
  r_i is thresholded (`term_split`), the official rescaling to abs(L_mix) (`rescale`), the sign
  (`flip_sign`), the fraction rho of the clean batch the term is computed on (`term_fraction`)
  and a rematerialization policy for the clean pass (`clean_pass_remat`). `eta` and
  `term_fraction` may be any real numbers (NumPy's scalars too) and are held as Python floats, so
  the options serialize as they are (`dataclasses.asdict`, JSON).

  >>> from mixupe_jax.regularizers import MixupEOptions
  >>> MixupEOptions(eta=0.1, variant="fast").threshold_in_effect
  1.0
  >>> MixupEOptions(eta=-1.0)
  Traceback (most recent call last):
  mixupe_jax.regularizers.OptionError: eta must be a finite number >= 0, got -1.0 ...
  """

  eta: float = 1.0
  variant: str = "v1"
  threshold: float | None = None
  term_split: str = "official"
  rescale: bool = True
  scale_by_moment: bool = True
  flip_sign: bool = False
  term_fraction: float = 1.0
  clean_pass_remat: Any = None  # None, a name in models.apply.REMAT_POLICIES, or a policy.

  def __post_init__(self):
    from mixupe_jax.models.apply import REMAT_POLICIES, remat_policy

    eta = self.eta
    if (
      isinstance(eta, bool)
      or not isinstance(eta, numbers.Real)  # NumPy's scalars too.
      or not math.isfinite(eta)
      or eta < 0
    ):
      raise OptionError(
        "eta",
        eta,
        "expected a number in [0, inf)",
        f"eta must be a finite number >= 0, got {eta} (use flip_sign=True to "
        "reverse the direction of the regularizer).",
      )
    try:
      variant = get_variant(self.variant)
    except (TypeError, ValueError) as error:
      names = ", ".join(tuple(VARIANTS) + tuple(ALIASES))
      raise OptionError("variant", self.variant, f"valid values are {names}", str(error)) from None
    try:
      effective_threshold(variant, self.threshold)
    except ValueError as error:
      raise OptionError("threshold", self.threshold, str(error).rstrip("."), str(error)) from None
    if self.term_split not in TERM_SPLITS:
      raise OptionError(
        "term_split",
        self.term_split,
        f"valid values are {', '.join(TERM_SPLITS)}",
        f"Unknown term_split {self.term_split!r}; valid values are {', '.join(TERM_SPLITS)}.",
      )
    fraction = self.term_fraction
    try:
      if isinstance(fraction, bool):
        raise TypeError(f"term_fraction must be a number in (0, 1], got {fraction}.")
      fraction = check_term_fraction(fraction)
    except (TypeError, ValueError) as error:
      raise OptionError(
        "term_fraction", self.term_fraction, "expected a number in (0, 1]", str(error)
      ) from None
    if self.clean_pass_remat is not None:
      try:
        remat_policy(self.clean_pass_remat)
      except ValueError as error:
        raise OptionError(
          "clean_pass_remat",
          self.clean_pass_remat,
          f"valid values are {', '.join(REMAT_POLICIES)}",
          str(error),
        ) from None
    object.__setattr__(self, "eta", float(eta))
    object.__setattr__(self, "term_fraction", fraction)

  @property
  def chosen_variant(self) -> Variant:
    return get_variant(self.variant)

  @property
  def threshold_in_effect(self) -> float | None:
    """tau: the threshold, or the variant's default."""
    return effective_threshold(self.chosen_variant, self.threshold)

  @classmethod
  def from_config(cls, config) -> MixupEOptions:
    """The options of a config (its fields of the same names)."""
    return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


def check_method_options(method: str, options: MixupEOptions) -> None:
  """A term on a subset of the clean batch needs the clean batch: method "mixupe" only.

  Args:
    method: the loss's method (`losses.METHODS`).
    options: the MixupE options.

  Raises:
    OptionError: for term_fraction < 1 with another method.

  >>> from mixupe_jax import regularizers
  >>> options = regularizers.MixupEOptions(term_fraction=0.5)
  >>> regularizers.check_method_options("mixupe", options)  # fine
  >>> regularizers.check_method_options("manifold_mixupe", options)
  Traceback (most recent call last):
  mixupe_jax.regularizers.OptionError: term_fraction=0.5 applies to method 'mixupe' only ...
  """
  if options.term_fraction < 1 and method != "mixupe":
    raise OptionError(
      "term_fraction",
      options.term_fraction,
      f"a subset of the clean batch applies to method 'mixupe' only, not {method!r}",
      f"term_fraction={options.term_fraction} applies to method 'mixupe' only "
      f"(the term on a subset of the clean batch), not to {method!r}.",
    )


def subsample_size(batch_size: int, fraction: float) -> int:
  """k = max(1, round(rho B)): how many clean examples the term is computed on.

  Args:
    batch_size: B.
    fraction: rho, in (0, 1].

  Returns:
    k.

  >>> from mixupe_jax import regularizers
  >>> regularizers.subsample_size(128, 0.25), regularizers.subsample_size(3, 0.1)
  (32, 1)
  """
  return max(1, int(round(check_term_fraction(fraction) * batch_size)))


def subsample_examples(
  key: jax.Array,
  inputs: jax.Array,
  labels: jax.Array,
  *,
  fraction: float,
  shard_index: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """k = max(1, round(rho B)) of the B clean examples, uniformly without replacement.

  The MixupE term computed on them, (1/k) sum_{i in S} w_i s_i, estimates the full
  (1/B) sum_i w_i s_i: every example enters S with probability k/B, so for a model whose example
  i's logits depend on x_i alone (no train-mode BatchNorm) the estimate is unbiased, the
  thresholded and abs(r_i) versions included (their per-example choice is made on the example's own
  value). Under train-mode BatchNorm the k examples are normalized with their own statistics, so
  the estimate is the term of the model as it computes on a batch of k, not an unbiased estimate
  of the full batch's term, and the running statistics see the k clean examples only.

  `shard_index` (from `parallel.subsample_per_shard`) is folded into the key so that each device
  draws its own rows; the key alone decides everything else.

  Args:
    key: a `jax.random` key.
    inputs: the clean inputs, [B, ...].
    labels: their labels, [B] or [B, C].
    fraction: rho, in (0, 1].
    shard_index: set by `parallel.subsample_per_shard`.

  Returns:
    (inputs [k, ...], labels [k] or [k, C]) of the chosen examples.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import regularizers
  >>> x, y = jnp.arange(8.0)[:, None], jnp.arange(8)
  >>> chosen_x, chosen_y = regularizers.subsample_examples(jax.random.key(0), x, y, fraction=0.5)
  >>> chosen_x.shape, bool((chosen_x[:, 0] == chosen_y).all()), len(set(chosen_y.tolist()))
  ((4, 1), True, 4)
  """
  chex.assert_equal_shape_prefix([inputs, labels], 1)
  if shard_index is not None:
    key = jax.random.fold_in(key, shard_index)
  batch_size = inputs.shape[0]
  chosen = jax.random.permutation(key, batch_size)[: subsample_size(batch_size, fraction)]
  return inputs[chosen], labels[chosen]
