"""Median train-step time of ERM, Mixup, MixupE-exact (v1), MixupE-fast (v3) and RegMixup.

PreActResNet-18 (BatchNorm, train mode) on a CIFAR-shaped batch (default 32 x 32 x 32 x 3), SGD
with Nesterov momentum, each step jitted and warmed up, then the methods timed round-robin
`--repeats` times; the table gives the medians, the ratios to Mixup measured in the same run
(median and range of the per-round ratios) and the FLOPs and temporary memory XLA reports for the
compiled step; the JSON has every sample.

MixupE-exact runs twice: with the official per-example split (the default: the values that decide
the threshold mask by a transposed linear map, then one jvp along the masked direction) and with
the joint split (one jvp), which is also the path every model without batch-coupled layers takes.
RegMixup runs MixupE's passes (mixed, then clean) with the clean pass differentiated; MixupE at
eta = 0 (`mixup_clean_pass`) runs the same passes with the clean one forward only.

    python benchmarks/step_cost.py --out benchmarks/results/step_cost_cpu.json
    python benchmarks/step_cost.py --methods erm mixup mixup_clean_pass regmixup \
        --out benchmarks/results/step_cost_regmixup_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from provenance import provenance  # benchmarks/provenance.py, beside this script.

from mixupe_jax import losses, xla_cpu
from mixupe_jax.models import PreActResNet18, flax_apply_fn, init_model

METHODS = {
  "erm": dict(method="erm"),
  "mixup": dict(method="mixup"),
  "mixupe_exact_v1_official": dict(method="mixupe", variant="v1", eta=0.1, term_split="official"),
  "mixupe_exact_v1_joint": dict(method="mixupe", variant="v1", eta=0.1, term_split="joint"),
  "mixupe_fast_v3": dict(method="mixupe", variant="v3", eta=0.001),
  "mixup_clean_pass": dict(method="mixupe", variant="v1", eta=0.0),
  "regmixup": dict(method="regmixup", eta=1.0),
  # The term on a random quarter of the clean batch: about (1 + 2 rho) = 1.5x Mixup's FLOPs.
  "mixupe_exact_v1_official_rho0.25": dict(
    method="mixupe", variant="v1", eta=0.1, term_split="official", term_fraction=0.25
  ),
  # The clean pass rematerialized: convolution outputs kept, the rest recomputed.
  "mixupe_exact_v1_official_remat": dict(
    method="mixupe", variant="v1", eta=0.1, term_split="official", clean_pass_remat="dots_saveable"
  ),
  "mixupe_exact_v1_joint_remat": dict(
    method="mixupe", variant="v1", eta=0.1, term_split="joint", clean_pass_remat="dots_saveable"
  ),
}


def compiled_cost(compiled) -> dict[str, float]:
  """GFLOP and temporary memory (MiB) of one compiled step, as XLA reports them."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  memory = compiled.memory_analysis()
  return dict(
    gflop=analysis.get("flops", float("nan")) / 1e9,
    temp_mib=getattr(memory, "temp_size_in_bytes", float("nan")) / 2**20,
  )


def make_problem(batch_size: int, image_size: int = 32, width: int = 64):
  """(inputs, labels, module, params, model_state, x_bar, optimizer) the step benchmarks share:
  a random CIFAR-shaped batch, PreActResNet-18 initialized from key 0, SGD Nesterov."""
  key = jax.random.key(0)
  inputs = jax.random.normal(key, (batch_size, image_size, image_size, 3))
  labels = jnp.arange(batch_size) % 10
  module = PreActResNet18(num_classes=10, width=width)
  params, model_state = init_model(module, key, inputs)
  optimizer = optax.sgd(0.1, momentum=0.9, nesterov=True)
  return inputs, labels, module, params, model_state, jnp.mean(inputs, axis=0), optimizer


def make_step(loss_fn, optimizer):
  @jax.jit
  def step(params, model_state, opt_state, inputs, labels, key):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, model_state, inputs, labels, key
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), aux.model_state, opt_state, loss

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--width", type=int, default=64, help="PreActResNet-18 base width.")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--out", default="benchmarks/step_cost.json")
  parser.add_argument(
    "--methods",
    nargs="+",
    choices=list(METHODS),
    default=list(METHODS),
    help="The methods to time (Mixup, the reference of the ratios, always runs).",
  )
  parser.add_argument(
    "--xla-default",
    action="store_true",
    help="Keep XLA's own CPU convolutions (YNNPACK) instead of mixupe_jax.xla_cpu.OPTIONS.",
  )
  parser.add_argument(
    "--memory-scheduler",
    action="store_true",
    help="Also XLA:CPU's memory-minimizing scheduler (mixupe_jax.xla_cpu.MEMORY_OPTIONS).",
  )
  args = parser.parse_args()
  methods = {name: METHODS[name] for name in METHODS if name in args.methods or name == "mixup"}
  if not args.xla_default:
    xla_cpu.configure(memory_scheduler=args.memory_scheduler)

  key = jax.random.key(0)
  inputs, labels, module, params, model_state, x_bar, optimizer = make_problem(
    args.batch_size, args.image_size, args.width
  )

  # Compile and warm up every method first, then time them round-robin: one step of each per
  # round, so that drifts in machine load hit all methods alike; ratios are taken per round.
  steps, states, warmup_seconds, compiled_costs = {}, {}, {}, {}
  for name, options in methods.items():
    loss_fn = losses.make_loss_fn(
      apply_fn=flax_apply_fn(module), num_classes=10, alpha=1.0, x_bar=x_bar, **options
    )
    state = (params, model_state, optimizer.init(params))
    steps[name] = make_step(loss_fn, optimizer).lower(*state, inputs, labels, key).compile()
    compiled_costs[name] = compiled_cost(steps[name])
    start = time.perf_counter()
    for _ in range(args.warmup):
      *state, loss = steps[name](*state, inputs, labels, key)
      loss.block_until_ready()
    states[name], warmup_seconds[name] = state, time.perf_counter() - start
    print(f"  compiled and warmed up {name} ({warmup_seconds[name]:.1f} s of warm-up)", flush=True)

  samples = {name: [] for name in methods}
  for repeat in range(args.repeats):
    for name in methods:
      start = time.perf_counter()
      *states[name], loss = steps[name](
        *states[name], inputs, labels, jax.random.fold_in(key, repeat)
      )
      loss.block_until_ready()
      samples[name].append(time.perf_counter() - start)
    print(
      f"  round {repeat + 1}/{args.repeats}: "
      + ", ".join(f"{name} {samples[name][-1]:.2f} s" for name in methods),
      flush=True,
    )

  results = {}
  for name in methods:
    round_ratios = [t / m for t, m in zip(samples[name], samples["mixup"], strict=True)]
    results[name] = dict(
      median_s=statistics.median(samples[name]),
      samples_s=samples[name],
      ratio_to_mixup=statistics.median(samples[name]) / statistics.median(samples["mixup"]),
      median_round_ratio_to_mixup=statistics.median(round_ratios),
      round_ratio_range=[min(round_ratios), max(round_ratios)],
      warmup_s=warmup_seconds[name],
      **compiled_costs[name],
    )

  print(
    f"\nPreActResNet-18 (width {args.width}), batch {args.batch_size}x{args.image_size}x"
    f"{args.image_size}x3, {jax.default_backend()} ({jax.devices()[0].device_kind}), "
    f"median of {args.repeats}:"
  )
  print(
    "| method | median step (s) | ratio of medians to Mixup | per-round ratio: median "
    "(range) | GFLOP | FLOPs vs Mixup | temp memory (MiB) |"
  )
  print("|---|---|---|---|---|---|---|")
  for name, result in results.items():
    low, high = result["round_ratio_range"]
    print(
      f"| {name} | {result['median_s']:.3f} | {result['ratio_to_mixup']:.2f}x "
      f"| {result['median_round_ratio_to_mixup']:.2f}x ({low:.2f}-{high:.2f}) "
      f"| {result['gflop']:.0f} | {result['gflop'] / results['mixup']['gflop']:.2f}x "
      f"| {result['temp_mib']:.0f} |"
    )
  report = dict(
    benchmark="step_cost",
    provenance=provenance(),
    model="PreActResNet-18",
    width=args.width,
    batch_shape=[args.batch_size, args.image_size, args.image_size, 3],
    backend=jax.default_backend(),
    device_kind=jax.devices()[0].device_kind,
    device_count=jax.device_count(),
    jax_version=jax.__version__,
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    machine=platform.machine(),
    processor=platform.processor(),
    repeats=args.repeats,
    results=results,
  )
  with open(args.out, "w") as file:
    json.dump(report, file, indent=2)
  print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
