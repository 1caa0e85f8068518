"""Runs an experiment suite, resuming where a previous invocation stopped:

    python -m mixupe_jax.experiments --suite cpu [--data_dir ../shared/data] \
        [--datasets cora,digits]

Runs go to --workdir (default workdir/experiments/<suite>, or the folder of the suite whose runs it
reuses), each finished run's result file also to --store (default: the suite's, results/runs/cpu
for the cpu suite, committed, so a rerun in a fresh checkout trains only what is missing), the
table to --results_dir (default: the suite's results_dir, results/ for the cpu suite, else the
workdir). --report_only trains nothing and writes the table of what is finished (labelled partial
when runs are missing), e.g. while the suite runs in another process.
"""

import logging
import os
import time

from absl import app, flags

from mixupe_jax import xla_cpu

xla_cpu.configure()  # Before JAX's first computation: XLA reads its flags once.

from mixupe_jax.experiments import pooled, report, runner, suites  # noqa: E402
from mixupe_jax.train import reporting  # noqa: E402

flags.DEFINE_string("suite", "cpu", f"One of: {', '.join(suites.SUITES)}.")
flags.DEFINE_string("workdir", None, "Run directories (default workdir/experiments/<suite>).")
flags.DEFINE_string("results_dir", None, "Where results.json and results.md go.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding the offline datasets.")
flags.DEFINE_string("configs_dir", runner.DEFAULT_CONFIGS_DIR, "The configs/ folder.")
flags.DEFINE_list("datasets", None, "Only these datasets of the suite (default: all).")
flags.DEFINE_bool(
  "report_only",
  False,
  "Train nothing: write the table of the runs finished so "
  "far (a partial suite's reading, labelled as such).",
)
flags.DEFINE_string(
  "store",
  None,
  "Folder of finished runs' result files kept across sessions "
  "(default: the suite's, results/runs/cpu for cpu and bn_ablation; '' for none).",
)


class _DropLibraryInfo(logging.Filter):
  def filter(self, record):
    return record.levelno >= logging.WARNING


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger("absl").addFilter(_DropLibraryInfo())  # One line per run is the progress.
  reporting.quiet_tpu_probe()
  FLAGS = flags.FLAGS
  suite = suites.get_suite(FLAGS.suite)
  workdir = FLAGS.workdir or os.path.join("workdir", "experiments", suite.runs_of or suite.name)
  results_dir = FLAGS.results_dir or suite.results_dir or workdir
  start = time.perf_counter()
  store = suite.store if FLAGS.store is None else (FLAGS.store or None)
  outcome = runner.run_suite(
    suite,
    workdir,
    configs_dir=FLAGS.configs_dir,
    data_dir=FLAGS.data_dir,
    datasets=FLAGS.datasets,
    store=store,
    train=not FLAGS.report_only,
  )
  results = report.aggregate(suite, outcome, seconds=time.perf_counter() - start)
  json_path, markdown_path = report.write(results, suite, results_dir)
  with open(markdown_path) as file:
    print(file.read())
  print(f"Wrote {json_path} and {markdown_path}; runs are in {workdir}.")
  if suite.pool and len(results["results"]) > 1:  # Contrasts pooled over the datasets.
    print(f"Wrote {', '.join(pooled.write(results, suite, results_dir))}.")


if __name__ == "__main__":
  app.run(main)
