"""Where a train step's time goes: the compiled step of `step_cost.py` under `jax.profiler`, its
XLA operations summed by kind and the slowest ones listed with their output shapes.

    python benchmarks/profile_step.py --method mixup
    python benchmarks/profile_step.py --method mixupe_exact_v1_official --xla-default

XLA:CPU reports each operation's time on the thread that runs it (with
`--xla_cpu_enable_xprof_traceme`, set here); operations that hand work to a library's own thread
pool (Eigen's convolutions) show only their launch, so compare kinds within one setting. This is
how the YNNPACK weight-gradient convolutions that `mixupe_jax.xla_cpu` moves to Eigen were found:
with `--xla-default` the four `f32[64,3,3,64]` ones of the Mixup step take about 58 ms each.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

from step_cost import METHODS, make_problem, make_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--method", default="mixupe_exact_v1_official", choices=list(METHODS))
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument(
    "--xla-default",
    action="store_true",
    help="Keep XLA's own CPU convolutions (see mixupe_jax.xla_cpu).",
  )
  args = parser.parse_args()
  from mixupe_jax import xla_cpu

  if not args.xla_default:
    xla_cpu.configure()
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
  ).strip()

  import jax

  from mixupe_jax import losses
  from mixupe_jax.models import flax_apply_fn

  key = jax.random.key(0)
  inputs, labels, module, params, model_state, x_bar, optimizer = make_problem(args.batch_size)
  loss_fn = losses.make_loss_fn(
    apply_fn=flax_apply_fn(module), num_classes=10, alpha=1.0, x_bar=x_bar, **METHODS[args.method]
  )
  state = (params, model_state, optimizer.init(params))
  step = make_step(loss_fn, optimizer).lower(*state, inputs, labels, key).compile()
  text = step.as_text()
  for _ in range(2):
    *state, loss = step(*state, inputs, labels, key)
    loss.block_until_ready()
  folder = tempfile.mkdtemp(prefix="profile_step_")
  jax.profiler.start_trace(folder, create_perfetto_trace=True)
  for _ in range(args.steps):
    *state, loss = step(*state, inputs, labels, key)
    loss.block_until_ready()
  jax.profiler.stop_trace()
  (trace_file,) = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
  with gzip.open(trace_file) as file:
    events = [e for e in json.load(file)["traceEvents"] if e.get("ph") == "X"]

  per_operation = collections.Counter()
  for event in events:
    if not event["name"].startswith(("ThunkExecutor", "$", "Slinky", "PjitFunction", "CommonPjRt")):
      per_operation[event["name"]] += event["dur"] / 1e3 / args.steps
  per_kind = collections.Counter()
  for name, milliseconds in per_operation.items():
    per_kind[re.sub(r"[.\d]+$", "", name)] += milliseconds
  total = sum(per_kind.values())
  print(f"{args.method}, batch {args.batch_size}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
  print("| kind | ms per step | share |")
  print("|---|---|---|")
  for kind, milliseconds in per_kind.most_common(args.top):
    print(f"| {kind} | {milliseconds:.1f} | {milliseconds / total:.0%} |")
  print("\n| operation | ms per step | output |")
  print("|---|---|---|")
  for name, milliseconds in per_operation.most_common(args.top):
    shape = re.search(r"%" + re.escape(name) + r" = (\S+) ", text)
    print(f"| {name} | {milliseconds:.1f} | {shape.group(1) if shape else ''} |")


if __name__ == "__main__":
  main()
