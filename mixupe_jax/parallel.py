"""Data parallelism with `jax.jit` over a device `Mesh`: batch sharded, parameters replicated.

Two forms of the same computation:

  global     Under `jax.jit`, a loss of a batch-sharded array is the loss of the GLOBAL batch: XLA
             inserts the collectives (the mean over the batch, BatchNorm's batch statistics, a
             permutation that pairs examples across devices), so the result equals the
             single-device one up to float reassociation. `mix_per_shard` and `mix_per_group`
             mix within a device's shard or a group (no cross-device traffic for the pairing).
  per shard  Inside `jax.shard_map` over the batch's axis, each device computes on its shard and
             reduces over the axis where the global batch is meant (`batch_mean`, `across`;
             BatchNorm's `axis_name`); `shard_mixer` and `shard_subsample` pair and subsample
             within the shard. The train step's per-shard form (`train.step`) differentiates
             this and all-reduces the gradient once; `step_axis` says where the training system
             uses it.

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

from collections.abc import Callable
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


def step_axis(mesh: Mesh, scope: str, axis_name: str = DATA_AXIS) -> str | None:
  """The axis over which a train step computes its loss per shard (`make_loss_fn(axis_name=...)`,
  one gradient all-reduce), or None for the global form (XLA partitions the loss of the global
  batch). Per shard wherever the batch is split over several devices and pairs stay within a
  device or group; the global form on one device, where both forms are one program without
  collectives (and the runs stored before the per-shard form are reproduced bit for bit), and
  for the "global" scope, which pairs across the whole batch and so gathers it anyway.

  >>> from mixupe_jax import parallel
  >>> import jax
  >>> parallel.step_axis(parallel.data_mesh(jax.devices()[:1]), "group") is None
  True
  """
  if mesh.size == 1 or resolve_mixing_scope(scope, mesh) == "global":
    return None
  return axis_name


def check_group_size(batch_size: int, mesh: Mesh, group_size: int) -> None:
  """Each device must hold whole mixing groups: (batch_size / devices) % group_size == 0."""
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"mixing_group_size must be an integer >= 1, got {group_size!r}.")
  check_divisible(batch_size, mesh)
  _check_whole_groups(batch_size // mesh.size, mesh.size, group_size)


def mixer_for_scope(
  mixer: Any, mesh: Mesh, scope: str, axis_name: str = DATA_AXIS, group_size: int | None = None
):
  """`mixer` itself for the global scope; for the device scope, `mix_per_shard` with partner
  indices into the global batch (so that mixing hidden features, which the model computes for
  the global batch, pairs the same examples); for the group scope, `mix_per_group` with groups of
  `group_size`. For a loss computed per shard (`shard_mixer`) see below."""
  resolved = resolve_mixing_scope(scope, mesh)
  if resolved == "global":
    return mixer
  if resolved == "group":
    if group_size is None:
      raise ValueError("mixing_scope 'group' needs mixing_group_size.")
    return mix_per_group(mixer, mesh, group_size, axis_name)
  return mix_per_shard(mixer, mesh, axis_name, global_partner=True)


# --- Per-shard functions: called inside `jax.shard_map` over `axis_name` --------------------------
# A loss computed on each device's shard (`make_loss_fn(..., axis_name=...)`, the train step of
# `make_train_step(..., axis_name=...)`) mixes the shard it holds, with partner indices local to
# it, and reduces over the axis wherever it means the global batch.


def across(value: Any, axis_name: str | None, reduce: Callable = jax.lax.pmean) -> Any:
  """`reduce(value, axis_name)` (pmean, psum, pmax, pmin) inside a per-shard function; `value`
  itself when `axis_name` is None (the function sees the whole batch).

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import parallel
  >>> float(parallel.across(jnp.array(2.0), None))
  2.0
  """
  return value if axis_name is None else reduce(value, axis_name)


def batch_mean(values: jax.Array, axis_name: str | None = None) -> jax.Array:
  """(1/B) sum_i v_i over the leading axis of the GLOBAL batch of B rows.

  Inside a per-shard function every shard holds B / N rows, so the global mean is the mean over
  the axis of the N shards' means (one all-reduce of v's per-example shape).

  Args:
    values: v, [b, ...]: this shard's rows (all B of them when `axis_name` is None).
    axis_name: the mesh axis the batch is split over, or None.

  Returns:
    The mean, v's per-example shape.

  >>> import jax.numpy as jnp
  >>> from mixupe_jax import parallel
  >>> parallel.batch_mean(jnp.array([1.0, 2.0, 6.0])).tolist()
  3.0
  """
  return across(jnp.mean(values, axis=0), axis_name)


def _check_whole_groups(per_device: int, devices: int, group_size: int) -> None:
  if per_device % group_size:
    batch_size = per_device * devices
    raise ValueError(
      f"The per-device batch {per_device} (batch size {batch_size} over {devices} devices) is "
      f"not a multiple of mixing_group_size {group_size}; each device must hold whole mixing "
      f"groups: use a batch size that is a multiple of {group_size * devices}, fewer devices, "
      "a smaller mixing_group_size, or mixing_scope='device' (pairs per device)."
    )


def _over_groups(function: Any, group_size: int, axis_name: str):
  """run(key, inputs, labels) on one shard: function(key, inputs_g, labels_g, g, l) vmapped over
  the shard's groups, told each group's index g in the GLOBAL batch (the shard's first group
  plus l, its local index), so its draws do not depend on how many devices there are."""

  def run(key, inputs, labels):
    per_device = inputs.shape[0]
    _check_whole_groups(per_device, jax.lax.axis_size(axis_name), group_size)
    groups = per_device // group_size
    local = jnp.arange(groups)
    outputs = jax.vmap(lambda g, i, x, y: function(key, x, y, g, i))(
      jax.lax.axis_index(axis_name) * groups + local,
      local,
      _grouped(inputs, group_size),
      _grouped(labels, group_size),
    )
    return jax.tree.map(_ungrouped, outputs)

  return run


SHARD_SCOPES = ("device", "group")


def _check_shard_scope(scope: str, group_size: int | None) -> None:
  if scope not in SHARD_SCOPES:
    raise ValueError(
      f"A per-shard mixer pairs within a device or a group, not {scope!r}: mixing_scope "
      "'global' pairs across the whole batch, which the jit-partitioned step does (make the "
      "loss without axis_name); 'auto' is resolved on the mesh first (resolve_mixing_scope)."
    )
  if scope == "group" and group_size is None:
    raise ValueError("mixing_scope 'group' needs mixing_group_size.")


def shard_mixer(mixer: Any, scope: str, axis_name: str = DATA_AXIS, group_size: int | None = None):
  """mixer(key, inputs, labels) -> MixedBatch of this device's shard, inside `jax.shard_map`.

  "device": `mixer(key, inputs, labels, shard_index=i)` on shard i; "group": group g of
  `group_size` rows runs `mixer(key, inputs_g, labels_g, shard_index=g)`, g its index in the
  global batch. Partner indices are local to the shard (group g's partners stay in group g), so
  mixing hidden features pairs the same examples without a gather. `mix_per_shard` and
  `mix_per_group` are these, shard-mapped, with partners into the global batch.

  Args:
    mixer: a `losses.make_mixer` mixer (it takes `shard_index`).
    scope: "device" or "group" (a resolved scope: see `resolve_mixing_scope`).
    axis_name: the mesh axis the batch is split over.
    group_size: G, for "group".

  Returns:
    The per-shard mixer.
  """
  _check_shard_scope(scope, group_size)
  if scope == "device":
    return lambda key, inputs, labels: mixer(
      key, inputs, labels, shard_index=jax.lax.axis_index(axis_name)
    )
  size = cast(int, group_size)

  def one_group(key, inputs, labels, group_index, local_index):
    mixed = mixer(key, inputs, labels, shard_index=group_index)
    return mixed._replace(partner=mixed.partner + local_index * size)

  return _over_groups(one_group, size, axis_name)


def shard_subsample(
  subsample: Any, scope: str, axis_name: str = DATA_AXIS, group_size: int | None = None
):
  """subsample(key, inputs, labels) of this device's shard inside `jax.shard_map` (e.g.
  `regularizers.subsample_examples`): every device ("device") or every group of `group_size`
  ("group", drawn from the key and the group's global index) keeps round(rho n) of its n rows,
  so the clean pass of the subset stays on its device, and every example still enters with
  probability round(rho n) / n.

  Args:
    subsample: (key, inputs, labels, shard_index=...) -> (inputs, labels).
    scope: "device" or "group".
    axis_name: the mesh axis the batch is split over.
    group_size: G, for "group".

  Returns:
    The per-shard subsample.
  """
  _check_shard_scope(scope, group_size)
  if scope == "device":
    return lambda key, inputs, labels: subsample(
      key, inputs, labels, shard_index=jax.lax.axis_index(axis_name)
    )

  def one_group(key, inputs, labels, group_index, local_index):
    del local_index
    return subsample(key, inputs, labels, shard_index=group_index)

  return _over_groups(one_group, cast(int, group_size), axis_name)


# --- The same, shard-mapped: called under `jax.jit` on the global batch ---------------------------


def _grouped(array: jax.Array, group_size: int) -> jax.Array:
  return array.reshape((array.shape[0] // group_size, group_size) + array.shape[1:])


def _ungrouped(array: jax.Array) -> jax.Array:
  return array.reshape((array.shape[0] * array.shape[1],) + array.shape[2:])


def _shard_mapped(per_shard: Any, mesh: Mesh, axis_name: str, out_specs: Any):
  sharded = PartitionSpec(axis_name)
  return jax.shard_map(
    per_shard, mesh=mesh, in_specs=(PartitionSpec(), sharded, sharded), out_specs=out_specs
  )


def _with_global_partners(mixer: Any, axis_name: str):
  """The per-shard mixer with its partner indices moved into the global batch (shard offset)."""

  def mixed(key, inputs, labels):
    batch = mixer(key, inputs, labels)
    offset = jax.lax.axis_index(axis_name) * inputs.shape[0]
    return batch._replace(partner=batch.partner + offset)

  return mixed


def _mixed_batch_specs(axis_name: str) -> mixing.MixedBatch:
  # A MixedBatch of partition specs: the same tree as the mixer's output.
  return mixing.MixedBatch(*(cast(Any, PartitionSpec(axis_name)),) * 4)


def mix_per_shard(
  mixer: Any, mesh: Mesh, axis_name: str = DATA_AXIS, *, global_partner: bool = False
):
  """Runs `mixer(key, inputs, labels, shard_index=...)` on each device's shard via shard_map.

  The key is the same on every device, so batch-level choices (lambda for granularity "batch",
  the CutMix box, the Mixup/CutMix switch) are the same everywhere; the pairing, and per-example
  lambdas, differ per shard (the shard index is folded into their key). Partner indices are local
  to the shard, or, with `global_partner`, indices into the global batch (shard offset added).
  """
  per_shard = shard_mixer(mixer, "device", axis_name)
  if global_partner:
    per_shard = _with_global_partners(per_shard, axis_name)
  return _shard_mapped(per_shard, mesh, axis_name, _mixed_batch_specs(axis_name))


def mix_per_group(mixer: Any, mesh: Mesh, group_size: int, axis_name: str = DATA_AXIS):
  """Pairs within consecutive groups of `group_size` examples of the global batch.

  Group g (examples g G .. g G + G - 1 of the global batch) runs
  `mixer(key, inputs_g, labels_g, shard_index=g)`: the key is the same for every group, so the
  batch-level choices (lambda for granularity "batch", the CutMix box, the switch) are the
  batch's, and the pairing (and per-pair or per-example lambdas) is drawn from the key and g
  alone. The partner indices point into the global batch. On any mesh whose devices each hold
  whole groups the result is the same, and the pairing gathers nothing across devices.
  """
  per_shard = _with_global_partners(shard_mixer(mixer, "group", axis_name, group_size), axis_name)
  return _shard_mapped(per_shard, mesh, axis_name, _mixed_batch_specs(axis_name))


def subsample_per_group(subsample: Any, mesh: Mesh, group_size: int, axis_name: str = DATA_AXIS):
  """Runs `subsample(key, inputs, labels, shard_index=g)` (e.g.
  `regularizers.subsample_examples`) on each group g of `group_size` examples: every group keeps
  round(rho G) of its rows, drawn from the key and g alone, so the subset is the same on any mesh
  whose devices hold whole groups, and every example still enters with probability round(rho G)
  / G."""
  sharded = PartitionSpec(axis_name)
  per_shard = shard_subsample(subsample, "group", axis_name, group_size)
  return _shard_mapped(per_shard, mesh, axis_name, (sharded, sharded))


def subsample_per_shard(subsample: Any, mesh: Mesh, axis_name: str = DATA_AXIS):
  """Runs `subsample(key, inputs, labels, shard_index=...)` (e.g.
  `regularizers.subsample_examples`) on each device's shard via shard_map: every device keeps
  round(rho b) of its own b rows (the shard index folded into the key), so the clean pass of the
  subset stays sharded and nothing is gathered. Every example still enters with probability rho."""
  sharded = PartitionSpec(axis_name)
  per_shard = shard_subsample(subsample, "device", axis_name)
  return _shard_mapped(per_shard, mesh, axis_name, (sharded, sharded))


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
