r"""Mixup-family batch operations: pure functions of an explicit `jax.random` key.

Every op returns a `MixedBatch` holding the mixed inputs x~, the soft mixed labels y~, the
per-example weight lambda_i of the example's own input and the index j(i) of its partner:

.. math::

   \tilde x_i = \lambda_i x_i + (1 - \lambda_i)\, x_{j(i)}, \qquad
   \tilde y_i = \lambda_i y_i + (1 - \lambda_i)\, y_{j(i)}.

`lambda` and `partner` are kept so the same mixing can be replayed on any other array of the
batch, e.g. on hidden features (Manifold Mixup, `mix_like`).

Mixing granularity (how many lambdas are drawn):
  * "batch":   one lambda ~ Beta(alpha, alpha) for the whole batch (the MixupE paper's choice).
  * "pair":    one lambda per pair {i, j}, shared by both members; the pairing must be an
               involution (j(j(i)) = i): "flip" or "matching".
  * "example": one lambda per example.

Pairing (who j(i) is):
  * "permutation": j = pi(i) for a uniformly random permutation pi (the paper's choice).
  * "matching":    a uniformly random perfect matching (an involutive permutation; even batch).
  * "flip":        j = B - 1 - i (the batch reversed, as timm does).
  * "roll":        j = (i + 1) mod B.

Inputs may have any rank: images [B, H, W, C], tables [B, D], spectrograms [B, T, F, 1], node
features [N, D]. Integer inputs (uint8 images) are mixed in float32; floating ones keep their
dtype. Labels are integer class ids [B] (then `num_classes` is required) or soft / one-hot labels
[B, C]; the output labels are always soft, float32, and sum to one.

Global vs per-shard mixing: under `jax.jit` with a batch-sharded input these functions mix across
the global batch (partners may live on other devices). To mix within each device's shard call them
through `mixupe_jax.parallel.mix_per_shard`, which passes `shard_index`: the batch-level random
choices (lambda for granularity "batch", the CutMix box, the Mixup/CutMix switch) then stay the
same on every device, and the pairing (and per-example lambdas) differ per shard.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

GRANULARITIES = ("batch", "pair", "example")
PAIRINGS = ("permutation", "matching", "flip", "roll")
_INVOLUTIVE_PAIRINGS = ("matching", "flip")


class MixedBatch(NamedTuple):
  """A mixed batch: x~ = lam x + (1 - lam) x[partner], y~ likewise (soft labels)."""

  inputs: jax.Array  # x~, the clean inputs' shape and (floating) dtype; integers mix in float32.
  labels: jax.Array  # y~ [B, C], float32, rows sum to one.
  lam: jax.Array  # [B] float32: weight of the example's own label (kept area for CutMix).
  partner: jax.Array  # [B] int32: index j(i) of the partner in the (shard-local) batch.


def check_alpha(alpha: float, name: str = "alpha") -> float:
  """Checks a Beta concentration: 0 <= alpha < inf (0 means no mixing).

  Args:
    alpha: the value to check.
    name: the name the error message gives it (a config field, say).

  Returns:
    alpha as a Python float.

  Raises:
    ValueError: naming `name` and the value, if alpha is negative, infinite or NaN.

  >>> from mixupe_jax import mixing
  >>> mixing.check_alpha(1)
  1.0
  >>> mixing.check_alpha(-0.5, "mixup_alpha")
  Traceback (most recent call last):
  ValueError: mixup_alpha must be a finite number >= 0 (0 means no mixing), got -0.5.
  """
  alpha = float(alpha)
  if not np.isfinite(alpha) or alpha < 0:
    raise ValueError(f"{name} must be a finite number >= 0 (0 means no mixing), got {alpha}.")
  return alpha


def check_probability(value: float, name: str) -> float:
  """A probability: a number in [0, 1]; a ValueError names `name` and the value.

  Args:
    value: the number to check.
    name: what the error calls it (an option's name).

  Returns:
    The value as a Python float.

  >>> from mixupe_jax import mixing
  >>> mixing.check_probability(0.5, "prob")
  0.5
  """
  if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
    raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
  if not 0.0 <= float(value) <= 1.0:
    raise ValueError(f"{name} must be a number in [0, 1], got {value}.")
  return float(value)


def _check_choice(value: str, valid: tuple[str, ...], name: str) -> None:
  if value not in valid:
    raise ValueError(f"Unknown {name} {value!r}; valid values are {', '.join(valid)}.")


def to_soft_labels(labels: jax.Array, num_classes: int | None = None) -> jax.Array:
  """Integer labels [B] -> one-hot float32 [B, C]; soft labels [B, C] -> float32 [B, C].

  Integer labels that are concrete (not traced) are checked to lie in [0, num_classes); traced
  integer labels cannot be checked here, so loaders validate them (an out-of-range id would give
  an all-zero row).

  Args:
    labels: integer class ids [B], or soft / one-hot labels [B, C].
    num_classes: C; required for integer labels, checked against soft ones.

  Returns:
    float32 [B, C] labels.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> mixing.to_soft_labels(jnp.array([2, 0]), num_classes=3).tolist()
  [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
  """
  labels = jnp.asarray(labels)
  if jnp.issubdtype(labels.dtype, jnp.integer):
    chex.assert_rank(labels, 1)
    if num_classes is None:
      raise ValueError("Integer labels need num_classes to be converted to one-hot labels.")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
      concrete = np.asarray(labels)
      low, high = int(concrete.min()), int(concrete.max())
      if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
          f"Label {bad} is out of range for num_classes={num_classes} "
          f"(labels must lie in [0, {num_classes - 1}])."
        )
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  chex.assert_rank(labels, 2)
  if num_classes is not None and labels.shape[-1] != num_classes:
    raise ValueError(f"Soft labels have {labels.shape[-1]} classes but num_classes={num_classes}.")
  return labels.astype(jnp.float32)


def smooth_labels(labels: jax.Array, smoothing: float) -> jax.Array:
  """Label smoothing: y <- (1 - epsilon) y + epsilon / C, for soft labels [B, C].

  Args:
    labels: soft labels [B, C].
    smoothing: epsilon, in [0, 1).

  Returns:
    The smoothed labels, [B, C]; rows still sum to one.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> mixing.smooth_labels(jnp.array([[0.0, 1.0]]), 0.5).tolist()
  [[0.25, 0.75]]
  """
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"label_smoothing must lie in [0, 1), got {smoothing}.")
  chex.assert_rank(labels, 2)
  num_classes = labels.shape[-1]
  return (1.0 - smoothing) * labels + smoothing / num_classes


def pair_indices(key: jax.Array, batch_size: int, pairing: str = "permutation") -> jax.Array:
  """The partner index j(i) of every example, int32 [B].

  Args:
    key: a `jax.random` key (used by "permutation" and "matching").
    batch_size: B.
    pairing: "permutation", "matching" (even B), "flip" or "roll" (see the module docstring).

  Returns:
    int32 [B]: j(i) for every i.

  >>> import jax
  >>> from mixupe_jax import mixing
  >>> mixing.pair_indices(jax.random.key(0), 4, "flip").tolist()
  [3, 2, 1, 0]
  >>> partner = mixing.pair_indices(jax.random.key(0), 6, "matching")
  >>> bool((partner[partner] == jax.numpy.arange(6)).all())  # an involution: j(j(i)) = i
  True
  """
  _check_choice(pairing, PAIRINGS, "pairing")
  if pairing == "permutation":
    return jax.random.permutation(key, batch_size).astype(jnp.int32)
  if pairing == "flip":
    return jnp.arange(batch_size - 1, -1, -1, dtype=jnp.int32)
  if pairing == "roll":
    return (jnp.arange(batch_size, dtype=jnp.int32) + 1) % batch_size
  # "matching": shuffle, then pair consecutive entries of the shuffled order with each other.
  if batch_size % 2:
    raise ValueError(f"pairing='matching' needs an even batch size, got {batch_size}.")
  order = jax.random.permutation(key, batch_size).astype(jnp.int32)
  swapped = order.reshape(-1, 2)[:, ::-1].reshape(-1)
  return jnp.zeros(batch_size, jnp.int32).at[order].set(swapped)


def sample_lambda(
  key: jax.Array,
  alpha: float,
  batch_size: int,
  granularity: str = "batch",
  partner: jax.Array | None = None,
  *,
  prob: float = 1.0,
  larger_share: bool = False,
) -> jax.Array:
  r""":math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`, float32 [B]; alpha = 0 gives lambda = 1
  (no mixing).

  For granularity "pair", lambda_i = lambda_{min(i, j(i))} so both members of a pair share it;
  `partner` must then be given. Two options of other Mixup APIs::

    larger_share (big_vision):  lambda <- max(lambda, 1 - lambda), each example keeping the
                                larger share of itself
    prob (timm):                lambda <- lambda if u < prob else 1, u ~ U(0, 1) drawn once per
                                batch, pair or example as lambda is: mixing applied with
                                probability `prob`, otherwise the clean (smoothed) labels

  With prob = 1 (the default) the draws are those of the function without it.

  Args:
    key: a `jax.random` key.
    alpha: the Beta concentration, >= 0.
    batch_size: B.
    granularity: "batch" (one lambda, broadcast), "pair" or "example".
    partner: j(i), int [B]; needed for "pair".
    prob: the probability that a batch, pair or example is mixed, in [0, 1].
    larger_share: fold lambda to max(lambda, 1 - lambda).

  Returns:
    float32 [B], every entry in [0, 1] ([0.5, 1] with `larger_share`).

  >>> import jax
  >>> from mixupe_jax import mixing
  >>> lam = mixing.sample_lambda(jax.random.key(0), 1.0, 4)
  >>> lam.shape, bool((lam == lam[0]).all())  # "batch": one lambda for all
  ((4,), True)
  >>> mixing.sample_lambda(jax.random.key(0), 0.0, 2).tolist()
  [1.0, 1.0]
  >>> lam = mixing.sample_lambda(jax.random.key(0), 1.0, 1000, "example", larger_share=True)
  >>> bool((lam >= 0.5).all())
  True
  >>> lam = mixing.sample_lambda(jax.random.key(0), 1.0, 1000, "example", prob=0.25)
  >>> 0.65 < float((lam == 1).mean()) < 0.85  # three quarters of the examples not mixed
  True
  """
  alpha = check_alpha(alpha)
  _check_choice(granularity, GRANULARITIES, "granularity")
  prob = check_probability(prob, "prob")
  shape = (1,) if granularity == "batch" else (batch_size,)
  if prob < 1:
    key, apply_key = jax.random.split(key)
  if alpha == 0.0:
    lam = jnp.ones(shape, jnp.float32)
  else:
    lam = jax.random.beta(key, alpha, alpha, shape, dtype=jnp.float32)
  if larger_share:
    lam = jnp.maximum(lam, 1 - lam)
  if prob < 1:
    lam = jnp.where(jax.random.uniform(apply_key, shape) < prob, lam, 1.0)
  return _spread(lam, granularity, batch_size, partner)


def _spread(draws: jax.Array, granularity: str, batch_size: int, partner) -> jax.Array:
  """Draws made once per batch ([1]), pair or example ([B]) as one value per example [B]: a
  pair's members share the draw of its lower index."""
  if granularity == "batch":
    return jnp.broadcast_to(draws, (batch_size,))
  if granularity == "pair":
    if partner is None:
      raise ValueError("granularity='pair' needs the partner indices.")
    return draws[jnp.minimum(jnp.arange(batch_size), partner)]
  return draws


def as_floating(values: jax.Array) -> jax.Array:
  """Floating arrays as they are; integer or boolean ones (e.g. uint8 images) as float32, so that
  a convex combination is not rounded back to the integers (lambda would become 0 or 1).

  Args:
    values: any array.

  Returns:
    values, as float32 unless already floating.

  >>> import numpy as np
  >>> from mixupe_jax import mixing
  >>> mixing.as_floating(np.zeros(2, np.uint8)).dtype
  dtype('float32')
  """
  values = jnp.asarray(values)
  if jnp.issubdtype(values.dtype, jnp.inexact):
    return values
  return values.astype(jnp.float32)


def _broadcast_per_example(weights: jax.Array, like: jax.Array) -> jax.Array:
  return weights.reshape(weights.shape + (1,) * (like.ndim - 1)).astype(like.dtype)


def mix_like(values: jax.Array, lam: jax.Array, partner: jax.Array) -> jax.Array:
  """lam_i v_i + (1 - lam_i) v_j(i) for any per-example array v [B, ...] (integers in float32).

  Replays a `MixedBatch`'s mixing on another array of the batch (hidden features, say).

  Args:
    values: v, [B, ...].
    lam: lambda_i, [B].
    partner: j(i), int [B].

  Returns:
    The mixed values, v's shape, floating.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> mixing.mix_like(jnp.array([0.0, 4.0]), jnp.array([0.75, 0.75]), jnp.array([1, 0])).tolist()
  [1.0, 3.0]
  """
  values = as_floating(values)
  chex.assert_equal_shape_prefix([values, lam, partner], 1)
  weight = _broadcast_per_example(lam, values)
  return weight * values + (1 - weight) * values[partner]


def _split_keys(key: jax.Array, shard_index: jax.Array | int | None):
  """(batch-level key, shard-level key): the latter differs per shard when shard_index is set."""
  batch_key, shard_key = jax.random.split(key)
  if shard_index is not None:
    shard_key = jax.random.fold_in(shard_key, shard_index)
  return batch_key, shard_key


def _prepare(inputs, labels, num_classes, label_smoothing, granularity, pairing):
  chex.assert_rank(inputs, {2, 3, 4, 5})
  _check_choice(granularity, GRANULARITIES, "granularity")
  _check_choice(pairing, PAIRINGS, "pairing")
  if granularity == "pair" and pairing not in _INVOLUTIVE_PAIRINGS:
    raise ValueError(
      f"granularity='pair' needs an involutive pairing ({', '.join(_INVOLUTIVE_PAIRINGS)}), "
      f"got pairing={pairing!r}."
    )
  soft = to_soft_labels(labels, num_classes)
  chex.assert_equal_shape_prefix([inputs, soft], 1)
  if label_smoothing:
    soft = smooth_labels(soft, label_smoothing)
  return soft


def mixup(
  key: jax.Array,
  inputs: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  num_classes: int | None = None,
  granularity: str = "batch",
  pairing: str = "permutation",
  label_smoothing: float = 0.0,
  prob: float = 1.0,
  larger_share: bool = False,
  shard_index: jax.Array | int | None = None,
) -> MixedBatch:
  r"""Mixup (Zhang et al. 2018): :math:`\tilde x_i = \lambda x_i + (1 - \lambda) x_{j(i)}`,
  :math:`\tilde y_i` likewise.

  lambda ~ Beta(alpha, alpha) per batch, pair or example; j = pairing(i); `prob` and
  `larger_share` as in `sample_lambda`.

  Args:
    key: a `jax.random` key; the only source of randomness.
    inputs: x, [B, ...] of rank 2 to 5, any dtype (integers are mixed in float32).
    labels: integer ids [B] (with `num_classes`) or soft labels [B, C].
    alpha: the Beta concentration; 0 gives lambda = 1 (no mixing).
    num_classes: C, for integer labels.
    granularity: "batch", "pair" or "example" (how many lambdas are drawn).
    pairing: "permutation", "matching", "flip" or "roll" (who j(i) is).
    label_smoothing: epsilon, applied before mixing.
    prob: the probability that a batch, pair or example is mixed (timm's `prob`).
    larger_share: lambda <- max(lambda, 1 - lambda) (big_vision's).
    shard_index: set by `parallel.mix_per_shard`: the pairing differs per shard, lambda does not.

  Returns:
    A `MixedBatch` (x~, y~ as float32 soft labels, lambda [B], j [B]).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> x, y = jnp.arange(8.0).reshape(4, 2), jnp.array([0, 1, 2, 0])
  >>> mixed = mixing.mixup(jax.random.key(0), x, y, alpha=1.0, num_classes=3)
  >>> mixed.inputs.shape, mixed.labels.shape
  ((4, 2), (4, 3))
  >>> lam, j = mixed.lam[:, None], mixed.partner
  >>> bool(jnp.allclose(mixed.inputs, lam * x + (1 - lam) * x[j]))
  True
  """
  soft = _prepare(inputs, labels, num_classes, label_smoothing, granularity, pairing)
  batch_size = inputs.shape[0]
  batch_key, shard_key = _split_keys(key, shard_index)
  pair_key, example_lambda_key = jax.random.split(shard_key)
  partner = pair_indices(pair_key, batch_size, pairing)
  lambda_key = batch_key if granularity == "batch" else example_lambda_key
  lam = sample_lambda(
    lambda_key, alpha, batch_size, granularity, partner, prob=prob, larger_share=larger_share
  )
  return MixedBatch(mix_like(inputs, lam, partner), mix_like(soft, lam, partner), lam, partner)


def _default_spatial_axes(ndim: int) -> tuple[int, ...]:
  # Channel-last layouts: cut over the axes between batch and channel; [B, D] or [B, T, D]
  # (no channel axis worth keeping whole) cut a contiguous segment of axis 1.
  return tuple(range(1, ndim - 1)) if ndim >= 4 else (1,)


def cutmix_mask(
  key: jax.Array,
  lam: jax.Array,
  shape: tuple[int, ...],
  spatial_axes: tuple[int, ...],
) -> jax.Array:
  """Box masks for CutMix, float32 of `shape` with 1 = keep own pixel, 0 = take the partner's.

  The box has side (1 - lambda_i)^(1/k) of every one of the k spatial axes (sqrt for images, as
  in Yun et al. 2019), a uniformly random centre, and is clipped at the borders.

  Args:
    key: a `jax.random` key (the box centres).
    lam: lambda_i, [B].
    shape: the inputs' shape, [B, ...].
    spatial_axes: the k axes the box cuts.

  Returns:
    float32 masks of `shape`, constant along the axes not cut.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> mask = mixing.cutmix_mask(jax.random.key(0), jnp.array([1.0, 0.5]), (2, 4, 4, 1), (1, 2))
  >>> float(mask[0].sum())  # lambda = 1: no box, every pixel kept
  16.0
  >>> sorted(set(mask.ravel().tolist()))  # 1 = own pixel, 0 = the partner's
  [0.0, 1.0]
  """
  batch_size = shape[0]
  side_fraction = (1.0 - lam) ** (1.0 / len(spatial_axes))
  bounds = []
  for axis, axis_key in zip(spatial_axes, jax.random.split(key, len(spatial_axes)), strict=True):
    size = shape[axis]
    cut = jnp.floor(side_fraction * size).astype(jnp.int32)
    center = jax.random.randint(axis_key, (batch_size,), 0, size)
    low = jnp.clip(center - cut // 2, 0, size)
    high = jnp.clip(center + cut // 2 + cut % 2, 0, size)
    bounds.append((low, high))
  return _box_mask(shape, spatial_axes, bounds)


def check_box_minmax(box_minmax) -> tuple[float, float]:
  """timm's `cutmix_minmax`: two fractions 0 < min <= max <= 1; a ValueError names the value.

  Args:
    box_minmax: (min, max), fractions of each cut axis's size.

  Returns:
    (min, max) as Python floats.

  >>> from mixupe_jax import mixing
  >>> mixing.check_box_minmax([0.2, 0.8])
  (0.2, 0.8)
  """
  try:
    low, high = (float(v) for v in box_minmax)
  except (TypeError, ValueError):
    raise ValueError(f"box_minmax must be two fractions (min, max), got {box_minmax!r}.") from None
  if not 0.0 < low <= high <= 1.0:
    raise ValueError(f"box_minmax must satisfy 0 < min <= max <= 1, got {box_minmax!r}.")
  return low, high


def cutmix_minmax_mask(
  key: jax.Array,
  cut: jax.Array,
  shape: tuple[int, ...],
  spatial_axes: tuple[int, ...],
  box_minmax: tuple[float, float],
) -> jax.Array:
  """Box masks with sides drawn between two fractions of the image (timm's `cutmix_minmax`).

  Along each cut axis of size S the box's side is s ~ U{floor(min S), ..., floor(max S) - 1}
  (floor(min S) when the two are equal), drawn independently per axis as timm does, and its
  start uniformly in {0, ..., S - s}: the box lies inside the image, and the kept area
  lambda_i = 1 - prod_axes s / S is what the labels are weighed by. (timm draws the start in
  {0, ..., S - s - 1}, so its box never touches the last row or column.)

  Args:
    key: a `jax.random` key (the sides and the positions).
    cut: bool [B]: whether example i is cut at all (False: no box, lambda_i = 1).
    shape: the inputs' shape, [B, ...].
    spatial_axes: the axes the box cuts.
    box_minmax: (min, max) fractions of each axis's size.

  Returns:
    float32 masks of `shape`, 1 = keep own pixel, 0 = take the partner's.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> mask = mixing.cutmix_minmax_mask(jax.random.key(0), jnp.array([True, False]),
  ...                                  (2, 10, 10, 1), (1, 2), (0.5, 0.5))
  >>> mask[0].sum().tolist(), mask[1].sum().tolist()  # a 5 x 5 box cut; no box
  (75.0, 100.0)
  """
  low_fraction, high_fraction = check_box_minmax(box_minmax)
  batch_size = shape[0]
  bounds = []
  for axis, axis_key in zip(spatial_axes, jax.random.split(key, len(spatial_axes)), strict=True):
    size = shape[axis]
    side_key, start_key = jax.random.split(axis_key)
    shortest, longest = int(low_fraction * size), int(high_fraction * size)
    side = jax.random.randint(side_key, (batch_size,), shortest, max(longest, shortest + 1))
    side = jnp.where(cut, side, 0)
    start = jax.random.randint(start_key, (batch_size,), 0, size - side + 1)
    bounds.append((start, start + side))
  return _box_mask(shape, spatial_axes, bounds)


def _box_mask(shape, spatial_axes, bounds) -> jax.Array:
  """1 outside, 0 inside the boxes [low, high) of each cut axis (per example), float32."""
  batch_size = shape[0]
  in_box = jnp.ones((batch_size,) + (1,) * (len(shape) - 1), bool)
  for axis, (low, high) in zip(spatial_axes, bounds, strict=True):
    size = shape[axis]
    position_shape = [1] * len(shape)
    position_shape[axis] = size
    position = jnp.arange(size).reshape(position_shape)
    bounds_shape = (batch_size,) + (1,) * (len(shape) - 1)
    inside = (position >= low.reshape(bounds_shape)) & (position < high.reshape(bounds_shape))
    in_box = in_box & inside  # The box is the intersection of one band per axis.
  # Axes that are not cut (channels) keep the box constant along them.
  return jnp.broadcast_to(1.0 - in_box.astype(jnp.float32), shape)


def cutmix(
  key: jax.Array,
  inputs: jax.Array,
  labels: jax.Array,
  *,
  alpha: float,
  num_classes: int | None = None,
  granularity: str = "batch",
  pairing: str = "permutation",
  label_smoothing: float = 0.0,
  correct_lambda: bool = True,
  spatial_axes: tuple[int, ...] | None = None,
  prob: float = 1.0,
  box_minmax: tuple[float, float] | None = None,
  shard_index: jax.Array | int | None = None,
) -> MixedBatch:
  """CutMix (Yun et al. 2019): x~ = M * x_i + (1 - M) * x_j for a box mask M, y~ mixed by lambda.

  With `correct_lambda`, the label weight is the kept area lambda_i = mean(M_i) (the box is
  clipped at the borders, so it can differ from the sampled lambda); otherwise the sampled one.

  Args:
    key: a `jax.random` key.
    inputs: x, [B, ...] of rank 2 to 5; images are [B, H, W, C].
    labels: integer ids [B] (with `num_classes`) or soft labels [B, C].
    alpha: the Beta concentration of lambda.
    num_classes: C, for integer labels.
    granularity: "batch" (one box for the batch), "pair" or "example".
    pairing: who j(i) is, as for `mixup`.
    label_smoothing: epsilon, applied before mixing.
    correct_lambda: weigh the labels by the kept area instead of the sampled lambda.
    spatial_axes: the axes the box cuts; default all between batch and channel (axis 1 for
      [B, D] and [B, T, D]).
    prob: the probability that a batch, pair or example is cut (lambda = 1 otherwise: no box),
      as in `sample_lambda`.
    box_minmax: timm's `cutmix_minmax`: the box's sides drawn between these fractions of each
      axis (`cutmix_minmax_mask`) instead of from lambda ~ Beta(alpha, alpha); alpha is then
      unused and lambda is always the kept area.
    shard_index: set by `parallel.mix_per_shard`.

  Returns:
    A `MixedBatch`; its `lam` is the kept area when `correct_lambda` or `box_minmax`.

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> images = jnp.zeros((4, 8, 8, 3))
  >>> mixed = mixing.cutmix(jax.random.key(0), images, jnp.array([0, 1, 2, 3]), alpha=1.0,
  ...                       num_classes=4)
  >>> mixed.inputs.shape, bool(jnp.allclose(mixed.labels.sum(-1), 1.0))
  ((4, 8, 8, 3), True)
  """
  soft = _prepare(inputs, labels, num_classes, label_smoothing, granularity, pairing)
  inputs = as_floating(inputs)  # As Mixup's output, so that the two can be switched.
  batch_size = inputs.shape[0]
  axes = tuple(spatial_axes) if spatial_axes is not None else _default_spatial_axes(inputs.ndim)
  if not axes or any(not 1 <= axis < inputs.ndim for axis in axes):
    raise ValueError(f"spatial_axes {axes} must name axes in [1, {inputs.ndim - 1}].")
  batch_key, shard_key = _split_keys(key, shard_index)
  lambda_key, box_key = jax.random.split(batch_key)
  pair_key, example_lambda_key, example_box_key = jax.random.split(shard_key, 3)
  partner = pair_indices(pair_key, batch_size, pairing)
  if granularity != "batch":
    lambda_key, box_key = example_lambda_key, example_box_key
  if box_minmax is None:
    lam = sample_lambda(lambda_key, alpha, batch_size, granularity, partner, prob=prob)
    keep = cutmix_mask(box_key, lam, inputs.shape, axes)
  else:
    draws = (1,) if granularity == "batch" else (batch_size,)
    cut = jax.random.uniform(lambda_key, draws) < check_probability(prob, "prob")
    cut = _spread(cut, granularity, batch_size, partner)
    keep = cutmix_minmax_mask(box_key, cut, inputs.shape, axes, box_minmax)
  if granularity == "pair":
    # Both members of a pair cut the same box (each keeping its own outside of it).
    keep = _spread(keep, granularity, batch_size, partner)
  if granularity == "batch":
    keep = jnp.broadcast_to(keep[:1], keep.shape)
  mixed_inputs = (keep * inputs + (1 - keep) * inputs[partner]).astype(inputs.dtype)
  if correct_lambda or box_minmax is not None:
    lam = jnp.mean(keep, axis=tuple(axes)).reshape(batch_size, -1)[:, 0]
  return MixedBatch(mixed_inputs, mix_like(soft, lam, partner), lam, partner)


def mixup_or_cutmix(
  key: jax.Array,
  inputs: jax.Array,
  labels: jax.Array,
  *,
  mixup_alpha: float,
  cutmix_alpha: float,
  switch_prob: float = 0.5,
  num_classes: int | None = None,
  granularity: str = "batch",
  pairing: str = "permutation",
  label_smoothing: float = 0.0,
  correct_lambda: bool = True,
  spatial_axes: tuple[int, ...] | None = None,
  prob: float = 1.0,
  box_minmax: tuple[float, float] | None = None,
  switch_per_lambda: bool = False,
  shard_index: jax.Array | int | None = None,
) -> MixedBatch:
  """CutMix with probability `switch_prob`, else Mixup: one choice per batch, or, with
  `switch_per_lambda`, one per lambda drawn (per pair or example, as timm's "pair" and "elem"
  modes do):

    use_cutmix_i ~ Bernoulli(switch_prob),  x~_i, y~_i, lambda_i = CutMix's if use_cutmix_i
                                                                  else Mixup's

  Args:
    key: a `jax.random` key (the switch, then the chosen op's draws).
    inputs: x, [B, ...].
    labels: integer ids [B] (with `num_classes`) or soft labels [B, C].
    mixup_alpha: Mixup's Beta concentration.
    cutmix_alpha: CutMix's Beta concentration.
    switch_prob: the probability of CutMix, in [0, 1].
    num_classes, granularity, pairing, label_smoothing: as for `mixup`.
    correct_lambda, spatial_axes, box_minmax: as for `cutmix`.
    prob: the probability that a batch, pair or example is mixed by the chosen op (timm's).
    switch_per_lambda: draw the choice per pair or example (with `granularity`), not per batch.
    shard_index: set by `parallel.mix_per_shard`.

  Returns:
    The `MixedBatch` of the op chosen for this batch (for each example, with
    `switch_per_lambda`).

  >>> import jax, jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> x, y = jnp.ones((2, 4, 4, 1)), jnp.array([0, 1])
  >>> always_cutmix = mixing.mixup_or_cutmix(jax.random.key(0), x, y, mixup_alpha=1.0,
  ...                                        cutmix_alpha=1.0, switch_prob=1.0, num_classes=2)
  >>> cutmix = mixing.cutmix(jax.random.split(jax.random.key(0))[1], x, y, alpha=1.0,
  ...                        num_classes=2)
  >>> bool(jnp.array_equal(always_cutmix.lam, cutmix.lam))
  True
  >>> per_example = mixing.mixup_or_cutmix(jax.random.key(0), jnp.ones((8, 4, 4, 1)),
  ...                                      jnp.arange(8) % 2, mixup_alpha=1.0, cutmix_alpha=1.0,
  ...                                      num_classes=2, granularity="example",
  ...                                      switch_per_lambda=True)
  >>> per_example.lam.shape
  (8,)
  """
  if not 0.0 <= switch_prob <= 1.0:
    raise ValueError(f"switch_prob must lie in [0, 1], got {switch_prob}.")
  common: dict[str, Any] = dict(
    num_classes=num_classes,
    granularity=granularity,
    pairing=pairing,
    label_smoothing=label_smoothing,
    prob=prob,
    shard_index=shard_index,
  )
  switch_key, mix_key = jax.random.split(key)
  mixed_by_mixup = mixup(mix_key, inputs, labels, alpha=mixup_alpha, **common)
  mixed_by_cutmix = cutmix(
    mix_key,
    inputs,
    labels,
    alpha=cutmix_alpha,
    correct_lambda=correct_lambda,
    spatial_axes=spatial_axes,
    box_minmax=box_minmax,
    **common,
  )
  if not switch_per_lambda or granularity == "batch":
    use_cutmix = jax.random.bernoulli(switch_key, switch_prob)
    return jax.tree.map(lambda c, m: jnp.where(use_cutmix, c, m), mixed_by_cutmix, mixed_by_mixup)
  batch_size = mixed_by_mixup.lam.shape[0]
  if shard_index is not None:  # Per-example choices differ per shard, as the pairing does.
    switch_key = jax.random.fold_in(switch_key, shard_index)
  # Both ops pair by the same key, so each example's choice keeps a consistent (x~, y~, lambda, j).
  use_cutmix = jax.random.bernoulli(switch_key, switch_prob, (batch_size,))
  use_cutmix = _spread(use_cutmix, granularity, batch_size, mixed_by_mixup.partner)
  return jax.tree.map(
    lambda c, m: jnp.where(_broadcast_per_example(use_cutmix, c).astype(bool), c, m),
    mixed_by_cutmix,
    mixed_by_mixup,
  )


def no_mixing(inputs: jax.Array, labels: jax.Array, num_classes: int | None = None) -> MixedBatch:
  """The identity mixing (lambda = 1, j(i) = i): ERM through the same interface.

  Args:
    inputs: x, [B, ...].
    labels: integer ids [B] (with `num_classes`) or soft labels [B, C].
    num_classes: C, for integer labels.

  Returns:
    A `MixedBatch` with x~ = x (floating), y~ = the soft labels, lambda = 1 and j(i) = i.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import mixing
  >>> mixing.no_mixing(jnp.zeros((2, 3)), jnp.array([1, 0]), num_classes=2).partner.tolist()
  [0, 1]
  """
  soft = to_soft_labels(labels, num_classes)
  batch_size = inputs.shape[0]
  return MixedBatch(
    as_floating(inputs),
    soft,
    jnp.ones(batch_size, jnp.float32),
    jnp.arange(batch_size, dtype=jnp.int32),
  )
