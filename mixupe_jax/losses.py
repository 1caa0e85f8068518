"""Losses with one interface: ERM, Mixup, MixupE (four official versions), Manifold Mixup(+E),
RegMixup.

Every loss function returns `(loss, LossAux(model_state, metrics))`, so it composes with
`jax.value_and_grad(..., has_aux=True)` in a plain optax loop::

    loss_fn = functools.partial(mixupe_loss_fn, apply_fn=apply_fn, alpha=1.0, eta=0.1, variant="v1")
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, model_state, mixed=mixed, clean_inputs=x, clean_labels=y, x_bar=x_bar)

`make_loss_fn` builds the uniform `loss_fn(params, model_state, inputs, labels, key)` that a
training loop calls without knowing which method it runs.

The MixupE loss (see `regularizers` for the versions)::

    L = L_mix + eta * m_1 * P,     m_1 = alpha / (2 alpha + 1),

then, with `rescale`, L <- stopgrad(abs(L_mix) / abs(L)) * L (the official code's rescaling: the
value is sign(L) abs(L_mix), so abs(L_mix) unless the regularizer makes L negative, while the
gradient, scaled by a positive constant, carries the regularizer). The clean pass runs after the
mixed pass with the model state it returned, in the same (train) mode, so BatchNorm's running
statistics see both batches as in the official code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixupe_jax import analysis, directional, mixing, parallel, regularizers
from mixupe_jax.models.apply import (
  ApplyFn,
  ModelState,
  Params,
  RematPolicy,
  couples_examples,
  rematerialized,
)

METHODS = ("erm", "mixup", "mixupe", "manifold_mixup", "manifold_mixupe", "regmixup")
MIXERS = ("mixup", "cutmix", "mixup_or_cutmix")


class LossAux(NamedTuple):
  """What every loss function returns beside the loss: the model state after its passes (the
  BatchNorm statistics), and scalar metrics (the Mixup loss, the regularizer, ...)."""

  model_state: ModelState
  metrics: dict[str, jax.Array]


def cross_entropy(
  logits: jax.Array, soft_labels: jax.Array, axis_name: str | None = None
) -> jax.Array:
  """Mean over the batch of l(x, y) = logsumexp(f(x)) - y . f(x).

  Args:
    logits: f(x), [B, C].
    soft_labels: y, [B, C].
    axis_name: inside `jax.shard_map`, the mesh axis the batch is split over: the mean is then
      over the global batch (`parallel.batch_mean`). None: the arrays are the whole batch.

  Returns:
    A scalar, in float32 (float64 for float64 logits).

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import losses
  >>> round(float(losses.cross_entropy(jnp.zeros((1, 4)), jnp.array([[1.0, 0, 0, 0]]))), 4)
  1.3863
  """
  directional.check_labels_match_logits(logits, soft_labels)
  logits = logits.astype(directional.result_dtype(logits.dtype))
  losses = optax.softmax_cross_entropy(logits, soft_labels.astype(logits.dtype))
  return parallel.batch_mean(losses, axis_name)


def _accuracy(logits: jax.Array, soft_labels: jax.Array, axis_name: str | None) -> jax.Array:
  return parallel.batch_mean(jnp.argmax(logits, -1) == jnp.argmax(soft_labels, -1), axis_name)


def erm_loss_fn(
  params: Params,
  model_state: ModelState,
  inputs: jax.Array,
  labels: jax.Array,
  *,
  apply_fn: ApplyFn,
  num_classes: int | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, LossAux]:
  r""":math:`L_{\mathrm{std}} = \frac{1}{B} \sum_i \ell(x_i, y_i)`.

  Args:
    params: the model's parameters.
    model_state: its non-trainable state (`{}` if none).
    inputs: x, [B, ...].
    labels: integer ids [B] (with `num_classes`) or soft labels [B, C].
    apply_fn: (params, model_state, x) -> (logits, new_model_state).
    num_classes: C, for integer labels.
    axis_name: inside `jax.shard_map`, the mesh axis the batch is split over (the arrays are
      this device's shard; every mean is over the global batch). None: the whole batch.

  Returns:
    (loss, LossAux(model_state, {"cross_entropy", "accuracy"})).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses, mixing
  >>> def apply_fn(params, model_state, x):  # a linear model: logits = x W
  ...   return x @ params, model_state
  >>> params, x, y = jnp.eye(3), jnp.eye(4, 3), jnp.array([0, 1, 2, 0])
  >>> loss, aux = losses.erm_loss_fn(params, {}, x, y, apply_fn=apply_fn, num_classes=3)
  >>> sorted(aux.metrics)
  ['accuracy', 'cross_entropy']
  """
  soft = mixing.to_soft_labels(labels, num_classes)
  logits, model_state = apply_fn(params, model_state, inputs)
  loss = cross_entropy(logits, soft, axis_name)
  accuracy = _accuracy(logits, soft, axis_name)
  return loss, LossAux(model_state, {"cross_entropy": loss, "accuracy": accuracy})


def mixup_loss_fn(
  params: Params,
  model_state: ModelState,
  mixed: mixing.MixedBatch,
  *,
  apply_fn: ApplyFn,
  axis_name: str | None = None,
) -> tuple[jax.Array, LossAux]:
  r""":math:`L_{\mathrm{mix}} = \frac{1}{B} \sum_i \ell(\tilde x_i, \tilde y_i)` on a mixed batch.

  Args:
    params: the model's parameters.
    model_state: its non-trainable state (`{}` if none).
    mixed: the mixed batch (`mixing.mixup`, `mixing.cutmix`, ...).
    apply_fn: (params, model_state, x) -> (logits, new_model_state).
    axis_name: as for `erm_loss_fn`.

  Returns:
    (L_mix, LossAux(model_state, {"mixup_loss"})).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses, mixing
  >>> def apply_fn(params, model_state, x):  # a linear model: logits = x W
  ...   return x @ params, model_state
  >>> params, x, y = jnp.eye(3), jnp.eye(4, 3), jnp.array([0, 1, 2, 0])
  >>> mixed = mixing.mixup(jax.random.key(0), x, y, alpha=1.0, num_classes=3)
  >>> loss, aux = losses.mixup_loss_fn(params, {}, mixed, apply_fn=apply_fn)
  >>> bool(loss == losses.cross_entropy(apply_fn(params, {}, mixed.inputs)[0], mixed.labels))
  True
  """
  logits, model_state = apply_fn(params, model_state, mixed.inputs)
  loss = cross_entropy(logits, mixed.labels, axis_name)
  return loss, LossAux(model_state, {"mixup_loss": loss})


def regmixup_loss_fn(
  params: Params,
  model_state: ModelState,
  mixed: mixing.MixedBatch,
  clean_inputs: jax.Array,
  clean_labels: jax.Array,
  *,
  apply_fn: ApplyFn,
  eta: float = 1.0,
  num_classes: int | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, LossAux]:
  r"""RegMixup (Pinto et al., NeurIPS 2022):
  :math:`L = L_{\mathrm{std}}(x, y) + \eta\, L_{\mathrm{mix}}(\tilde x, \tilde y)`.

  The cross-entropy of the clean batch with Mixup's loss as a regularizer. The passes are
  MixupE's: the mixed batch, then the clean batch, each its own forward (BatchNorm in train mode
  normalizes each by its own statistics; the model state is the one after both). RegMixup's own
  code instead runs one forward of the two batches concatenated, so its BatchNorm statistics
  are those of both together. Unlike MixupE at eta = 0, the clean pass is differentiated.

  Args:
    params, model_state: the model's parameters and non-trainable state (`{}` if none).
    mixed: the mixed batch (`mixing.mixup` etc.); RegMixup's paper draws lambda from
      Beta(alpha, alpha) with a large alpha (mixed points near the middle of each pair).
    clean_inputs, clean_labels: the unmixed batch; integer labels need `num_classes`.
    apply_fn: (params, model_state, x) -> (logits, new_model_state).
    eta: the weight of the Mixup loss, >= 0 (the paper's 1 by default).
    num_classes: C, for integer labels.
    axis_name: as for `erm_loss_fn`.

  Returns:
    (loss, LossAux(model_state after both passes, {"cross_entropy", "mixup_loss",
    "clean_accuracy"})).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses, mixing
  >>> def apply_fn(params, model_state, x):  # a linear model: logits = x W
  ...   return x @ params, model_state
  >>> params, x, y = jnp.eye(3), jnp.eye(4, 3), jnp.array([0, 1, 2, 0])
  >>> mixed = mixing.mixup(jax.random.key(0), x, y, alpha=10.0, num_classes=3)
  >>> loss, aux = losses.regmixup_loss_fn(params, {}, mixed, x, y, apply_fn=apply_fn, eta=0.5,
  ...                                     num_classes=3)
  >>> m = aux.metrics
  >>> bool(jnp.isclose(loss, m["cross_entropy"] + 0.5 * m["mixup_loss"]))
  True
  """
  eta = float(eta)
  if not np.isfinite(eta) or eta < 0:
    raise ValueError(f"eta must be a finite number >= 0, got {eta}.")
  mix_loss, aux = mixup_loss_fn(params, model_state, mixed, apply_fn=apply_fn, axis_name=axis_name)
  soft = mixing.to_soft_labels(clean_labels, num_classes)
  chex.assert_equal_shape_prefix([clean_inputs, soft], 1)
  logits, model_state = apply_fn(params, aux.model_state, clean_inputs)
  clean_loss = cross_entropy(logits, soft, axis_name)
  metrics = {
    "cross_entropy": clean_loss,
    "mixup_loss": mix_loss,
    "clean_accuracy": _accuracy(logits, soft, axis_name),
  }
  return clean_loss + eta * mix_loss, LossAux(model_state, metrics)


TERM_SPLITS = regularizers.TERM_SPLITS

# The MixupE keywords of the loss functions and their defaults (eta has none: it is required
# unless an options object is passed instead).
_MIXUPE_KEYWORDS = {
  "eta": None,
  "variant": "v1",
  "threshold": None,
  "term_split": "official",
  "rescale": True,
  "scale_by_moment": True,
  "flip_sign": False,
  "term_fraction": 1.0,
  "clean_pass_remat": None,
}


def mixupe_options(
  options: regularizers.MixupEOptions | None, **keywords: Any
) -> regularizers.MixupEOptions:
  """The MixupE options of a loss function's call: `options`, or the object its keywords make.

  Two doors, one at a time: with `options` every MixupE keyword must keep its default (else the
  object would silently win over it), and without it `eta` is required.

  Args:
    options: a `regularizers.MixupEOptions`, or None.
    **keywords: the call's MixupE keywords (eta, variant, threshold, term_split, rescale,
      scale_by_moment, flip_sign, term_fraction, clean_pass_remat).

  Returns:
    The options.

  >>> from mixupe_jax import losses, regularizers
  >>> losses.mixupe_options(None, eta=0.5, variant="v3").variant
  'v3'
  >>> losses.mixupe_options(regularizers.MixupEOptions(eta=0.5), eta=0.1)
  Traceback (most recent call last):
  ValueError: options= and eta=0.1 were both passed; ...
  """
  if options is None:
    if keywords.get("eta") is None:
      raise ValueError("eta is required (or pass options=regularizers.MixupEOptions(...)).")
    return regularizers.MixupEOptions(**keywords)
  changed = [
    f"{name}={value!r}"
    for name, value in keywords.items()
    if not (value is _MIXUPE_KEYWORDS[name] or value == _MIXUPE_KEYWORDS[name])
  ]
  if changed:
    raise ValueError(
      f"options= and {', '.join(changed)} were both passed; give the MixupE settings one way: "
      "options=regularizers.MixupEOptions(...), or the keywords alone."
    )
  return options


def _term(
  options: regularizers.MixupEOptions,
  apply_fn: ApplyFn,
  params: Params,
  model_state: ModelState,
  clean_inputs: jax.Array,
  soft: jax.Array,
  x_bar: jax.Array | None,
  layer: int,
  axis_name: str | None,
) -> tuple[jax.Array, jax.Array, jax.Array, ModelState]:
  """The per-variant term on the clean batch: (logits, the statistic s_i [B], sum_i w_i s_i with
  the variant's constant weights, the model state after the clean pass).

  s_i is r_i for v1/v2 (the directional derivative along x_bar - x_i, or along the batch-mean
  shift at hidden layer `layer` when x_bar is None), in its official per-example form where the
  split matters under batch-coupled layers, else by one jvp; u_i from the logits for v3/v4.
  """
  chosen, tau = options.chosen_variant, options.threshold_in_effect

  def weights_of(statistic):
    return regularizers.selection_weights(statistic, chosen, tau)[0]

  if not chosen.uses_derivative:
    logits, model_state = apply_fn(params, model_state, clean_inputs)
    directional.check_labels_match_logits(logits, soft)
    statistic = regularizers.logit_term(logits, soft, chosen.detach_probabilities)
    return logits, statistic, jnp.sum(weights_of(statistic) * statistic), model_state
  official = (
    options.term_split == "official"
    and regularizers.split_matters(chosen, tau)
    and couples_examples(apply_fn, model_state)
  )
  if official:
    shift = (
      directional.input_shift(apply_fn)
      if x_bar is not None
      else directional.hidden_shift(apply_fn, layer, axis_name)
    )
    return directional.official_weighted_term(
      shift, params, model_state, clean_inputs, x_bar, soft, weights_of, axis_name
    )
  # The joint form: one jvp, as fast as it gets.
  if x_bar is not None:
    x_bar = directional.check_x_bar(x_bar, clean_inputs)
    logits, tangents, model_state = directional.logit_directional_derivative(
      apply_fn, params, model_state, clean_inputs, x_bar[None] - clean_inputs
    )
  else:
    logits, tangents, model_state = directional.hidden_directional_derivative(
      apply_fn, params, model_state, clean_inputs, layer, axis_name=axis_name
    )
  directional.check_labels_match_logits(logits, soft)
  statistic = directional.directional_term(logits, tangents, soft)
  return logits, statistic, jnp.sum(weights_of(statistic) * statistic), model_state


def _penalized(
  mix_loss: jax.Array,
  statistic: jax.Array,
  weighted_sum: jax.Array,
  options: regularizers.MixupEOptions,
  alpha: float,
  axis_name: str | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L = stopgrad(|L_mix| / |L|) (L_mix + eta m_1 P), P = sign (1/B) sum_i w_i s_i: the penalty,
  its weight and the official rescaling, whatever the variant's term; (loss, metrics). With
  `axis_name`, `statistic` and `weighted_sum` are this shard's and B, the statistics of s and the
  active fraction are the global batch's."""
  chosen = options.chosen_variant
  _, selected = regularizers.selection_weights(statistic, chosen, options.threshold_in_effect)
  sign = regularizers.penalty_sign(chosen, options.flip_sign)
  penalty = sign * parallel.across(weighted_sum / len(statistic), axis_name)
  weight = options.eta * (analysis.first_order_moment(alpha) if options.scale_by_moment else 1.0)
  regularizer = weight * penalty
  total = mix_loss + regularizer
  scale = jnp.ones_like(total)
  if options.rescale:
    magnitude = jnp.abs(total)
    scale = jax.lax.stop_gradient(
      jnp.where(magnitude > 0, jnp.abs(mix_loss) / jnp.where(magnitude > 0, magnitude, 1), 1)
    )
  term_mean = parallel.batch_mean(statistic, axis_name)
  metrics = {
    "mixup_loss": mix_loss,
    "regularizer": regularizer,
    "penalty": penalty,
    "unscaled_loss": total,
    "rescale_factor": scale,
    "term_mean": term_mean,
    "term_std": jnp.sqrt(parallel.batch_mean(jnp.square(statistic - term_mean), axis_name)),
    # Metrics only (pmin and pmax have no derivative).
    "term_min": parallel.across(jnp.min(jax.lax.stop_gradient(statistic)), axis_name, jax.lax.pmin),
    "term_max": parallel.across(jnp.max(jax.lax.stop_gradient(statistic)), axis_name, jax.lax.pmax),
    "active_fraction": parallel.batch_mean(selected.astype(jnp.float32), axis_name),
  }
  return scale * total, metrics


def _regularized(
  mix_loss: jax.Array,
  model_state: ModelState,
  params: Params,
  apply_fn: ApplyFn,
  clean_inputs: jax.Array,
  clean_labels: jax.Array,
  *,
  x_bar: jax.Array | None,
  layer: int,
  alpha: float,
  options: regularizers.MixupEOptions,
  num_classes: int | None,
  axis_name: str | None,
) -> tuple[jax.Array, LossAux]:
  """L_mix + eta m_1 P on the clean batch, rescaled; the shared part of every MixupE loss.

  The clean pass always runs (with eta = 0 too, as officially: BatchNorm's running statistics see
  the clean batch); with eta = 0 the loss is L_mix exactly.
  """
  if options.clean_pass_remat is not None:
    apply_fn = rematerialized(apply_fn, options.clean_pass_remat)
  alpha = mixing.check_alpha(alpha)
  soft = mixing.to_soft_labels(clean_labels, num_classes)
  chex.assert_equal_shape_prefix([clean_inputs, soft], 1)
  if options.eta == 0:  # The official code still runs the clean pass; nothing else acts.
    _, model_state = apply_fn(params, model_state, clean_inputs)
    return mix_loss, LossAux(model_state, {"mixup_loss": mix_loss})
  logits, statistic, weighted_sum, model_state = _term(
    options, apply_fn, params, model_state, clean_inputs, soft, x_bar, layer, axis_name
  )
  loss, metrics = _penalized(mix_loss, statistic, weighted_sum, options, alpha, axis_name)
  accuracy = _accuracy(logits, soft, axis_name)
  return loss, LossAux(model_state, {**metrics, "clean_accuracy": accuracy})


def mixupe_loss_fn(
  params: Params,
  model_state: ModelState,
  mixed: mixing.MixedBatch,
  clean_inputs: jax.Array,
  clean_labels: jax.Array,
  x_bar: jax.Array | None,
  *,
  apply_fn: ApplyFn,
  alpha: float,
  eta: float | None = None,
  variant: str = "v1",
  threshold: float | None = None,
  term_split: str = "official",
  rescale: bool = True,
  scale_by_moment: bool = True,
  flip_sign: bool = False,
  num_classes: int | None = None,
  clean_pass_remat: str | RematPolicy | None = None,
  options: regularizers.MixupEOptions | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, LossAux]:
  r"""MixupE: :math:`L = L_{\mathrm{mix}}(\tilde x, \tilde y) + \eta\, m_1 P(x, y, \bar x)`,
  rescaled to :math:`|L_{\mathrm{mix}}|` when `rescale`.

  Args:
    params, model_state: the model's parameters and non-trainable state (`{}` if none).
    mixed: the mixed batch (from `mixing.mixup` etc.), soft labels.
    clean_inputs, clean_labels: the unmixed batch; integer labels need `num_classes`. A random
      subset of it gives an estimate of the term at a fraction of the cost
      (`regularizers.subsample_examples`; `make_loss_fn(term_fraction=...)` draws it).
    x_bar: the training-set mean input (per-example shape); needed by v1/v2.
    apply_fn: (params, model_state, x) -> (logits, new_model_state).
    alpha: the Beta(alpha, alpha) parameter of the mixing, for m_1 = alpha / (2 alpha + 1).
    eta: the weight of the regularizer, >= 0 (required unless `options` is given). With 0 the
      clean pass still runs (as officially), so BatchNorm's running statistics see the clean
      batch; the loss is L_mix.
    variant: "v1" (= "exact"), "v2", "v3" (= "fast") or "v4"; see `regularizers`.
    threshold: tau; None uses the variant's default (-1 for v1, 1.0 for v3). v2 and v4 have none
      (the official code ignores it): a finite threshold for them is an error.
    term_split: which per-example r_i v1 and v2 threshold or take abs(r_i) of under batch-coupled
      layers (train-mode BatchNorm, graphs); see `directional`. "official" (default): example i
      moved alone, r_i = [J_F(X)^T B]_i . d_i, as the official double-backward code computes it.
      "joint": the whole batch moved, r_i = b_i . [J_F(X) D]_i, one jvp. Both cost the same
      FLOPs. They agree for models without such layers and for v1 with tau = +-inf, where the
      single jvp is used.
    rescale: multiply the loss by the constant abs(L_mix) / abs(L) (official behaviour).
    scale_by_moment: multiply eta by m_1 (official behaviour).
    flip_sign: negate the penalty (to test the opposite direction of v1/v3).
    clean_pass_remat: None, or a `jax.checkpoint` policy (a name in `models.apply.REMAT_POLICIES`
      such as "dots_saveable", or a policy) for the clean pass: its backward recomputes what the
      policy does not keep, trading FLOPs for memory; the loss and gradient are unchanged.
    options: all of the above at once (`regularizers.MixupEOptions`, validated when built), the
      other door to the keywords eta ... clean_pass_remat: passing both is an error
      (`mixupe_options`).
    axis_name: inside `jax.shard_map`, the mesh axis the batch is split over: the arrays are this
      device's shard (partners local to it), and every mean over the batch, the penalty, the
      rescaling factor and the metrics are the global batch's. The model's batch-coupled layers
      must reduce over the same axis (BatchNorm's `axis_name`). None: the whole batch.

  Returns:
    (loss, LossAux(model_state after both passes, metrics)). The metrics: the Mixup loss, the
    regularizer eta m_1 P, the penalty P, the loss before rescaling, the rescaling factor,
    statistics of the term (mean, std, min, max), the fraction of examples the penalty takes in
    (`active_fraction`) and the clean batch's accuracy.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses, mixing
  >>> def apply_fn(params, model_state, x):  # a linear model: logits = x W
  ...   return x @ params, model_state
  >>> params, x, y = jnp.eye(3), jnp.eye(4, 3), jnp.array([0, 1, 2, 0])
  >>> mixed = mixing.mixup(jax.random.key(0), x, y, alpha=1.0, num_classes=3)
  >>> loss, aux = losses.mixupe_loss_fn(params, {}, mixed, x, y, x.mean(0), apply_fn=apply_fn,
  ...                                   alpha=1.0, eta=0.1, variant="v1",
  ...                                   threshold=float("inf"), num_classes=3)
  >>> bool(jnp.isclose(loss, aux.metrics["mixup_loss"]))  # the value is rescaled to abs(L_mix)
  True
  >>> float(aux.metrics["regularizer"]) != 0  # while the gradient carries the penalty
  True
  """
  mixupe = mixupe_options(
    options,
    eta=eta,
    variant=variant,
    threshold=threshold,
    term_split=term_split,
    rescale=rescale,
    scale_by_moment=scale_by_moment,
    flip_sign=flip_sign,
    clean_pass_remat=clean_pass_remat,
  )
  if mixupe.chosen_variant.uses_derivative and x_bar is None:
    raise ValueError(f"Variant {mixupe.variant!r} needs x_bar, the training-set mean input.")
  mix_loss, aux = mixup_loss_fn(params, model_state, mixed, apply_fn=apply_fn, axis_name=axis_name)
  return _regularized(
    mix_loss,
    aux.model_state,
    params,
    apply_fn,
    clean_inputs,
    clean_labels,
    x_bar=x_bar,
    layer=0,
    alpha=alpha,
    options=mixupe,
    num_classes=num_classes,
    axis_name=axis_name,
  )


def manifold_mixup_loss_fn(
  params: Params,
  model_state: ModelState,
  mixed: mixing.MixedBatch,
  clean_inputs: jax.Array,
  *,
  apply_fn: ApplyFn,
  layer: int,
  axis_name: str | None = None,
) -> tuple[jax.Array, LossAux]:
  """Manifold Mixup (Verma et al. 2019) at hidden layer k.

  h~_i = lambda_i h_i + (1 - lambda_i) h_j(i) at layer k, with `mixed`'s lambda, partner and
  labels; L_mix = (1/B) sum_i l(g(h~_i), y~_i). Layer 0 is the input: input Mixup.

  Args:
    params: the model's parameters.
    model_state: its non-trainable state (`{}` if none).
    mixed: a mixed batch; its lambda, partner and labels are used, its inputs are not.
    clean_inputs: x, [B, ...].
    apply_fn: an apply function taking `hidden_layer` and `hidden_transform` keywords (every
      model of `mixupe_jax.models` through `flax_apply_fn`).
    layer: k.
    axis_name: as for `erm_loss_fn` (the partners are then local to the shard).

  Returns:
    (L_mix, LossAux(model_state, {"mixup_loss"})).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses, mixing
  >>> from mixupe_jax.models import MLP, flax_apply_fn, init_model
  >>> model = MLP(num_classes=3, hidden_sizes=(8, 8))
  >>> x, y = jnp.ones((4, 5)), jnp.array([0, 1, 2, 0])
  >>> params, state = init_model(model, jax.random.key(0), x[:1])
  >>> mixed = mixing.mixup(jax.random.key(1), x, y, alpha=1.0, num_classes=3)
  >>> loss, _ = losses.manifold_mixup_loss_fn(params, state, mixed, x,
  ...                                          apply_fn=flax_apply_fn(model), layer=1)
  >>> loss.shape
  ()
  """
  mix_at_layer = functools.partial(mixing.mix_like, lam=mixed.lam, partner=mixed.partner)
  logits, model_state = apply_fn(
    params, model_state, clean_inputs, hidden_layer=layer, hidden_transform=mix_at_layer
  )
  mix_loss = cross_entropy(logits, mixed.labels, axis_name)
  return mix_loss, LossAux(model_state, {"mixup_loss": mix_loss})


def manifold_mixupe_loss_fn(
  params: Params,
  model_state: ModelState,
  mixed: mixing.MixedBatch,
  clean_inputs: jax.Array,
  clean_labels: jax.Array,
  *,
  apply_fn: ApplyFn,
  layer: int,
  alpha: float,
  eta: float | None = None,
  variant: str = "v1",
  threshold: float | None = None,
  term_split: str = "official",
  rescale: bool = True,
  scale_by_moment: bool = True,
  flip_sign: bool = False,
  num_classes: int | None = None,
  clean_pass_remat: str | RematPolicy | None = None,
  options: regularizers.MixupEOptions | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, LossAux]:
  """Manifold Mixup at hidden layer k plus the MixupE term at the same layer.

  For v1/v2 the direction at layer k is d_i = h_bar - h_i with h_bar the batch mean of h (x_bar
  is not known at hidden layers); `term_split` chooses between h_i moved alone ("official") and
  the whole batch's h moved ("joint").

  Args:
    params, model_state, mixed, clean_inputs, apply_fn, layer: as for `manifold_mixup_loss_fn`.
    clean_labels: the clean batch's labels, integer ids [B] (with `num_classes`) or soft.
    alpha: the Beta concentration, for m_1.
    eta, variant, threshold, term_split: as for `mixupe_loss_fn`.
    rescale, scale_by_moment, flip_sign: as for `mixupe_loss_fn`.
    num_classes, clean_pass_remat, options, axis_name: as for `mixupe_loss_fn`.

  Returns:
    (loss, LossAux(model_state after both passes, metrics)), as `mixupe_loss_fn`.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses, mixing
  >>> from mixupe_jax.models import MLP, flax_apply_fn, init_model
  >>> model = MLP(num_classes=3, hidden_sizes=(8, 8))
  >>> x, y = jax.random.normal(jax.random.key(0), (4, 5)), jnp.array([0, 1, 2, 0])
  >>> params, state = init_model(model, jax.random.key(0), x[:1])
  >>> mixed = mixing.mixup(jax.random.key(1), x, y, alpha=1.0, num_classes=3)
  >>> loss, aux = losses.manifold_mixupe_loss_fn(
  ...     params, state, mixed, x, y, apply_fn=flax_apply_fn(model), layer=1, alpha=1.0,
  ...     eta=0.1, variant="v1", threshold=float("inf"), num_classes=3)
  >>> float(aux.metrics["active_fraction"])  # tau = +inf: every example's r_i enters
  1.0
  """
  mixupe = mixupe_options(
    options,
    eta=eta,
    variant=variant,
    threshold=threshold,
    term_split=term_split,
    rescale=rescale,
    scale_by_moment=scale_by_moment,
    flip_sign=flip_sign,
    clean_pass_remat=clean_pass_remat,
  )
  mix_loss, aux = manifold_mixup_loss_fn(
    params, model_state, mixed, clean_inputs, apply_fn=apply_fn, layer=layer, axis_name=axis_name
  )
  return _regularized(
    mix_loss,
    aux.model_state,
    params,
    apply_fn,
    clean_inputs,
    clean_labels,
    x_bar=None,
    layer=layer,
    alpha=alpha,
    options=mixupe,
    num_classes=num_classes,
    axis_name=axis_name,
  )


Mixer = Callable[[jax.Array, jax.Array, jax.Array], mixing.MixedBatch]
# (key, inputs, labels) -> (the clean examples the MixupE term is computed on, their labels).
Subsampler = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
LossFn = Callable[[Params, ModelState, jax.Array, jax.Array, jax.Array], tuple[jax.Array, LossAux]]


def make_mixer(
  name: str = "mixup", *, alpha: float, num_classes: int | None, **options: Any
) -> Mixer:
  """mixer(key, inputs, labels) -> MixedBatch for "mixup", "cutmix" or "mixup_or_cutmix".

  For "mixup_or_cutmix", `alpha` is Mixup's and `cutmix_alpha` (default alpha) CutMix's.

  Args:
    name: one of MIXERS.
    alpha: the Beta concentration (Mixup's, for "mixup_or_cutmix").
    num_classes: C, for integer labels.
    **options: further keywords of the `mixing` op (granularity, pairing, switch_prob, ...).

  Returns:
    The mixer, a function of (key, inputs, labels).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses
  >>> mixer = losses.make_mixer("cutmix", alpha=1.0, num_classes=2)
  >>> mixer(jax.random.key(0), jnp.ones((2, 4, 4, 1)), jnp.array([0, 1])).labels.shape
  (2, 2)
  """
  if name not in MIXERS:
    raise ValueError(f"Unknown mixer {name!r}; valid mixers are {', '.join(MIXERS)}.")
  if name == "mixup_or_cutmix":
    options.setdefault("cutmix_alpha", alpha)
    return functools.partial(
      mixing.mixup_or_cutmix, mixup_alpha=alpha, num_classes=num_classes, **options
    )
  return functools.partial(getattr(mixing, name), alpha=alpha, num_classes=num_classes, **options)


def make_loss_fn(
  method: str,
  *,
  apply_fn: ApplyFn,
  num_classes: int,
  alpha: float = 1.0,
  eta: float | None = None,
  variant: str = "v1",
  threshold: float | None = None,
  term_split: str = "official",
  rescale: bool = True,
  scale_by_moment: bool = True,
  flip_sign: bool = False,
  x_bar: jax.Array | None = None,
  mixer: Mixer | None = None,
  manifold_layers: Sequence[int] = (0, 1, 2),
  term_fraction: float = 1.0,
  term_subsample: Subsampler | None = None,
  clean_pass_remat: str | RematPolicy | None = None,
  mixupe: regularizers.MixupEOptions | None = None,
  axis_name: str | None = None,
) -> LossFn:
  """The uniform loss a training loop calls: loss_fn(params, model_state, inputs, labels, key).

  `method` is one of METHODS. The mixed batch comes from `mixer` (default: Mixup with lambda per
  batch and a random permutation). Manifold methods draw the layer uniformly from
  `manifold_layers` for every batch. The MixupE options are `mixupe` (a
  `regularizers.MixupEOptions`, as the training loop passes them from its config), or else the
  keywords eta ... clean_pass_remat; not both (`mixupe_options`).

  With `axis_name`, the default mixer and subset are per device (`parallel.shard_mixer` and
  `parallel.shard_subsample` in the "device" scope).

  `term_fraction` rho < 1 ("mixupe" only) computes the MixupE term, clean pass included, on
  round(rho B) clean examples drawn by `term_subsample(key, inputs, labels)` (default:
  `regularizers.subsample_examples`, uniform without replacement; `parallel.subsample_per_shard`
  draws within each device's shard), so that MixupE-exact costs about (1 + 2 rho) Mixup's FLOPs
  instead of 3x. The estimate and its meaning under BatchNorm: `regularizers.subsample_examples`.
  The subset's key is fold_in(key, 2), so the mixing and the layer draw are those of rho = 1.

  Args:
    method: "erm", "mixup", "mixupe", "manifold_mixup", "manifold_mixupe" or "regmixup" (its
      weight of L_mix is eta: `mixupe.eta`, or the keyword, default 1).
    apply_fn: (params, model_state, x) -> (logits, new_model_state).
    num_classes: C.
    alpha: the Beta concentration of the mixing.
    eta, variant, threshold, term_split, rescale, scale_by_moment, flip_sign, clean_pass_remat:
      the MixupE options, as for `mixupe_loss_fn`, when `mixupe` is None (eta then defaults
      to 0: Mixup with the clean pass).
    x_bar: the training-set mean input; needed by MixupE v1/v2 at the input layer.
    mixer: (key, inputs, labels) -> MixedBatch (`make_mixer`).
    manifold_layers: the layers the manifold methods draw from.
    term_fraction: rho, the fraction of the clean batch the MixupE term is computed on.
    term_subsample: (key, inputs, labels) -> the term's examples and labels.
    mixupe: a `regularizers.MixupEOptions`, instead of the keywords above.
    axis_name: for a loss computed per shard inside `jax.shard_map` (the train step of
      `train.make_train_step(..., axis_name=...)`): the mesh axis the batch is split over. The
      mixer and `term_subsample` then work on the shard (`parallel.shard_mixer`,
      `parallel.shard_subsample`), and every loss reduces over the axis (see `mixupe_loss_fn`).

  Returns:
    loss_fn(params, model_state, inputs, labels, key) -> (loss, LossAux).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import losses
  >>> def apply_fn(params, model_state, x):
  ...   return x @ params, model_state
  >>> x, y = jnp.eye(4, 3), jnp.array([0, 1, 2, 0])
  >>> loss_fn = losses.make_loss_fn("mixupe", apply_fn=apply_fn, num_classes=3, eta=0.1,
  ...                               x_bar=x.mean(0))
  >>> (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
  ...     jnp.zeros((3, 3)), {}, x, y, jax.random.key(0))
  >>> grads.shape
  (3, 3)
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; valid methods are {', '.join(METHODS)}.")
  alpha = mixing.check_alpha(alpha)
  if mixupe is None and eta is None:
    # No settings: "mixupe" is Mixup with the clean pass; "regmixup" weighs L_mix by 1.
    eta = 1.0 if method == "regmixup" else 0.0
  mixupe = mixupe_options(
    mixupe,
    eta=eta,
    variant=variant,
    threshold=threshold,
    term_split=term_split,
    rescale=rescale,
    scale_by_moment=scale_by_moment,
    flip_sign=flip_sign,
    term_fraction=term_fraction,
    clean_pass_remat=clean_pass_remat,
  )
  regularizers.check_method_options(method, mixupe)
  term_fraction = mixupe.term_fraction
  if term_subsample is None:
    term_subsample = functools.partial(regularizers.subsample_examples, fraction=term_fraction)
    if axis_name is not None:  # Each shard draws its own rows.
      term_subsample = parallel.shard_subsample(term_subsample, "device", axis_name)
  if mixer is None:
    mixer = make_mixer("mixup", alpha=alpha, num_classes=num_classes)
    if axis_name is not None:  # Each shard pairs its own examples (the "device" scope).
      mixer = parallel.shard_mixer(mixer, "device", axis_name)
  regularizer_options: dict[str, Any] = dict(
    alpha=alpha, options=mixupe, num_classes=num_classes, axis_name=axis_name
  )

  def loss_fn(params, model_state, inputs, labels, key):
    if method == "erm":
      return erm_loss_fn(
        params,
        model_state,
        inputs,
        labels,
        apply_fn=apply_fn,
        num_classes=num_classes,
        axis_name=axis_name,
      )
    mix_key, layer_key = jax.random.split(key)
    mixed = mixer(mix_key, inputs, labels)
    if method == "mixup":
      return mixup_loss_fn(params, model_state, mixed, apply_fn=apply_fn, axis_name=axis_name)
    if method == "regmixup":
      return regmixup_loss_fn(
        params,
        model_state,
        mixed,
        inputs,
        labels,
        apply_fn=apply_fn,
        eta=mixupe.eta,
        num_classes=num_classes,
        axis_name=axis_name,
      )
    if method == "mixupe":
      term_inputs, term_labels = inputs, labels
      if term_fraction < 1:
        term_inputs, term_labels = term_subsample(jax.random.fold_in(key, 2), inputs, labels)
      return mixupe_loss_fn(
        params,
        model_state,
        mixed,
        term_inputs,
        term_labels,
        x_bar,
        apply_fn=apply_fn,
        **regularizer_options,
      )
    if method == "manifold_mixup":
      branches = [
        functools.partial(
          manifold_mixup_loss_fn, apply_fn=apply_fn, layer=layer, axis_name=axis_name
        )
        for layer in manifold_layers
      ]
      operands: tuple[Any, ...] = (params, model_state, mixed, inputs)
    else:
      branches = [
        functools.partial(
          manifold_mixupe_loss_fn, apply_fn=apply_fn, layer=layer, **regularizer_options
        )
        for layer in manifold_layers
      ]
      operands = (params, model_state, mixed, inputs, labels)
    index = jax.random.randint(layer_key, (), 0, len(branches))
    return jax.lax.switch(index, branches, *operands)

  return loss_fn
