"""The suite's results: per dataset and method, mean +- std over seeds of test accuracy, NLL and
ECE; each MixupE method against Mixup with a paired t-test over seeds; the chosen eta and sign.

The comparison is paired because a seed fixes the initialization, the data order and the mixing
draws for every method alike, so the per-seed difference d_s = acc_MixupE(s) - acc_Mixup(s)
removes the variation the methods share. With n seeds,

    t = mean(d) / (std(d) / sqrt(n)),   p = two-sided Student-t tail with n - 1 degrees of freedom

(`scipy.stats.ttest_rel`). With 3 seeds only a large, consistent difference reaches p < 0.05.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

METRICS = (("accuracy", "test accuracy (%)", 100.0, 2), ("nll", "test NLL", 1.0, 3),
           ("ece", "test ECE (15 bins)", 1.0, 3))


def mean_and_std(values: list[float]) -> dict[str, float]:
  """Mean and sample standard deviation (ddof = 1; 0 for one value)."""
  array = np.asarray(values, np.float64)
  return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
          "n": len(array)}


def paired_test(method: list[float], baseline: list[float]) -> dict[str, float | None]:
  """Mean and std of d = method - baseline over paired seeds, t and two-sided p (None if n < 2
  or every difference is the same, where t is undefined)."""
  from scipy import stats

  difference = np.asarray(method, np.float64) - np.asarray(baseline, np.float64)
  result: dict[str, float | None] = {"mean_difference": float(difference.mean()),
                                     "std_difference": None, "t": None, "p": None,
                                     "n": len(difference)}
  if len(difference) > 1:
    result["std_difference"] = float(difference.std(ddof=1))
    # Differences equal up to rounding (e.g. 0.9 - 0.8 and 0.8 - 0.7) have no defined t.
    if result["std_difference"] > 1e-9 * max(1.0, abs(result["mean_difference"])):
      test = stats.ttest_rel(method, baseline)
      result["t"], result["p"] = float(test.statistic), float(test.pvalue)
  return result


def aggregate(suite, outcome: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
  """results.json's content from `runner.run_suite`'s outcome."""
  runs = outcome["runs"]
  table: dict[str, dict[str, Any]] = {}
  for dataset in dict.fromkeys(run["dataset"] for run in runs):
    table[dataset] = {}
    for method in suite.methods:
      chosen = [r for r in runs if r["dataset"] == dataset and r["method"] == method]
      finished = sorted((r for r in chosen if r["status"] == "finished"), key=lambda r: r["seed"])
      entry: dict[str, Any] = {
          "seeds": [r["seed"] for r in finished],
          "diverged_seeds": [r["seed"] for r in chosen if r["status"] != "finished"],
          "seconds": sum(r["seconds"] for r in chosen),
          "per_seed": {name: [r["metrics"]["test"][name] for r in finished]
                       for name, *_ in METRICS},
      }
      for name, *_ in METRICS:
        if finished:
          entry[name] = mean_and_std(entry["per_seed"][name])
      table[dataset][method] = entry
    comparisons = {}
    for method, baseline in suite.comparisons:
      a, b = table[dataset].get(method), table[dataset].get(baseline)
      common = sorted(set(a["seeds"]) & set(b["seeds"])) if a and b else []
      if common:
        pick = lambda entry, name: [entry["per_seed"][name][entry["seeds"].index(s)]
                                    for s in common]
        comparisons[f"{method} - {baseline}"] = {
            name: paired_test(pick(a, name), pick(b, name)) for name, *_ in METRICS}
    table[dataset]["comparisons"] = comparisons
  return {
      "suite": suite.name, "seeds": list(suite.seeds), "eta_grid": list(suite.eta_grid),
      "sign_grid": list(suite.sign_grid), "validation_fraction": suite.validation_fraction,
      "total_run_seconds": sum(run["seconds"] for run in runs) + sum(
          entry["seconds"] for dataset in outcome["search"].values()
          for entries in dataset.values() for entry in entries),
      "wall_seconds_this_invocation": seconds,
      "chosen": outcome["chosen"], "search": outcome["search"], "results": table,
      "curves": {f"{r['dataset']}/{r['method']}/seed={r['seed']}": r["curves"] for r in runs},
  }


def _cell(statistics: dict[str, float] | None, scale: float, digits: int) -> str:
  if not statistics:
    return "—"
  return f"{statistics['mean'] * scale:.{digits}f} ± {statistics['std'] * scale:.{digits}f}"


def _difference(test: dict[str, Any] | None, scale: float, digits: int) -> str:
  if not test:
    return "—"
  p = "n/a" if test["p"] is None else f"{test['p']:.2f}"
  return f"{test['mean_difference'] * scale:+.{digits}f} (p={p})"


def markdown(results: dict[str, Any], suite) -> str:
  """One table per metric (datasets x methods, then MixupE - Mixup with its paired p), then the
  chosen eta and sign."""
  methods = list(suite.methods)
  comparisons = [f"{m} - {b}" for m, b in suite.comparisons]
  lines = []
  for name, title, scale, digits in METRICS:
    lines += [f"**{title}**, mean ± std over seeds {results['seeds']}", "",
              "| dataset | " + " | ".join(methods + comparisons) + " |",
              "|---" * (1 + len(methods) + len(comparisons)) + "|"]
    for dataset, entry in results["results"].items():
      cells = [_cell(entry[m].get(name), scale, digits) for m in methods]
      cells += [_difference(entry["comparisons"].get(c, {}).get(name), scale, digits)
                for c in comparisons]
      lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    lines.append("")
  searched = [method for method, entry in suite.methods.items() if entry.searched]
  lines += ["**Chosen on the validation split** (eta, sign; published = the variant's own sign)", "",
            "| dataset | " + " | ".join(searched) + " |", "|---" * (1 + len(searched)) + "|"]
  for dataset, chosen in results["chosen"].items():
    cells = [f"{chosen[m]['eta']:g}, {'flipped' if chosen[m]['flip_sign'] else 'published'}"
             for m in searched]
    lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
  diverged = [f"{d}/{m} seeds {e['diverged_seeds']}" for d, entry in results["results"].items()
              for m, e in entry.items() if m != "comparisons" and e["diverged_seeds"]]
  lines += ["", f"Diverged (NaN loss) runs: {', '.join(diverged) if diverged else 'none'}.",
            f"Training time, all runs of the suite: {results['total_run_seconds'] / 60:.1f} min."]
  return "\n".join(lines) + "\n"


def write(results: dict[str, Any], suite, results_dir: str) -> tuple[str, str]:
  """results.json and results.md in `results_dir`, each replaced whole."""
  os.makedirs(results_dir, exist_ok=True)
  json_path = os.path.join(results_dir, "results.json")
  markdown_path = os.path.join(results_dir, "results.md")
  for path, text in ((json_path, json.dumps(results, indent=2, allow_nan=True)),
                     (markdown_path, markdown(results, suite))):
    with open(f"{path}.tmp", "w") as file:
      file.write(text)
    os.replace(f"{path}.tmp", path)
  return json_path, markdown_path
