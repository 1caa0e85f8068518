"""Data parallelism on 8 simulated CPU devices (set in conftest.py before jax is imported)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mixupe_jax import losses, mixing, parallel
from mixupe_jax.models import flax_apply_fn


def test_a_batch_is_split_in_order_over_all_eight_devices():
  """data_mesh() spans every device (conftest.py sets 8 simulated ones) and shard_batch gives
  device k the examples [2k, 2k + 2) of a 16-example batch, in the mesh's device order; the
  replicated parameters are whole on every device."""
  mesh = parallel.data_mesh()
  assert mesh.size == 8 and list(mesh.devices) == jax.devices()
  batch = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "y": np.arange(16)}
  sharded = parallel.shard_batch(batch, mesh)
  for leaf, expected in ((sharded["x"], batch["x"]), (sharded["y"], batch["y"])):
    shards = sorted(leaf.addressable_shards, key=lambda shard: list(mesh.devices).index(shard.device))
    assert len(shards) == 8
    for k, shard in enumerate(shards):
      np.testing.assert_array_equal(shard.data, expected[2 * k:2 * k + 2])
  replicated = parallel.replicate(jnp.arange(5.0), mesh)
  assert all(np.array_equal(shard.data, np.arange(5.0)) for shard in replicated.addressable_shards)
  assert len(replicated.addressable_shards) == 8


@pytest.mark.parametrize("variant", ["v1", "v3"])
@pytest.mark.slow
def test_sharded_mixupe_loss_and_gradient_equal_single_device(variant, make):
  key = jax.random.key(0)
  inputs = jax.random.normal(key, (16, 8, 8, 1))
  labels = jnp.arange(16) % 3
  module, params, state = make("cnn", key, inputs, 3)
  loss_fn = losses.make_loss_fn("mixupe", apply_fn=flax_apply_fn(module), num_classes=3,
                                alpha=1.0, eta=0.5, variant=variant, threshold=1.0,
                                x_bar=jnp.mean(inputs, 0))
  value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  step_key = jax.random.key(5)

  one_device = jax.devices()[0]
  single = value_and_grad(*jax.device_put((params, state, inputs, labels), one_device), step_key)

  mesh = parallel.data_mesh()
  sharded_inputs, sharded_labels = parallel.shard_batch((inputs, labels), mesh)
  assert sharded_inputs.sharding.spec == PartitionSpec("data")
  assert {shard.data.shape for shard in sharded_inputs.addressable_shards} == {(2, 8, 8, 1)}
  assert len({shard.device for shard in sharded_inputs.addressable_shards}) == 8
  replicated_params, replicated_state = parallel.replicate((params, state), mesh)
  sharded = value_and_grad(replicated_params, replicated_state, sharded_inputs, sharded_labels,
                           step_key)

  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, sharded, single)
  assert jax.tree.leaves(sharded[1])[0].sharding.is_fully_replicated


def test_mixing_per_shard_pairs_within_shards_with_one_lambda(key):
  mesh = parallel.data_mesh()
  inputs = jnp.arange(32 * 3, dtype=jnp.float32).reshape(32, 3)
  labels = jnp.arange(32) % 4
  mixer = functools.partial(mixing.mixup, alpha=1.0, num_classes=4)
  per_shard = jax.jit(parallel.mix_per_shard(mixer, mesh))
  mixed = per_shard(key, *parallel.shard_batch((inputs, labels), mesh))
  assert mixed.inputs.sharding.spec == PartitionSpec("data")
  np.testing.assert_array_equal(mixed.lam, mixed.lam[0])  # Same lambda on every device.
  chunks = [mixer(key, inputs[4 * i:4 * i + 4], labels[4 * i:4 * i + 4], shard_index=i)
            for i in range(8)]
  np.testing.assert_allclose(mixed.inputs, jnp.concatenate([c.inputs for c in chunks]), rtol=1e-6)
  np.testing.assert_array_equal(mixed.partner, jnp.concatenate([c.partner for c in chunks]))
  assert len({tuple(np.asarray(c.partner)) for c in chunks}) > 1  # Pairings differ per shard.


def test_batch_not_divisible_by_device_count_is_a_clear_error():
  mesh = parallel.data_mesh()
  with pytest.raises(ValueError, match=r"batch size 12 is not divisible by the number of "
                                       r"devices 8"):
    parallel.shard_batch(jnp.zeros((12, 3)), mesh)
