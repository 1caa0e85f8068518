"""The ImageNet train step on a pod, by simulation: FLOPs, memory and collectives per device.

The train step of `configs/imagenet_resnet50.py` (its global batch, bfloat16 compute, its mixing
scope) is compiled for 8, 16, 32 and 64 devices from abstract inputs (`jax.ShapeDtypeStruct`, no
data, no parameters in memory): each device count runs in its own process on that many simulated
CPU devices (`--xla_force_host_platform_device_count`). Per device it reports XLA's FLOPs
(`cost_analysis`), the temporary and argument memory (`memory_analysis`) and every collective of
the optimized HLO with the bytes it moves, against the ideal of data parallelism: one all-reduce
of the gradient per step, plus BatchNorm's statistics, and nothing that grows with the batch.

From those counts it ESTIMATES, on paper, the step time on two published accelerators: compute at
the dense bfloat16 peak (a lower bound) and the gradient's all-reduce at the interconnect's
bandwidth, with no overlap between them (so the communication share is an upper bound), and
whether the per-device memory fits. The memory is XLA:CPU's for the same program: an accelerator
compiler schedules and fuses differently (and XLA:CPU may compute bfloat16 in float32), so read
it as an order of magnitude.

    python benchmarks/pod_step.py --out benchmarks/results/pod_step.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import subprocess
import sys
import time

DEVICE_COUNTS = (8, 16, 32, 64)
# Config overrides per row: the methods as configs/imagenet_resnet50.py runs them (eta 0.1).
METHODS = {
  "mixup": {"method": "mixup"},
  "mixupe_exact": {"method": "mixupe", "variant": "v1", "term_split": "official"},
  "mixupe_exact_remat": {
    "method": "mixupe",
    "variant": "v1",
    "term_split": "official",
    "clean_pass_remat": "dots_saveable",
  },
  "mixupe_fast": {"method": "mixupe", "variant": "v3"},
}
# Published figures, per chip (estimates below use only these).
ACCELERATORS = {
  "TPU v4": {
    # Google Cloud, "TPU v4" (docs.cloud.google.com/tpu/docs/v4): 275 TFLOP/s bf16 per chip,
    # 32 GiB HBM2, all-reduce bandwidth 1.1 PB/s over a 4,096-chip pod.
    "peak_flops": 275e12,
    "memory_bytes": 32 * 2**30,
    "all_reduce_bytes_per_second": 1.1e15 / 4096,
    "source": "docs.cloud.google.com/tpu/docs/v4",
  },
  "H100 SXM": {
    # NVIDIA H100 data sheet: 989 TFLOP/s dense bf16 (1,979 with sparsity), 80 GB HBM3,
    # NVLink 900 GB/s per GPU (both directions) inside an 8-GPU node; across nodes one 400 Gb/s
    # InfiniBand NDR link per GPU (50 GB/s), which then bounds a ring all-reduce.
    "peak_flops": 989e12,
    "memory_bytes": 80e9,
    "all_reduce_bytes_per_second": None,  # By device count: see ring_bandwidth.
    "nvlink_bytes_per_second": 450e9,
    "network_bytes_per_second": 50e9,
    "source": "NVIDIA H100 Tensor Core GPU data sheet",
  },
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {
  "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
  "f32": 4, "s64": 8, "u64": 8, "f64": 8,
}  # fmt: skip


def shape_bytes(text: str) -> int:
  """Bytes of every array shape in an HLO result type, e.g. '(f32[64,3], bf16[8])' -> 272."""
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
    if dtype in DTYPE_BYTES:
      total += DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return total


def collectives_of(hlo_text: str) -> list[dict]:
  """Every collective of an optimized HLO module: its kind and the bytes of its result.

  Asynchronous pairs (`all-reduce-start` / `-done`) count once, at the start; a start's result
  tuple holds its operands too, so only its last shape (the output) is counted. (Long tuples
  carry `/*index=k*/` comments, so the result is read up to the op's name, not up to an `=`.)"""
  pattern = re.compile(r"^\s*(?:ROOT )?%\S+ = (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\(")
  found = []
  for line in hlo_text.splitlines():
    match = pattern.match(line)
    if not match:
      continue
    result, kind, start = match.groups()
    if start:
      shapes = re.findall(r"\b[a-z]+\d*\[[\d,]*\]", result)
      result = shapes[-1] if shapes else result
    found.append({"kind": kind, "bytes": shape_bytes(result), "shape": result[:200]})
  return found


def ring_bandwidth(accelerator: dict, devices: int) -> float:
  """The bandwidth a ring all-reduce runs at on `devices` chips (bytes/s per chip)."""
  if accelerator["all_reduce_bytes_per_second"] is not None:
    return accelerator["all_reduce_bytes_per_second"]
  return accelerator["nvlink_bytes_per_second" if devices <= 8 else "network_bytes_per_second"]


def estimate(row: dict, accelerator: dict) -> dict:
  """Step time on paper: FLOPs at peak + a ring all-reduce of the all-reduced bytes, no overlap."""
  devices = row["devices"]
  compute = row["flops_per_device"] / accelerator["peak_flops"]
  # A ring all-reduce sends and receives 2 (N - 1) / N of the buffer through each chip's link.
  ring = 2 * (devices - 1) / devices / ring_bandwidth(accelerator, devices)
  communicate = ring * row["collective_bytes"]["all-reduce"]
  # The ideal: the gradient all-reduced once (BatchNorm's statistics are a few hundred kB).
  ideal = ring * row.get("gradient_bytes", row["collective_bytes"]["all-reduce"])
  memory = row["temp_bytes"] + row["argument_bytes"]
  return {
    "compute_seconds_at_peak": compute,
    "all_reduce_seconds": communicate,
    "step_seconds": compute + communicate,
    "communication_share": communicate / (compute + communicate),
    "ideal_step_seconds": compute + ideal,
    "ideal_communication_share": ideal / (compute + ideal),
    "memory_fraction": memory / accelerator["memory_bytes"],
    "fits": memory <= accelerator["memory_bytes"],
  }


def compile_on_this_process(methods: list[str], hlo_dir: str | None = None) -> list[dict]:
  """Compiles the config's step for every method on this process's devices; one row each."""
  import jax
  import jax.numpy as jnp

  from mixupe_jax import parallel
  from mixupe_jax.experiments.runner import DEFAULT_CONFIGS_DIR, load_config_file
  from mixupe_jax.models import flax_apply_fn, init_model
  from mixupe_jax.models.registry import build_model
  from mixupe_jax.train import TrainState, make_train_step
  from mixupe_jax.train.loop import make_loss_and_optimizer

  mesh = parallel.data_mesh()
  rows = []
  for method in methods:
    config = load_config_file(DEFAULT_CONFIGS_DIR, "imagenet_resnet50.py")
    config.update(METHODS[method])
    num_classes, size = 1000, config.image_size
    parallel.check_divisible(config.batch_size, mesh)
    options = {k: v for k, v in config.model.items() if k != "name"}
    model = build_model(config.model.name, num_classes=num_classes, dtype=config.dtype, **options)
    sample = jnp.zeros((1, size, size, 3), jnp.float32)
    params, model_state = jax.eval_shape(
      functools.partial(init_model, model), jax.random.key(0), sample
    )
    steps_per_epoch = 1_281_167 // config.batch_size
    loss_fn, schedule, optimizer = make_loss_and_optimizer(
      config,
      mesh,
      flax_apply_fn(model),
      num_classes,
      jnp.zeros((size, size, 3), jnp.float32),
      steps_per_epoch,
      config.num_epochs * steps_per_epoch,
    )
    step = make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(1))
    abstract_state = TrainState(
      jax.ShapeDtypeStruct((), jnp.int32),
      params,
      model_state,
      jax.eval_shape(optimizer.init, params),
    )
    replicated, batch = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
    state = jax.tree.map(
      lambda leaf, sharding=replicated: jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=sharding
      ),
      abstract_state,
    )
    images = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32, sharding=batch)
    labels = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=batch)
    started = time.perf_counter()
    compiled = step.lower(state, images, labels).compile()
    compile_seconds = time.perf_counter() - started
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    hlo_text = compiled.as_text()
    if hlo_dir:
      os.makedirs(hlo_dir, exist_ok=True)
      with open(os.path.join(hlo_dir, f"{method}_{mesh.size}_devices.hlo.txt"), "w") as file:
        file.write(hlo_text)
    collectives = collectives_of(hlo_text)
    by_kind = {kind: 0 for kind in COLLECTIVES}
    for collective in collectives:
      by_kind[collective["kind"]] += collective["bytes"]
    gradient_bytes = sum(4 * math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    batch_norm_channels = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(model_state)) // 2
    rows.append(
      {
        "method": method,
        "devices": mesh.size,
        "per_device_batch": config.batch_size // mesh.size,
        "mixing_scope": parallel.resolve_mixing_scope(config.mixing_scope, mesh),
        "compile_seconds": compile_seconds,
        "flops_per_device": float(cost["flops"]),
        "temp_bytes": int(memory.temp_size_in_bytes),
        "argument_bytes": int(memory.argument_size_in_bytes),
        "output_bytes": int(memory.output_size_in_bytes),
        "collective_bytes": by_kind,
        "collective_counts": {
          kind: sum(c["kind"] == kind for c in collectives) for kind in COLLECTIVES
        },
        "largest_collectives": sorted(collectives, key=lambda c: -c["bytes"])[:5],
        "gradient_bytes": gradient_bytes,
        "batch_norm_channels": batch_norm_channels,
      }
    )
    print(f"compiled {method} on {mesh.size} devices in {compile_seconds:.0f} s", flush=True)
  return rows


def run_child(devices: int, methods: list[str], hlo_dir: str | None) -> list[dict]:
  """Runs this script on `devices` simulated CPU devices in a fresh process (the flag is read
  when JAX starts) and returns its rows."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  command = [sys.executable, os.path.abspath(__file__), "--child", "--methods", *methods]
  if hlo_dir:
    command += ["--hlo_dir", hlo_dir]
  output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(output.strip().splitlines()[-1])


def mib(value: float) -> str:
  return f"{value / 2**20:,.1f}"


def print_tables(rows: list[dict]) -> None:
  print(
    "\n| devices | per-device batch | method | GFLOP/device | temp MiB | argument MiB | "
    "all-reduce MiB | of which beyond the gradient | all-gather MiB | all-to-all MiB | "
    "other collectives MiB |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    c = r["collective_bytes"]
    other = c["reduce-scatter"] + c["collective-permute"]
    print(
      f"| {r['devices']} | {r['per_device_batch']} | {r['method']} | "
      f"{r['flops_per_device'] / 1e9:,.0f} | {mib(r['temp_bytes'])} | "
      f"{mib(r['argument_bytes'])} "
      f"| {mib(c['all-reduce'])} ({r['collective_counts']['all-reduce']} ops) | "
      f"{mib(c['all-reduce'] - r['gradient_bytes'])} | {mib(c['all-gather'])} | "
      f"{mib(c['all-to-all'])} | {mib(other)} |"
    )
  print("\nEstimates on paper (compute at peak + ring all-reduce, no overlap; memory: XLA:CPU's)")
  print(
    "| accelerator | devices | method | step ms | of which all-reduce | ideal step ms | "
    "of which all-reduce | memory of HBM | fits |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for name in ACCELERATORS:
    for r in rows:
      e = r["estimates"][name]
      print(
        f"| {name} | {r['devices']} | {r['method']} | {1e3 * e['step_seconds']:.1f} | "
        f"{100 * e['communication_share']:.0f}% | {1e3 * e['ideal_step_seconds']:.1f} | "
        f"{100 * e['ideal_communication_share']:.0f}% | {100 * e['memory_fraction']:.0f}% | "
        f"{'yes' if e['fits'] else 'no'} |"
      )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, nargs="+", default=list(DEVICE_COUNTS))
  parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
  parser.add_argument("--out", default=None, help="JSON file for every row.")
  parser.add_argument(
    "--from_json",
    default=None,
    help="Print the tables of a saved --out file (estimates recomputed).",
  )
  parser.add_argument("--hlo_dir", default=None, help="Write each optimized HLO module here.")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(compile_on_this_process(args.methods, args.hlo_dir)))
    return
  if args.from_json:
    with open(args.from_json) as file:
      rows = json.load(file)["rows"]
    for row in rows:
      row["estimates"] = {name: estimate(row, spec) for name, spec in ACCELERATORS.items()}
    print_tables(rows)
    if args.out:
      with open(args.out, "w") as file:
        json.dump(
          {"config": "configs/imagenet_resnet50.py", "accelerators": ACCELERATORS, "rows": rows},
          file,
          indent=2,
        )
    return
  rows = []
  for devices in args.devices:
    for row in run_child(devices, args.methods, args.hlo_dir):
      row["estimates"] = {name: estimate(row, spec) for name, spec in ACCELERATORS.items()}
      rows.append(row)
      print(
        f"{devices} devices, {row['method']}: compiled in {row['compile_seconds']:.0f} s",
        flush=True,
      )
  print_tables(rows)
  if args.out:
    with open(args.out, "w") as file:
      json.dump(
        {"config": "configs/imagenet_resnet50.py", "accelerators": ACCELERATORS, "rows": rows},
        file,
        indent=2,
      )


if __name__ == "__main__":
  main()
