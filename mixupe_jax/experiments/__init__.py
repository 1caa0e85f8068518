"""Experiment suites: ERM, Mixup and MixupE over datasets and seeds, with an eta search on a
validation split, written to results.json and a Markdown table.

    python -m mixupe_jax.experiments --suite cpu          # hours on 2 CPU cores (docs/results.md)
    python -m mixupe_jax.experiments --suite bn_ablation  # after cpu: its clean-pass ablation
    python -m mixupe_jax.experiments --suite tiny         # seconds: 2 datasets x 2 methods x 1 seed
    python -m mixupe_jax.experiments --suite converged    # many hours: models trained to fit
"""

# Fails with an ImportError naming the extra where the training system is not installed.
import mixupe_jax.train_extra  # noqa: F401
from mixupe_jax.experiments.report import aggregate, markdown, paired_test
from mixupe_jax.experiments.runner import Run, run_suite
from mixupe_jax.experiments.suites import SUITES, Suite, get_suite

__all__ = [
  "SUITES",
  "Run",
  "Suite",
  "aggregate",
  "get_suite",
  "markdown",
  "paired_test",
  "run_suite",
]
