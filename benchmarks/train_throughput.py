"""Train-step throughput of ERM, Mixup, MixupE-exact (v1) and MixupE-fast (v3) on this backend.

The step is the training system's own (`mixupe_jax.train.make_train_step`: jit over a mesh of every
device, batch sharded, SGD Nesterov), on a synthetic batch. Methods are timed round-robin
`--repeats` times after a warm-up; the table gives median examples/s per device, the step's FLOPs
(XLA's cost analysis of the compiled step), the achieved FLOP/s and, where the device's peak is
known, the fraction of it. The JSON keeps every sample.

    python benchmarks/train_throughput.py --out benchmarks/results/train_throughput_cpu.json
    python benchmarks/train_throughput.py --model resnet50 --image-size 224 --batch-size 256 \\
        --dtype bfloat16                                     # on a GPU or TPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from provenance import provenance  # benchmarks/provenance.py, beside this script.

from mixupe_jax import losses, parallel, xla_cpu
from mixupe_jax.models import flax_apply_fn, init_model
from mixupe_jax.models.registry import build_model
from mixupe_jax.train import TrainState, make_train_step
from mixupe_jax.train.defaults import default_config
from mixupe_jax.train.optim import make_optimizer

METHODS = {
  "erm": dict(method="erm"),
  "mixup": dict(method="mixup"),
  "mixupe_exact_v1": dict(method="mixupe", variant="v1", eta=0.1),
  "mixupe_fast_v3": dict(method="mixupe", variant="v3", eta=0.1),
}
# Dense peak FLOP/s per device for the compute dtype, from the vendors' data sheets.
PEAK_FLOPS = {
  ("NVIDIA H100 80GB HBM3", "bfloat16"): 989e12,
  ("NVIDIA H100 80GB HBM3", "float32"): 67e12,
  ("NVIDIA H200", "bfloat16"): 989e12,
  ("NVIDIA H200", "float32"): 67e12,
  ("NVIDIA A100-SXM4-80GB", "bfloat16"): 312e12,
  ("NVIDIA A100-SXM4-80GB", "float32"): 19.5e12,
  ("TPU v4", "bfloat16"): 275e12,
  ("TPU v5 lite", "bfloat16"): 197e12,
  ("TPU v5p", "bfloat16"): 459e12,
}


def step_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # Older JAX: one entry per computation.
    analysis = analysis[0] if analysis else {}
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


def compiled_train_step(module, method_options: dict, inputs, labels, num_classes: int):
  """(the training system's step compiled for this batch, a fresh state, the sharded batch) for
  `module` on a mesh of every device, SGD Nesterov, loss `make_loss_fn(**method_options)`."""
  mesh = parallel.data_mesh()
  parallel.check_divisible(len(inputs), mesh)
  params, model_state = init_model(module, jax.random.key(0), inputs[:1])
  schedule = optax.constant_schedule(0.1)
  optimizer = make_optimizer(default_config(), schedule)
  batch = tuple(jax.device_put(a, parallel.batch_sharding(mesh)) for a in (inputs, labels))
  loss_fn = losses.make_loss_fn(
    apply_fn=flax_apply_fn(module),
    num_classes=num_classes,
    x_bar=jnp.mean(inputs, axis=0),
    **method_options,
  )
  step = make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(1))
  state = parallel.replicate(
    TrainState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params)), mesh
  )
  return step.lower(state, *batch).compile(), state, batch


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="preact_resnet18")
  parser.add_argument("--batch-size", type=int, default=32, help="Global batch.")
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--num-classes", type=int, default=10)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=3, help="Steps per timed sample.")
  parser.add_argument("--out", default="benchmarks/train_throughput.json")
  args = parser.parse_args()
  xla_cpu.configure()  # On the CPU backend only; see mixupe_jax.xla_cpu.

  mesh = parallel.data_mesh()
  parallel.check_divisible(args.batch_size, mesh)
  inputs = jax.random.normal(
    jax.random.key(0), (args.batch_size, args.image_size, args.image_size, 3)
  )
  labels = jnp.arange(args.batch_size) % args.num_classes
  module = build_model(args.model, num_classes=args.num_classes, dtype=args.dtype)

  steps, states, flops = {}, {}, {}
  for name, options in METHODS.items():
    step, state, batch = compiled_train_step(module, options, inputs, labels, args.num_classes)
    flops[name] = step_flops(step)
    state, metrics = step(state, *batch)  # Warm up.
    jax.block_until_ready(metrics)
    steps[name], states[name] = step, state

  samples = {name: [] for name in METHODS}
  for _ in range(args.repeats):
    for name in METHODS:
      start = time.perf_counter()
      for _ in range(args.steps):
        states[name], metrics = steps[name](states[name], *batch)
      jax.block_until_ready(metrics)
      samples[name].append((time.perf_counter() - start) / args.steps)

  device = jax.devices()[0]
  kind = device.device_kind
  peak = PEAK_FLOPS.get((kind, args.dtype))
  rows = []
  for name in METHODS:
    seconds = statistics.median(samples[name])
    per_device = args.batch_size / seconds / mesh.size
    achieved = flops[name] / seconds / mesh.size if flops[name] else None
    rows.append(
      dict(
        method=name,
        step_seconds=seconds,
        examples_per_second_per_device=per_device,
        step_gflops=flops[name] / 1e9 if flops[name] else None,
        achieved_tflops_per_device=achieved / 1e12 if achieved else None,
        fraction_of_peak=achieved / peak if achieved and peak else None,
        relative_to_mixup=seconds / statistics.median(samples["mixup"]),
        samples=samples[name],
      )
    )

  print(
    f"{args.model}, {args.dtype}, global batch {args.batch_size} at {args.image_size}px, "
    f"{mesh.size} x {kind} ({jax.default_backend()}), median of {args.repeats} round-robin "
    f"samples of {args.steps} steps"
  )
  print(
    "| method | step (s) | examples/s/device | GFLOP/step | TFLOP/s/device | of peak | "
    "time vs Mixup |"
  )
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    gflops = f"{r['step_gflops']:.1f}" if r["step_gflops"] else "n/a"
    achieved = r["achieved_tflops_per_device"]
    achieved = f"{achieved:.3f}" if achieved else "n/a"
    fraction = f"{100 * r['fraction_of_peak']:.1f}%" if r["fraction_of_peak"] else "unknown peak"
    print(
      f"| {r['method']} | {r['step_seconds']:.3f} | {r['examples_per_second_per_device']:.1f} "
      f"| {gflops} | {achieved} | {fraction} | {r['relative_to_mixup']:.2f}x |"
    )
  with open(args.out, "w") as file:
    json.dump(
      dict(
        provenance=provenance(),
        model=args.model,
        dtype=args.dtype,
        batch_size=args.batch_size,
        image_size=args.image_size,
        devices=mesh.size,
        device_kind=kind,
        backend=jax.default_backend(),
        jax=jax.__version__,
        machine=platform.machine(),
        rows=rows,
      ),
      file,
      indent=2,
    )


if __name__ == "__main__":
  main()
