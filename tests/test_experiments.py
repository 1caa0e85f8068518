"""The experiment runner: the search reads only the validation split, the table's statistics, and a
suite that is killed mid-way completes on rerun without repeating a finished run."""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from mixupe_jax.experiments import report, runner, suites
from mixupe_jax.train import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paired_test_matches_hand_computation():
  # d = (0.01, 0.03, 0.02): mean 0.02, std 0.01, t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3).
  test = report.paired_test([0.81, 0.83, 0.82], [0.80, 0.80, 0.80])
  t = 2 * np.sqrt(3)
  np.testing.assert_allclose(test["mean_difference"], 0.02, atol=1e-12)
  np.testing.assert_allclose(test["std_difference"], 0.01, atol=1e-12)
  np.testing.assert_allclose(test["t"], t, rtol=1e-9)
  np.testing.assert_allclose(test["p"], 2 * stats.t.sf(t, df=2), rtol=1e-9)
  np.testing.assert_allclose(test["p"], 0.0742, atol=1e-4)
  # The 95% interval: 0.02 +- t_{0.975, 2} 0.01 / sqrt(3), t_{0.975, 2} = 4.3027 (tables).
  np.testing.assert_allclose(test["ci95"], [0.02 - 4.3027 * 0.01 / np.sqrt(3),
                                            0.02 + 4.3027 * 0.01 / np.sqrt(3)], atol=1e-6)
  assert report.paired_test([0.9], [0.8])["ci95"] is None
  # One seed, or identical differences: no t, no p, never a made-up value.
  assert report.paired_test([0.9], [0.8])["p"] is None
  assert report.paired_test([0.9, 0.8], [0.8, 0.7])["p"] is None


def toy_suite_and_outcome():
  """A suite of two methods on two datasets: "toy" with seeds 0-3 (Mixup's seed 3 diverged), and
  "one" with seed 0 only; one searched eta per dataset; a comparison with a method that never
  ran."""
  import types
  mixup = {0: 0.80, 1: 0.70, 2: 0.75, 3: float("nan")}
  mixupe = {0: 0.81, 1: 0.73, 2: 0.77, 3: 0.70}

  def run(dataset, method, seed, accuracy, status="finished"):
    return {"stage": "final", "dataset": dataset, "method": method, "seed": seed, "eta": None,
            "flip_sign": False, "status": status, "error": None, "seconds": 2.0,
            "variant": "v1", "alpha": 1.0, "config_method": method,
            "metrics": {"test": {"accuracy": accuracy, "nll": 1.0 - accuracy, "ece": 0.1}},
            "curves": {"step": [seed]}}

  runs = [run("toy", "mixupe", s, mixupe[s]) for s in (2, 0, 3, 1)]
  runs += [run("toy", "mixup", s, mixup[s], "finished" if s < 3 else "diverged")
           for s in (1, 3, 2, 0)]
  runs += [run("one", "mixup", 0, 0.5), run("one", "mixupe", 0, 0.6)]
  search_entry = lambda eta: {"eta": eta, "flip_sign": False, "seconds": 3.0}
  outcome = {"runs": runs,
             "search": {"toy": {"mixupe": [search_entry(0.1), search_entry(1.0)]},
                        "one": {"mixupe": [search_entry(0.1)]}},
             "chosen": {"toy": {"mixupe": {"eta": 0.1, "flip_sign": False}},
                        "one": {"mixupe": {"eta": 1.0, "flip_sign": True}}}}
  suite = types.SimpleNamespace(
      name="toy", seeds=(0, 1, 2, 3), eta_grid=(0.1, 1.0), sign_grid=(False, True),
      validation_fraction=0.1, comparisons=(("mixupe", "mixup"), ("absent", "mixup")),
      alpha_grid=(), methods={"mixup": types.SimpleNamespace(searched=False),
               "mixupe": types.SimpleNamespace(searched=True)})
  return suite, outcome


def test_aggregate_pairs_three_seeds_by_seed_and_gives_the_hand_computed_p(tmp_path):
  """Runs arrive in any order; the comparison pairs MixupE and Mixup on their common finished seeds
  (0, 1, 2: seed 3 diverged for Mixup), d = (0.01, 0.03, 0.02): t = 2 sqrt(3) with 2 degrees of
  freedom, whose two-sided p has the closed form 1 - t / sqrt(t^2 + 2) = 0.0742. Pairing by list
  position instead would give d = (0.06, -0.07, 0.12) here."""
  suite, outcome = toy_suite_and_outcome()
  results = report.aggregate(suite, outcome, seconds=5.0)
  table = results["results"]["toy"]
  assert table["mixup"]["seeds"] == [0, 1, 2] and table["mixup"]["diverged_seeds"] == [3]
  assert table["mixupe"]["seeds"] == [0, 1, 2, 3]
  np.testing.assert_allclose(table["mixup"]["accuracy"]["mean"], 0.75)
  np.testing.assert_allclose(table["mixup"]["accuracy"]["std"], 0.05)
  assert table["mixup"]["accuracy"]["n"] == 3 and table["mixup"]["seconds"] == 8.0
  comparison = table["comparisons"]["mixupe - mixup"]["accuracy"]
  t = 2 * np.sqrt(3)
  assert comparison["n"] == 3
  np.testing.assert_allclose(comparison["mean_difference"], 0.02, atol=1e-12)
  np.testing.assert_allclose(comparison["t"], t, rtol=1e-9)
  np.testing.assert_allclose(comparison["p"], 1 - t / np.sqrt(t ** 2 + 2), rtol=1e-9)
  # NLL = 1 - accuracy here, so its difference is the negative one, with the same p.
  np.testing.assert_allclose(table["comparisons"]["mixupe - mixup"]["nll"]["t"], -t, rtol=1e-9)
  assert set(table["comparisons"]) == {"mixupe - mixup"}  # "absent" never ran: no comparison.
  # One seed: a mean, a zero spread, no test.
  one = results["results"]["one"]
  assert one["mixup"]["accuracy"] == {"mean": 0.5, "std": 0.0, "n": 1}
  single = one["comparisons"]["mixupe - mixup"]["accuracy"]
  assert single["p"] is None and single["t"] is None and single["std_difference"] is None
  np.testing.assert_allclose(single["mean_difference"], 0.1)
  # 10 runs of 2 s and 3 searches of 3 s.
  assert results["total_run_seconds"] == 29.0 and results["wall_seconds_this_invocation"] == 5.0
  assert {k: results[k] for k in ("suite", "seeds", "eta_grid", "sign_grid",
                                  "validation_fraction", "chosen", "search")} == {
      "suite": "toy", "seeds": [0, 1, 2, 3], "eta_grid": [0.1, 1.0], "sign_grid": [False, True],
      "validation_fraction": 0.1, "chosen": outcome["chosen"], "search": outcome["search"]}
  assert results["curves"]["toy/mixup/seed=1"] == {"step": [1]} and len(results["curves"]) == 10
  json_path, markdown_path = report.write(results, suite, str(tmp_path / "out"))
  assert json.loads(open(json_path).read()) == json.loads(json.dumps(results))
  assert open(markdown_path).read() == report.markdown(results, suite)
  assert sorted(os.listdir(tmp_path / "out")) == ["results.json", "results.md"]


TOY_MARKDOWN = """\
**test accuracy (%)**, mean ± std over seeds [0, 1, 2, 3], or over the seeds a row names (n seeds: 0 to n - 1)

| dataset | mixup | mixupe |
|---|---|---|
| toy | 75.00 ± 5.00 | 75.25 ± 4.79 |
| one (1 seed) | 50.00 ± 0.00 | 60.00 ± 0.00 |

**test accuracy (%): paired differences**, mean [95% CI] (p)

| dataset | mixupe - mixup | absent - mixup |
|---|---|---|
| toy | +2.00 [-0.48, +4.48] (p=0.07) | — |
| one | +10.00 (p=n/a) | — |

**test NLL**, mean ± std over seeds [0, 1, 2, 3], or over the seeds a row names (n seeds: 0 to n - 1)

| dataset | mixup | mixupe |
|---|---|---|
| toy | 0.250 ± 0.050 | 0.247 ± 0.048 |
| one (1 seed) | 0.500 ± 0.000 | 0.400 ± 0.000 |

**test NLL: paired differences**, mean [95% CI] (p)

| dataset | mixupe - mixup | absent - mixup |
|---|---|---|
| toy | -0.020 [-0.045, +0.005] (p=0.07) | — |
| one | -0.100 (p=n/a) | — |

**test ECE (15 bins)**, mean ± std over seeds [0, 1, 2, 3], or over the seeds a row names (n seeds: 0 to n - 1)

| dataset | mixup | mixupe |
|---|---|---|
| toy | 0.100 ± 0.000 | 0.100 ± 0.000 |
| one (1 seed) | 0.100 ± 0.000 | 0.100 ± 0.000 |

**test ECE (15 bins): paired differences**, mean [95% CI] (p)

| dataset | mixupe - mixup | absent - mixup |
|---|---|---|
| toy | +0.000 [+0.000, +0.000] (p=n/a) | — |
| one | +0.000 (p=n/a) | — |

**seconds per run** (final runs, mean over seeds)

| dataset | mixup | mixupe |
|---|---|---|
| toy | 2 | 2 |
| one | 2 | 2 |

**Chosen on the validation split** (eta, sign; published = the variant's own sign)

| dataset | mixupe |
|---|---|
| toy | 0.1, published |
| one | 1, flipped |

Diverged (NaN loss) runs: toy/mixup seeds [3].
Training time, all runs of the suite: 0.5 min.
"""


def test_markdown_table_written_out():
  """The whole results.md of the toy suite, every number hand-computed: accuracy means 75.00 and
  75.25, stds 5.00 and 4.79 (sample, n - 1), d = +2.00 points with p = 0.0742 and 95% interval
  2.00 +- 4.3027 * 1.00 / sqrt(3) = [-0.48, +4.48] (MixupE's NLL, 0.2475, is 0.24749... in
  binary, hence 0.247); every run took 2 s."""
  suite, outcome = toy_suite_and_outcome()
  assert report.markdown(report.aggregate(suite, outcome), suite) == TOY_MARKDOWN


def test_a_row_with_other_seeds_than_the_suite_s_names_them():
  """A row's label gives its seeds where they are not the suite's: their count for seeds 0 to
  n - 1 (the header says so), else the list; a row with the suite's seeds has none."""
  suite, outcome = toy_suite_and_outcome()
  table = report.markdown(report.aggregate(suite, outcome), suite)
  assert "| toy |" in table and "| one (1 seed) |" in table
  # Seed 0 of dataset "one" moved to seed 2: no longer seeds 0 to n - 1.
  moved = {**outcome, "runs": [dict(run, seed=2) if run["dataset"] == "one" else run
                               for run in outcome["runs"]]}
  table = report.markdown(report.aggregate(suite, moved), suite)
  assert "| one (seed 2) |" in table


def test_a_suite_without_searched_methods_has_no_table_of_choices():
  """A control of unsearched methods (such as cora_dropout) reports everything else unchanged."""
  suite, outcome = toy_suite_and_outcome()
  suite.methods["mixupe"].searched = False
  outcome = {**outcome, "search": {}, "chosen": {}}
  before, after = TOY_MARKDOWN.split("**Chosen on the validation split**")
  expected = before + "Diverged" + after.split("Diverged", 1)[1]
  expected = expected.replace("0.5 min", "0.3 min")  # The search's 9 s are gone with it.
  assert report.markdown(report.aggregate(suite, outcome), suite) == expected


def test_no_p_below_the_rounding_cut_off_relative_to_the_mean_difference():
  """Differences equal up to 1e-9 max(1, |mean|) have no t; a larger spread has one."""
  around = lambda mean, spread: ([mean + spread, mean, mean - spread], [0.0, 0.0, 0.0])
  assert report.paired_test(*around(0.5, 0.4e-9))["p"] is None
  assert report.paired_test(*around(0.5, 1.5e-9))["p"] is not None
  assert report.paired_test(*around(1000.0, 1e-8))["p"] is None  # Relative to |mean| = 1000.
  assert report.paired_test(*around(1000.0, 1e-5))["p"] is not None
  two = report.paired_test([0.9, 0.7], [0.8, 0.5])  # n = 2: one degree of freedom.
  np.testing.assert_allclose(two["std_difference"], np.std([0.1, 0.2], ddof=1))
  np.testing.assert_allclose(two["p"], stats.ttest_rel([0.9, 0.7], [0.8, 0.5]).pvalue)
  assert set(two) == {"mean_difference", "std_difference", "t", "p", "ci95", "n"}


def test_mean_and_std_use_the_sample_deviation():
  assert report.mean_and_std([0.7]) == {"mean": 0.7, "std": 0.0, "n": 1}
  np.testing.assert_allclose(report.mean_and_std([1.0, 2.0])["std"], np.sqrt(0.5))
  summary = report.mean_and_std([1.0, 2.0, 4.0])
  np.testing.assert_allclose(summary["mean"], 7 / 3)
  np.testing.assert_allclose(summary["std"], np.sqrt(((1 - 7/3)**2 + (2 - 7/3)**2 + (4 - 7/3)**2) / 2))


def test_search_is_scored_on_validation_and_final_runs_on_test():
  suite = suites.CPU
  search = runner.search_runs(suite, "digits")
  assert {(r.method, r.eta, r.flip_sign) for r in search} == {
      (m, eta, flip) for m in ("mixupe_exact", "mixupe_fast", "mixupe_exact_all") for eta in suite.eta_grid
      for flip in suite.sign_grid}
  config = runner.run_config(suite, search[0], configs_dir=runner.DEFAULT_CONFIGS_DIR,
                             data_dir="/data")
  assert config.eval_splits == ("validation",) and config.validation_fraction == 0.1
  assert (config.eta, config.flip_sign) == (search[0].eta, search[0].flip_sign)
  final = runner.run_config(suite, runner.Run("final", "fashion_mnist", "mixup", 2),
                            configs_dir=runner.DEFAULT_CONFIGS_DIR, data_dir="/data")
  assert final.eval_splits == ("test",) and final.validation_fraction == 0.0
  assert final.dataset == "idx:/data/fashion_mnist" and final.seed == 2
  assert final.method == "mixup" and tuple(final.model.channels) == (16, 32)
  # Graphs mix after the last propagation and use their standard validation nodes.
  cora = runner.run_config(suite, runner.Run("search", "cora", "mixupe_fast", 0, 1.0, True),
                           configs_dir=runner.DEFAULT_CONFIGS_DIR, data_dir="/data")
  assert cora.method == "manifold_mixupe" and cora.validation_fraction == 0.0
  assert cora.variant == "v3" and cora.flip_sign
  # Exact without a threshold: every r_i enters the penalty.
  unthresholded = runner.run_config(suite, runner.Run("final", "digits", "mixupe_exact_all", 0),
                                   configs_dir=runner.DEFAULT_CONFIGS_DIR, data_dir="/data")
  assert unthresholded.variant == "v1" and unthresholded.threshold == float("inf")


def test_choose_takes_best_validation_accuracy_then_nll_and_ranks_divergence_last():
  def result(eta, accuracy, nll, status="finished"):
    return {"stage": "search", "dataset": "toy", "method": "mixupe", "seed": 0, "eta": eta,
            "flip_sign": False, "status": status, "error": None, "seconds": 1.0, "variant": "v1",
            "alpha": 1.0, "config_method": "mixupe",
            "metrics": {"validation": {"accuracy": accuracy, "nll": nll}} if status == "finished"
            else {}, "curves": {}}

  assert runner.choose([result(0.1, 0.90, 0.3), result(1.0, 0.92, 0.5)])["eta"] == 1.0
  assert runner.choose([result(0.1, 0.92, 0.3), result(1.0, 0.92, 0.5)])["eta"] == 0.1
  assert runner.choose([result(0.1, 0.0, 9.0), result(1.0, 0, 0, "diverged")])["eta"] == 0.1


def test_an_unknown_override_field_is_an_error():
  config = runner.load_config_file(runner.DEFAULT_CONFIGS_DIR, "digits_mlp.py")
  with pytest.raises(KeyError, match="num_epoch"):
    runner.apply_overrides(config, {"num_epoch": 3}, "/data")
  runner.apply_overrides(config, {"model.width": 8}, "/data")  # Model options may be new.
  assert config.model.width == 8


def test_missing_data_is_named_before_any_training(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    runner.check_data(suites.CPU, configs_dir=runner.DEFAULT_CONFIGS_DIR,
                      data_dir=str(tmp_path / "nowhere"))
  message = str(error.value)
  for part in ("fashion_mnist", "cifar10_jpeg.zip", "fsdd_recordings.zip", "planetoid", "uci"):
    assert part in message
  with pytest.raises(ValueError, match="unknown_set"):
    runner.run_suite(suites.TINY, str(tmp_path), datasets=["unknown_set"])


def _suite_command(workdir):
  return [sys.executable, "-m", "mixupe_jax.experiments", "--suite=tiny", f"--workdir={workdir}"]


@pytest.mark.slow
def test_tiny_suite_killed_midway_completes_on_rerun_without_repeating_runs(tmp_path):
  workdir = tmp_path / "tiny"
  results_files = lambda: sorted(workdir.glob(f"**/{runner.RESULT_FILE}"))
  process = subprocess.Popen(_suite_command(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not results_files() and time.time() < deadline and process.poll() is None:
    time.sleep(0.1)
  process.send_signal(signal.SIGKILL)
  process.wait()
  finished = results_files()
  assert finished, "the first run never finished"
  total = sum(len(runner.search_runs(suites.TINY, d)) for d in suites.TINY.datasets) + \
      len(suites.TINY.datasets) * len(suites.TINY.methods) * len(suites.TINY.seeds)
  assert len(finished) < total, "the suite finished before it was killed"
  first_times = {path: path.stat().st_mtime_ns for path in finished}

  completed = subprocess.run(_suite_command(workdir), cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert len(results_files()) == total
  # Finished runs were read, not rerun.
  assert {path: path.stat().st_mtime_ns for path in finished} == first_times
  rerun_lines = [line for line in completed.stdout.splitlines() + completed.stderr.splitlines()
                 if "accuracy" in line and "/" in line and "|" not in line]
  rerun_dirs = {line.split(":")[0] for line in rerun_lines}
  for path in finished:
    assert str(path.parent.relative_to(workdir)) not in rerun_dirs

  results = json.loads((workdir / "results.json").read_text())
  table = (workdir / "results.md").read_text()
  for dataset in suites.TINY.datasets:
    for method in suites.TINY.methods:
      entry = results["results"][dataset][method]
      assert entry["seeds"] == [0]
      # The table's one-seed entry is the run's own test evaluation (its result file and the
      # summary.json that training wrote).
      run_dir = workdir / runner.Run("final", dataset, method, 0).relative_dir
      run_result = json.loads((run_dir / runner.RESULT_FILE).read_text())
      summary = json.loads((run_dir / "summary.json").read_text())
      for name in ("accuracy", "nll", "ece"):
        assert entry[name]["mean"] == run_result["metrics"]["test"][name] == \
            summary["test"][name]
    assert "mixupe_exact - mixup" in results["results"][dataset]["comparisons"]
    assert f"| {dataset} |" in table
    # The chosen eta is one of the grid's and the search saw only the validation split.
    assert results["chosen"][dataset]["mixupe_exact"]["eta"] in suites.TINY.eta_grid
    for entry in results["search"][dataset]["mixupe_exact"]:
      search_dir = workdir / runner.Run("search", dataset, "mixupe_exact", 0, entry["eta"],
                                        entry["flip_sign"]).relative_dir
      splits = json.loads((search_dir / runner.RESULT_FILE).read_text())["metrics"]
      assert set(splits) == {"validation"}
  assert "mixupe_exact - mixup" in table and "Chosen on the validation split" in table

  # A third invocation trains nothing and rewrites the same table.
  again = subprocess.run(_suite_command(workdir), cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0
  assert (workdir / "results.md").read_text() == table


@pytest.mark.parametrize("suite", [suites.CONVERGED, suites.CORA_DROPOUT, suites.LABEL_NOISE,
                                   suites.LABEL_NOISE_SIZING], ids=lambda s: s.name)
def test_the_committed_store_holds_every_run_and_gives_the_committed_table(suite, tmp_path,
                                                                          monkeypatch):
  """A fresh checkout, without data or a workdir, finds every run of the finished suite in the
  committed store (so the command trains nothing), and the store's table is the committed one."""
  monkeypatch.setattr(runner, "check_data", lambda *args, **kwargs: None)  # Nothing trains.
  outcome = runner.run_suite(suite, str(tmp_path / "fresh"), store=os.path.join(ROOT, suite.store),
                             train=False)
  assert outcome["missing"] == []
  assert not os.path.exists(tmp_path / "fresh")
  with open(os.path.join(ROOT, suite.results_dir, "results.md")) as file:
    assert report.markdown(report.aggregate(suite, outcome), suite) == file.read()


@pytest.mark.slow
def test_finished_runs_in_the_store_are_picked_up_and_never_recomputed(tmp_path, monkeypatch):
  """A fresh checkout has no workdir, only the committed store: the suite reads every run from it
  and trains nothing; a run missing from the store is trained and written there."""
  store = tmp_path / "store"
  first = runner.run_suite(suites.TINY, str(tmp_path / "session1"), store=str(store))
  stored = sorted(store.glob("**/*.json"))
  assert len(stored) == len(first["runs"]) + sum(
      len(runner.search_runs(suites.TINY, d)) for d in suites.TINY.datasets)
  contents = {path: path.read_text() for path in stored}

  def no_training(*args, **kwargs):
    raise AssertionError(f"a stored run was recomputed: {args[0]}")

  monkeypatch.setattr(runner, "execute", no_training)
  second = runner.run_suite(suites.TINY, str(tmp_path / "session2"), store=str(store))
  assert second == first
  assert {path: path.read_text() for path in stored} == contents
  monkeypatch.undo()
  # Remove one final run: only that one trains again, and it lands in the store.
  missing = runner.Run("final", "iris", "mixup", 0)
  os.remove(runner.stored_result_path(str(store), missing))
  trained = []
  original = runner.execute
  monkeypatch.setattr(runner, "execute",
                      lambda run, *a, **k: trained.append(run) or original(run, *a, **k))
  third = runner.run_suite(suites.TINY, str(tmp_path / "session3"), store=str(store))
  assert trained == [missing]
  assert os.path.exists(runner.stored_result_path(str(store), missing))
  assert [r.metrics for r in third["runs"]] == [r.metrics for r in first["runs"]]

  # A partial reading (train=False) trains nothing, names what is missing and labels the table.
  monkeypatch.setattr(runner, "execute", no_training)
  unsearched = runner.search_runs(suites.TINY, "digits")[0]
  for run in (missing, unsearched):
    os.remove(runner.stored_result_path(str(store), run))
  partial = runner.run_suite(suites.TINY, str(tmp_path / "session4"), store=str(store),
                             train=False)
  assert partial["missing"] == [unsearched.relative_dir, missing.relative_dir]
  assert "mixupe_exact" not in partial["chosen"]["digits"]
  assert partial["chosen"]["iris"] == first["chosen"]["iris"]
  assert len(partial["runs"]) == len(first["runs"]) - 1
  table = report.markdown(report.aggregate(suites.TINY, partial), suites.TINY)
  assert table.startswith("**Partial suite**: 6 runs finished, 2 not yet")  # Of 2 x (2 + 2).


def _config_of(suite, run):
  """The run's config as a dict, without its name (which only labels logs: everything that
  trains must be equal between suites that share runs)."""
  config = runner.run_config(suite, run, configs_dir=runner.DEFAULT_CONFIGS_DIR, data_dir="/data")
  config.name = ""
  return config.to_dict()


def test_bn_ablation_reuses_only_runs_identical_to_the_cpu_suites():
  ablation, cpu = suites.BN_ABLATION, suites.CPU
  assert ablation.runs_of == cpu.name

  for dataset in ablation.datasets:
    assert set(runner.search_runs(ablation, dataset)) <= set(runner.search_runs(cpu, dataset))
    for run in runner.search_runs(ablation, dataset):
      assert _config_of(ablation, run) == _config_of(cpu, run)
    for method in ("mixup", "mixupe_exact"):
      run = runner.Run("final", dataset, method, 1)
      assert _config_of(ablation, run) == _config_of(cpu, run)
  clean_pass = _config_of(ablation, runner.Run("final", "fashion_mnist", "mixup_clean_pass", 0))
  assert (clean_pass["method"], clean_pass["variant"], clean_pass["eta"]) == ("mixupe", "v1", 0.0)
  assert ablation.store == cpu.store, "the shared runs are kept in one place"


def test_the_cora_dropout_control_extends_the_converged_runs_with_more_seeds():
  """Seeds 0-4 of the control are the converged suite's Cora runs (same config, same store), the
  other ten train with only the seed changed; no search runs, as neither method is searched."""
  control, converged = suites.CORA_DROPOUT, suites.CONVERGED
  assert control.runs_of == converged.name and control.store == converged.store

  assert runner.search_runs(control, "cora") == []
  runs = runner.final_runs(control, "cora")
  assert len(runs) == 2 * 15
  for run in runs:
    reference = dataclasses.replace(run, seed=0)
    expected = _config_of(converged, reference) | {"seed": run.seed}
    assert _config_of(control, run) == expected, run
  clean_pass = _config_of(control, runner.Run("final", "cora", "mixup_clean_pass", 7))
  assert (clean_pass["method"], clean_pass["eta"]) == ("manifold_mixupe", 0.0)  # Hidden mixing.


def test_the_power_suite_extends_the_converged_runs_with_more_seeds():
  """converged_power reuses the converged suite's search (the same search runs) and its runs at
  the seeds converged has (same config, same store); every other run is one of them with only the
  seed changed; the five methods run on every dataset at the planned seed counts."""
  power, converged = suites.CONVERGED_POWER, suites.CONVERGED
  assert power.runs_of == converged.name and power.store == converged.store
  assert set(power.methods) == {"erm", "mixup", "mixup_clean_pass", "mixupe_exact", "mixupe_fast"}
  for dataset, entry in power.datasets.items():
    assert runner.search_runs(power, dataset) == [
      run for run in runner.search_runs(converged, dataset) if run.method in power.methods]
    runs = runner.final_runs(power, dataset)
    assert len(runs) == 5 * len(entry.seeds) and len(entry.seeds) >= 5
    for run in runs:
      expected = _config_of(converged, dataclasses.replace(run, seed=0)) | {"seed": run.seed}
      assert _config_of(power, run) == expected, run
  assert len(power.datasets["uci_iris"].seeds) == 20 and len(power.datasets["cifar10"].seeds) == 5


def _alpha_suite():
  """The tiny suite with ERM and Mixup's alpha searched."""
  return dataclasses.replace(suites.TINY, name="tiny_alpha", alpha_grid=suites.ALPHA_GRID,
                             methods={"erm": suites.METHODS["erm"], **suites.TINY.methods})


def _scored_by_alpha(accuracy_of_alpha, trained):
  """A stand-in for `runner.execute` that trains nothing: each run scores
  accuracy_of_alpha(its config's alpha) on the split it is evaluated on."""
  def execute(run, config, workdir, store=None):
    trained.append((run, config))
    split = "validation" if run.stage == "search" else "test"
    metrics = {"accuracy": accuracy_of_alpha(config.alpha), "nll": 1.0, "ece": 0.1}
    return runner.RunResult(
        stage=run.stage, dataset=run.dataset, method=run.method, seed=run.seed, eta=config.eta,
        flip_sign=config.flip_sign, status="finished", error=None, seconds=1.0,
        variant=config.variant, alpha=config.alpha, config_method=config.method,
        metrics={split: metrics}, curves={})
  return execute


def test_mixups_alpha_is_searched_first_and_holds_for_every_mixing_method(tmp_path, monkeypatch):
  """The alpha search trains Mixup at each alpha of the grid on the validation split only; the
  best alpha (here 0.5) then holds for MixupE's eta search and every mixing method's final runs,
  whose directories name it; ERM keeps its own; the table shows the search."""
  suite, trained = _alpha_suite(), []
  monkeypatch.setattr(runner, "execute",
                      _scored_by_alpha(lambda alpha: 0.9 - abs(alpha - 0.5) / 10, trained))
  outcome = runner.run_suite(suite, str(tmp_path))
  assert outcome["alphas"] == {"digits": 0.5, "iris": 0.5}
  for dataset in suite.datasets:
    runs = [(run, config) for run, config in trained if run.dataset == dataset]
    alpha_search = runs[: len(suite.alpha_grid)]
    assert [run.relative_dir for run, _ in alpha_search] == [
        f"{dataset}/search/mixup/alpha={alpha:g}" for alpha in suite.alpha_grid]
    for run, config in alpha_search:
      assert (config.method, config.alpha, tuple(config.eval_splits)) == (
          "mixup", run.alpha, ("validation",))
    for run, config in runs[len(suite.alpha_grid):]:
      expected = 1.0 if run.method == "erm" else 0.5  # ERM's config alpha, unused.
      assert config.alpha == expected, run
      assert ("alpha=0.5" in run.relative_dir) == (run.method != "erm"), run.relative_dir
    eta_search = [run for run, _ in runs if run.stage == "search" and run.eta is not None]
    assert eta_search == runner.search_runs(suite, dataset, 0.5)
    assert eta_search[0].relative_dir == f"{dataset}/search/mixupe_exact/alpha=0.5,eta=1,sign=published"
  table = report.markdown(report.aggregate(suite, outcome), suite)
  assert "**mixup's alpha, searched on the validation split**" in table
  assert "| digits | 87.00 | 90.00 | 85.00 | 75.00 | 0.5 |" in table


def test_at_the_configs_own_alpha_the_runs_are_those_without_the_search(tmp_path, monkeypatch):
  """Where alpha 1 (the configs' own) wins, or every alpha ties (the first of the grid wins, then
  0.2), MixupE's search and the final runs are, at alpha 1, the very runs (same directories, same
  configs) of the suite without the alpha search: they are reused, not repeated."""
  suite, trained = _alpha_suite(), []
  monkeypatch.setattr(runner, "execute",
                      _scored_by_alpha(lambda alpha: 0.9 if alpha == 1.0 else 0.8, trained))
  outcome = runner.run_suite(suite, str(tmp_path / "one"))
  assert outcome["alphas"] == {"digits": 1.0, "iris": 1.0}
  plain = dataclasses.replace(suite, alpha_grid=())
  for dataset in suite.datasets:
    later = [(run, config) for run, config in trained
             if run.dataset == dataset and not (run.stage == "search" and run.eta is None)]
    expected = runner.search_runs(plain, dataset) + runner.final_runs(
        plain, dataset, outcome["chosen"][dataset])
    assert [run for run, _ in later] == expected
    for run, config in later:
      assert {**config.to_dict(), "name": ""} == _config_of(plain, run), run
  trained.clear()
  monkeypatch.setattr(runner, "execute", _scored_by_alpha(lambda alpha: 0.9, trained))
  assert runner.run_suite(suite, str(tmp_path / "tie"))["alphas"]["digits"] == 0.2


def test_a_partial_alpha_search_leaves_the_rest_missing_and_trains_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(runner, "execute", lambda *args, **kwargs: pytest.fail("trained"))
  suite = _alpha_suite()
  outcome = runner.run_suite(suite, str(tmp_path), train=False)
  digits = [run.relative_dir for run in runner.alpha_runs(suite, "digits")] + [
      f"{run.relative_dir} (after the alpha search)"
      for run in runner.search_runs(suite, "digits") + runner.final_runs(suite, "digits")]
  assert outcome["missing"][: len(digits)] == digits
  assert outcome["alphas"] == {} and outcome["chosen"] == {"digits": {}, "iris": {}}


def test_the_fair_alpha_and_label_noise_suites():
  """fair_alpha is converged_power with the alpha search (at alpha 1 its runs are the power
  suite's own); label_noise moves 40% of digits' training labels and trains every final run its
  full budget (no early stopping), its search scored on a (noisy) validation split; its sizing
  suite is its ERM and Mixup in the same run folders, and the early-stopped regime tried first."""
  fair, power = suites.FAIR_ALPHA, suites.CONVERGED_POWER
  assert fair.alpha_grid == (0.2, 0.5, 1.0, 2.0) and fair.runs_of == "converged"
  for dataset in power.datasets:
    assert runner.search_runs(fair, dataset) == runner.search_runs(power, dataset)
    assert runner.final_runs(fair, dataset) == runner.final_runs(power, dataset)
  noisy, sizing = suites.LABEL_NOISE, suites.LABEL_NOISE_SIZING
  # Every method at the suite's 10 seeds (not the 5 of the converged digits entry it builds on).
  assert len(runner.final_runs(noisy, "digits_noise40")) == 6 * 10
  assert {d: len(runner.final_runs(sizing, d)) for d in sizing.datasets} == {
      "digits_noise40_early_stopped": 20, "digits_noise40": 20}
  config = _config_of(noisy, runner.Run("final", "digits_noise40", "mixup", 3, alpha=0.5))
  assert (config["label_noise"], config["label_noise_seed"], config["alpha"]) == (0.4, 0, 0.5)
  assert (config["early_stopping_patience"], config["eval_splits"]) == (0, ("test",))
  search = _config_of(noisy, runner.alpha_runs(noisy, "digits_noise40")[0])
  assert (search["label_noise"], search["validation_fraction"], search["eval_splits"]) == (
      0.4, 0.1, ("validation",))
  early = _config_of(sizing, runner.Run("final", "digits_noise40_early_stopped", "erm", 0))
  assert (early["label_noise"], early["early_stopping_patience"]) == (0.4, 15)
  assert sizing.runs_of == noisy.name and sizing.store == noisy.store
  assert set(sizing.methods) == {"erm", "mixup"}
  assert runner.final_runs(sizing, "digits_noise40", alpha=0.5) == [
      run for run in runner.final_runs(noisy, "digits_noise40", alpha=0.5)
      if run.method in sizing.methods]


@pytest.mark.parametrize("suite", list(suites.SUITES.values()), ids=lambda suite: suite.name)
def test_every_run_of_every_suite_has_a_valid_config(suite):
  for dataset in suite.datasets:
    searched = [alpha for alpha in suite.alpha_grid if alpha != 1.0][:1]  # At another alpha too.
    runs = runner.alpha_runs(suite, dataset) + [
        run for alpha in [None] + searched
        for run in runner.search_runs(suite, dataset, alpha) + runner.final_runs(
            suite, dataset, alpha=alpha)]
    for run in runs:
      config = runner.run_config(suite, run, configs_dir=runner.DEFAULT_CONFIGS_DIR,
                                 data_dir="/data")
      validation.validate(config)
      for size in (config.batch_size, config.eval_batch_size):
        assert size % 8 == 0, f"{run}: batch sizes should split over 8 devices"
      assert config.progress_bar is False and config.seed == run.seed
      # The stored runs paired across the whole batch (one device), whatever the default scope,
      # on images normalized on the host, whatever the default side.
      assert config.mixing_scope == "global", run
      assert config.normalize_on_device is False, run


def test_the_converged_suite_stops_early_and_reports_the_saved_model():
  """Every final run of the converged suite stops early on a validation split that the search
  also scores on, and reports test and training-split accuracy from the kept best checkpoint;
  the datasets run the methods and seeds their entries name, and the quarter-batch method takes
  the exact method's searched eta and sign."""
  suite = suites.CONVERGED
  chosen = {"mixupe_exact": {"eta": 0.1, "flip_sign": True},
            "mixupe_exact_all": {"eta": 1.0, "flip_sign": False},
            "mixupe_fast": {"eta": 1.0, "flip_sign": True}}
  assert list(suite.datasets)[:2] == ["cifar10", "fashion_mnist"]  # The informative ones first.
  for dataset, entry in suite.datasets.items():
    runs = runner.final_runs(suite, dataset, chosen)
    methods = list(dict.fromkeys(run.method for run in runs))
    assert set(methods) == set(entry.methods or suite.methods)
    assert {"erm", "mixup", "mixup_clean_pass", "mixupe_exact", "mixupe_fast"} <= set(methods)
    assert len(runs) == len(methods) * len(entry.seeds or suite.seeds)
    assert len(entry.seeds or suite.seeds) >= 3
    for run in runs:
      config = runner.run_config(suite, run, configs_dir=runner.DEFAULT_CONFIGS_DIR,
                                 data_dir="/data")
      assert config.early_stopping_patience > 0 and tuple(config.eval_splits) == ("validation",)
      assert tuple(config.best_eval_splits) == ("test", "train_eval")
      assert config.validation_fraction > 0 or config.dataset.startswith("planetoid:")
      if run.method == "mixupe_exact_quarter":
        assert (config.term_fraction, config.eta, config.flip_sign) == (0.25, 0.1, True)
      if run.method == "mixupe_fast_official":
        assert (config.variant, config.eta, config.threshold, config.flip_sign) == (
            "v3", 0.001, 1.0, False)
    for run in runner.search_runs(suite, dataset):
      config = runner.run_config(suite, run, configs_dir=runner.DEFAULT_CONFIGS_DIR,
                                 data_dir="/data")
      assert tuple(config.eval_splits) == ("validation",) and not config.best_eval_splits
  assert "mixupe_exact_quarter" not in suite.datasets["cifar10"].methods


def test_write_replaces_both_files_in_an_existing_folder_with_readable_json(tmp_path):
  """`report.write` runs after every finished run, into the same folder: it replaces the files
  whole, writes the JSON indented by 2 (one field a line, so a committed store diffs run by run)
  and writes a NaN (a metric of a run that diverged late) as NaN rather than failing the report.
  Mutants that fail it (checked by hand): makedirs without exist_ok, another indent or none,
  allow_nan False or None. (Dropping allow_nan is equivalent: True is json's default.)"""
  suite, outcome = toy_suite_and_outcome()
  results = report.aggregate(suite, outcome, seconds=5.0)
  folder = str(tmp_path / "results")
  report.write({**results, "seeds": [0]}, suite, folder)
  results["results"]["toy"]["mixup"]["ece"]["mean"] = float("nan")
  json_path, markdown_path = report.write(results, suite, folder)
  text = open(json_path).read()
  assert '\n  "suite": "toy",\n' in text and '"mean": NaN' in text
  assert json.loads(text) == json.loads(json.dumps(results))
  assert open(markdown_path).read() == report.markdown(results, suite)
  assert sorted(os.listdir(folder)) == ["results.json", "results.md"]


def test_aggregate_keeps_the_runs_statistics_per_seed_where_every_finished_run_has_them():
  """Early-stopping runs carry their best step, the training split's accuracy and the MixupE
  term's active fraction over training: the table keeps each per seed (in seed order, finished
  runs only) with its mean, and leaves out a statistic some finished run lacks (Mixup's active
  fraction here); a complete suite's list of missing runs is empty (a list, as when some are
  missing). Mutants that fail it (checked by hand): the per-seed values not kept, no list of
  missing runs (None) for a complete suite."""
  suite, outcome = toy_suite_and_outcome()
  for run in outcome["runs"]:
    seed = run["seed"]
    run["best_step"] = 100 * (seed + 1)
    run["metrics"]["train_eval"] = {"accuracy": 0.9 + 0.01 * seed}
    if run["method"] == "mixupe":
      run["curves"]["active_fraction"] = [[1, 0.1 * seed], [2, 0.1 * seed + 0.2]]
  results = report.aggregate(suite, outcome)
  assert "missing" not in outcome and results["missing_runs"] == []
  toy = results["results"]["toy"]
  mixupe, mixup = toy["mixupe"], toy["mixup"]
  assert mixupe["per_seed"]["best_step"] == [100, 200, 300, 400]
  np.testing.assert_allclose(mixupe["per_seed"]["train_accuracy"], [0.9, 0.91, 0.92, 0.93])
  np.testing.assert_allclose(mixupe["per_seed"]["active_fraction"], [0.1, 0.2, 0.3, 0.4])
  np.testing.assert_allclose(mixupe["active_fraction"]["mean"], 0.25)
  assert mixup["per_seed"]["best_step"] == [100, 200, 300]  # Seed 3 diverged.
  assert mixup["best_step"]["mean"] == 200.0
  assert "active_fraction" not in mixup["per_seed"] and "active_fraction" not in mixup


def test_markdown_of_a_partial_suite_with_cpu_times_a_missing_choice_and_two_diverged_runs():
  """The note that heads a partial suite's table, word for word (10 runs and 3 searches finished,
  2 missing); a dataset without a chosen eta shows a dash; two diverged runs are listed apart;
  the CPU time in hours: 10 runs of 30,000 s and 3 searches of 20,000 s are 100.00 CPU-hours.
  Mutants that fail it (checked by hand): the note's words or blank line changed, the dash or the
  separator changed, the hours computed with another divisor (3601 s gives 99.97)."""
  suite, outcome = toy_suite_and_outcome()
  for run in outcome["runs"]:
    run["cpu_seconds"] = 30000.0
    if (run["dataset"], run["method"], run["seed"]) == ("toy", "mixupe", 1):
      run["status"] = "diverged"
  for entries in outcome["search"].values():
    for entry in entries["mixupe"]:
      entry["cpu_seconds"] = 20000.0
  outcome["missing"] = ["toy/mixupe/seed=4", "one/mixup/seed=1"]
  outcome["chosen"] = {"toy": outcome["chosen"]["toy"], "one": {}}
  text = report.markdown(report.aggregate(suite, outcome), suite)
  assert text.startswith(
      "**Partial suite**: 13 runs finished, 2 not yet; the tables show the finished ones (a "
      "method missing at a seed is left out of that seed's pairs).\n\n**test accuracy (%)**")
  assert "| toy | 0.1, published |\n| one | — |\n" in text
  assert "| toy | 30000 | 30000 |\n" in text
  assert text.endswith(
      "Diverged (NaN loss) runs: toy/mixup seeds [3], toy/mixupe seeds [1].\n"
      "Training time, all runs of the suite: 0.5 min (100.00 CPU-hours).\n")


def test_mean_and_std_accumulate_in_float64_whatever_the_values_type():
  """float32 metrics (a run's values before they pass through JSON) are summed in float64.
  Mutants that fail it (checked by hand): the array left in the values' own dtype."""
  values = np.float32([0.1, 0.2, 0.4, 0.7, 0.3])
  wide = values.astype(np.float64)
  assert report.mean_and_std(values) == {"mean": float(wide.mean()),
                                         "std": float(wide.std(ddof=1)), "n": 5}


def test_every_committed_record_reads_as_a_run_result_and_writes_back_unchanged():
  """The one conversion of older records (RunResult.from_record): each committed result file,
  of every suite and age (with or without CPU times, early stopping, imported_from), reads as a
  RunResult and writes back to the same record, field order included; an unknown field is an
  error."""
  from mixupe_jax.experiments.result import RunResult
  paths = glob.glob(os.path.join(ROOT, "results", "runs", "**", "*.json"), recursive=True)
  assert len(paths) > 800
  kinds = set()
  for path in paths:
    with open(path) as file:
      record = json.load(file)
    result = RunResult.from_record(record)
    assert list(result.to_record().items()) == list(record.items()), path
    kinds.add((result.cpu_seconds is None, result.best_step is None,
               result.imported_from is None))
  # Three generations of records (before CPU times; imported; with early stopping's fields) and
  # runs without early stopping (the label-noise regime).
  assert kinds == {(True, True, True), (True, True, False), (False, False, True),
                   (False, True, True)}
  with pytest.raises(ValueError, match=r"unknown fields \['colour'\]"):
    RunResult.from_record({**record, "colour": "red"})
