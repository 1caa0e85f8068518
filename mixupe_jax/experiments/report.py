"""The suite's results: per dataset and method, mean +- std over seeds of test accuracy, NLL and
ECE; each MixupE method against Mixup with a paired t-test over seeds; the chosen eta and sign.

The comparison is paired because a seed fixes the initialization, the data order and the mixing
draws for every method alike, so the per-seed difference d_s = acc_MixupE(s) - acc_Mixup(s)
removes the variation the methods share. With n seeds,

    t = mean(d) / (std(d) / sqrt(n)),   p = two-sided Student-t tail with n - 1 degrees of freedom

(`scipy.stats.ttest_rel`). With 3 seeds only a large, consistent difference reaches p < 0.05.
Beside it, the 95% confidence interval of the mean difference,

    mean(d) +- t_{0.975, n-1} std(d) / sqrt(n),

which says how large a difference the seeds can resolve: one whose interval contains 0 is not
resolved (t_{0.975, 2} = 4.30, so with 3 seeds the half-width is 2.5 std(d)).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from mixupe_jax.experiments.result import RunResult

METRICS = (
  ("accuracy", "test accuracy (%)", 100.0, 2),
  ("nll", "test NLL", 1.0, 3),
  ("ece", "test ECE (15 bins)", 1.0, 3),
)


def mean_and_std(values: list[float]) -> dict[str, float]:
  """Mean and sample standard deviation (ddof = 1; 0 for one value)."""
  array = np.asarray(values, np.float64)
  return {
    "mean": float(array.mean()),
    "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
    "n": len(array),
  }


def paired_test(method: list[float], baseline: list[float]) -> dict[str, float | None]:
  """Mean and std of d = method - baseline over paired seeds, t and two-sided p (None if n < 2
  or every difference is the same, where t is undefined)."""
  from scipy import stats

  difference = np.asarray(method, np.float64) - np.asarray(baseline, np.float64)
  result: dict[str, Any] = {
    "mean_difference": float(difference.mean()),
    "std_difference": None,
    "t": None,
    "p": None,
    "ci95": None,
    "n": len(difference),
  }
  if len(difference) > 1:
    result["std_difference"] = float(difference.std(ddof=1))
    half_width = (
      stats.t.ppf(0.975, len(difference) - 1) * result["std_difference"] / np.sqrt(len(difference))
    )
    result["ci95"] = [
      result["mean_difference"] - half_width,
      result["mean_difference"] + half_width,
    ]
    # Differences equal up to rounding (e.g. 0.9 - 0.8 and 0.8 - 0.7) have no defined t.
    if result["std_difference"] > 1e-9 * max(1.0, abs(result["mean_difference"])):
      test = stats.ttest_rel(method, baseline)
      result["t"], result["p"] = float(test.statistic), float(test.pvalue)
  return result


def aggregate(suite, outcome: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
  """results.json's content from `runner.run_suite`'s outcome (its runs as `RunResult` objects
  or as result.json records)."""
  runs = [RunResult.from_record(run) for run in outcome["runs"]]
  table: dict[str, dict[str, Any]] = {}
  for dataset in dict.fromkeys(run.dataset for run in runs):
    table[dataset] = {}
    for method in suite.methods:
      chosen = [r for r in runs if r.dataset == dataset and r.method == method]
      finished = sorted((r for r in chosen if r.finished), key=lambda r: r.seed)
      entry: dict[str, Any] = {
        "seeds": [r.seed for r in finished],
        "diverged_seeds": [r.seed for r in chosen if not r.finished],
        "seconds": sum(r.seconds for r in chosen),
        "per_seed": {name: [r.metrics["test"][name] for r in finished] for name, *_ in METRICS},
      }
      for name, *_ in METRICS:
        if finished:
          entry[name] = mean_and_std(entry["per_seed"][name])
      if chosen:
        entry["seconds_per_run"] = entry["seconds"] / len(chosen)
        cpu_seconds = [r.cpu_seconds for r in chosen if r.cpu_seconds is not None]
        if len(cpu_seconds) == len(chosen):
          entry["cpu_seconds_per_run"] = sum(cpu_seconds) / len(chosen)
      for name, values in _run_statistics(finished).items():
        entry["per_seed"][name] = values
        entry[name] = mean_and_std(values)
      table[dataset][method] = entry
    comparisons = {}
    for method, baseline in suite.comparisons:
      a, b = table[dataset].get(method), table[dataset].get(baseline)
      common = sorted(set(a["seeds"]) & set(b["seeds"])) if a and b else []
      if common:

        def pick(entry, name, common=common):
          return [entry["per_seed"][name][entry["seeds"].index(s)] for s in common]

        comparisons[f"{method} - {baseline}"] = {
          name: paired_test(pick(a, name), pick(b, name)) for name, *_ in METRICS
        }
    table[dataset]["comparisons"] = comparisons
  return {
    "suite": suite.name,
    "seeds": list(suite.seeds),
    "eta_grid": list(suite.eta_grid),
    "sign_grid": list(suite.sign_grid),
    "validation_fraction": suite.validation_fraction,
    "total_run_seconds": sum(run.seconds for run in runs)
    + sum(
      entry["seconds"]
      for dataset in outcome["search"].values()
      for entries in dataset.values()
      for entry in entries
    ),
    # CPU seconds where every run recorded them (runs of suites before cpu_seconds lack them).
    "total_cpu_seconds": (
      sum(run.cpu_seconds or 0.0 for run in runs)
      + sum(
        entry["cpu_seconds"]
        for dataset in outcome["search"].values()
        for entries in dataset.values()
        for entry in entries
      )
      if all(run.cpu_seconds is not None for run in runs)
      and all(
        "cpu_seconds" in entry
        for dataset in outcome["search"].values()
        for entries in dataset.values()
        for entry in entries
      )
      else None
    ),
    "wall_seconds_this_invocation": seconds,
    "chosen": outcome["chosen"],
    # Suites that search Mixup's alpha: its grid and the alpha chosen per dataset.
    **(
      {"alpha_grid": list(suite.alpha_grid), "alphas": outcome["alphas"]}
      if suite.alpha_grid
      else {}
    ),
    "search": outcome["search"],
    "results": table,
    "missing_runs": outcome.get("missing", []),
    "curves": {f"{r.dataset}/{r.method}/seed={r.seed}": r.curves for r in runs},
  }


def _run_statistics(finished: list[RunResult]) -> dict[str, list[float]]:
  """Per-seed values that runs of early-stopping suites carry (each only when every finished run
  has it): the reported model's accuracy on the unaugmented training split, its step, and the
  fraction of examples the MixupE term acted on, averaged over training."""
  values: dict[str, list[float]] = {}
  candidates = {
    "train_accuracy": lambda r: r.metrics.get("train_eval", {}).get("accuracy"),
    "best_step": lambda r: r.best_step,
    "active_fraction": lambda r: (
      float(np.mean([v for _, v in r.curves["active_fraction"]]))
      if r.curves.get("active_fraction")
      else None
    ),
  }
  for name, read in candidates.items():
    found = [read(r) for r in finished]
    if found and all(v is not None for v in found):
      values[name] = found
  return values


# Tables of the per-run statistics above, where a suite has them: (key, title, scale, digits).
RUN_STATISTICS = (
  ("train_accuracy", "training-split accuracy (%) of the reported model", 100.0, 2),
  (
    "active_fraction",
    "fraction of examples the MixupE term acts on (%), mean over training",
    100.0,
    1,
  ),
  ("best_step", "step of the reported (best validation) model", 1.0, 0),
)


def _cell(statistics: dict[str, float] | None, scale: float, digits: int) -> str:
  if not statistics:
    return "—"
  return f"{statistics['mean'] * scale:.{digits}f} ± {statistics['std'] * scale:.{digits}f}"


def _difference(test: dict[str, Any] | None, scale: float, digits: int) -> str:
  if not test:
    return "—"
  p = "n/a" if test["p"] is None else f"{test['p']:.2f}"
  interval = (
    ""
    if test.get("ci95") is None
    else " [" + ", ".join(f"{bound * scale:+.{digits}f}" for bound in test["ci95"]) + "]"
  )
  return f"{test['mean_difference'] * scale:+.{digits}f}{interval} (p={p})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (
    ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    + [f"| {' | '.join(row)} |" for row in rows]
    + [""]
  )


def _seeds_label(seeds: list[int], suite_seeds: list[int]) -> str:
  """A row's seeds after its dataset's name when they are not the suite's: " (n seeds)" for
  seeds 0 to n - 1, else the list."""
  if list(seeds) == list(suite_seeds):
    return ""
  if list(seeds) == list(range(len(seeds))):
    return f" ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"
  return f" (seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))})"


def markdown(results: dict[str, Any], suite) -> str:
  """Per metric, a table of datasets x methods and one of the paired differences (mean, 95% CI,
  p); then the per-run statistics the suite has, the time per run, and the chosen eta and sign.
  Every dataset's entry holds every method of `suite`, as `aggregate` writes it."""
  methods = list(suite.methods)
  comparisons = [f"{m} - {b}" for m, b in suite.comparisons]
  entries = results["results"]
  seeds = {d: max((e[m]["seeds"] for m in methods), key=len) for d, e in entries.items()}
  label = {d: d + _seeds_label(s, results["seeds"]) for d, s in seeds.items()}
  over = f"over seeds {results['seeds']}"
  if any(label[d] != d for d in label):
    over += ", or over the seeds a row names (n seeds: 0 to n - 1)"
  lines = []
  if results.get("missing_runs"):
    finished = len(results["curves"]) + sum(
      len(entries) for dataset in results["search"].values() for entries in dataset.values()
    )
    lines += [
      f"**Partial suite**: {finished} runs finished, {len(results['missing_runs'])} "
      "not yet; the tables show the finished ones (a method missing at a seed is left out "
      "of that seed's pairs).",
      "",
    ]
  for name, title, scale, digits in METRICS:
    lines += [f"**{title}**, mean ± std {over}", ""]
    lines += _table(
      ["dataset"] + methods,
      [
        [label[d]] + [_cell(e[m].get(name), scale, digits) for m in methods]
        for d, e in entries.items()
      ],
    )
    lines += [f"**{title}: paired differences**, mean [95% CI] (p)", ""]
    lines += _table(
      ["dataset"] + comparisons,
      [
        [d]
        + [_difference(e["comparisons"].get(c, {}).get(name), scale, digits) for c in comparisons]
        for d, e in entries.items()
      ],
    )
  for name, title, scale, digits in RUN_STATISTICS:
    shown = [m for m in methods if any(name in e[m] for e in entries.values())]
    if shown:
      lines += [f"**{title}**, mean ± std over seeds", ""]
      lines += _table(
        ["dataset"] + shown,
        [[d] + [_cell(e[m].get(name), scale, digits) for m in shown] for d, e in entries.items()],
      )
  for key, title in (
    ("seconds_per_run", "seconds per run"),
    ("cpu_seconds_per_run", "CPU seconds per run (all threads)"),
  ):
    if any(key in e[m] for e in entries.values() for m in methods):
      lines += [f"**{title}** (final runs, mean over seeds)", ""]
      lines += _table(
        ["dataset"] + methods,
        [
          [d] + [f"{e[m][key]:.0f}" if key in e[m] else "—" for m in methods]
          for d, e in entries.items()
        ],
      )
  if results.get("alpha_grid"):
    lines += _alpha_search(results, suite.alpha_method)
  searched = [method for method, entry in suite.methods.items() if entry.searched]
  if searched:  # A suite of unsearched methods (a control) has no choices to show.
    lines += [
      "**Chosen on the validation split** (eta, sign; published = the variant's own sign)",
      "",
    ]
    lines += _table(
      ["dataset"] + searched,
      [
        [dataset]
        + [
          f"{chosen[m]['eta']:g}, {'flipped' if chosen[m]['flip_sign'] else 'published'}"
          if m in chosen
          else "—"
          for m in searched
        ]
        for dataset, chosen in results["chosen"].items()
      ],
    )
  diverged = [
    f"{d}/{m} seeds {e['diverged_seeds']}"
    for d, entry in results["results"].items()
    for m, e in entry.items()
    if m != "comparisons" and e["diverged_seeds"]
  ]
  lines += [
    f"Diverged (NaN loss) runs: {', '.join(diverged) if diverged else 'none'}.",
    f"Training time, all runs of the suite: {results['total_run_seconds'] / 60:.1f} min"
    + (
      "."
      if results.get("total_cpu_seconds") is None
      else f" ({results['total_cpu_seconds'] / 3600:.2f} CPU-hours)."
    ),
  ]
  return "\n".join(lines) + "\n"


def _alpha_search(results: dict[str, Any], method: str) -> list[str]:
  """The alpha search's validation accuracy per dataset and alpha, and the alpha chosen."""
  grid = results["alpha_grid"]
  rows = []
  for dataset, searched in results["search"].items():
    accuracy = {entry["alpha"]: entry["accuracy"] for entry in searched.get(method, [])}
    rows.append(
      [dataset]
      + [_percent(accuracy.get(alpha)) for alpha in grid]
      + [f"{results['alphas'][dataset]:g}" if dataset in results["alphas"] else "—"]
    )
  title = (
    f"**{method}'s alpha, searched on the validation split** (validation accuracy, %; "
    "equal accuracies: the lower validation NLL is chosen)"
  )
  return [title, ""] + _table(["dataset"] + [f"alpha={a:g}" for a in grid] + ["chosen"], rows)


def _percent(value: float | None) -> str:
  return "—" if value is None else f"{100 * value:.2f}"


def write(results: dict[str, Any], suite, results_dir: str) -> tuple[str, str]:
  """results.json and results.md in `results_dir`, each replaced whole."""
  os.makedirs(results_dir, exist_ok=True)
  json_path = os.path.join(results_dir, "results.json")
  markdown_path = os.path.join(results_dir, "results.md")
  for path, text in (
    (json_path, json.dumps(results, indent=2, allow_nan=True)),
    (markdown_path, markdown(results, suite)),
  ):
    with open(f"{path}.tmp", "w") as file:
      file.write(text)
    os.replace(f"{path}.tmp", path)
  return json_path, markdown_path
