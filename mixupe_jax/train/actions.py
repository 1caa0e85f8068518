"""The training loop's periodic actions, each a small object that knows when it triggers (as
CLU's periodic actions do): the train metrics and the NaN check, evaluation with early stopping,
and checkpointing with preemption. `train.loop` runs them after every step, in that order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from mixupe_jax.train import checkpoint, reporting, runaway
from mixupe_jax.train.early_stopping import EarlyStopping

Results = dict[str, dict[str, float]]  # split -> metrics of one evaluation


class Preempted(SystemExit):
  """Raised after the preemption checkpoint is saved; the process exits with 128 + SIGTERM."""

  EXIT_STATUS = 143  # What schedulers expect from a terminated job.

  def __init__(self, step: int):
    super().__init__(self.EXIT_STATUS)
    self.step = step


@dataclasses.dataclass(frozen=True)
class Schedule:
  """When each action triggers, as a function of `done`, the steps finished (1, 2, ...).

  >>> schedule = Schedule(steps_per_epoch=10, total_steps=35, log_every_steps=4,
  ...                     eval_every_epochs=2, checkpoint_every_steps=15)
  >>> [done for done in range(1, 36) if schedule.evaluates(done)]
  [20, 35]
  >>> [done for done in range(1, 36) if schedule.saves(done)]
  [15, 30, 35]
  >>> [done for done in range(1, 21) if schedule.logs(done)]
  [4, 8, 10, 12, 15, 16, 20]
  """

  steps_per_epoch: int
  total_steps: int
  log_every_steps: int
  eval_every_epochs: int
  checkpoint_every_steps: int

  def end_of_epoch(self, done: int) -> bool:
    return done % self.steps_per_epoch == 0

  def evaluates(self, done: int) -> bool:
    """At the end of every eval_every_epochs-th epoch, and after the last step."""
    epoch_boundary = self.end_of_epoch(done)
    every = (done // self.steps_per_epoch) % self.eval_every_epochs == 0
    return epoch_boundary and every or done == self.total_steps

  def saves(self, done: int) -> bool:
    """Every checkpoint_every_steps, and after the last step."""
    return done % self.checkpoint_every_steps == 0 or done == self.total_steps

  def logs(self, done: int) -> bool:
    """Every log_every_steps, at the end of an epoch, and wherever a checkpoint is saved."""
    return done % self.log_every_steps == 0 or self.end_of_epoch(done) or self.saves(done)


class TrainMetrics:
  """Keeps each step's metrics on the device until a flush, which fetches them, stops on a
  non-finite loss (a FloatingPointError naming the step and the last good checkpoint), writes
  their mean with the examples per second to the log, and checks MixupE for a runaway term."""

  def __init__(
    self,
    log: reporting.MetricLog,
    watch: runaway.RunawayWatch,
    batch_size: int,
    start_step: int,
    non_finite: Callable[[float, int], str],
  ):
    self.log, self.watch, self.batch_size = log, watch, batch_size
    self.non_finite = non_finite  # (loss, step) -> the error's message.
    self.pending: list[tuple[int, Any]] = []
    self.last = (time.perf_counter(), start_step)

  def add(self, done: int, metrics: Any) -> None:
    self.pending.append((done, metrics))

  def flush(self, done: int) -> dict[str, float]:
    """The mean of the metrics since the last flush ({} if none), logged at `done`."""
    if not self.pending:
      return {}
    fetched = jax.device_get([metrics for _, metrics in self.pending])
    for (step, _), metrics in zip(self.pending, fetched, strict=True):
      if not np.isfinite(metrics["loss"]):
        raise FloatingPointError(self.non_finite(metrics["loss"], step))
    self.pending.clear()
    now = time.perf_counter()
    elapsed, steps = now - self.last[0], done - self.last[1]
    self.last = (now, done)
    mean = {name: float(np.mean([m[name] for m in fetched])) for name in fetched[-1]}
    mean["examples_per_second"] = steps * self.batch_size / max(elapsed, 1e-9)
    self.log.write(done, "train", mean)
    self.watch.update(done, mean)
    return mean


class Evaluation:
  """Evaluates the splits, logs them, updates early stopping and saves the best step's
  checkpoint (before the latest one: a resume never finds a latest without its best). `run`
  returns whether training should stop early."""

  def __init__(
    self,
    evaluate: Callable[[Any], Results],
    log: reporting.MetricLog,
    stopper: EarlyStopping | None,
    best: checkpoint.Checkpointer | None,
  ):
    self.evaluate, self.log, self.stopper, self.best = evaluate, log, stopper, best
    self.results: Results = {}

  def run(self, done: int, state: Any) -> bool:
    self.results = self.evaluate(state)
    for split, metrics in self.results.items():
      self.log.write(done, split, metrics)
    if self.stopper is None:
      return False
    stop = self.stopper.update(done, self.results)
    if self.best is not None and self.stopper.best_step == done:
      self.best.save(done, state)
    if stop:
      logging.info(
        "Early stopping at step %d: %d evaluations without a better %s accuracy than step %d's.",
        done,
        self.stopper.waited,
        self.stopper.split,
        self.stopper.best_step,
      )
    return stop


class Checkpointing:
  """Saves the state with the loop's own state (early stopping's) where the schedule says, at
  early stopping and on preemption; after a preemption save it raises `Preempted`."""

  def __init__(self, checkpointer: checkpoint.Checkpointer, stopper: EarlyStopping | None):
    self.checkpointer, self.stopper = checkpointer, stopper

  def run(self, done: int, state: Any, *, preempted: bool) -> None:
    loop_state = None if self.stopper is None else {"early_stopping": self.stopper.to_state()}
    self.checkpointer.save(done, state, loop_state)
    if preempted:
      self.checkpointer.wait()
      logging.warning("Preempted: saved a checkpoint at step %d; rerun to resume.", done)
      raise Preempted(done)


def non_finite_loss_message(
  loss: float, step: int, dataset: str, latest_step: int | None, folder: str
) -> str:
  """Why training stopped, and what to suspect: at the very first step the data (the parameters
  are fresh and nothing has been updated yet), later the update."""
  if step == 1:
    cause = (
      f"The training loss is {loss} at step 1 (the first batch, before any update): the "
      f"inputs or labels of {dataset} may be non-finite or unusable (or the loss overflows "
      "at these settings)"
    )
  else:
    cause = (
      f"The training loss is {loss} at step {step} (the update from step {step - 1}); "
      "the update diverged (a smaller learning_rate or eta may help)"
    )
  kept = (
    "no checkpoint yet"
    if latest_step is None
    else f"the last good checkpoint is step {latest_step} in {folder}"
  )
  return f"{cause}. Training stopped; {kept}."
