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
  if rows.size:
    assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # A full rectangle.
  assert np.all(from_partner == from_partner[:1])  # Granularity "batch": one box for the batch.


def test_uncorrected_cutmix_keeps_the_sampled_lambda(key):
  x = jnp.zeros((8, 9, 9, 1))
  corrected = mixing.cutmix(key, x, jnp.zeros(8, jnp.int32), alpha=1.0, num_classes=2)
  sampled = mixing.cutmix(key, x, jnp.zeros(8, jnp.int32), alpha=1.0, num_classes=2,
                          correct_lambda=False)
  expected = mixing.sample_lambda(jax.random.split(jax.random.split(key)[0])[0], 1.0, 8)
  np.testing.assert_allclose(sampled.lam, expected)
  assert not np.allclose(sampled.lam, corrected.lam)


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
  soft = jnp.array([[0.3, 0.7], [1.0, 0.0]])
  mixed = mixing.mixup(jax.random.key(0), jnp.ones((2, 3)), soft, alpha=1.0)
  np.testing.assert_allclose(np.sum(mixed.labels, -1), 1.0, rtol=1e-6)


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
