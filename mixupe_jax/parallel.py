"""Data parallelism with `jax.jit` over a device `Mesh`: batch sharded, parameters replicated.

Under `jax.jit`, a loss of a batch-sharded array is the loss of the GLOBAL batch: XLA inserts the
collectives (the mean over the batch, BatchNorm's batch statistics, a permutation that pairs
examples across devices), so the result equals the single-device one up to float reassociation.
`mix_per_shard` instead mixes within each device's shard (no cross-device traffic for the pairing).

The mixing scope (`config.mixing_scope`, `mixer_for_scope`)::

  "global"  pairs across the global batch: the run is the same on any number of devices, but the
            compiled step gathers the whole batch (inputs and labels) onto every device, which
            grows with the pod (616 MB per device and step for ImageNet at batch 1024).
  "device"  pairs within each device's shard (`mix_per_shard`): no gather; lambda (granularity
            "batch"), the CutMix box and the Mixup/CutMix switch are the same on every device, the
            permutation differs per device. The run then depends on the number of devices, as the
            pairs do.
  "group"   (the default) pairs within consecutive groups of `mixing_group_size` (G) examples
            of the global batch (`mix_per_group`): group g draws its pairing from the key and g
            alone, so the run is the same on every device count whose per-device batch is a
            multiple of G, and as long as each device holds whole groups nothing is gathered.
            lambda (granularity "batch"), the CutMix box and the switch are the batch's, as for
            "device". With pairing "permutation" an example is its own partner with probability
            1/G (1/B for "global").
  "auto"    "device" on more than one device, else "global" (the same thing there).
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mixupe_jax import mixing

DATA_AXIS = "data"


def data_mesh(devices: Any = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str = DATA_AXIS) -> NamedSharding:
  """Leading (batch) axis split over the mesh, other axes whole."""
  return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_divisible(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the mesh's devices."""
  if batch_size % mesh.size:
    raise ValueError(
      f"The batch size {batch_size} is not divisible by the number of devices "
      f"{mesh.size}; choose a batch size that is a multiple of {mesh.size}."
    )


def shard_batch(tree: Any, mesh: Mesh, axis_name: str = DATA_AXIS) -> Any:
  """Places a host-global batch (every leaf [B, ...]) batch-sharded on the mesh (one process)."""
  for leaf in jax.tree.leaves(tree):
    check_divisible(leaf.shape[0], mesh)
  return jax.device_put(tree, batch_sharding(mesh, axis_name))


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated_sharding(mesh))


MIXING_SCOPES = ("auto", "device", "global", "group")


def resolve_mixing_scope(scope: str, mesh: Mesh) -> str:
  """ "device" or "global" for a config's scope on `mesh` (see above)."""
  if scope not in MIXING_SCOPES:
    raise ValueError(f"Unknown mixing_scope {scope!r}; valid: {', '.join(MIXING_SCOPES)}.")
  if scope == "auto":
    return "device" if mesh.size > 1 else "global"
  return scope


def check_group_size(batch_size: int, mesh: Mesh, group_size: int) -> None:
  """Each device must hold whole mixing groups: (batch_size / devices) % group_size == 0."""
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"mixing_group_size must be an integer >= 1, got {group_size!r}.")
  check_divisible(batch_size, mesh)
  per_device = batch_size // mesh.size
  if per_device % group_size:
    raise ValueError(
      f"The per-device batch {per_device} (batch size {batch_size} over {mesh.size} devices) is "
      f"not a multiple of mixing_group_size {group_size}; each device must hold whole mixing "
      f"groups: use a batch size that is a multiple of {group_size * mesh.size}, fewer devices, "
      "a smaller mixing_group_size, or mixing_scope='device' (pairs per device)."
    )


def mixer_for_scope(
  mixer: Any, mesh: Mesh, scope: str, axis_name: str = DATA_AXIS, group_size: int | None = None
):
  """`mixer` itself for the global scope; for the device scope, `mix_per_shard` with partner
  indices into the global batch (so that mixing hidden features, which the model computes for
  the global batch, pairs the same examples); for the group scope, `mix_per_group` with groups of
  `group_size`."""
  resolved = resolve_mixing_scope(scope, mesh)
  if resolved == "global":
    return mixer
  if resolved == "group":
    if group_size is None:
      raise ValueError("mixing_scope 'group' needs mixing_group_size.")
    return mix_per_group(mixer, mesh, group_size, axis_name)
  return mix_per_shard(mixer, mesh, axis_name, global_partner=True)


def mix_per_shard(
  mixer: Any, mesh: Mesh, axis_name: str = DATA_AXIS, *, global_partner: bool = False
):
  """Runs `mixer(key, inputs, labels, shard_index=...)` on each device's shard via shard_map.

  The key is the same on every device, so batch-level choices (lambda for granularity "batch",
  the CutMix box, the Mixup/CutMix switch) are the same everywhere; the pairing, and per-example
  lambdas, differ per shard (the shard index is folded into their key). Partner indices are local
  to the shard, or, with `global_partner`, indices into the global batch (shard offset added).
  """
  sharded = PartitionSpec(axis_name)

  def per_shard(key, inputs, labels):
    shard_index = jax.lax.axis_index(axis_name)
    mixed = mixer(key, inputs, labels, shard_index=shard_index)
    if global_partner:
      mixed = mixed._replace(partner=mixed.partner + shard_index * inputs.shape[0])
    return mixed

  return jax.shard_map(
    per_shard,
    mesh=mesh,
    in_specs=(PartitionSpec(), sharded, sharded),
    # A MixedBatch of partition specs: the same tree as the mixer's output.
    out_specs=mixing.MixedBatch(*(cast(Any, sharded),) * 4),
  )


def _grouped(array: jax.Array, group_size: int) -> jax.Array:
  return array.reshape((array.shape[0] // group_size, group_size) + array.shape[1:])


def _ungrouped(array: jax.Array) -> jax.Array:
  return array.reshape((array.shape[0] * array.shape[1],) + array.shape[2:])


def _per_group(function: Any, mesh: Mesh, group_size: int, axis_name: str, out_specs: Any):
  """shard_map of function(key, inputs, labels, group_index) vmapped over each device's groups;
  group g of the global batch is told its global index g (the device's first group plus the
  local one), so its draws do not depend on how many devices there are."""
  sharded = PartitionSpec(axis_name)

  def per_shard(key, inputs, labels):
    per_device = inputs.shape[0]
    check_group_size(per_device * mesh.size, mesh, group_size)
    groups = per_device // group_size
    first = jax.lax.axis_index(axis_name) * groups
    indices = first + jnp.arange(groups)
    outputs = jax.vmap(lambda index, x, y: function(key, x, y, index))(
      indices, _grouped(inputs, group_size), _grouped(labels, group_size)
    )
    return jax.tree.map(_ungrouped, outputs)

  return jax.shard_map(
    per_shard, mesh=mesh, in_specs=(PartitionSpec(), sharded, sharded), out_specs=out_specs
  )


def mix_per_group(mixer: Any, mesh: Mesh, group_size: int, axis_name: str = DATA_AXIS):
  """Pairs within consecutive groups of `group_size` examples of the global batch.

  Group g (examples g G .. g G + G - 1 of the global batch) runs
  `mixer(key, inputs_g, labels_g, shard_index=g)`: the key is the same for every group, so the
  batch-level choices (lambda for granularity "batch", the CutMix box, the switch) are the
  batch's, and the pairing (and per-pair or per-example lambdas) is drawn from the key and g
  alone. The partner indices point into the global batch. On any mesh whose devices each hold
  whole groups the result is the same, and the pairing gathers nothing across devices.
  """
  sharded = cast(Any, PartitionSpec(axis_name))

  def one_group(key, inputs, labels, group_index):
    mixed = mixer(key, inputs, labels, shard_index=group_index)
    return mixed._replace(partner=mixed.partner + group_index * inputs.shape[0])

  return _per_group(one_group, mesh, group_size, axis_name, mixing.MixedBatch(*(sharded,) * 4))


def subsample_per_group(subsample: Any, mesh: Mesh, group_size: int, axis_name: str = DATA_AXIS):
  """Runs `subsample(key, inputs, labels, shard_index=g)` (e.g.
  `regularizers.subsample_examples`) on each group g of `group_size` examples: every group keeps
  round(rho G) of its rows, drawn from the key and g alone, so the subset is the same on any mesh
  whose devices hold whole groups, and every example still enters with probability round(rho G)
  / G."""
  sharded = PartitionSpec(axis_name)

  def one_group(key, inputs, labels, group_index):
    return subsample(key, inputs, labels, shard_index=group_index)

  return _per_group(one_group, mesh, group_size, axis_name, (sharded, sharded))


def subsample_per_shard(subsample: Any, mesh: Mesh, axis_name: str = DATA_AXIS):
  """Runs `subsample(key, inputs, labels, shard_index=...)` (e.g.
  `regularizers.subsample_examples`) on each device's shard via shard_map: every device keeps
  round(rho b) of its own b rows (the shard index folded into the key), so the clean pass of the
  subset stays sharded and nothing is gathered. Every example still enters with probability rho."""
  sharded = PartitionSpec(axis_name)

  def per_shard(key, inputs, labels):
    return subsample(key, inputs, labels, shard_index=jax.lax.axis_index(axis_name))

  return jax.shard_map(
    per_shard, mesh=mesh, in_specs=(PartitionSpec(), sharded, sharded), out_specs=(sharded, sharded)
  )


def subsample_for_scope(
  subsample: Any,
  mesh: Mesh,
  scope: str,
  axis_name: str = DATA_AXIS,
  group_size: int | None = None,
):
  """Like `mixer_for_scope`: the global subset for the global scope (the same rows on any number
  of devices), per device for the device scope, per group for the group scope."""
  resolved = resolve_mixing_scope(scope, mesh)
  if resolved == "global":
    return subsample
  if resolved == "group":
    if group_size is None:
      raise ValueError("mixing_scope 'group' needs mixing_group_size.")
    return subsample_per_group(subsample, mesh, group_size, axis_name)
  return subsample_per_shard(subsample, mesh, axis_name)
