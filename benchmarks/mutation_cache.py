"""Mutants checked per second by mutmut, with and without JAX's persistent compilation cache.

The mutation check (scripts/mutation_check.py) runs each mutant's tests in a fresh process, which
compiles every jitted program again unless the processes share the persistent compilation cache
(the script's default, `mutants/jax_cache`). This benchmark measures what the cache buys:

  1. warm-up: mutmut checks the `--warmup` mutants with the cache on (in a fresh checkout this also
     builds mutants/ and mutmut's test map, minutes). The cache then holds the programs of the
     unmutated library and of those mutants, as it would part-way through a real run; it is kept
     as the baseline.
  2. rounds: mutmut checks the `--sample` mutants (disjoint from the warm-up ones) without the
     cache, then with a copy of the baseline cache, alternating, so slow phases of the machine
     hit both. The sample's own programs are never in the baseline.

The table gives the median over rounds of mutmut's wall time and of its mutants/second (the
mutation phase only, as mutmut prints it), and the per-round ratios with their spread. Each
round's statuses are compared: the cache must not change a verdict.

    pip install mutmut==3.8.1
    python benchmarks/mutation_cache.py --out benchmarks/results/mutation_cache_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import mutation_check  # noqa: E402  (scripts/ is not a package)
from provenance import provenance  # noqa: E402  (benchmarks/provenance.py, beside this script)

RATE = re.compile(r"([0-9.]+) mutations/second")
VERDICT = re.compile(r"^(\S+) (mixupe_jax\.\S+)$")


def check(pattern: str, cache_dir: str | None, max_children: int) -> dict:
  """One mutmut run over the mutants matching `pattern`: wall seconds, rate and verdicts."""
  start = time.perf_counter()
  output = mutation_check.mutmut(
    "run", "--max-children", str(max_children), pattern, cache_dir=cache_dir
  )
  seconds = time.perf_counter() - start
  rate = RATE.search(output)
  if rate is None:
    sys.exit(f"mutmut printed no rate; its output ends:\n{output[-2000:]}")
  verdicts = {
    match.group(2): match.group(1)
    for line in output.splitlines()
    if (match := VERDICT.match(line.strip()))
  }
  return {"seconds": seconds, "mutants_per_second": float(rate.group(1)), "verdicts": verdicts}


def spread(values: list[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--sample",
    default="mixupe_jax.directional.x_input_shift__mutmut_?",
    help="mutmut pattern of the mutants timed",
  )
  parser.add_argument(
    "--warmup",
    default="mixupe_jax.directional.x_input_shift__mutmut_1?",
    help="mutmut pattern of the mutants checked first, with the cache on",
  )
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
  parser.add_argument("--out", default="benchmarks/mutation_cache.json")
  args = parser.parse_args()

  cache_dir = mutation_check.COMPILATION_CACHE_DIR
  baseline = cache_dir + "_baseline"
  shutil.rmtree(cache_dir, ignore_errors=True)
  check(args.warmup, cache_dir, args.max_children)
  shutil.rmtree(baseline, ignore_errors=True)
  shutil.copytree(cache_dir, baseline)

  rounds = []
  for _ in range(args.rounds):
    without = check(args.sample, None, args.max_children)
    shutil.rmtree(cache_dir)
    shutil.copytree(baseline, cache_dir)
    with_cache = check(args.sample, cache_dir, args.max_children)
    if with_cache["verdicts"] != without["verdicts"]:
      sys.exit(f"The cache changed a verdict: {without['verdicts']} vs {with_cache['verdicts']}")
    rounds.append({"without_cache": without, "with_cache": with_cache})
  shutil.rmtree(baseline)

  def column(mode: str, key: str) -> list[float]:
    return [one[mode][key] for one in rounds]

  result = {
    "sample": args.sample,
    "warmup": args.warmup,
    "max_children": args.max_children,
    "mutants": len(rounds[0]["without_cache"]["verdicts"]),
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    "rounds": rounds,
    "wall_seconds": {
      mode: spread(column(mode, "seconds")) for mode in ("without_cache", "with_cache")
    },
    "mutants_per_second": {
      mode: spread(column(mode, "mutants_per_second")) for mode in ("without_cache", "with_cache")
    },
    "wall_speedup": spread(
      [
        a / b
        for a, b in zip(
          column("without_cache", "seconds"), column("with_cache", "seconds"), strict=True
        )
      ]
    ),
    "rate_speedup": spread(
      [
        b / a
        for a, b in zip(
          column("without_cache", "mutants_per_second"),
          column("with_cache", "mutants_per_second"),
          strict=True,
        )
      ]
    ),
  }
  print(
    f"{result['mutants']} mutants ({args.sample}), {args.rounds} rounds, "
    f"{args.max_children} processes\n"
  )
  print("| | without cache | with cache | speed-up, median (min-max) |")
  print("|---|---|---|---|")
  for label, key, speedup in (
    ("mutmut wall time (s)", "wall_seconds", "wall_speedup"),
    ("mutants/second", "mutants_per_second", "rate_speedup"),
  ):
    cells = [f"{result[key][mode]['median']:.3g}" for mode in ("without_cache", "with_cache")]
    ratio = result[speedup]
    print(
      f"| {label} | {cells[0]} | {cells[1]} | "
      f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f}) |"
    )
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as file:
    json.dump({"provenance": provenance(), **result}, file, indent=2)


if __name__ == "__main__":
  main()
