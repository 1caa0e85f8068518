"""Early stopping on a held-out split: the evaluation with the best accuracy (then the lower NLL)
is the run's result, and training stops after `patience` evaluations without improving on it.

The state is saved with each checkpoint (`to_state`, `from_state`), so a resumed run continues
it and stops exactly where an uninterrupted one would, whatever happened to the metric log. A
checkpoint written before the state was saved rebuilds it once from the log (`from_log`).
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

  def to_state(self) -> dict[str, Any]:
    """The JSON-able state a checkpoint keeps (`from_state` reads it back)."""
    return {
      "split": self.split,
      "patience": self.patience,
      "best_step": self.best_step,
      "best": self.best,
      "score": None if self.best_step is None else list(self.score),
      "waited": self.waited,
    }

  @classmethod
  def from_state(cls, state: dict[str, Any], split: str, patience: int) -> EarlyStopping:
    """The early stopping a checkpoint saved, continued with this config's split and patience.

    >>> stopper = EarlyStopping("validation", 3)
    >>> _ = stopper.update(7, {"validation": {"accuracy": 0.9, "nll": 0.3}})
    >>> EarlyStopping.from_state(stopper.to_state(), "validation", 3) == stopper
    True
    """
    if state["split"] != split:
      raise ValueError(
        f"the checkpoint's early stopping watched {state['split']!r}, this config {split!r}; "
        "use another workdir."
      )
    stopper = cls(split, patience, best_step=state["best_step"], best=state["best"])
    if state["score"] is not None:
      stopper.score = (float(state["score"][0]), float(state["score"][1]))
    stopper.waited = int(state["waited"])
    return stopper

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
