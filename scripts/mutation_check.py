"""The mutation check of the core: how many single-formula changes the fast tests catch.

mutmut changes one thing at a time in the core modules (an operator, a constant, an argument, a
keyword) and runs the tests that exercise the changed function; a change that every such test
still passes is a survivor. The modules and the tests it uses are set in pyproject.toml
([tool.mutmut]). The script runs mutmut (resuming where it stopped: finished mutants are not
rerun), then writes a report of every survivor with its diff, marking those listed in
scripts/mutation_equivalents.json: mutants that compute the same function as the original (one
line each says why). Anything else that survives is a missing test.

    pip install mutmut==3.8.1
    python scripts/mutation_check.py                 # run, then report
    python scripts/mutation_check.py --report-only   # report the last run
    python scripts/mutation_check.py --rerun-survivors  # retest the last report's survivors
    python scripts/mutation_check.py 'mixupe_jax.losses.*'  # only the mutants matching a pattern

The mutants' processes share JAX's persistent compilation cache (mutants/jax_cache), which made
mutmut 2.4x faster in benchmarks/mutation_cache.py.

results/mutation/report.json keeps every mutant's status with mutmut's hash of the function it
was measured on, so a fresh checkout reruns only the survivors (`--rerun-survivors`), and a
status is reused only while its function is unchanged: after a change to a mutated function, the
next run checks that function's mutants again (those of a deleted function drop out). A run
checks only the mutants (of the patterns given) that have no status yet, so an interrupted run
continues where it stopped; `--rerun-survivors` retests the survivors with the current tests (do
so after sharpening a test: mutmut keeps a status across test changes). mutmut forgets its
results in mutants/ when [tool.mutmut]'s test selection changes, so the script writes the report
before every run; during a long run, `--report-only` (safe beside it) keeps what is finished.

Not part of the test suite: a full run takes hours on 2 cores. The report goes to
results/mutation/report.md and report.json; the kill rate counts killed (and timed-out) mutants
over all mutants but the equivalent ones.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EQUIVALENTS = os.path.join(ROOT, "scripts", "mutation_equivalents.json")
REPORT_DIR = os.path.join(ROOT, "results", "mutation")
COMPILATION_CACHE_DIR = os.path.join(ROOT, "mutants", "jax_cache")
CACHE_VARIABLES = (
  "JAX_COMPILATION_CACHE_DIR",
  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
  "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES",
)
KILLED = ("killed", "timeout")
NOT_CHECKED = "not checked"
COLUMNS = ("killed", "timeout", "survived", "no tests", "equivalent", NOT_CHECKED)


def compilation_cache_environment(cache_dir: str | None) -> dict[str, str]:
  """The environment of mutmut and of every process it forks, with JAX's persistent compilation
  cache in `cache_dir` (None: no cache, even if the caller's environment sets one).

  Each mutant's tests run in a fresh process, which would compile every jitted function again.
  The cache key is the lowered program, so a mutant only recompiles the programs its change
  reaches; a program it leaves unchanged computes the same function and is read from disk. Every
  program is cached, however fast it compiled (the defaults skip those under a second).
  """
  environment = {k: v for k, v in os.environ.items() if k not in CACHE_VARIABLES}
  if cache_dir is not None:
    environment.update(zip(CACHE_VARIABLES, (os.path.abspath(cache_dir), "0", "-1"), strict=True))
  return environment


def mutmut_executable() -> str:
  beside = os.path.join(os.path.dirname(sys.executable), "mutmut")
  executable = beside if os.path.exists(beside) else shutil.which("mutmut")
  if executable is None:
    sys.exit(
      "mutmut is not installed: pip install mutmut==3.8.1 (it is not a dependency of "
      "the package or of its tests)."
    )
  return executable


def mutmut(*arguments: str, capture: bool = True, cache_dir: str | None = None) -> str:
  result = subprocess.run(
    [mutmut_executable(), *arguments],
    cwd=ROOT,
    text=True,
    capture_output=capture,
    check=False,
    env=compilation_cache_environment(cache_dir),
  )
  if result.returncode not in (0, 1) and capture:
    sys.exit(f"mutmut {' '.join(arguments)} failed:\n{result.stderr[-2000:]}")
  return result.stdout if capture else ""


def function_of(name: str) -> str:
  """mixupe_jax.losses.x_mixupe_loss_fn__mutmut_12 -> mixupe_jax.losses.x_mixupe_loss_fn."""
  return name.rpartition("__mutmut_")[0]


def function_hashes() -> dict[str, str]:
  """mutated function -> mutmut's hash of its source, from mutants/**/*.py.meta: a status is
  only reused while the function it was measured on is unchanged."""
  hashes = {}
  for directory, _, files in os.walk(os.path.join(ROOT, "mutants", "mixupe_jax")):
    for file in files:
      if file.endswith(".py.meta"):
        path = os.path.join(directory, file)
        module = os.path.relpath(path, os.path.join(ROOT, "mutants"))[: -len(".py.meta")]
        with open(path) as meta:
          for function, digest in json.load(meta).get("hash_by_function_name", {}).items():
            hashes[f"{module.replace(os.sep, '.')}.{function}"] = digest
  return hashes


def stored_report() -> dict:
  """The last report (committed), so that a fresh checkout retests only what survived there
  instead of every mutant."""
  path = os.path.join(REPORT_DIR, "report.json")
  if not os.path.exists(path):
    return {}
  with open(path) as file:
    return json.load(file)


def statuses() -> tuple[dict[str, str], dict[str, str]]:
  """(mutant name -> status (killed, survived, timeout, no tests, ...), function -> hash) for the
  mutants mutmut lists now: mutmut's status where it checked the mutant, else the last report's
  where that report measured the same function (same hash). Mutants of deleted or changed
  functions never keep a stored status."""
  stored = stored_report()
  stored_status = stored.get("status_by_mutant", {})
  stored_hash = stored.get("function_hash_by_name", {})
  hashes = function_hashes()
  result = {}
  for line in mutmut("results", "--all", "true").splitlines():
    name, _, status = line.strip().rpartition(": ")
    if not name.startswith("mixupe_jax."):
      continue
    function = function_of(name)
    unchanged = function in hashes and stored_hash.get(function) == hashes[function]
    if status == NOT_CHECKED and unchanged and name in stored_status:
      status = stored_status[name]
    result[name] = status
  if not result:
    sys.exit("No mutants found: run without --report-only first.")
  return result, {
    function: hashes[function]
    for function in sorted({function_of(name) for name in result})
    if function in hashes
  }


def mutated_lines(name: str) -> list[str]:
  """The '-' and '+' lines of a mutant's diff."""
  diff = mutmut("show", name)
  return [
    line
    for line in diff.splitlines()
    if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
  ]


def module_of(name: str) -> str:
  """mixupe_jax.losses.x_mixupe_loss_fn__mutmut_12 -> mixupe_jax.losses."""
  return name.rpartition(".")[0]


def report() -> dict:
  with open(EQUIVALENTS) as file:
    equivalents = json.load(file)
  status_of, hash_of = statuses()
  unchecked = sorted(name for name, status in status_of.items() if status == NOT_CHECKED)
  survivors = sorted(
    (name for name, status in status_of.items() if status not in KILLED and status != NOT_CHECKED),
    key=lambda n: (module_of(n), n),
  )
  rows, stale = [], []
  for name in survivors:
    lines = mutated_lines(name)
    known = equivalents.get(name)
    if known is not None and known["mutated"] not in lines:
      stale.append(name)  # The code changed under the listed mutant: review it again.
      known = None
    rows.append(
      {
        "name": name,
        "status": status_of[name],
        "diff": lines,
        "equivalent": known["why"] if known else None,
      }
    )
  per_module = collections.defaultdict(collections.Counter)
  for name, status in status_of.items():
    per_module[module_of(name)][status] += 1
  for row in rows:
    if row["equivalent"]:  # Counted once: as equivalent, not as survived.
      per_module[module_of(row["name"])][row["status"]] -= 1
      per_module[module_of(row["name"])]["equivalent"] += 1
  total = len(status_of)
  checked = total - len(unchecked)
  killed = sum(status in KILLED for status in status_of.values())
  equivalent = sum(row["equivalent"] is not None for row in rows)
  summary = {
    "mutants": total,
    "checked": checked,
    "not_checked": len(unchecked),
    "killed": killed,
    "equivalent": equivalent,
    "unexplained_survivors": len(rows) - equivalent,
    "kill_rate": killed / max(checked - equivalent, 1),
    "raw_kill_rate": killed / max(checked, 1),
    "stale_equivalents": stale,
    "per_module": {module: dict(counts) for module, counts in sorted(per_module.items())},
    "survivors": rows,
    "status_by_mutant": dict(sorted(status_of.items())),
    "function_hash_by_name": hash_of,
  }
  os.makedirs(REPORT_DIR, exist_ok=True)
  with open(os.path.join(REPORT_DIR, "report.json"), "w") as file:
    json.dump(summary, file, indent=2)
  with open(os.path.join(REPORT_DIR, "report.md"), "w") as file:
    file.write(markdown(summary))
  return summary


def markdown(summary: dict) -> str:
  lines = [
    "# Mutation check of the core",
    "",
    "`python scripts/mutation_check.py` (mutmut; modules and tests in pyproject.toml).",
    "",
    f"- mutants: {summary['mutants']}, of which checked: {summary['checked']}"
    + (
      f" (**{summary['not_checked']} not checked yet**: rerun the script)"
      if summary["not_checked"]
      else ""
    ),
    f"- killed (or timed out): {summary['killed']}",
    f"- equivalent (listed in scripts/mutation_equivalents.json): {summary['equivalent']}",
    f"- unexplained survivors: {summary['unexplained_survivors']}",
    f"- kill rate of the checked mutants, equivalents excluded: {100 * summary['kill_rate']:.1f}%",
    f"- kill rate of the checked mutants: {100 * summary['raw_kill_rate']:.1f}%",
    "",
    "| module | " + " | ".join(COLUMNS) + " |",
    "|---" * (1 + len(COLUMNS)) + "|",
  ]
  for module, counts in summary["per_module"].items():
    lines.append(f"| {module} | " + " | ".join(str(counts.get(k, 0)) for k in COLUMNS) + " |")
  lines += ["", "## Survivors", ""]
  for row in summary["survivors"]:
    verdict = f"equivalent: {row['equivalent']}" if row["equivalent"] else "**needs a test**"
    lines += [
      f"- `{row['name']}` ({row['status']}; {verdict})",
      "  ```diff",
      *[f"  {line}" for line in row["diff"]],
      "  ```",
    ]
  if summary["stale_equivalents"]:
    lines += [
      "",
      "Listed as equivalent, but the code changed: " + ", ".join(summary["stale_equivalents"]),
    ]
  return "\n".join(lines) + "\n"


NOTHING = "mixupe_jax.no_such_mutant__*"


def unchecked(patterns: list[str], cache_dir: str | None) -> list[str]:
  """The mutants matching `patterns` (all: none given) that no status covers yet.

  mutmut reruns every mutant a pattern names, finished or not. So mutmut first builds mutants/
  and its test map for the current source and config (a pattern that matches nothing stops
  mutmut 3.8.1 right after, with "nothing matches"); the finished ones are then known.
  """
  result = subprocess.run(
    [mutmut_executable(), "run", NOTHING],
    cwd=ROOT,
    text=True,
    capture_output=True,
    check=False,
    env=compilation_cache_environment(cache_dir),
  )
  if "nothing matches" not in result.stdout + result.stderr:
    sys.exit(f"mutmut could not build mutants/ and its stats:\n{result.stderr[-2000:]}")
  return [
    name
    for name, status in statuses()[0].items()
    if status == NOT_CHECKED and (not patterns or any(fnmatch.fnmatch(name, p) for p in patterns))
  ]


def check(names: list[str], max_children: int, cache_dir: str | None) -> None:
  if not names:
    print("Every mutant asked for has a status: nothing to run.")
    return
  print(f"Checking {len(names)} mutants.", flush=True)
  mutmut("run", "--max-children", str(max_children), *names, capture=False, cache_dir=cache_dir)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--report-only", action="store_true")
  parser.add_argument(
    "--rerun-survivors",
    action="store_true",
    help="retest the survivors only (with the current tests)",
  )
  parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
  parser.add_argument(
    "--compilation-cache-dir",
    default=COMPILATION_CACHE_DIR,
    help="JAX's persistent compilation cache, shared by the mutants' processes",
  )
  parser.add_argument(
    "--no-compilation-cache",
    action="store_true",
    help="compile every program in every mutant's process (slower)",
  )
  parser.add_argument("mutants", nargs="*", help="check only these mutants (default: all)")
  args = parser.parse_args()
  cache_dir = None if args.no_compilation_cache else args.compilation_cache_dir
  if not args.report_only and os.path.isdir(os.path.join(ROOT, "mutants")):
    # A change to [tool.mutmut]'s test selection makes mutmut forget every result in mutants/:
    # keep them in report.json first, where statuses() finds them.
    report()
  if args.rerun_survivors:
    # In a fresh checkout mutmut first builds mutants/ and its test map (minutes), then runs
    # only these; the other mutants keep the statuses of the committed report.
    with open(EQUIVALENTS) as file:
      equivalents = json.load(file)
    names = [
      name
      for name, status in stored_report().get("status_by_mutant", {}).items()
      if status not in KILLED and status != NOT_CHECKED and name not in equivalents
    ]
    check(names, args.max_children, cache_dir)
  elif not args.report_only:
    check(unchecked(args.mutants, cache_dir), args.max_children, cache_dir)
  summary = report()
  print(
    f"{summary['mutants']} mutants ({summary['not_checked']} not checked), "
    f"{summary['killed']} killed, {summary['equivalent']} "
    f"equivalent, {summary['unexplained_survivors']} unexplained survivors: kill rate "
    f"{100 * summary['kill_rate']:.1f}% (equivalents excluded), "
    f"{100 * summary['raw_kill_rate']:.1f}% of all. Report: "
    f"{os.path.relpath(REPORT_DIR, ROOT)}/report.md"
  )


if __name__ == "__main__":
  main()
