"""Checkpoints with orbax: periodic and final, keep the newest N, resume from the latest, save on
preemption (SIGTERM).

orbax writes each step into a temporary folder and renames it only once complete, so a crash or a
kill during a save never leaves a partial checkpoint where a good one was: restoring takes the
newest finished step. A checkpoint holds the whole `TrainState` (step, params, model state,
optimizer state); the data stream and the per-step keys are functions of the step, so resuming
from step s replays exactly what an uninterrupted run does after s.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:

  """The training loop decides when to save (its interval, the end, preemption); this saves
  whenever asked and keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory), options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any) -> bool:
    """Saves `state` as step `step`, asynchronously (see `wait`)."""
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore_latest(self, like: Any) -> Any | None:
    """The newest finished checkpoint restored with `like`'s structure, shardings and dtypes,
    or None when there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class PreemptionFlag:
  """Set by SIGTERM (what schedulers and TPU maintenance send before a kill); the loop checks it
  between steps, saves, and stops. With several processes every process must stop at the same
  step, so the check goes through JAX's preemption sync point instead."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self._event.is_set()
