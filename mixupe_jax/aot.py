"""Compiling for accelerators this machine does not have: TPU and GPU programs, deviceless.

The TPU compiler (libtpu) and XLA:GPU (JAX's CUDA plugin) run without their hardware: a
topology gives compile-only devices, `jax.jit(...).lower(...).compile()` on a mesh of them
builds the program a pod would run, and the compiled program says what each chip needs (memory)
and exchanges (collectives), as MaxText's `train_compile.py` does. Install them with
`pip install -e ".[aot]"` (pinned to the JAX they were built with).

A target names a chip and a topology::

    tpu:v4:2x2x2     TPU v4, 8 chips (megacore: one device per chip); v4:4x4x4 is 64
    tpu:v5e:2x4      TPU v5e, 8 chips; v5e:8x8 is 64
    tpu:v5p:2x2x2    TPU v5p, 8 chips (megacore)
    tpu:v6e:2x4      TPU v6e (Trillium), 8 chips
    cuda:h100:1x1x8  H100 SXM, 1 slice x 1 host x 8 GPUs; 1x8x8 is 8 hosts of 8 (64 GPUs)
    cpu:8            this machine's XLA:CPU over 8 simulated devices (the fallback: its memory
                     and collectives are not an accelerator's)

XLA:GPU compiles for the device description of `GPU_SPECS` (`gpu_target_config`); libtpu knows
its chips. On a machine without the CUDA driver the CUDA plugin registers its compiler only when
JAX starts with `JAX_PLATFORMS=cpu` (or `JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1`): set it before
JAX initializes, as `benchmarks/pod_step.py` and the tests do.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

# libtpu asks the cloud's metadata server what machine it is on, unless told not to.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")

AOT_EXTRA = 'pip install -e ".[aot]"'


@dataclasses.dataclass(frozen=True)
class Chip:
  """An accelerator chip as the benchmarks read it: its memory and published peak."""

  name: str
  memory_bytes: int
  peak_bf16_flops: float  # Dense, per chip.
  source: str


# Per-chip HBM and dense bfloat16 peak, from the vendors' published specifications.
TPU_CHIPS = {
  "v4": Chip("TPU v4", 32 * 2**30, 275e12, "cloud.google.com/tpu/docs/v4"),
  "v5e": Chip("TPU v5e", 16 * 2**30, 197e12, "cloud.google.com/tpu/docs/v5e"),
  "v5p": Chip("TPU v5p", 95 * 2**30, 459e12, "cloud.google.com/tpu/docs/v5p"),
  "v6e": Chip("TPU v6e", 32 * 2**30, 918e12, "cloud.google.com/tpu/docs/v6e"),
}
# libtpu's topology names ("v5p" is its "v5") and the chip configuration that makes one device
# per chip (a v4 chip's two TensorCores as one megacore device; v5p does this by default).
_TPU_TOPOLOGY = {
  "v4": ("v4", {"chip_config_name": "megacore", "chips_per_host_bounds": (2, 2, 1)}),
  "v5e": ("v5e", {}),
  "v5p": ("v5", {}),
  "v6e": ("v6e", {}),
}

# The device description XLA:GPU compiles for: the fields CUDA's cudaGetDeviceProperties reports
# for the GPU (as XLA's own spec files record them: openxla/xla,
# xla/backends/gpu/target_config/specs/h100_sxm.txtpb).
GPU_SPECS: dict[str, dict[str, Any]] = {
  "h100": {
    "chip": Chip("H100 SXM", 84_942_979_072, 989e12, "NVIDIA H100 Tensor Core GPU data sheet"),
    "description": "NVIDIA H100 80GB HBM3",
    "compute_capability": (9, 0),
    "core_count": 132,
    "fpus_per_core": 128,
    "clock_rate_ghz": 1.98,
    "memory_bandwidth": 3_352_320_000_000,
    "l2_cache_size": 52_428_800,
    "shared_memory_per_core": 233_472,
    "shared_memory_per_block_optin": 232_448,
  },
}
# The same on every CUDA GPU since Volta.
_CUDA_LIMITS = {
  "threads_per_block_limit": 1024,
  "threads_per_warp": 32,
  "shared_memory_per_block": 49_152,
  "threads_per_core_limit": 2048,
  "block_dim_limit_x": 2_147_483_647,
  "block_dim_limit_y": 65_535,
  "block_dim_limit_z": 65_535,
  "registers_per_core_limit": 65_536,
  "registers_per_block_limit": 65_536,
}


def gpu_target_config(gpu: str) -> str:
  """The `GpuTargetConfig` text proto XLA:GPU compiles for, from `GPU_SPECS[gpu]`.

  >>> from mixupe_jax import aot
  >>> print(aot.gpu_target_config("h100").splitlines()[1])
    core_count: 132
  """
  if gpu not in GPU_SPECS:
    raise ValueError(f"Unknown GPU {gpu!r}; known: {', '.join(GPU_SPECS)}.")
  spec = GPU_SPECS[gpu]
  fields = {
    "core_count": spec["core_count"],
    "fpus_per_core": spec["fpus_per_core"],
    "clock_rate_ghz": spec["clock_rate_ghz"],
    "memory_bandwidth": spec["memory_bandwidth"],
    "l2_cache_size": spec["l2_cache_size"],
    "device_memory_size": spec["chip"].memory_bytes,
    "shared_memory_per_core": spec["shared_memory_per_core"],
    "shared_memory_per_block_optin": spec["shared_memory_per_block_optin"],
    **_CUDA_LIMITS,
  }
  major, minor = spec["compute_capability"]
  lines = ["gpu_device_info {"] + [f"  {name}: {value}" for name, value in fields.items()]
  lines += [f"  cuda_compute_capability {{ major: {major} minor: {minor} }}", "}"]
  lines += ['platform_name: "CUDA"', f'device_description_str: "{spec["description"]}"']
  return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Target:
  """A parsed target: its platform ("tpu", "cuda", "cpu"), chip and topology."""

  name: str
  platform: str
  chip: Chip | None  # None for the XLA:CPU fallback.
  topology: str

  @property
  def compiler(self) -> str:
    return {"tpu": "TPU", "cuda": "XLA:GPU", "cpu": "XLA:CPU (fallback)"}[self.platform]


def parse_target(name: str) -> Target:
  """'tpu:v4:2x2x2', 'cuda:h100:1x1x8' or 'cpu:8' -> a `Target`; a ValueError names a bad one.

  >>> from mixupe_jax import aot
  >>> aot.parse_target("tpu:v4:2x2x2").chip.name
  'TPU v4'
  """
  parts = name.split(":")
  if parts[0] == "cpu" and len(parts) == 2 and parts[1].isdigit():
    return Target(name, "cpu", None, parts[1])
  valid = (
    f"valid: tpu:<{'|'.join(TPU_CHIPS)}>:<topology, e.g. 2x2x2 or 2x4>, "
    f"cuda:<{'|'.join(GPU_SPECS)}>:<slices>x<hosts>x<gpus per host>, cpu:<devices>"
  )
  if len(parts) != 3 or not re.fullmatch(r"\d+(x\d+)+", parts[2]):
    raise ValueError(f"Unknown target {name!r}; {valid}.")
  platform, chip, topology = parts
  if platform == "tpu" and chip in TPU_CHIPS:
    return Target(name, "tpu", TPU_CHIPS[chip], topology)
  if platform == "cuda" and chip in GPU_SPECS:
    return Target(name, "cuda", GPU_SPECS[chip]["chip"], topology)
  raise ValueError(f"Unknown target {name!r}; {valid}.")


class ToolchainMissing(RuntimeError):
  """The compiler of a target is not installed (or cannot start) on this machine."""


def target_devices(target: Target | str) -> list[Any]:
  """The compile-only devices of `target` (a `jax.Device` list; XLA:CPU: this process's CPU
  devices, which must number as many as the target says)."""
  target = parse_target(target) if isinstance(target, str) else target
  if target.platform == "cpu":
    devices = jax.devices("cpu")
    if len(devices) < int(target.topology):
      raise ToolchainMissing(
        f"{target.name} needs {target.topology} CPU devices, this process has {len(devices)} "
        f"(start it with XLA_FLAGS=--xla_force_host_platform_device_count={target.topology})."
      )
    return devices[: int(target.topology)]
  from jax.experimental import topologies

  try:
    if target.platform == "tpu":
      chip = next(key for key, value in TPU_CHIPS.items() if value == target.chip)
      prefix, options = _TPU_TOPOLOGY[chip]
      description = topologies.get_topology_desc(
        topology_name=f"{prefix}:{target.topology}", platform="tpu", **options
      )
    else:
      gpu = next(key for key, value in GPU_SPECS.items() if value["chip"] == target.chip)
      description = topologies.get_topology_desc(
        platform="cuda", target_config=gpu_target_config(gpu), topology=target.topology
      )
  except (RuntimeError, NotImplementedError) as error:
    raise ToolchainMissing(
      f"The {target.compiler} compiler for {target.name} is not available here ({error}); "
      f"install it with {AOT_EXTRA}"
      + (" and start JAX with JAX_PLATFORMS=cpu" if target.platform == "cuda" else "")
      + "."
    ) from error
  return list(description.devices)


def data_mesh(target: Target | str, axis_name: str) -> jax.sharding.Mesh:
  """A 1-D mesh named `axis_name` over the target's devices."""
  return jax.sharding.Mesh(np.asarray(target_devices(target)), (axis_name,))


# --- What a compiled program says ---------------------------------------------------------------

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {
  "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
  "f32": 4, "s64": 8, "u64": 8, "f64": 8,
}  # fmt: skip
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def shape_bytes(text: str) -> dict[str, int]:
  """Bytes by dtype of every array shape in an HLO type, e.g. '(f32[64,3], bf16[8])' ->
  {'f32': 768, 'bf16': 16} (layouts such as '{1,0:T(8,128)}' are not shapes)."""
  found: dict[str, int] = {}
  for dtype, dims in _SHAPE.findall(text):
    if dtype in DTYPE_BYTES:
      size = DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
      found[dtype] = found.get(dtype, 0) + size
  return found


def collectives_of(hlo_text: str) -> list[dict[str, Any]]:
  """Every collective of an optimized HLO module: its kind and its result's bytes by dtype.

  Asynchronous pairs (`all-reduce-start` / `-done`) count once, at the start. A start's result is
  read up to the op's name (long tuples carry `/*index=k*/` comments); on XLA:CPU and XLA:GPU it
  is a tuple of (operands, outputs) when the op has several operands, of which the outputs (the
  second half) are counted.
  """
  pattern = re.compile(
    r"^\s*(?:ROOT )?%\S+ = (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\((.*?)\)"
  )
  found = []
  for line in hlo_text.splitlines():
    match = pattern.match(line)
    if not match:
      continue
    result, kind, start, operands = match.groups()
    shapes = _SHAPE.findall(result)
    operand_count = len([o for o in operands.split(",") if o.strip().startswith("%")])
    if start and len(shapes) == 2 * operand_count and operand_count:
      result = " ".join(f"{d}[{s}]" for d, s in shapes[operand_count:])
    by_dtype = shape_bytes(result)
    found.append({"kind": kind, "bytes": sum(by_dtype.values()), "by_dtype": by_dtype})
  return found


def summarize_collectives(collectives: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """{kind: {"ops", "bytes", "by_dtype"}} over every kind of `COLLECTIVES`."""
  summary: dict[str, dict[str, Any]] = {
    kind: {"ops": 0, "bytes": 0, "by_dtype": {}} for kind in COLLECTIVES
  }
  for collective in collectives:
    entry = summary[collective["kind"]]
    entry["ops"] += 1
    entry["bytes"] += collective["bytes"]
    for dtype, size in collective["by_dtype"].items():
      entry["by_dtype"][dtype] = entry["by_dtype"].get(dtype, 0) + size
  return summary


def report(compiled: Any) -> dict[str, Any]:
  """What a compiled program needs per device: FLOPs (None where the compiler gives none),
  argument / output / temporary / generated-code bytes, and its collectives."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  memory = compiled.memory_analysis()
  collectives = collectives_of(compiled.as_text())
  return {
    "flops": float(cost["flops"]) if cost and "flops" in cost else None,
    "argument_bytes": int(memory.argument_size_in_bytes),
    "output_bytes": int(memory.output_size_in_bytes),
    "alias_bytes": int(memory.alias_size_in_bytes),
    "temp_bytes": int(memory.temp_size_in_bytes),
    "generated_code_bytes": int(memory.generated_code_size_in_bytes),
    "collectives": summarize_collectives(collectives),
    "largest_collectives": sorted(collectives, key=lambda c: -c["bytes"])[:5],
  }


def peak_bytes(row: dict[str, Any]) -> int:
  """A program's memory on a device: its arguments, temporaries and outputs, less the outputs
  that reuse donated arguments' buffers."""
  return row["argument_bytes"] + row["temp_bytes"] + row["output_bytes"] - row["alias_bytes"]
