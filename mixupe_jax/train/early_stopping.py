"""Early stopping on a held-out split: the evaluation with the best accuracy (then the lower NLL)
is the run's result, and training stops after `patience` evaluations without improving on it.

The state is a function of the metric log, so a resumed run rebuilds it from the records up to
its checkpoint (`from_log`) and stops exactly where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Results = dict[str, dict[str, float]]  # split -> metrics of one evaluation


@dataclasses.dataclass
class EarlyStopping:
  split: str
  patience: int
  best_step: int | None = None
  best: Results | None = None
  score: tuple[float, float] = (float("-inf"), float("-inf"))
  waited: int = 0

  def update(self, step: int, results: Results) -> bool:
    """Takes one evaluation of every split; True when training should stop."""
    metrics = results[self.split]
    score = (metrics["accuracy"], -metrics["nll"])
    if score > self.score:
      self.best_step, self.best, self.score, self.waited = step, results, score, 0
    else:
      self.waited += 1
    return self.stopped

  @property
  def stopped(self) -> bool:
    """Whether `patience` evaluations in a row have not improved on the best one."""
    return self.waited >= self.patience

  @classmethod
  def from_log(cls, records: list[dict[str, Any]], split: str, patience: int) -> EarlyStopping:
    """The state after replaying the evaluations in `records` (metric-log records)."""
    stopper = cls(split, patience)
    by_step: dict[int, Results] = {}
    for record in records:
      if record["split"] != "train":
        metrics = {k: v for k, v in record.items() if k not in ("step", "split")}
        by_step.setdefault(record["step"], {})[record["split"]] = metrics
    for step in sorted(by_step):
      if split in by_step[step]:
        stopper.update(step, by_step[step])
    return stopper
