"""The ImageNet train step on a pod, as the TPU and GPU compilers build it: memory, FLOPs and
collectives per chip, without the hardware.

The train step of `configs/imagenet_resnet50.py` (ResNet-50 at 224, bfloat16 compute, its mixing
groups) is lowered from abstract inputs (`jax.ShapeDtypeStruct`: no data, no parameters in
memory) onto the compile-only devices of a target (`mixupe_jax.aot`: `tpu:v4:2x2x2`,
`cuda:h100:1x8x8`, ...; `cpu:8` is XLA:CPU over simulated devices, the fallback, labelled as
such) and compiled by that target's compiler. Each row is one compilation in a fresh process:
a target, a method, the step's form (`per_shard`: the loss per device and one gradient
all-reduce, what the training system runs; `global`: XLA partitions the loss of the global
batch, the form before) and the gradient all-reduce's dtype. Per chip it reads the compiler's
FLOPs (where it gives them), its memory analysis (arguments, outputs, temporaries, generated
code) and every collective of the optimized program by kind and dtype, and the compile time.

    pip install -e ".[aot]"
    python benchmarks/pod_step.py --targets tpu:v4:2x2x2 cuda:h100:1x1x8 \\
        --out benchmarks/results/pod_step.json
    python benchmarks/pod_step.py --fit --targets tpu:v4:2x2x2 --out ...  # largest batch per chip
    python benchmarks/pod_step.py --from_json benchmarks/results/pod_step.json  # the tables

Rows already in `--out` are skipped, so an interrupted run resumes. `--fit` brackets, per
target, method and `clean_pass_remat`, the largest per-chip batch (a multiple of the mixing
group, 16) whose program fits the chip's memory: from compilations at 128 and 256 per chip it
extrapolates the peak memory linearly to the chip's, then bisects between the largest batch that
fitted and the smallest that did not, until they are at most 32 apart (or after 8 more
compilations); only compiled figures decide (the TPU compiler refuses a program that does not
fit, naming what its temporaries need).

From the compiled counts it ESTIMATES, on paper, the step time on each accelerator: the FLOPs at
the dense bfloat16 peak (a lower bound) plus a ring all-reduce of the all-reduced bytes at the
interconnect's bandwidth, with no overlap (so the communication share is an upper bound).
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

# Config overrides per method, as configs/imagenet_resnet50.py runs them (eta 0.1, alpha 0.2).
METHODS = {
  "mixup": {"method": "mixup"},
  "mixupe_fast": {"method": "mixupe", "variant": "v3"},
  "mixupe_exact": {"method": "mixupe", "variant": "v1", "term_split": "official"},
  "mixupe_exact_remat": {
    "method": "mixupe",
    "variant": "v1",
    "term_split": "official",
    "clean_pass_remat": "dots_saveable",
  },
  "mixupe_fast_remat": {"method": "mixupe", "variant": "v3", "clean_pass_remat": "dots_saveable"},
}
FORMS = ("per_shard", "global")
# Interconnect bandwidth a ring all-reduce runs at, per chip (published figures).
INTERCONNECT = {
  # Google Cloud, "TPU v4": 1.1 PB/s of all-reduce bandwidth over a 4,096-chip pod.
  "TPU v4": {"within": 1.1e15 / 4096, "across": 1.1e15 / 4096, "node": 4096},
  # NVIDIA H100 data sheet: NVLink 900 GB/s per GPU (450 GB/s each way) inside an 8-GPU node;
  # across nodes one 400 Gb/s InfiniBand NDR link per GPU (50 GB/s), which then bounds the ring.
  "H100 SXM": {"within": 450e9, "across": 50e9, "node": 8},
}
IMAGENET_TRAIN = 1_281_167
FIT_GROUP = 16  # configs/imagenet_resnet50.py's mixing group: per-chip batches are multiples.
FIT_TOLERANCE = 32  # The fit's bracket: the largest batch that fits is known to this many.
FIT_COMPILATIONS = 8  # At most this many compilations per bracket beyond 128 and 256.


def compile_row(target_name: str, method: str, form: str, gradient_dtype: str, per_chip: int):
  """Compiles the config's step for one row on this process; returns the row."""
  import jax
  import jax.numpy as jnp

  from mixupe_jax import aot, parallel
  from mixupe_jax.data import pipeline
  from mixupe_jax.experiments.runner import DEFAULT_CONFIGS_DIR, load_config_file
  from mixupe_jax.models import flax_apply_fn, init_model
  from mixupe_jax.models.registry import build_model
  from mixupe_jax.train import TrainState, make_train_step
  from mixupe_jax.train.loop import make_loss_and_optimizer

  target = aot.parse_target(target_name)
  mesh = aot.data_mesh(target, parallel.DATA_AXIS)
  config = load_config_file(DEFAULT_CONFIGS_DIR, "imagenet_resnet50.py")
  config.update(METHODS[method])
  config.batch_size = per_chip * mesh.size
  num_classes, size = 1000, config.image_size
  parallel.check_group_size(config.batch_size, mesh, config.mixing_group_size)
  axis_name = parallel.step_axis(mesh, config.mixing_scope) if form == "per_shard" else None
  options = {k: v for k, v in config.model.items() if k != "name"}
  model = build_model(
    config.model.name, num_classes=num_classes, dtype=config.dtype, axis_name=axis_name, **options
  )
  sample = jnp.zeros((1, size, size, 3), jnp.float32)
  params, model_state = jax.eval_shape(
    functools.partial(init_model, model), jax.random.key(0), sample
  )
  steps_per_epoch = IMAGENET_TRAIN // config.batch_size
  loss_fn, schedule, optimizer = make_loss_and_optimizer(
    config,
    mesh,
    flax_apply_fn(model),
    num_classes,
    jnp.zeros((size, size, 3), jnp.float32),
    steps_per_epoch,
    config.num_epochs * steps_per_epoch,
    axis_name=axis_name,
  )
  step = make_train_step(
    loss_fn,
    optimizer,
    schedule,
    mesh,
    jax.random.key(1),
    pipeline.normalizer("imagenet2012").on_device,
    axis_name=axis_name,
    gradient_dtype=gradient_dtype,
  )
  replicated, batch = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
  abstract_state = TrainState(
    jax.ShapeDtypeStruct((), jnp.int32), params, model_state, jax.eval_shape(optimizer.init, params)
  )
  state = jax.tree.map(
    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated),
    abstract_state,
  )
  # Images arrive as uint8 and are normalized in the step, as the config's pipeline sends them.
  images = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.uint8, sharding=batch)
  labels = jax.ShapeDtypeStruct((config.batch_size,), jnp.int32, sharding=batch)
  started = time.perf_counter()
  lowered = step.lower(state, images, labels)
  try:
    row = aot.report(lowered.compile())
  except jax.errors.JaxRuntimeError as error:
    needed = refused_bytes(str(error))
    if needed is None:
      raise
    row = {"refused": str(error).splitlines()[0][:300], "temp_bytes": needed}
    row.update(argument_bytes=0, output_bytes=0, alias_bytes=0)
  compile_seconds = time.perf_counter() - started
  row.update(
    target=target.name,
    compiler=target.compiler,
    chip=target.chip.name if target.chip else "CPU",
    chip_memory_bytes=target.chip.memory_bytes if target.chip else None,
    chips=mesh.size,
    per_chip_batch=per_chip,
    method=method,
    form=form,
    gradient_dtype=gradient_dtype,
    compile_seconds=compile_seconds,
    gradient_bytes=sum(4 * math.prod(leaf.shape) for leaf in jax.tree.leaves(params)),
    batch_norm_channels=sum(math.prod(x.shape) for x in jax.tree.leaves(model_state)) // 2,
    peak_bytes=aot.peak_bytes(row),
    jax_version=jax.__version__,
  )
  row["fits"] = None if target.chip is None else row["peak_bytes"] <= target.chip.memory_bytes
  if "refused" in row:  # Its temporaries alone: a lower bound on what it needs.
    row["fits"] = False
  return row


# The TPU compiler refuses a program that does not fit the chip, saying what it needed: before
# assigning buffers, its temporaries alone; after, everything it placed in HBM.
REFUSALS = (
  r"required for HLO temporaries \(([\d.]+)G\)",
  r"Ran out of memory in memory space hbm\. Used ([\d.]+)G of",
)


def refused_bytes(message: str) -> float | None:
  """The bytes a refused program needed (a lower bound), or None for any other error."""
  if "RESOURCE_EXHAUSTED" not in message:
    return None
  for pattern in REFUSALS:
    needed = re.search(pattern, message)
    if needed:
      return float(needed[1]) * 2**30
  return None


def row_key(row: dict) -> tuple:
  return (row["target"], row["method"], row["form"], row["gradient_dtype"], row["per_chip_batch"])


def run_child(target: str, method: str, form: str, gradient_dtype: str, per_chip: int) -> dict:
  """One row in a fresh process: a compiler's memory is freed with it, and XLA:CPU's simulated
  device count is read when JAX starts."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TPU_SKIP_MDS_QUERY="1")
  if target.startswith("cpu:"):
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    count = target.split(":")[1]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={count}"])
  command = [sys.executable, os.path.abspath(__file__), "--child", target, method, form]
  command += [gradient_dtype, str(per_chip)]
  result = subprocess.run(command, env=env, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f"{target} {method} {form} failed:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def load(path: str | None) -> dict:
  if path and os.path.exists(path):
    with open(path) as file:
      saved = json.load(file)
    if "rows" in saved and (not saved["rows"] or "target" in saved["rows"][0]):
      return saved
  return {"rows": [], "fits": []}


def save(path: str | None, results: dict) -> None:
  if path:
    from provenance import provenance

    results.update(provenance={**provenance(), "config": "configs/imagenet_resnet50.py"})
    with open(f"{path}.tmp", "w") as file:
      json.dump(results, file, indent=2)
    os.replace(f"{path}.tmp", path)


def largest_fitting_batch(results: dict, target: str, method: str, gradient_dtype: str, out):
  """Brackets the largest per-chip batch (a multiple of FIT_GROUP) whose per_shard program fits
  the chip: `fits` (compiled, fits) and `does_not_fit` (compiled, does not), at most
  FIT_TOLERANCE apart or after FIT_COMPILATIONS compilations. Each guess interpolates the
  compiled peak memory linearly between the nearest batches compiled on either side (from 128
  and 256 per chip to begin with), or bisects the bracket; above the largest fitting batch it
  at most doubles it. Only compiled figures decide."""
  rows = {row_key(r): r for r in results["rows"]}

  def compiled(per_chip: int) -> dict:
    key = (target, method, "per_shard", gradient_dtype, per_chip)
    if key not in rows:
      rows[key] = run_child(target, method, "per_shard", gradient_dtype, per_chip)
      results["rows"].append(rows[key])
      save(out, results)
      refused = " (the compiler refused it; its temporaries)" if "refused" in rows[key] else ""
      needs = gib(rows[key]["peak_bytes"])
      print(f"  {target} {method}: {per_chip}/chip needs {needs} GiB{refused}")
    return rows[key]

  memory = compiled(128)["chip_memory_bytes"]
  points = {b: compiled(b)["peak_bytes"] for b in (128, 256)}
  fits = {b: rows[(target, method, "per_shard", gradient_dtype, b)]["fits"] for b in points}
  for _ in range(FIT_COMPILATIONS):
    fitting = [b for b in points if fits[b]]
    failing = [b for b in points if not fits[b]]
    low, high = max(fitting, default=None), min(failing, default=None)
    if low is not None and high is not None and high - low <= FIT_TOLERANCE:
      break
    if low is not None and high is not None:  # Bisect the bracket.
      guess = (low + high) // 2 // FIT_GROUP * FIT_GROUP
    else:  # Extrapolate the line through the two batches compiled nearest the chip's memory,
      # at most doubling the batch: the TPU compiler rematerializes to fit, so its peak can stay
      # flat below the chip's memory and a line through it points far too high.
      a, b = sorted(points, key=lambda x: abs(points[x] - memory))[:2]
      slope = (points[b] - points[a]) / (b - a)
      guess = a + (memory - points[a]) / slope if slope > 0 else 2 * max(points)
      if low is not None:
        guess = min(guess, 2 * low)
      guess = int(guess) // FIT_GROUP * FIT_GROUP
    # Inside the bracket, never on a compiled batch.
    lower = low + FIT_GROUP if low is not None else FIT_GROUP
    upper = high - FIT_GROUP if high is not None else 1 << 20
    guess = min(max(guess, lower), upper)
    while guess in points and guess + FIT_GROUP <= upper:
      guess += FIT_GROUP
    if guess in points or guess < FIT_GROUP:
      break
    row = compiled(guess)
    points[guess], fits[guess] = row["peak_bytes"], row["fits"]
  fitting = [b for b in points if fits[b]]
  failing = [b for b in points if not fits[b]]
  fit = {
    "target": target,
    "method": method,
    "gradient_dtype": gradient_dtype,
    "fits": max(fitting, default=None),
    "does_not_fit": min(failing, default=None),
    "peak_bytes_by_batch": {str(b): points[b] for b in sorted(points)},
    "chip_memory_bytes": memory,
  }
  results["fits"] = [
    f for f in results["fits"] if (f["target"], f["method"]) != (target, method)
  ] + [fit]
  save(out, results)
  return fit


def gib(value: float) -> str:
  return f"{value / 2**30:,.1f}"


def mb(value: float) -> str:
  return f"{value / 1e6:,.1f}"


def estimate(row: dict, flops: float | None) -> dict | None:
  """Step time on paper: FLOPs at peak + a ring all-reduce of the all-reduced bytes."""
  from mixupe_jax import aot

  chip = row["chip"]
  if chip not in INTERCONNECT or flops is None:
    return None
  peak = next(
    spec.peak_bf16_flops
    for spec in [*aot.TPU_CHIPS.values(), *(g["chip"] for g in aot.GPU_SPECS.values())]
    if spec.name == chip
  )
  link = INTERCONNECT[chip]
  chips = row["chips"]
  bandwidth = link["within"] if chips <= link["node"] else link["across"]
  compute = flops / peak
  ring = 2 * (chips - 1) / chips / bandwidth * row["collectives"]["all-reduce"]["bytes"]
  return {
    "compute_ms": 1e3 * compute,
    "all_reduce_ms": 1e3 * ring,
    "share": ring / (compute + ring),
  }


def print_tables(results: dict) -> None:
  rows = sorted(
    (r for r in results["rows"] if "refused" not in r),
    key=lambda r: (r["target"], r["per_chip_batch"], r["method"], r["form"]),
  )
  print(
    "\n| target (compiler) | chips | per chip | method | step | all-reduce dtype | GFLOP/chip |"
    " arguments GiB | temp GiB | peak GiB of HBM | all-reduce MB (ops; by dtype) |"
    " gradient MB (f32) | gather / all-to-all / reduce-scatter MB | compile s |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    c = r["collectives"]
    wire = r["gradient_dtype"] if r["form"] == "per_shard" else "(XLA's)"
    dtypes = ", ".join(f"{d} {mb(b)}" for d, b in sorted(c["all-reduce"]["by_dtype"].items()))
    flops = "-" if r["flops"] is None else f"{r['flops'] / 1e9:,.0f}"
    hbm = "" if r["chip_memory_bytes"] is None else f" of {gib(r['chip_memory_bytes'])}"
    others = " / ".join(mb(c[k]["bytes"]) for k in ("all-gather", "all-to-all", "reduce-scatter"))
    print(
      f"| {r['target']} ({r['compiler']}) | {r['chips']} | {r['per_chip_batch']} | {r['method']} "
      f"| {r['form']} | {wire} | {flops} | {gib(r['argument_bytes'])} "
      f"| {gib(r['temp_bytes'])} | {gib(r['peak_bytes'])}{hbm} "
      f"| {mb(c['all-reduce']['bytes'])} ({c['all-reduce']['ops']}; {dtypes}) "
      f"| {mb(r['gradient_bytes'])} | {others} | {r['compile_seconds']:.0f} |"
    )
  # FLOPs by method and global batch from the TPU compiler (XLA:GPU gives none).
  flops = {
    (r["method"], r["per_chip_batch"] * r["chips"]): r["flops"] * r["chips"]
    for r in rows
    if r["flops"] is not None and r["compiler"] == "TPU"
  }
  estimated = [
    (r, estimate(r, flops.get((r["method"], r["per_chip_batch"] * r["chips"]), 0) / r["chips"]))
    for r in rows
  ]
  estimated = [(r, e) for r, e in estimated if e is not None and e["compute_ms"] > 0]
  if estimated:
    print("\nEstimates on paper: TPU-compiled FLOPs at the bf16 peak + ring all-reduce, no overlap")
    print(
      "| chip | chips | per chip | method | step | dtype | compute ms | all-reduce ms | share |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r, e in estimated:
      wire = r["gradient_dtype"] if r["form"] == "per_shard" else "(XLA's)"
      print(
        f"| {r['chip']} | {r['chips']} | {r['per_chip_batch']} | {r['method']} | {r['form']} "
        f"| {wire} "
        f"| {e['compute_ms']:.1f} | {e['all_reduce_ms']:.1f} "
        f"| {100 * e['share']:.0f}% |"
      )
  if results.get("fits"):
    print("\n| target | method | fits (per chip) | does not fit | peak GiB by batch |")
    print("|---|---|---|---|---|")
    for f in results["fits"]:
      peaks = ", ".join(f"{b}: {gib(p)}" for b, p in f["peak_bytes_by_batch"].items())
      print(f"| {f['target']} | {f['method']} | {f['fits']} | {f['does_not_fit']} | {peaks} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--targets", nargs="+", default=["tpu:v4:2x2x2", "cuda:h100:1x1x8"])
  parser.add_argument("--methods", nargs="+", default=list(METHODS)[:3], choices=list(METHODS))
  parser.add_argument("--forms", nargs="+", default=["per_shard"], choices=FORMS)
  parser.add_argument("--gradient_dtypes", nargs="+", default=["float32"])
  parser.add_argument("--per_chip_batch", type=int, default=128)
  parser.add_argument("--fit", action="store_true", help="Find the largest per-chip batch.")
  parser.add_argument("--out", default=None, help="JSON of every row (resumed if it exists).")
  parser.add_argument("--from_json", default=None, help="Print the tables of a saved --out.")
  parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    target, method, form, dtype, per_chip = args.child
    print(json.dumps(compile_row(target, method, form, dtype, int(per_chip))))
    return
  if args.from_json:
    print_tables(load(args.from_json))
    return
  results = load(args.out)
  done = {row_key(r) for r in results["rows"]}
  for target in args.targets:
    for method in args.methods:
      for dtype in args.gradient_dtypes:
        if args.fit:
          fit = largest_fitting_batch(results, target, method, dtype, args.out)
          print(f"{target} {method}: {fit['fits']} fits, {fit['does_not_fit']} not", flush=True)
          continue
        for form in args.forms:
          key = (target, method, form, dtype, args.per_chip_batch)
          # The global form has no all-reduce of its own to choose a dtype for.
          if key in done or (form == "global" and dtype != args.gradient_dtypes[0]):
            continue
          row = run_child(target, method, form, dtype, args.per_chip_batch)
          results["rows"].append(row)
          save(args.out, results)
          reduced = mb(row["collectives"]["all-reduce"]["bytes"])
          print(
            f"{target} {method} {form} {dtype}: compiled in {row['compile_seconds']:.0f} s, "
            f"{gib(row['peak_bytes'])} GiB, all-reduce {reduced} MB",
            flush=True,
          )
  print_tables(results)


if __name__ == "__main__":
  main()
