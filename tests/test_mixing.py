"""Mixing ops: lambda ~ Beta(alpha, alpha), soft labels, CutMix areas, pairing, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mixupe_jax import mixing


@pytest.mark.parametrize("alpha", [0.2, 1.0, 2.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
  """Kolmogorov-Smirnov test of 4,000 per-example lambdas and of 300 per-batch lambdas."""
  lam = mixing.sample_lambda(jax.random.key(1), alpha, 4000, "example")
  assert scipy.stats.kstest(np.asarray(lam), scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
  per_batch = [mixing.mixup(jax.random.key(s), jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32),
                            alpha=alpha, num_classes=2).lam for s in range(300)]
  assert all(np.all(l == l[0]) for l in per_batch)
  first = np.asarray([l[0] for l in per_batch])
  assert scipy.stats.kstest(first, scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
  # The test has power: the same lambdas are far from Beta(alpha + 1, alpha).
  assert scipy.stats.kstest(np.asarray(lam), scipy.stats.beta(alpha + 1, alpha).cdf).pvalue < 1e-6


def test_alpha_zero_means_no_mixing(key):
  x = jax.random.normal(key, (8, 5))
  for op in (mixing.mixup, mixing.cutmix):
    mixed = op(key, x, jnp.arange(8) % 4, alpha=0.0, num_classes=4)
    np.testing.assert_array_equal(mixed.inputs, x)
    np.testing.assert_array_equal(mixed.labels, jax.nn.one_hot(jnp.arange(8) % 4, 4))


@pytest.mark.parametrize("shape", [(8, 5), (8, 6, 7), (8, 6, 6, 3), (8, 4, 4, 2, 2)])
@pytest.mark.parametrize("granularity,pairing", [("batch", "permutation"), ("example", "roll"),
                                                 ("pair", "flip"), ("pair", "matching")])
def test_mixup_is_the_convex_combination_on_any_rank(shape, granularity, pairing, key):
  x = jax.random.normal(key, shape)
  labels = jnp.arange(8) % 3
  mixed = mixing.mixup(key, x, labels, alpha=0.4, num_classes=3, granularity=granularity,
                       pairing=pairing)
  lam = np.asarray(mixed.lam).reshape((8,) + (1,) * (len(shape) - 1))
  j = np.asarray(mixed.partner)
  np.testing.assert_allclose(mixed.inputs, lam * x + (1 - lam) * np.asarray(x)[j], rtol=1e-6)
  np.testing.assert_allclose(np.sum(mixed.labels, -1), 1.0, rtol=1e-6)
  onehot = np.eye(3)[labels]
  np.testing.assert_allclose(mixed.labels, lam[:, :1].reshape(8, 1) * onehot
                             + (1 - lam.reshape(8, 1)) * onehot[j], rtol=1e-6, atol=1e-7)
  assert sorted(j.tolist()) == list(range(8))  # Every pairing is a permutation.
  if granularity == "pair":
    np.testing.assert_array_equal(j[j], np.arange(8))  # An involution...
    np.testing.assert_array_equal(mixed.lam, np.asarray(mixed.lam)[j])  # ...sharing lambda.


def test_pair_granularity_needs_an_involutive_pairing(key):
  with pytest.raises(ValueError, match="granularity='pair' needs an involutive pairing"):
    mixing.mixup(key, jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32), alpha=1.0, num_classes=2,
                 granularity="pair", pairing="permutation")


@pytest.mark.parametrize("granularity", ["batch", "example", "pair"])
@pytest.mark.parametrize("shape,axes", [((16, 12, 10, 3), (1, 2)), ((16, 40), (1,)),
                                        ((16, 20, 8, 1), (1,))])
@pytest.mark.slow
def test_cutmix_lambda_equals_the_kept_area(granularity, shape, axes, key):
  # Distinct values everywhere, so a pixel shows which image it came from.
  x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
  pairing = "flip" if granularity == "pair" else "permutation"
  mixed = mixing.cutmix(key, x, jnp.arange(16) % 5, alpha=1.0, num_classes=5,
                        granularity=granularity, pairing=pairing, spatial_axes=axes)
  kept = np.mean(np.asarray(mixed.inputs) == np.asarray(x), axis=tuple(range(1, len(shape))))
  taken = np.mean(np.asarray(mixed.inputs) == np.asarray(x)[np.asarray(mixed.partner)],
                  axis=tuple(range(1, len(shape))))
  self_paired = np.asarray(mixed.partner) == np.arange(16)
  np.testing.assert_allclose(mixed.lam[~self_paired], kept[~self_paired], rtol=1e-6)
  np.testing.assert_allclose(kept[~self_paired] + taken[~self_paired], 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.sum(mixed.labels, -1), 1.0, rtol=1e-6)
  assert np.any(kept < 1)  # Some box was cut.


def test_cutmix_box_is_a_single_box_that_spans_the_channels(key):
  x = jnp.arange(8 * 16 * 16 * 3, dtype=jnp.float32).reshape(8, 16, 16, 3)
  mixed = mixing.cutmix(key, x, jnp.arange(8) % 2, alpha=1.0, num_classes=2)
  from_partner = np.asarray(mixed.inputs) != np.asarray(x)
  assert np.all(from_partner == from_partner[..., :1])  # Same mask for every channel.
  mask = from_partner[0, :, :, 0]
  rows, cols = np.nonzero(mask)
  assert rows.size  # This key cuts a box (lambda < 1, a non-empty cut).
  assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # A full rectangle.
  assert np.all(from_partner == from_partner[:1])  # Granularity "batch": one box for the batch.


def box_extents(taken: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(rows spanned, columns spanned, touches a border) of each example's taken region [N, H, W];
  asserts that every region is one full rectangle."""
  extents = []
  for region in taken:
    rows, cols = np.nonzero(region)
    if not rows.size:
      extents.append((0, 0, False))
      continue
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert region[top:bottom, left:right].all() and region.sum() == (bottom - top) * (right - left)
    touches = top == 0 or left == 0 or bottom == region.shape[0] or right == region.shape[1]
    extents.append((bottom - top, right - left, touches))
  rows, cols, touches = map(np.asarray, zip(*extents))
  return rows, cols, touches


def expected_clipped_length(cut: int, size: int) -> float:
  """E over a uniform centre c in {0, ..., size - 1} of the length of [c - cut // 2,
  c + cut // 2 + cut % 2) clipped to [0, size): the box law, enumerated."""
  centres = np.arange(size)
  high = np.minimum(centres + cut // 2 + cut % 2, size)
  low = np.maximum(centres - cut // 2, 0)
  return float(np.mean(high - low))


def test_cutmix_box_side_is_sqrt_one_minus_lambda_of_each_side():
  """Given lambda, the box has side floor(sqrt(1 - lambda) size) on each axis before clipping,
  and its taken area, averaged over the uniform centre, is the enumerated clipped area."""
  size, count = 32, 2000
  lam = np.random.default_rng(0).uniform(0.0, 1.0, count).astype(np.float32)
  keep = mixing.cutmix_mask(jax.random.key(4), jnp.asarray(lam), (count, size, size, 1), (1, 2))
  taken = 1.0 - np.asarray(keep)[..., 0]
  rows, cols, touches = box_extents(taken > 0)
  cut = np.floor(np.sqrt(1.0 - lam) * size).astype(int)
  inside = ~touches & (cut > 0)
  assert inside.sum() > count // 10
  np.testing.assert_array_equal(rows[inside], cut[inside])  # Unclipped boxes: the law exactly.
  np.testing.assert_array_equal(cols[inside], cut[inside])
  assert np.all(rows <= cut) and np.all(cols <= cut)  # Clipping only shrinks.
  expected = np.array([expected_clipped_length(c, size) ** 2 for c in cut]) / size ** 2
  difference = taken.mean(axis=(1, 2)) - expected
  assert abs(difference.mean()) < 4 * difference.std() / np.sqrt(count)
  # The law has teeth: a side of (1 - lambda) instead of its square root is far off.
  wrong_cut = np.floor((1.0 - lam) * size).astype(int)
  wrong = np.array([expected_clipped_length(c, size) ** 2 for c in wrong_cut]) / size ** 2
  assert abs((taken.mean(axis=(1, 2)) - wrong).mean()) > 20 * difference.std() / np.sqrt(count)


def test_cutmix_box_centre_is_uniform_over_every_position_and_a_sub_pixel_box_is_empty():
  """The centre is uniform over {0, ..., size - 1}, the first position included: a one-pixel box
  (cut = 1) on an axis of 8 lands on each position equally often. A box thinner than a pixel
  (cut = 0) takes nothing wherever its centre falls, the first position included.
  Mutants that fail it (checked by hand): the centre drawn from {1, ..., size - 1} (position 0
  never cut); the box's upper end clipped below at 1 (a one-pixel box at the corner when the cut
  is 0 and both centres are 0)."""
  count, size = 4000, 8
  lam = jnp.full((count,), 1.0 - 1.0 / size)  # cut = floor((1 - lambda) size) = 1 on one axis.
  keep = np.asarray(mixing.cutmix_mask(jax.random.key(5), lam, (count, size), (1,)))
  assert np.all(keep.sum(axis=1) == size - 1)
  counts = np.bincount(np.argmin(keep, axis=1), minlength=size)
  assert scipy.stats.chisquare(counts).pvalue > 1e-3
  # sqrt(1 - 0.999) * 8 < 1: cut = 0 on both axes; both centres are 0 for 1/64 of the examples.
  thin = mixing.cutmix_mask(jax.random.key(6), jnp.full((count,), 0.999), (count, size, size, 1),
                            (1, 2))
  np.testing.assert_array_equal(thin, 1.0)


def test_pair_granularity_cutmix_cuts_one_box_for_both_members_of_a_pair(key):
  """granularity='pair': i and its partner j(i) cut the same box with the same lambda (each
  keeps its own pixels outside it), and different pairs cut different boxes.
  Mutant that fails it (checked by hand): the pair branch never taken (`granularity == "PAIR"`:
  one box per example)."""
  x = jnp.arange(16 * 12 * 12, dtype=jnp.float32).reshape(16, 12, 12, 1)
  for pairing in ("flip", "matching"):
    mixed = mixing.cutmix(key, x, jnp.arange(16) % 2, alpha=1.0, num_classes=2,
                          granularity="pair", pairing=pairing)
    partner = np.asarray(mixed.partner)
    taken = np.asarray(mixed.inputs) != np.asarray(x)
    np.testing.assert_array_equal(taken, taken[partner])
    np.testing.assert_array_equal(mixed.lam, np.asarray(mixed.lam)[partner])
    assert taken.any() and len({region.tobytes() for region in taken}) > 2


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_mixed_inputs_keep_a_low_precision_float_dtype(dtype, key):
  """bfloat16 / float16 images stay in their dtype through every mixing op (the masks and
  lambdas are float32), so a mixed-precision input pipeline is not silently upcast.
  Mutant that fails it (checked by hand): CutMix's `.astype(inputs.dtype)` dropped."""
  x = jax.random.normal(key, (8, 6, 6, 3)).astype(dtype)
  labels = jnp.arange(8) % 4
  for op in (mixing.mixup, mixing.cutmix):
    assert op(key, x, labels, alpha=1.0, num_classes=4).inputs.dtype == dtype
  both = mixing.mixup_or_cutmix(key, x, labels, mixup_alpha=1.0, cutmix_alpha=1.0, num_classes=4)
  assert both.inputs.dtype == dtype


def test_uncorrected_cutmix_keeps_the_sampled_lambda_that_sets_the_box(key):
  """correct_lambda=False: the label weight is the sampled lambda ~ Beta(alpha, alpha), and the
  box cut for example i follows it (side floor(sqrt(1 - lambda_i) size) where unclipped)."""
  size, count = 24, 512
  x = jnp.arange(count * size * size, dtype=jnp.float32).reshape(count, size, size, 1)
  labels = jnp.zeros(count, jnp.int32)
  sampled = mixing.cutmix(key, x, labels, alpha=0.5, num_classes=2, granularity="example",
                          correct_lambda=False)
  corrected = mixing.cutmix(key, x, labels, alpha=0.5, num_classes=2, granularity="example")
  lam = np.asarray(sampled.lam)
  assert scipy.stats.kstest(lam, scipy.stats.beta(0.5, 0.5).cdf).pvalue > 1e-3
  np.testing.assert_array_equal(sampled.inputs, corrected.inputs)  # Same boxes, other weights.
  other = np.asarray(sampled.partner) != np.arange(count)  # Self-paired examples keep all.
  kept = np.mean(np.asarray(sampled.inputs) == np.asarray(x), axis=(1, 2, 3))
  np.testing.assert_allclose(corrected.lam[other], kept[other], rtol=1e-6)
  assert not np.allclose(lam[other], kept[other], atol=1e-3)
  assert np.all(kept >= lam - 1e-6)  # The box never takes more than 1 - lambda.
  rows, cols, touches = box_extents((np.asarray(sampled.inputs) != np.asarray(x))[..., 0])
  cut = np.floor(np.sqrt(1.0 - lam) * size).astype(int)
  inside = ~touches & (cut > 0) & other
  assert inside.sum() > count // 8
  np.testing.assert_array_equal(rows[inside], cut[inside])
  np.testing.assert_array_equal(cols[inside], cut[inside])


def test_mixup_or_cutmix_switches_with_the_given_probability():
  x = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
  labels = jnp.arange(4) % 2
  chose_cutmix = []
  for seed in range(200):
    mixed = mixing.mixup_or_cutmix(jax.random.key(seed), x, labels, mixup_alpha=1.0,
                                   cutmix_alpha=1.0, switch_prob=0.3, num_classes=2)
    # CutMix pixels are copies of the originals; Mixup pixels (lambda in (0, 1)) are blends.
    j = np.asarray(mixed.partner)
    is_copy = (mixed.inputs == x) | (mixed.inputs == x[j])
    chose_cutmix.append(bool(np.all(is_copy)))
  assert scipy.stats.binomtest(sum(chose_cutmix), 200, 0.3).pvalue > 1e-3


def test_same_key_same_batch_other_key_other_batch(key):
  x = jax.random.normal(key, (16, 4, 4, 1))
  labels = jnp.arange(16) % 4
  for op in (mixing.mixup, mixing.cutmix):
    a = op(key, x, labels, alpha=1.0, num_classes=4)
    b = op(key, x, labels, alpha=1.0, num_classes=4)
    c = op(jax.random.key(99), x, labels, alpha=1.0, num_classes=4)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a.inputs, c.inputs)


def test_shard_index_changes_pairing_but_not_the_batch_lambda(key):
  x = jax.random.normal(key, (16, 3))
  labels = jnp.arange(16) % 4
  a = mixing.mixup(key, x, labels, alpha=1.0, num_classes=4, shard_index=0)
  b = mixing.mixup(key, x, labels, alpha=1.0, num_classes=4, shard_index=1)
  np.testing.assert_array_equal(a.lam, b.lam)
  assert not np.array_equal(a.partner, b.partner)


def test_label_smoothing_and_soft_labels():
  labels = jnp.array([0, 2])
  smoothed = mixing.smooth_labels(mixing.to_soft_labels(labels, 4), 0.2)
  np.testing.assert_allclose(smoothed, [[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]],
                             rtol=1e-6)
  # Soft labels mix row by row with the example's lambda: with pairing "flip" (1 <-> 0),
  # y~_0 = lam [0.3, 0.7] + (1 - lam) [1, 0], y~_1 = lam [1, 0] + (1 - lam) [0.3, 0.7].
  soft = jnp.array([[0.3, 0.7], [1.0, 0.0]])
  mixed = mixing.mixup(jax.random.key(0), jnp.ones((2, 3)), soft, alpha=1.0, pairing="flip",
                       granularity="example", label_smoothing=0.1)
  lam0, lam1 = np.asarray(mixed.lam, np.float64)
  assert 0 < lam0 < 1 and 0 < lam1 < 1 and lam0 != lam1
  smooth_a, smooth_b = np.array([0.32, 0.68]), np.array([0.95, 0.05])  # 0.9 y + 0.1 / 2.
  np.testing.assert_allclose(mixed.labels, [lam0 * smooth_a + (1 - lam0) * smooth_b,
                                            lam1 * smooth_b + (1 - lam1) * smooth_a], rtol=1e-6)


@pytest.mark.parametrize("call,message", [
    (lambda: mixing.mixup(jax.random.key(0), jnp.zeros((4, 2)), jnp.zeros(4, jnp.int32),
                          alpha=-0.5, num_classes=2), r"alpha must be .* got -0.5"),
    (lambda: mixing.to_soft_labels(jnp.array([0, 1, 5]), 3), r"Label 5 is out of range.*3"),
    (lambda: mixing.to_soft_labels(jnp.array([-1, 1]), 3), r"Label -1 is out of range"),
    (lambda: mixing.to_soft_labels(jnp.array([0, 1]), None), r"need num_classes"),
    (lambda: mixing.pair_indices(jax.random.key(0), 4, "shuffle"), r"Unknown pairing 'shuffle'"),
    (lambda: mixing.sample_lambda(jax.random.key(0), 1.0, 4, "pixel"),
     r"Unknown granularity 'pixel'"),
    (lambda: mixing.pair_indices(jax.random.key(0), 5, "matching"), r"even batch size, got 5"),
    (lambda: mixing.smooth_labels(jnp.ones((2, 2)), 1.5), r"label_smoothing .* got 1.5"),
])
def test_bad_input_is_a_clear_error(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_no_mixing_is_the_identity_with_one_hot_labels():
  x = jnp.arange(12, dtype=jnp.uint8).reshape(4, 3)
  mixed = mixing.no_mixing(x, jnp.array([2, 0, 1, 2]), num_classes=3)
  assert mixed.inputs.dtype == jnp.float32
  np.testing.assert_array_equal(mixed.inputs, np.arange(12).reshape(4, 3))
  np.testing.assert_array_equal(mixed.labels, np.eye(3)[[2, 0, 1, 2]])
  np.testing.assert_array_equal(mixed.lam, np.ones(4))
  np.testing.assert_array_equal(mixed.partner, np.arange(4))
  assert mixed.lam.dtype == jnp.float32 and mixed.partner.dtype == jnp.int32
  with jax.enable_x64(True):  # The documented dtypes hold under x64 too.
    mixed = mixing.no_mixing(jnp.zeros((4, 3)), jnp.array([2, 0, 1, 2]), num_classes=3)
    assert mixed.lam.dtype == jnp.float32 and mixed.partner.dtype == jnp.int32


@pytest.mark.slow
def test_mixup_or_cutmix_defaults_and_options():
  """Defaults: CutMix half of the time, with the kept-area lambda. switch_prob 0 and 1 are
  allowed (always Mixup / always CutMix); label smoothing and the shard index reach both ops."""
  x = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
  labels = jnp.arange(4) % 2

  def is_cutmix(mixed):
    j = np.asarray(mixed.partner)
    return bool(np.all((mixed.inputs == x) | (mixed.inputs == x[j])))

  chose = [mixing.mixup_or_cutmix(jax.random.key(seed), x, labels, mixup_alpha=1.0,
                                  cutmix_alpha=1.0, num_classes=2) for seed in range(200)]
  assert scipy.stats.binomtest(sum(map(is_cutmix, chose)), 200, 0.5).pvalue > 1e-3
  for mixed in chose:
    if is_cutmix(mixed):
      kept = np.mean(np.asarray(mixed.inputs) == np.asarray(x), axis=(1, 2, 3))
      other = np.asarray(mixed.partner) != np.arange(4)
      np.testing.assert_allclose(np.asarray(mixed.lam)[other], kept[other], rtol=1e-6)
  for probability, expected in ((0.0, False), (1.0, True)):
    assert all(is_cutmix(mixing.mixup_or_cutmix(
        jax.random.key(seed), x, labels, mixup_alpha=1.0, cutmix_alpha=1.0,
        switch_prob=probability, num_classes=2)) == expected for seed in range(20))
  for probability in (-0.1, 1.5):
    with pytest.raises(ValueError, match=f"switch_prob must lie in \\[0, 1\\], got {probability}"):
      mixing.mixup_or_cutmix(jax.random.key(0), x, labels, mixup_alpha=1.0, cutmix_alpha=1.0,
                             switch_prob=probability, num_classes=2)
  mix_key = jax.random.split(jax.random.key(0))[1]  # The chosen op's key.
  for probability, op in ((0.0, mixing.mixup), (1.0, mixing.cutmix)):
    smoothed = mixing.mixup_or_cutmix(jax.random.key(0), x, labels, mixup_alpha=1.0,
                                      cutmix_alpha=1.0, switch_prob=probability, num_classes=2,
                                      label_smoothing=0.2)
    assert float(jnp.min(smoothed.labels)) >= 0.1 - 1e-6  # Every class keeps 0.2 / 2.
    alone = op(mix_key, x, labels, alpha=1.0, num_classes=2, label_smoothing=0.2)
    np.testing.assert_array_equal(smoothed.labels, alone.labels)
    unsmoothed = op(mix_key, x, labels, alpha=1.0, num_classes=2)
    assert not np.allclose(smoothed.labels, unsmoothed.labels)
  shards = [mixing.mixup_or_cutmix(jax.random.key(0), jnp.tile(x, (4, 1, 1, 1)),
                                   jnp.tile(labels, 4), mixup_alpha=1.0, cutmix_alpha=1.0,
                                   num_classes=2, shard_index=index) for index in (0, 1)]
  assert not np.array_equal(shards[0].partner, shards[1].partner)
  # Granularity, pairing, the lambda correction and the cut axes reach both ops.
  for probability in (0.0, 1.0):
    mixed = mixing.mixup_or_cutmix(jax.random.key(3), jnp.tile(x, (2, 1, 1, 1)),
                                   jnp.tile(labels, 2), mixup_alpha=1.0, cutmix_alpha=1.0,
                                   switch_prob=probability, num_classes=2, granularity="example",
                                   pairing="flip", correct_lambda=False, spatial_axes=(1,))
    np.testing.assert_array_equal(mixed.partner, np.arange(7, -1, -1))
    assert len(set(np.asarray(mixed.lam).tolist())) == 8  # One lambda per example, sampled.
    if probability:
      taken = np.asarray(mixed.inputs) != np.tile(np.asarray(x), (2, 1, 1, 1))
      assert np.all(taken == taken[:, :, :1])  # Cut along axis 1 only: whole rows.
      assert not np.allclose(mixed.lam, 1 - taken.mean(axis=(1, 2, 3)))  # Not the kept area.


def test_label_smoothing_bounds():
  labels = jnp.array([[0.0, 1.0], [1.0, 0.0]])
  np.testing.assert_array_equal(mixing.smooth_labels(labels, 0.0), labels)
  with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\), got 1.0"):
    mixing.smooth_labels(labels, 1.0)


def test_cutmix_options_reach_the_box_and_the_labels(key):
  """spatial_axes, pairing and label_smoothing reach CutMix's box and labels; the batch's box and
  lambda are shared by the shards, the pairing is not.
  Mutant that fails it (checked by hand): CutMix's labels not smoothed (`_prepare(..., None,
  ...)`), which a bound on the smallest label did not catch."""
  x = jnp.arange(8 * 6 * 6 * 1, dtype=jnp.float32).reshape(8, 6, 6, 1)
  labels = jnp.arange(8) % 2
  rows = mixing.cutmix(key, x, labels, alpha=1.0, num_classes=2, spatial_axes=(1,),
                       pairing="flip", label_smoothing=0.2)
  taken = np.asarray(rows.inputs) != np.asarray(x)
  assert taken.any() and np.all(taken == taken[:, :, :1])  # Whole rows: axis 1 only is cut.
  np.testing.assert_array_equal(rows.partner, np.arange(7, -1, -1))
  # Smoothed before mixing, by hand: y = 0.8 one_hot + 0.2 / 2, then lambda y_i + (1 - lambda) y_j.
  smoothed = 0.8 * np.eye(2)[np.asarray(labels)] + 0.1
  lam = np.asarray(rows.lam)[:, None]
  partner_labels = smoothed[np.asarray(rows.partner)]
  np.testing.assert_allclose(rows.labels, lam * smoothed + (1 - lam) * partner_labels, rtol=1e-6)
  # The batch's lambda and box are the same on every shard; the pairing differs. Per-example
  # lambdas differ per shard too.
  shards = [mixing.cutmix(key, x, labels, alpha=1.0, num_classes=2, shard_index=i) for i in (0, 1)]
  np.testing.assert_array_equal(shards[0].lam, shards[1].lam)
  assert not np.array_equal(shards[0].partner, shards[1].partner)
  taken = [np.asarray(s.inputs) != np.asarray(x)[np.asarray(s.partner)] for s in shards]
  np.testing.assert_array_equal(taken[0][0], taken[1][0])
  per_example = [mixing.cutmix(key, x, labels, alpha=1.0, num_classes=2, granularity="example",
                               correct_lambda=False, shard_index=i) for i in (0, 1)]
  assert not np.array_equal(per_example[0].lam, per_example[1].lam)
  for axes in [(), (4,), (0,)]:
    with pytest.raises(ValueError, match=r"spatial_axes .* must name axes in \[1, 3\]"):
      mixing.cutmix(key, x, labels, alpha=1.0, num_classes=2, spatial_axes=axes)


def test_mixup_and_cutmix_name_a_bad_granularity_or_pairing(key):
  """The ops check their choices before drawing anything, and the message names the argument.
  Mutants that fail it (checked by hand): `_prepare` naming the granularity or the pairing
  `None`, "XXgranularityXX" or "PAIRING" in its message."""
  x, labels = jnp.zeros((4, 4, 4, 1)), jnp.zeros(4, jnp.int32)
  for op in (mixing.mixup, mixing.cutmix):
    with pytest.raises(ValueError, match=r"^Unknown granularity 'pixel'; valid values are batch"):
      op(key, x, labels, alpha=1.0, num_classes=2, granularity="pixel")
    with pytest.raises(ValueError, match=r"^Unknown pairing 'shuffle'; valid values are perm"):
      op(key, x, labels, alpha=1.0, num_classes=2, pairing="shuffle")


def test_fixed_pairings_are_the_documented_partners_and_the_default_is_a_permutation(key):
  """"flip" is j = B - 1 - i and "roll" j = (i + 1) mod B (by hand); the default pairing is the
  random permutation of the same key. Mutants that fail it (checked by hand): roll's +1 as -1 or
  +2, the name "roll" misspelt (roll then falls through to a random matching), the default
  pairing misspelt."""
  np.testing.assert_array_equal(mixing.pair_indices(key, 5, "flip"), [4, 3, 2, 1, 0])
  np.testing.assert_array_equal(mixing.pair_indices(key, 6, "roll"), [1, 2, 3, 4, 5, 0])
  default = mixing.pair_indices(key, 6)
  np.testing.assert_array_equal(default, mixing.pair_indices(key, 6, "permutation"))
  assert sorted(default.tolist()) == list(range(6))
  mixed = mixing.mixup(key, jnp.arange(6.0)[:, None], jnp.arange(6) % 2, alpha=1.0,
                       num_classes=2, pairing="roll")
  np.testing.assert_array_equal(mixed.partner, [1, 2, 3, 4, 5, 0])


def test_sample_lambda_draws_one_lambda_per_batch_by_default(key):
  """The default granularity is "batch" (the paper's): the same draw as asking for it.
  Mutant that fails it (checked by hand): the default misspelt ("XXbatchXX", "BATCH")."""
  lam = mixing.sample_lambda(key, 1.0, 5)
  np.testing.assert_array_equal(lam, mixing.sample_lambda(key, 1.0, 5, "batch"))
  assert np.all(lam == lam[0]) and 0 < float(lam[0]) < 1


def test_per_example_lambdas_differ_between_shards_the_batch_lambda_does_not(key):
  """With granularity "example" or "pair" each shard draws its own lambdas (module docstring), so
  8 devices do not repeat one shard's 8 values; "batch" draws one lambda for every shard.
  Mutant that fails it (checked by hand): mixup drawing every granularity's lambdas from the
  batch-level key."""
  x, labels = jax.random.normal(key, (8, 3)), jnp.arange(8) % 4
  for granularity, pairing in (("example", "permutation"), ("pair", "matching")):
    shards = [mixing.mixup(key, x, labels, alpha=1.0, num_classes=4, granularity=granularity,
                           pairing=pairing, shard_index=i) for i in (0, 1)]
    assert not np.any(np.isin(shards[0].lam, shards[1].lam)), granularity
  batch = [mixing.mixup(key, x, labels, alpha=1.0, num_classes=4, shard_index=i) for i in (0, 1)]
  np.testing.assert_array_equal(batch[0].lam, batch[1].lam)


def test_soft_labels_are_checked_against_num_classes_on_the_class_axis():
  """Soft labels [B, C] with B != C pass when num_classes = C and fail, naming both, when not.
  Mutants that fail it (checked by hand): the check reading the batch axis (shape[-2]) or
  raising on a match (== for !=)."""
  soft = jnp.full((2, 5), 0.2)
  np.testing.assert_array_equal(mixing.to_soft_labels(soft, num_classes=5), soft)
  with pytest.raises(ValueError, match=r"Soft labels have 5 classes but num_classes=2"):
    mixing.to_soft_labels(soft, num_classes=2)


@pytest.mark.slow
def test_the_documented_dtypes_hold_under_x64(key):
  """lambda and the labels are float32, partners int32, integer inputs mix in float32, whatever
  JAX's default dtypes are (x64 makes them float64 and int64). Mutants that fail it (checked by
  hand): each `dtype=jnp.float32` / `jnp.int32` of sample_lambda (both branches), pair_indices'
  flip and roll, to_soft_labels (integer and soft labels) and as_floating dropped or None."""
  with jax.enable_x64(True):
    for alpha in (0.0, 1.0):
      for granularity in ("batch", "example"):
        assert mixing.sample_lambda(key, alpha, 4, granularity).dtype == jnp.float32
    for pairing in ("permutation", "matching", "flip", "roll"):
      assert mixing.pair_indices(key, 4, pairing).dtype == jnp.int32, pairing
    assert mixing.to_soft_labels(jnp.array([0, 1]), num_classes=2).dtype == jnp.float32
    assert mixing.to_soft_labels(jnp.eye(2, dtype=jnp.float64)).dtype == jnp.float32
    assert mixing.as_floating(np.zeros(2, np.uint8)).dtype == jnp.float32
    assert mixing.as_floating(np.zeros(2, np.float64)).dtype == jnp.float64
    mixed = mixing.mixup(key, jnp.zeros((4, 2), jnp.uint8), jnp.array([0, 1, 0, 1]), alpha=1.0,
                         num_classes=2, pairing="flip")
    dtypes = [mixed.inputs.dtype, mixed.labels.dtype, mixed.lam.dtype, mixed.partner.dtype]
    assert dtypes == [jnp.float32, jnp.float32, jnp.float32, jnp.int32], dtypes


def test_larger_share_folds_lambda_to_its_larger_half():
  """big_vision's lambda = max(lambda, 1 - lambda): with the same key, the folded lambdas are
  the plain ones folded by hand, and mixup's inputs follow them."""
  key = jax.random.key(3)
  plain = np.asarray(mixing.sample_lambda(key, 0.4, 64, "example"))
  folded = np.asarray(mixing.sample_lambda(key, 0.4, 64, "example", larger_share=True))
  np.testing.assert_array_equal(folded, np.maximum(plain, 1 - plain))
  assert (plain < 0.5).any() and (folded >= 0.5).all()
  x, y = jnp.arange(16.0).reshape(8, 2), jnp.arange(8) % 2
  mixed = mixing.mixup(key, x, y, alpha=0.4, num_classes=2, granularity="example",
                       larger_share=True)
  lam = np.asarray(mixed.lam)[:, None]
  assert (lam >= 0.5).all()
  np.testing.assert_allclose(mixed.inputs, lam * x + (1 - lam) * np.asarray(x)[mixed.partner])


@pytest.mark.parametrize("granularity", ["batch", "pair", "example"])
def test_prob_mixes_that_fraction_of_batches_pairs_or_examples(granularity):
  """timm's prob: a batch, pair or example is left unmixed (lambda = 1, its own clean label)
  with probability 1 - prob, decided as lambda is drawn (both members of a pair alike); over
  400 draws of 8 the unmixed fraction is 1 - prob within a binomial test; prob = 1 keeps the
  draws of the default, prob = 0 mixes nothing."""
  unmixed, trials = 0, 0
  for seed in range(400):
    key = jax.random.key(seed)
    partner = jnp.asarray([7, 6, 5, 4, 3, 2, 1, 0])
    lam = np.asarray(mixing.sample_lambda(key, 1.0, 8, granularity, partner, prob=0.3))
    units = {"batch": lam[:1], "pair": lam[:4], "example": lam}[granularity]
    unmixed += int((units == 1.0).sum())
    trials += len(units)
    if granularity == "pair":
      np.testing.assert_array_equal(lam, lam[np.asarray(partner)])
  assert scipy.stats.binomtest(unmixed, trials, 0.7).pvalue > 1e-3
  key = jax.random.key(0)
  np.testing.assert_array_equal(mixing.sample_lambda(key, 1.0, 8, "example", prob=1.0),
                                mixing.sample_lambda(key, 1.0, 8, "example"))
  assert (np.asarray(mixing.sample_lambda(key, 1.0, 8, "example", prob=0.0)) == 1).all()
  with pytest.raises(ValueError, match="prob must be a number in \\[0, 1\\], got 1.5"):
    mixing.sample_lambda(key, 1.0, 8, prob=1.5)


def test_prob_reaches_cutmix_and_the_switch():
  """With prob = 0 neither op mixes: the inputs and labels are the clean ones."""
  x, y = jax.random.normal(jax.random.key(0), (4, 8, 8, 3)), jnp.arange(4)
  for mixed in (mixing.cutmix(jax.random.key(1), x, y, alpha=1.0, num_classes=4, prob=0.0),
                mixing.mixup_or_cutmix(jax.random.key(1), x, y, mixup_alpha=1.0,
                                       cutmix_alpha=1.0, num_classes=4, prob=0.0)):
    np.testing.assert_array_equal(mixed.inputs, x)
    np.testing.assert_array_equal(mixed.labels, np.eye(4))


def _cut_band(row: np.ndarray) -> tuple[int, int]:
  """(start, length) of the one contiguous run of partner positions (value 1) in a 0/1 row."""
  inside = np.flatnonzero(row == 1)
  if inside.size == 0:
    return 0, 0
  assert np.array_equal(inside, np.arange(inside[0], inside[-1] + 1)), "the cut is not one band"
  return int(inside[0]), int(inside.size)


def test_box_minmax_draws_sides_uniformly_between_the_fractions():
  """timm's cutmix_minmax: a [B, 500] input cut along its one axis (own values 0, the partner's
  1, so the cut is visible): each cut is one band inside the row, its side fraction is uniform
  on [0.2, 0.6) (Kolmogorov-Smirnov over 2,000 examples; the same sides are far from
  U(0, 0.6), so the test has power), lambda is the kept area, and prob = 0.75 leaves a quarter
  of the examples uncut (binomial test)."""
  size, count = 500, 2000
  x = jnp.concatenate([jnp.zeros((count // 2, size)), jnp.ones((count // 2, size))])
  y = jnp.concatenate([jnp.zeros(count // 2, jnp.int32), jnp.ones(count // 2, jnp.int32)])
  mixed = mixing.cutmix(jax.random.key(5), x, y, alpha=1.0, num_classes=2,
                        granularity="example", pairing="flip", box_minmax=(0.2, 0.6), prob=0.75)
  partner_value = np.asarray(x)[np.asarray(mixed.partner), 0]
  own_value = np.asarray(x)[:, 0]
  # With pairing "flip" every example's partner holds the other value.
  assert (partner_value != own_value).all()
  cut_from_partner = (np.asarray(mixed.inputs) != own_value[:, None]).astype(int)
  sides = np.array([_cut_band(row)[1] for row in cut_from_partner])
  starts = np.array([_cut_band(row)[0] for row in cut_from_partner])
  cut = sides > 0
  assert scipy.stats.binomtest(int((~cut).sum()), count, 0.25).pvalue > 1e-3
  fractions = sides[cut] / size
  assert fractions.min() >= 0.2 and fractions.max() < 0.6
  assert (starts[cut] + sides[cut] <= size).all()
  assert scipy.stats.kstest(fractions, scipy.stats.uniform(0.2, 0.4).cdf).pvalue > 1e-3
  assert scipy.stats.kstest(fractions, scipy.stats.uniform(0.0, 0.6).cdf).pvalue < 1e-6
  np.testing.assert_allclose(mixed.lam, 1 - sides / size, atol=1e-6)
  np.testing.assert_allclose(mixed.labels[:, 0],
                             np.where(own_value == 0, 1 - sides / size, sides / size), atol=1e-6)


def test_box_minmax_cuts_a_rectangle_with_independent_sides_on_images():
  """On [B, 40, 30, 1] images the cut is one rectangle inside the image, each side within
  [floor(min S), floor(max S)) of its own axis, and lambda = 1 - area / (40 * 30)."""
  x = jnp.concatenate([jnp.zeros((32, 40, 30, 1)), jnp.ones((32, 40, 30, 1))])
  y = jnp.arange(64) % 2
  mixed = mixing.cutmix(jax.random.key(2), x, y, alpha=1.0, num_classes=2, pairing="flip",
                        granularity="example", box_minmax=(0.25, 0.75))
  own = np.asarray(x)[:, 0, 0, 0]
  cut = (np.asarray(mixed.inputs)[..., 0] != own[:, None, None]).astype(int)
  heights, widths = [], []
  for mask in cut:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert mask.sum() == rows.size * cols.size  # A full rectangle.
    heights.append(rows.size)
    widths.append(cols.size)
  heights, widths = np.array(heights), np.array(widths)
  assert heights.min() >= 10 and heights.max() < 30 and widths.min() >= 7 and widths.max() < 22
  assert len(set(zip(heights.tolist(), widths.tolist()))) > 20  # Not one shared side.
  np.testing.assert_allclose(mixed.lam, 1 - heights * widths / 1200, atol=1e-6)
  with pytest.raises(ValueError, match=r"box_minmax must satisfy 0 < min <= max <= 1"):
    mixing.cutmix(jax.random.key(2), x, y, alpha=1.0, num_classes=2, box_minmax=(0.5, 0.2))


@pytest.mark.parametrize("granularity", ["pair", "example"])
def test_switch_per_lambda_chooses_the_op_per_example(granularity):
  """timm's "elem" and "pair" modes: each example's (x~, y~, lambda, j) is the Mixup op's or
  the CutMix op's of the same key (each computed alone here), chosen per example (both members
  of a pair alike); over 40 batches of 16 the CutMix fraction is switch_prob = 0.3 within a
  binomial test, and both choices occur in one batch."""
  x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
  y = jnp.arange(16) % 4
  chosen_cutmix, both_in_one_batch = 0, False
  for seed in range(40):
    key = jax.random.key(seed)
    mixed = mixing.mixup_or_cutmix(key, x, y, mixup_alpha=1.0, cutmix_alpha=1.0,
                                   switch_prob=0.3, num_classes=4, granularity=granularity,
                                   pairing="matching", switch_per_lambda=True)
    mix_key = jax.random.split(key)[1]
    by_mixup = mixing.mixup(mix_key, x, y, alpha=1.0, num_classes=4, granularity=granularity,
                            pairing="matching")
    by_cutmix = mixing.cutmix(mix_key, x, y, alpha=1.0, num_classes=4, granularity=granularity,
                              pairing="matching")
    is_cutmix = []
    for i in range(16):
      as_cutmix = all(np.array_equal(a[i], b[i]) for a, b in zip(mixed, by_cutmix))
      as_mixup = all(np.array_equal(a[i], b[i]) for a, b in zip(mixed, by_mixup))
      assert as_cutmix or as_mixup, (seed, i)
      is_cutmix.append(as_cutmix and not as_mixup)
    is_cutmix = np.array(is_cutmix)
    if granularity == "pair":
      np.testing.assert_array_equal(is_cutmix, is_cutmix[np.asarray(mixed.partner)])
      chosen_cutmix += int(is_cutmix[np.arange(16) < np.asarray(mixed.partner)].sum())
    else:
      chosen_cutmix += int(is_cutmix.sum())
    both_in_one_batch |= bool(is_cutmix.any() and not is_cutmix.all())
  trials = 40 * (8 if granularity == "pair" else 16)
  assert both_in_one_batch
  assert scipy.stats.binomtest(chosen_cutmix, trials, 0.3).pvalue > 1e-3
