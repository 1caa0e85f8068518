"""Runs a suite: per dataset, first the eta search on a validation split, then every method over
every seed on the full training split, evaluated on the test split.

Each run has its own directory under the suite's workdir and is finished when its `result.json`
exists; a finished run is never run again. An interrupted run resumes from its checkpoint (see
`mixupe_jax.train.loop`), so killing the suite at any moment and rerunning the same command
completes it without losing or repeating finished work.

Runs that span sessions: with a `store` folder (the cpu suite's is `results/runs/cpu`, committed),
every finished run's result file is also written there, as `<store>/<run dir>.json`, and a run
found there is finished too. The store holds results only (a few kB each, with the curves);
checkpoints stay in the workdir. To recompute a run, delete its file from the store and workdir.

The search (one seed) trains each MixupE method for every (eta, flip_sign) of the suite's grid on
train minus a stratified validation split and scores it on that split alone, never on the test
split: the highest validation accuracy wins, ties go to the lower validation NLL. A run whose loss
becomes NaN is recorded as diverged and ranks last.

A suite with an `alpha_grid` first searches Mixup's alpha the same way (its `alpha_method` at each
alpha, the search's seed, budget and split); the chosen alpha then holds for every mixing method
of the dataset, MixupE's eta search included. A run at the dataset config's own alpha names no
alpha in its directory, so it is the run a suite without the search made (reused, not repeated).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from typing import Any

import ml_collections

from mixupe_jax import data as data_lib
from mixupe_jax.experiments.result import RunResult
from mixupe_jax.experiments.suites import Suite, dataset_methods, dataset_seeds
from mixupe_jax.train import reporting
from mixupe_jax.train.loop import train_and_evaluate

RESULT_FILE = "result.json"
DEFAULT_CONFIGS_DIR = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "configs")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a suite: `stage` is "search" or "final"."""

  stage: str
  dataset: str
  method: str
  seed: int
  eta: float | None = None
  flip_sign: bool = False
  alpha: float | None = None  # None: the config's own alpha.

  @property
  def relative_dir(self) -> str:
    alpha = [] if self.alpha is None else [f"alpha={self.alpha:g}"]
    if self.stage == "search":
      sign = "flipped" if self.flip_sign else "published"
      point = alpha if self.eta is None else alpha + [f"eta={self.eta:g}", f"sign={sign}"]
      return os.path.join(self.dataset, "search", self.method, ",".join(point))
    return os.path.join(self.dataset, self.method, *alpha, f"seed={self.seed}")


def load_config_file(configs_dir: str, config_file: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of `configs_dir/<file>[:<arg>]`, as `train.py --config=...` reads it."""
  file_name, _, argument = config_file.partition(":")
  path = os.path.join(configs_dir, file_name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Config file {path} does not exist (pass the configs folder).")
  spec = importlib.util.spec_from_file_location(f"config_{file_name[:-3]}", path)
  if spec is None or spec.loader is None:
    raise ImportError(f"Config file {path} cannot be loaded as a Python module.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(argument) if argument else module.get_config()


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: dict[str, Any], data_dir: str
) -> None:
  """Sets dotted fields; a field the config lacks is an error (model options may be new)."""
  for dotted, value in overrides.items():
    *parents, field = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if field not in node and parents != ["model"]:
      raise KeyError(f"Override {dotted!r}: the config has no field {field!r}.")
    node[field] = value.format(data_dir=data_dir) if isinstance(value, str) else value


def dataset_config(
  suite: Suite, dataset: str, *, configs_dir: str, data_dir: str
) -> ml_collections.ConfigDict:
  """The config file of a suite's dataset with the suite's changes for it (no method yet)."""
  entry = suite.datasets[dataset]
  config = load_config_file(configs_dir, entry.config_file)
  apply_overrides(config, suite.overrides, data_dir)
  apply_overrides(config, entry.overrides, data_dir)
  return config


def run_config(
  suite: Suite, run: Run, *, configs_dir: str, data_dir: str
) -> ml_collections.ConfigDict:
  """The full training config of one run; a run that carries eta (the search's grid point or its
  chosen value) sets eta and flip_sign."""
  config = dataset_config(suite, run.dataset, configs_dir=configs_dir, data_dir=data_dir)
  apply_overrides(config, suite.methods[run.method].overrides, data_dir)
  if suite.datasets[run.dataset].manifold and config.method != "erm":
    config.method = "manifold_" + config.method
  config.seed = run.seed
  config.name = f"{suite.name}/{run.relative_dir}"
  if run.eta is not None:
    config.eta, config.flip_sign = run.eta, run.flip_sign
  if run.alpha is not None:
    config.alpha = run.alpha
  early_stopping = config.early_stopping_patience > 0
  if run.stage == "search":
    apply_overrides(config, suite.datasets[run.dataset].search_overrides, data_dir)
  own_fraction = "validation_fraction" in suite.datasets[run.dataset].overrides
  if (run.stage == "search" or early_stopping) and not (_is_graph(config.dataset) or own_fraction):
    config.validation_fraction = suite.validation_fraction
  if run.stage == "search":
    config.eval_splits = ("validation",)
  elif early_stopping:
    # Stopped on validation; test and the training split evaluated once, on the kept checkpoint
    # of the best validation step: the reported model is the saved one.
    config.eval_splits = ("validation",)
    config.best_eval_splits = ("test", "train_eval")
  else:
    config.eval_splits = ("test",)
  return config


def _is_graph(dataset_spec: str) -> bool:
  return dataset_spec.startswith("planetoid:")


def check_data(suite: Suite, *, configs_dir: str, data_dir: str) -> None:
  """Fails before any training when a dataset's files are missing, naming them."""
  missing = []
  for name in suite.datasets:
    config = dataset_config(suite, name, configs_dir=configs_dir, data_dir=data_dir)
    path = data_lib.dataset_path(config.dataset)
    if path is not None and not os.path.exists(path):
      missing.append(f"{name}: {path}")
  if missing:
    raise FileNotFoundError(
      f"Suite {suite.name!r} needs data that is not there (pass --data_dir=<folder holding "
      "fashion_mnist/, cifar10/, fsdd/, planetoid/, uci/>):\n  " + "\n  ".join(missing)
    )


def alpha_runs(suite: Suite, dataset: str) -> list[Run]:
  """Mixup's alpha search: `suite.alpha_method` at each alpha of `suite.alpha_grid`."""
  if suite.alpha_method not in dataset_methods(suite, dataset):
    return []
  return [
    Run("search", dataset, suite.alpha_method, suite.search_seed, alpha=alpha)
    for alpha in suite.alpha_grid
  ]


def mixes(suite: Suite, method: str) -> bool:
  """Whether `method` mixes (takes the searched alpha): every method but ERM."""
  return suite.methods[method].overrides.get("method") != "erm"


def search_runs(suite: Suite, dataset: str, alpha: float | None = None) -> list[Run]:
  """The eta search of every searched method, at `alpha` (None: the config's own)."""
  return [
    Run("search", dataset, method, suite.search_seed, eta, flip_sign, alpha)
    for method in dataset_methods(suite, dataset)
    if suite.methods[method].searched
    for eta in suite.eta_grid
    for flip_sign in suite.sign_grid
  ]


def final_runs(
  suite: Suite,
  dataset: str,
  chosen: dict[str, dict[str, Any]] | None = None,
  alpha: float | None = None,
) -> list[Run]:
  """Every method of `dataset` at every seed, seed by seed (so that a suite stopped part way has
  every method at its first seeds); a searched method (or one that takes another's search)
  carries the chosen eta and flip_sign (`chosen`: method -> {eta, flip_sign}), and every mixing
  method `alpha` (None: the config's own)."""
  runs = []
  for seed in dataset_seeds(suite, dataset):
    for method in dataset_methods(suite, dataset):
      entry = suite.methods[method]
      source = entry.search_as or (method if entry.searched else None)
      run = Run("final", dataset, method, seed, alpha=alpha if mixes(suite, method) else None)
      # A final run's directory does not name eta, so a partial reading finds it without one.
      if source is not None and chosen is not None and source in chosen:
        run = dataclasses.replace(run, **chosen[source])
      runs.append(run)
  return runs


def stored_result_path(store: str, run: Run) -> str:
  return os.path.join(store, run.relative_dir + ".json")


def read_result(workdir: str, run: Run, store: str | None = None) -> RunResult | None:
  """The run's result from its workdir, else from the store; a result found only in the workdir
  is copied to the store, so that it is kept with the results."""
  path = os.path.join(workdir, run.relative_dir, RESULT_FILE)
  stored = stored_result_path(store, run) if store else None
  for candidate in (path, stored):
    if candidate and os.path.exists(candidate):
      with open(candidate) as file:
        record = json.load(file)
      if stored and candidate == path and not os.path.exists(stored):
        _write_json(stored, record)
      return RunResult.from_record(record)
  return None


def _write_json(path: str, value: Any) -> None:
  """Written whole or not at all: a kill mid-write leaves the previous file (or none)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.tmp"
  with open(temporary, "w") as file:
    json.dump(value, file, indent=2)
  os.replace(temporary, path)


# Training metrics kept as curves besides the loss, where the method logs them: how much of the
# batch the MixupE term acts on, its size beside the Mixup loss, the clean batch's accuracy.
TRAINING_CURVES = ("active_fraction", "penalty", "mixup_loss", "clean_accuracy")


def _curves(directory: str) -> dict[str, list[list[float]]]:
  """[step, value] pairs: the training loss ("train"), each evaluated split's accuracy, and the
  TRAINING_CURVES the run logged."""
  curves: dict[str, list[list[float]]] = {}
  path = os.path.join(directory, reporting.METRICS_FILE)
  for record in reporting.read_log(path) if os.path.exists(path) else []:
    split = record["split"]
    value = record.get("loss") if split == "train" else record.get("accuracy")
    if value is not None:
      curves.setdefault(split, []).append([record["step"], value])
    if split == "train":
      for name in TRAINING_CURVES:
        if name in record:
          curves.setdefault(name, []).append([record["step"], record[name]])
  return curves


def execute(
  run: Run, config: ml_collections.ConfigDict, workdir: str, store: str | None = None
) -> RunResult:
  """Trains one run (resuming its checkpoint if any) and writes its result.json (and its copy in
  the store)."""
  directory = os.path.join(workdir, run.relative_dir)
  start, cpu_start = time.perf_counter(), time.process_time()
  try:
    summary, status, error = train_and_evaluate(config, directory), "finished", None
  except FloatingPointError as diverged:
    summary, status, error = {}, "diverged", str(diverged)
  finally:
    # Every attempt's time, an interrupted one's included (a kill -9 aside), kept with the run.
    attempts = _record_attempt(
      directory, time.perf_counter() - start, time.process_time() - cpu_start
    )
  result = RunResult(
    stage=run.stage,
    dataset=run.dataset,
    method=run.method,
    seed=run.seed,
    eta=config.eta,
    flip_sign=config.flip_sign,
    status=status,
    error=error,
    seconds=attempts[-1]["seconds"],  # Of the attempt that finished it.
    # CPU seconds of every thread of the process, summed over attempts: unlike wall time, not
    # lengthened by a pause (SIGSTOP) or, to first order, by other load on the machine.
    cpu_seconds=sum(attempt["cpu_seconds"] for attempt in attempts),
    attempts=len(attempts),
    variant=config.variant,
    alpha=config.alpha,
    config_method=config.method,
    metrics={split: metrics for split, metrics in summary.items() if isinstance(metrics, dict)},
    curves=_curves(directory),
    best_step=summary.get("best_step"),
    final_step=summary.get("final_step"),
    steps=summary.get("steps"),
    stopped_early=summary.get("stopped_early"),
  )
  _write_json(os.path.join(directory, RESULT_FILE), result.to_record())
  if store:
    _write_json(stored_result_path(store, run), result.to_record())
  return result


ATTEMPTS_FILE = "attempts.json"


def _record_attempt(directory: str, seconds: float, cpu_seconds: float) -> list[dict[str, float]]:
  """Appends one attempt's wall and CPU seconds to the run's attempts file; returns them all."""
  path = os.path.join(directory, ATTEMPTS_FILE)
  attempts = []
  if os.path.exists(path):
    with open(path) as file:
      attempts = json.load(file)
  attempts.append({"seconds": seconds, "cpu_seconds": cpu_seconds})
  _write_json(path, attempts)
  return attempts


def search_score(result: RunResult | dict[str, Any]) -> tuple[float, float]:
  """Higher is better: (validation accuracy, -validation NLL); diverged runs rank last."""
  result = RunResult.from_record(result)
  if not result.finished:
    return (float("-inf"), float("-inf"))
  validation = result.metrics["validation"]
  return (validation["accuracy"], -validation["nll"])


def choose(results: list[RunResult] | list[dict[str, Any]]) -> dict[str, Any]:
  """The best search result of one method (first in grid order on exact ties)."""
  best = RunResult.from_record(max(results, key=search_score))
  return {"eta": best.eta, "flip_sign": best.flip_sign}


def choose_alpha(results: list[RunResult]) -> float:
  """The alpha of the best alpha-search result (first in grid order on exact ties)."""
  return max(results, key=search_score).alpha


def own_alphas(suite: Suite, dataset: str, *, configs_dir: str, data_dir: str) -> set[float]:
  """The alphas the dataset's config gives its mixing methods (one, in every suite so far)."""
  return {
    run_config(
      suite,
      Run("final", dataset, method, suite.search_seed),
      configs_dir=configs_dir,
      data_dir=data_dir,
    ).alpha
    for method in dataset_methods(suite, dataset)
    if mixes(suite, method)
  }


def run_suite(
  suite: Suite,
  workdir: str,
  *,
  configs_dir: str = DEFAULT_CONFIGS_DIR,
  data_dir: str = "../shared/data",
  datasets: list[str] | None = None,
  store: str | None = None,
  train: bool = True,
) -> dict[str, Any]:
  """Runs (or finishes) every run of `suite` under `workdir`, taking finished runs from the
  workdir or the `store` folder; returns {chosen, alphas, search, runs, missing} (`alphas`:
  dataset -> Mixup's chosen alpha, for a suite that searches it). With `train=False`
  nothing trains: the outcome holds the finished runs, `missing` names the others (a partial
  suite's reading), and a method whose search is incomplete has no chosen eta yet."""
  from tqdm.auto import tqdm

  datasets = list(datasets or suite.datasets)
  unknown = [name for name in datasets if name not in suite.datasets]
  if unknown:
    raise ValueError(
      f"Unknown datasets {unknown} for suite {suite.name!r}; valid: {', '.join(suite.datasets)}."
    )
  check_data(
    dataclasses.replace(suite, datasets={d: suite.datasets[d] for d in datasets}),
    configs_dir=configs_dir,
    data_dir=data_dir,
  )
  total = sum(
    len(alpha_runs(suite, d)) + len(search_runs(suite, d)) + len(final_runs(suite, d))
    for d in datasets
  )
  progress = tqdm(total=total, unit="run", desc=f"suite {suite.name}", mininterval=0.5)
  chosen: dict[str, dict[str, dict[str, Any]]] = {}
  alphas: dict[str, float] = {}
  search: dict[str, dict[str, list[dict[str, Any]]]] = {}
  results: list[RunResult] = []
  missing: list[str] = []

  def perform(run: Run) -> RunResult | None:
    result = read_result(workdir, run, store)
    if result is None and not train:
      missing.append(run.relative_dir)
      return None
    if result is None:
      result = execute(
        run, run_config(suite, run, configs_dir=configs_dir, data_dir=data_dir), workdir, store
      )
      split = "validation" if run.stage == "search" else "test"
      metrics = result.metrics.get(split, {})
      outcome = f"{split} accuracy {metrics['accuracy']:.4f}" if metrics else result.status
      progress.write(f"{run.relative_dir}: {outcome} ({result.seconds:.0f} s)")
    progress.update(1)
    return result

  try:
    for dataset in datasets:
      search[dataset] = {}
      alpha = None
      alpha_search = alpha_runs(suite, dataset)
      if alpha_search:
        found = [result for run in alpha_search if (result := perform(run))]
        if found:
          search[dataset][suite.alpha_method] = [_search_entry(result) for result in found]
        if len(found) < len(alpha_search):
          # MixupE's eta search and the finals wait for the chosen alpha.
          later = search_runs(suite, dataset) + final_runs(suite, dataset)
          missing.extend(f"{run.relative_dir} (after the alpha search)" for run in later)
          progress.update(len(later))
          chosen[dataset] = {}
          continue
        alphas[dataset] = choose_alpha(found)
        # At the configs' own alpha the runs are those of the suite without the search.
        own = own_alphas(suite, dataset, configs_dir=configs_dir, data_dir=data_dir)
        alpha = None if own == {alphas[dataset]} else alphas[dataset]
      searched: dict[str, list[RunResult]] = {}
      for run in search_runs(suite, dataset, alpha):
        searched.setdefault(run.method, [])
        result = perform(run)
        if result is not None:
          searched[run.method].append(result)
      complete = {
        method
        for method, found in searched.items()
        if len(found) == len(suite.eta_grid) * len(suite.sign_grid)
      }
      chosen[dataset] = {
        method: choose(searched[method]) for method in searched if method in complete
      }
      search[dataset].update(
        {
          method: [_search_entry(result) for result in found]
          for method, found in searched.items()
          if found
        }
      )
      for run in final_runs(suite, dataset, chosen[dataset], alpha):
        result = perform(run)
        if result is not None:
          results.append(result)
  finally:
    progress.close()
  return {
    "chosen": chosen,
    "alphas": alphas,
    "search": search,
    "runs": results,
    "missing": missing,
  }


def _search_entry(result: RunResult) -> dict[str, Any]:
  """One row of the search table: {alpha, eta, flip_sign, status, seconds, validation accuracy,
  nll}."""
  validation = result.metrics.get("validation", {})
  entry = {
    "alpha": result.alpha,
    "eta": result.eta,
    "flip_sign": result.flip_sign,
    "status": result.status,
    "seconds": result.seconds,
    "accuracy": validation.get("accuracy"),
    "nll": validation.get("nll"),
  }
  if result.cpu_seconds is not None:
    entry["cpu_seconds"] = result.cpu_seconds
  return entry
