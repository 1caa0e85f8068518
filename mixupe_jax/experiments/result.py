"""One run's record: what `runner.execute` writes to result.json and the report reads.

Records of older suites lack some fields (before the CPU clock: `cpu_seconds` and `attempts`;
before early stopping: `best_step`, `final_step`, `steps`, `stopped_early`); some carry
`imported_from`. `RunResult.from_record` is the one place that converts them: a missing field is
None, and `to_record` writes back exactly the fields a record had.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Metrics = dict[str, dict[str, float]]  # split -> metric -> value
Curves = dict[str, list[list[float]]]  # name -> [[step, value], ...]

_OPTIONAL = (
  "cpu_seconds",
  "attempts",
  "best_step",
  "final_step",
  "steps",
  "stopped_early",
  "imported_from",
)


@dataclasses.dataclass(frozen=True)
class RunResult:
  """A finished (or diverged) run: its identity, outcome, cost, MixupE settings, metrics per
  split, curves, and, for early-stopping suites, the step of the reported model."""

  stage: str  # "search" or "final"
  dataset: str
  method: str  # The suite's name of the method.
  seed: int
  eta: float | None
  flip_sign: bool
  status: str  # "finished" or "diverged"
  error: str | None
  seconds: float  # Wall time of the attempt that finished it.
  variant: str
  alpha: float
  config_method: str  # The training config's method (e.g. "manifold_mixupe").
  metrics: Metrics
  curves: Curves
  cpu_seconds: float | None = None  # Every attempt's CPU time, summed.
  attempts: int | None = None
  best_step: int | None = None
  final_step: int | None = None
  steps: int | None = None
  stopped_early: bool | None = None
  imported_from: str | None = None  # Runs copied from another suite's store.

  @property
  def finished(self) -> bool:
    return self.status == "finished"

  @classmethod
  def from_record(cls, record: dict[str, Any] | RunResult) -> RunResult:
    """The result of a result.json record (any suite's); a RunResult as it is.

    >>> from mixupe_jax.experiments.result import RunResult
    >>> old = {"stage": "final", "dataset": "iris", "method": "mixup", "seed": 0, "eta": 1.0,
    ...        "flip_sign": False, "status": "finished", "error": None, "seconds": 2.0,
    ...        "variant": "v1", "alpha": 1.0, "config_method": "mixup", "metrics": {},
    ...        "curves": {}}
    >>> result = RunResult.from_record(old)
    >>> result.cpu_seconds is None, result.to_record() == old
    (True, True)
    """
    if isinstance(record, RunResult):
      return record
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = set(record) - names
    if unknown:
      raise ValueError(f"A run record with unknown fields {sorted(unknown)}.")
    return cls(**record)

  def to_record(self) -> dict[str, Any]:
    """The JSON record: every field, in result.json's order, the optional ones only when set."""
    record = dataclasses.asdict(self)
    for name in _OPTIONAL:
      if record[name] is None:
        del record[name]
    order = [
      "stage",
      "dataset",
      "method",
      "seed",
      "eta",
      "flip_sign",
      "status",
      "error",
      "seconds",
      "cpu_seconds",
      "attempts",
      "variant",
      "alpha",
      "config_method",
      "metrics",
      "curves",
      "imported_from",
      "best_step",
      "final_step",
      "steps",
      "stopped_early",
    ]
    return {name: record[name] for name in order if name in record}
