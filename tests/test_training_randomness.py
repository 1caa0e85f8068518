"""The properties of every random choice a training run makes, observed through the path training
uses (`losses.make_loss_fn` + `step.make_train_step` on a device mesh, `inputs.build_inputs` for
the data): each draw is reproducible (the same seed and step give it again, after a resume and
on another number of devices where the docs say so), fresh (it changes from step to step, from
epoch to epoch, and between devices where the docs say it does) and distributed as documented.

The model is a probe: linear logits of the flattened input, and a `jax.debug.callback` that hands
the host every input it is applied to (the mixed batch, the clean batch of the MixupE term, a
hidden layer's index). The batch is the identity, x_i = e_i, so a mixed row
lambda e_i + (1 - lambda) e_j(i) shows lambda and the partner j(i) directly.

Every test's docstring names the mutants of the library that break its property; the test was
run against each of them by hand and failed on an assertion (21 mutants in all).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from mixupe_jax import losses, parallel, regularizers
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train import step as step_lib
from mixupe_jax.train.defaults import default_config

NUM_CLASSES = 4


class Probe:
  """An apply function that records its inputs (and the hidden layer it is asked to mix at)."""

  couples_examples = False  # Linear in each example's own input.

  def __init__(self):
    self.calls: list[tuple[np.ndarray, int]] = []

  def __call__(self, params, model_state, inputs, hidden_layer=None, hidden_transform=None):
    x = inputs.reshape(inputs.shape[0], -1)
    if hidden_transform is not None:  # Every "layer" of the probe is its input.
      x = hidden_transform(x)
    layer = -1 if hidden_layer is None else hidden_layer
    jax.debug.callback(lambda value: self.calls.append((np.asarray(value), layer)), x)
    return x @ params["w"], model_state


def run_steps(method="mixup", *, devices=1, scope="global", steps=1, start_step=0, seed=0,
              batch=32, mixer="mixup", mixer_options=None, **loss_options):
  """The probe's records of `steps` training steps from `start_step` on `devices` devices: a list
  per step of (input, layer) in call order."""
  probe = Probe()
  mesh = parallel.data_mesh(jax.devices()[:devices])
  mixing = parallel.mixer_for_scope(
      losses.make_mixer(mixer, alpha=loss_options.get("alpha", 1.0), num_classes=NUM_CLASSES,
                        **(mixer_options or {})), mesh, scope)
  term_fraction = loss_options.get("term_fraction", 1.0)
  subsample = parallel.subsample_for_scope(
      functools.partial(regularizers.subsample_examples, fraction=term_fraction), mesh, scope)
  loss_fn = losses.make_loss_fn(method, apply_fn=probe, num_classes=NUM_CLASSES, mixer=mixing,
                                term_subsample=subsample, **loss_options)
  optimizer, schedule = optax.sgd(0.0), optax.constant_schedule(0.0)  # The draws, not learning.
  params = {"w": jnp.zeros((batch, NUM_CLASSES))}
  state = parallel.replicate(step_lib.TrainState(
      jnp.asarray(start_step, jnp.int32), params, {}, optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(seed))
  inputs = np.eye(batch, dtype=np.float32)
  labels = (np.arange(batch) % NUM_CLASSES).astype(np.int32)
  records = []
  for _ in range(steps):
    before = len(probe.calls)
    state, _ = train_step(state, *step_lib.global_batch((inputs, labels), mesh))
    jax.effects_barrier()
    records.append(probe.calls[before:])
  return records


def lambda_and_partner(mixed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(lambda_i, j(i)) of rows lambda e_i + (1 - lambda) e_j(i); lambda_i is NaN where j(i) = i
  (the row is e_i whatever lambda is)."""
  batch = len(mixed)
  own = mixed[np.arange(batch), np.arange(batch)]
  others = mixed.copy()
  others[np.arange(batch), np.arange(batch)] = 0
  partner = np.where(others.max(1) > 0, others.argmax(1), np.arange(batch))
  lam = np.where(partner != np.arange(batch), own, np.nan)
  return lam, partner


def batch_lambda(mixed: np.ndarray) -> float:
  """The batch's lambda; 1 where every row is its own input (lambda = 1 to float32 precision,
  which Beta(0.4, 0.4) draws now and then, looks like the identity pairing)."""
  lam, _ = lambda_and_partner(mixed)
  return 1.0 if np.all(np.isnan(lam)) else float(np.nanmedian(lam))


def mixed_inputs(records):
  return [calls[0][0] for calls in records]


# --- lambda ----------------------------------------------------------------------------------------


def test_lambda_is_fresh_every_step_beta_distributed_and_the_same_on_any_device_count():
  """Over 300 steps lambda ~ Beta(0.4, 0.4) (Kolmogorov-Smirnov at a fixed seed), differs between
  consecutive steps, and 8 devices with per-device pairing draw exactly the 1-device lambdas
  (it is a batch-level choice of the step's key).
  Mutants that fail it: the step key without the step (`fold_in(base_key, 0)` in
  `make_train_step`); lambda from the shard's key in `mixing.mixup` (differs per device); Beta(alpha,
  alpha + 1) in `sample_lambda`."""
  one = [batch_lambda(x) for x in mixed_inputs(run_steps(steps=300, alpha=0.4))]
  assert stats.kstest(one, stats.beta(0.4, 0.4).cdf).pvalue > 0.01
  assert all(a != b for a, b in zip(one, one[1:]))
  eight = mixed_inputs(run_steps(devices=8, scope="device", steps=20, alpha=0.4))
  for step, mixed in enumerate(eight):
    lam, _ = lambda_and_partner(mixed)
    np.testing.assert_allclose(lam[~np.isnan(lam)], one[step], rtol=1e-6)


def test_a_resumed_run_draws_what_the_uninterrupted_run_drew_at_that_step():
  """A fresh train step started from a state at step 7 (as after restoring a checkpoint) mixes
  exactly as the uninterrupted run's step 7; another seed mixes differently.
  Mutant that fails it: the step's key from a fixed key instead of the run's seed
  (`jax.random.key(0)` for `base_key` in `make_train_step`: every seed mixes alike)."""
  uninterrupted = mixed_inputs(run_steps(steps=9))
  resumed = mixed_inputs(run_steps(steps=2, start_step=7))
  np.testing.assert_array_equal(resumed[0], uninterrupted[7])
  np.testing.assert_array_equal(resumed[1], uninterrupted[8])
  other_seed = mixed_inputs(run_steps(steps=1, start_step=7, seed=1))
  assert not np.array_equal(other_seed[0], uninterrupted[7])


# --- the partner ---------------------------------------------------------------------------------


def test_partners_are_a_fresh_uniform_permutation_every_step():
  """Every step pairs by a permutation; consecutive steps' permutations differ; over 400 steps
  each partner j of example i turns up with frequency 1/B (chi-square over the B x B counts).
  Mutants that fail it: the step key without the step (`fold_in(base_key, 0)`: one permutation
  for every step); `pair_indices` rolling instead of permuting."""
  batch = 8
  partners = [lambda_and_partner(x)[1]
              for x in mixed_inputs(run_steps(steps=400, batch=batch))]
  counts = np.zeros((batch, batch))
  for partner in partners:
    np.testing.assert_array_equal(np.sort(partner), np.arange(batch))
    counts[np.arange(batch), partner] += 1
  assert sum(np.array_equal(a, b) for a, b in zip(partners, partners[1:])) <= 2
  assert stats.chisquare(counts.ravel()).pvalue > 0.01


def test_per_device_pairing_stays_in_each_shard_and_differs_between_devices():
  """With the device scope on 8 devices (4 rows each), every partner is in its own shard, and the
  shards' permutations are not all the same pattern (the shard index is folded into the key).
  Mutant that fails it: `_split_keys` ignoring `shard_index` (every device the same pattern)."""
  for mixed in mixed_inputs(run_steps(devices=8, scope="device", steps=10)):
    _, partner = lambda_and_partner(mixed)
    local = partner.reshape(8, 4) - 4 * np.arange(8)[:, None]
    assert np.all((local >= 0) & (local < 4))
    assert len({tuple(row) for row in local}) > 1


# --- CutMix: the box and the switch ------------------------------------------------------------------


def box_of(mixed: np.ndarray, side: int) -> np.ndarray:
  """Where row i took its partner's pixels, as [B, side, side] booleans (images x_i = i + 1)."""
  images = mixed.reshape(len(mixed), side, side)
  own = (np.arange(len(mixed)) + 1.0)[:, None, None]
  return images != own


def cutmix_records(devices=1, scope="global", steps=20, **options):
  side, batch = 8, 32
  probe_inputs = (np.arange(batch, dtype=np.float32) + 1)[:, None, None, None] * np.ones(
      (batch, side, side, 1), np.float32)
  return run_image_steps(probe_inputs, devices=devices, scope=scope, steps=steps, **options)


def run_image_steps(images, *, devices, scope, steps, mixer="cutmix", **options):
  """Like `run_steps`, for image inputs through a CutMix-type mixer."""
  probe = Probe()
  mesh = parallel.data_mesh(jax.devices()[:devices])
  mixing = parallel.mixer_for_scope(
      losses.make_mixer(mixer, alpha=1.0, num_classes=NUM_CLASSES, **options), mesh, scope)
  loss_fn = losses.make_loss_fn("mixup", apply_fn=probe, num_classes=NUM_CLASSES, mixer=mixing)
  optimizer, schedule = optax.sgd(0.0), optax.constant_schedule(0.0)
  params = {"w": jnp.zeros((int(np.prod(images.shape[1:])), NUM_CLASSES))}
  state = parallel.replicate(step_lib.TrainState(
      jnp.zeros((), jnp.int32), params, {}, optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(0))
  labels = (np.arange(len(images)) % NUM_CLASSES).astype(np.int32)
  records = []
  for _ in range(steps):
    before = len(probe.calls)
    state, _ = train_step(state, *step_lib.global_batch((images, labels), mesh))
    jax.effects_barrier()
    records.append(probe.calls[before][0])
  return records


@pytest.mark.slow
def test_the_cutmix_box_is_fresh_every_step_one_per_batch_and_the_same_on_every_device():
  """With batch granularity every example of a step cuts the same box (where its partner is not
  itself), the box moves from step to step, and on 8 devices with per-device pairing each step's
  box is the 1-device step's box (a batch-level choice, as the docs say).
  Mutants that fail it: the box key from the shard key in `mixing.cutmix` (boxes differ per
  device); the step key without the step (one box for every step)."""
  one = cutmix_records(steps=12)
  eight = cutmix_records(devices=8, scope="device", steps=12)
  boxes = []
  for mixed_one, mixed_eight in zip(one, eight):
    box_one, box_eight = box_of(mixed_one, 8), box_of(mixed_eight, 8)
    moved_one = box_one[box_one.any(axis=(1, 2))]
    assert all(np.array_equal(box, moved_one[0]) for box in moved_one)
    moved_eight = box_eight[box_eight.any(axis=(1, 2))]
    assert all(np.array_equal(box, moved_one[0]) for box in moved_eight)
    boxes.append(moved_one[0])
  assert sum(np.array_equal(a, b) for a, b in zip(boxes, boxes[1:])) <= 2


def test_the_mixup_or_cutmix_switch_is_drawn_afresh_with_its_probability():
  """Over 300 steps the share of CutMix steps (a hard box: pixels equal to the own or the
  partner's value) matches switch_prob = 0.3 (binomial test), and the choice is not constant.
  Mutants that fail it: `bernoulli(switch_key, 1 - switch_prob)` in `mixup_or_cutmix`; the switch
  from a fixed key."""
  records = cutmix_records(steps=300, mixer="mixup_or_cutmix", switch_prob=0.3)
  own = (np.arange(len(records[0])) + 1.0)[:, None]
  is_cutmix = []
  for mixed in records:
    values = mixed.reshape(len(mixed), -1)
    # CutMix copies whole pixels (integers here); Mixup blends them (lambda in (0, 1)).
    hard = np.allclose(values, np.round(values), atol=1e-4)
    is_cutmix.append(hard and not np.allclose(values, own))
  assert 0 < sum(is_cutmix) < len(is_cutmix)
  assert stats.binomtest(sum(is_cutmix), len(is_cutmix), 0.3).pvalue > 0.01


# --- the manifold layer ----------------------------------------------------------------------------


def test_the_manifold_layer_is_drawn_uniformly_from_the_listed_layers_each_step():
  """Manifold Mixup over layers (0, 1, 2): over 300 steps each layer is drawn a third of the time
  (chi-square), never another one, and the draw is not constant.
  Mutants that fail it: `randint(layer_key, (), 0, len(branches) - 1)` in `make_loss_fn` (the last
  layer never drawn); the layer key equal for every step."""
  layers = [calls[0][1] for calls in run_steps("manifold_mixup", steps=300,
                                                manifold_layers=(0, 1, 2))]
  counts = np.bincount(layers, minlength=3)
  assert set(layers) <= {0, 1, 2} and len(counts) == 3
  assert stats.chisquare(counts).pvalue > 0.01
  assert len(set(layers[:10])) > 1


# --- the term's subset -------------------------------------------------------------------------------


def term_rows(records):
  """The example indices of the clean rows the MixupE term was computed on, per step."""
  rows = []
  for calls in records:
    # Callbacks are not ordered; the subset is the call with fewer rows than the batch.
    (clean,) = [value for value, _ in calls if len(value) < value.shape[1]]
    rows.append(np.sort(clean.argmax(1)))
  return rows


def test_the_term_subset_takes_each_example_with_probability_rho_fresh_every_step():
  """term_fraction rho = 0.25 on a batch of 32: every step the clean pass sees 8 distinct examples;
  over 300 steps each example is taken with frequency rho (chi-square of the 32 counts against
  300 rho each), and consecutive subsets differ.
  Mutants that fail it: the subset's key fixed (`jax.random.key(0)` for `fold_in(key, 2)` in
  `make_loss_fn`); `permutation(...)[:k]` replaced by the first k rows in `subsample_examples`."""
  rows = term_rows(run_steps("mixupe", steps=300, variant="v3", eta=1.0, term_fraction=0.25))
  counts = np.zeros(32)
  for chosen in rows:
    assert len(chosen) == len(set(chosen)) == 8
    counts[chosen] += 1
  assert stats.chisquare(counts).pvalue > 0.01
  np.testing.assert_allclose(counts.mean() / 300, 0.25)
  assert sum(np.array_equal(a, b) for a, b in zip(rows, rows[1:])) <= 2


def test_per_device_term_subsets_differ_between_devices_and_stay_in_each_shard():
  """With the device scope on 8 devices (4 rows each, rho = 0.5: 2 per device) each device takes
  rows of its own shard, and not every device takes the same local rows.
  Mutant that fails it: `subsample_examples` ignoring `shard_index`."""
  for chosen in term_rows(run_steps("mixupe", devices=8, scope="device", steps=10, variant="v3",
                                    eta=1.0, term_fraction=0.5)):
    shards = chosen // 4
    np.testing.assert_array_equal(np.bincount(shards, minlength=8), [2] * 8)
    assert len({tuple(chosen[shards == s] - 4 * s) for s in range(8)}) > 1


# --- the data: order, augmentation, dropout -----------------------------------------------------------


def array_inputs(tmp_path, *, augment="none", seed=0, batch=8, rows=32):
  """`inputs.build_inputs` of an npz of `rows` distinct 8x8 images (pixel value = index)."""
  images = np.zeros((rows, 8, 8, 3), np.uint8)
  images[:, 2:6, 1:4] = (np.arange(rows) + 1)[:, None, None, None]
  images[:, 0, 0] = (np.arange(rows) + 1)[:, None]
  labels = np.arange(rows) % NUM_CLASSES
  path = tmp_path / "images.npz"
  if not path.exists():
    np.savez(path, x_train=images, y_train=labels, x_test=images[:8], y_test=labels[:8])
  config = default_config()
  config.dataset, config.augment, config.seed, config.crop_padding = f"npz:{path}", augment, seed, 2
  return inputs_lib.build_inputs(config, local_batch_size=batch, local_eval_batch_size=8,
                                 process_index=0, process_count=1)


def epoch_orders(data, epochs=3, steps_per_epoch=4):
  stream = data.train_batches(0)
  orders = []
  for _ in range(epochs):
    labels_and_ids = [next(stream) for _ in range(steps_per_epoch)]
    orders.append(np.concatenate([batch[0].reshape(len(batch[0]), -1).max(1)
                                  for batch in labels_and_ids]))
  return orders


def test_each_epoch_is_a_fresh_permutation_reproduced_by_seed_and_resume(tmp_path):
  """Every epoch visits each example once; epochs are ordered differently; the same seed gives the
  same order, another seed another; the stream resumed at step 5 continues the uninterrupted one.
  Mutants that fail it: one shuffled epoch repeated (`stream[i % len(stream)]` over a single
  shuffle: epochs equal); the seed ignored (`shuffle(seed=0)`: seeds equal)."""
  orders = epoch_orders(array_inputs(tmp_path))
  for order in orders:
    assert len(set(np.round(order, 4))) == 32
  assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
  np.testing.assert_array_equal(epoch_orders(array_inputs(tmp_path))[2], orders[2])
  assert not np.array_equal(epoch_orders(array_inputs(tmp_path, seed=1))[0], orders[0])
  stream = array_inputs(tmp_path).train_batches(0)
  uninterrupted = [next(stream)[0] for _ in range(7)]
  resumed = array_inputs(tmp_path).train_batches(5)
  np.testing.assert_array_equal(next(resumed)[0], uninterrupted[5])


def test_augmentation_is_reproducible_and_fresh_for_the_same_example_each_epoch(tmp_path):
  """Pad-crop-flip: the same seed and step give the same augmented batch; one example's crops
  differ across 6 epochs (its pixels move), and the batches of a run resumed at step 6 equal the
  uninterrupted run's.
  Mutant that fails it: the augmentation's generator fixed (`np.random.default_rng(0)` for the
  `rng` that `random_map` passes: an example is cropped the same way every epoch)."""
  first, again = (array_inputs(tmp_path, augment="crop_flip").train_batches(0) for _ in range(2))
  batches = [next(first) for _ in range(24)]
  np.testing.assert_array_equal(next(again)[0], batches[0][0])
  last_example = np.max([images.max() for images, _ in batches])  # Its block is the brightest.
  crops = [np.round(image, 5).tobytes() for images, _ in batches for image in images
           if np.isclose(image.max(), last_example)]
  assert len(crops) >= 6 and len(set(crops)) > 1
  resumed = array_inputs(tmp_path, augment="crop_flip").train_batches(6)
  np.testing.assert_array_equal(next(resumed)[0], batches[6][0])


def test_dropout_masks_are_fresh_every_step_and_replayed_after_a_resume():
  """A dropout layer's masks (its key lives in the model state) change every step; restarting
  from the state after step 3 (as a checkpoint restores it) gives the uninterrupted run's mask at
  step 4.
  Mutant that fails it: `dropout_rngs` returning the state without advancing its key (every step
  the same mask)."""
  import flax.linen as nn
  from mixupe_jax.models import flax_apply_fn, init_model

  masks = []

  class DropoutProbe(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
      kept = nn.Dropout(0.5, deterministic=not train)(jnp.ones_like(x))
      jax.debug.callback(lambda value: masks.append(np.asarray(value)), kept)
      return nn.Dense(NUM_CLASSES)(x * kept)

  module = DropoutProbe()
  x = np.eye(16, dtype=np.float32)
  labels = (np.arange(16) % NUM_CLASSES).astype(np.int32)
  params, model_state = init_model(module, jax.random.key(0), x[:1], jax.random.key(1))
  masks.clear()
  mesh = parallel.data_mesh(jax.devices()[:1])
  loss_fn = losses.make_loss_fn("erm", apply_fn=flax_apply_fn(module), num_classes=NUM_CLASSES)
  optimizer, schedule = optax.sgd(0.0), optax.constant_schedule(0.0)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(2))
  state = parallel.replicate(step_lib.TrainState(jnp.zeros((), jnp.int32), params, model_state,
                                                 optimizer.init(params)), mesh)
  states = []
  for _ in range(5):
    states.append(jax.tree.map(np.asarray, state))  # The step donates its input state.
    state, _ = train_step(state, *step_lib.global_batch((x, labels), mesh))
    jax.effects_barrier()
  uninterrupted = list(masks)
  assert len(uninterrupted) == 5
  assert all(not np.array_equal(a, b) for a, b in zip(uninterrupted, uninterrupted[1:]))
  masks.clear()
  train_step(parallel.replicate(states[4], mesh), *step_lib.global_batch((x, labels), mesh))
  jax.effects_barrier()
  np.testing.assert_array_equal(masks[0], uninterrupted[4])


@pytest.mark.parametrize("devices", [1, 8])
def test_the_global_scope_draws_the_same_mixing_on_any_device_count(devices):
  """With the global scope the mixed batch of every step is the same on 1 and on 8 devices (the
  documented topology-free scope).
  Mutant that fails it: `mixer_for_scope` returning the per-device mixer for "global"."""
  reference = mixed_inputs(run_steps(steps=3))
  for step, mixed in enumerate(mixed_inputs(run_steps(devices=devices, steps=3))):
    np.testing.assert_allclose(mixed, reference[step], rtol=1e-6)


# --- the run's keys ---------------------------------------------------------------------------------


def test_a_run_s_keys_come_from_its_seed_alone_one_stream_each():
  """`step.run_keys`: the same seed gives the same keys; the init, dropout and step keys differ
  from each other and from every other seed's (20 seeds: 60 distinct keys), so no two random
  choices of a run, or two runs, share a stream; without dropout there is no dropout key, and the
  other two stay as they were. `loop.set_up` trains with them: its step key, its dropout state.
  Mutants that fail it: the step key equal to the init key (`split(...)` unpacked twice into
  init); the dropout key the init key itself (no fold_in); the seed ignored (`key(0)`); set_up's
  step key, or its dropout key, replaced by the init key."""
  from mixupe_jax.models.apply import DROPOUT_RNG
  from mixupe_jax.train import loop

  def data(keys):
    return [None if k is None else np.asarray(jax.random.key_data(k)).tobytes() for k in keys]

  runs = {seed: data(step_lib.run_keys(seed, dropout=True)) for seed in range(20)}
  assert data(step_lib.run_keys(3, dropout=True)) == runs[3]
  # The documented derivation, which the committed runs with dropout were trained with (a change
  # of its constants would change them; mutant that fails it: fold_in(init, 2)).
  init, step = jax.random.split(jax.random.key(3))
  assert runs[3] == data([init, jax.random.fold_in(init, 1), step])
  assert len({key for keys in runs.values() for key in keys}) == 60
  without = data(step_lib.run_keys(3, dropout=False))
  assert without[1] is None and without[::2] == runs[3][::2]

  config = default_config()
  config.seed = 3
  config.model = dict(config.model, dropout_rate=0.5)
  experiment = loop.set_up(config)
  assert data([experiment.step_key]) == [runs[3][2]]
  dropout_state = np.asarray(jax.device_get(experiment.state.model_state[DROPOUT_RNG]))
  assert dropout_state.tobytes() == runs[3][1]


def test_the_training_path_mixes_the_fraction_of_batches_that_prob_says():
  """`mixer_options={"prob": 0.25}` through `make_mixer`, the loss and the train step: over 120
  steps the mixed batch equals the clean batch (the identity: nothing mixed) in about 3/4 of the
  steps (binomial test), and with larger_share every mixed row keeps at least half of itself."""
  records = run_steps(steps=120, mixer_options={"prob": 0.25, "larger_share": True})
  unmixed = 0
  for (mixed, _), *_ in records:
    if np.array_equal(mixed, np.eye(len(mixed))):
      unmixed += 1
    else:
      assert np.all(np.max(mixed, axis=1) >= 0.5 - 1e-6)
  assert stats.binomtest(unmixed, 120, 0.75).pvalue > 1e-3
