"""Checkpoints with orbax: periodic and final, keep the newest N, resume from the latest, save on
preemption (SIGTERM).

orbax writes each step into a temporary folder and renames it only once complete, so a crash or a
kill during a save never leaves a partial checkpoint where a good one was: restoring takes the
newest finished step. A checkpoint holds the whole `TrainState` (step, params, model state,
optimizer state) as its item "default", and the loop's own state (early stopping's best step,
best metrics and patience count) as the JSON item "loop"; the data stream and the per-step keys
are functions of the step, so resuming from step s replays exactly what an uninterrupted run does
after s. Checkpoints written before the loop's item restore without it.

Failures: a checkpoint that cannot be restored (a truncated file, an empty metadata file, an empty
step folder) is skipped for the newest one that can, and moved aside as `unreadable-<step>`, with
a warning naming both; when none can, restoring raises and moves nothing. Saves are synchronous:
a failed save raises `CheckpointError` in the training loop at once (orbax's asynchronous path
can leave its threads waiting forever after a failed write, so the process never exits). Saves
are every `checkpoint_every_steps`, so waiting for them costs little.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

STATE_ITEM, LOOP_ITEM = "default", "loop"  # "default": the item name of older checkpoints.
ITEMS = (STATE_ITEM, LOOP_ITEM)


class CheckpointError(RuntimeError):
  """Checkpoints cannot be written, or none of those present can be read."""


class Checkpointer:
  """The training loop decides when to save (its interval, the end, preemption); this saves
  whenever asked and keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise CheckpointError(
        f"{self.directory} exists and is not a folder: checkpoints cannot "
        "be written there (move it away or choose another workdir)."
      )
    self._options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=False
    )
    self.manager = self._manager()

  def _manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, loop_state: dict[str, Any] | None = None) -> bool:
    """Saves `state` (and the loop's JSON-able `loop_state`, if any) as step `step`; a failure
    raises CheckpointError naming the step and folder."""
    items: dict[str, Any] = {STATE_ITEM: ocp.args.StandardSave(state)}
    if loop_state is not None:
      items[LOOP_ITEM] = ocp.args.JsonSave(loop_state)
    try:
      return self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as error:
      raise CheckpointError(
        f"Saving the checkpoint of step {step} in {self.directory} failed "
        f"({type(error).__name__}: {error}); training stopped. The newest finished "
        f"checkpoint is step {self.latest_step()}."
      ) from error

  def restore_latest(self, like: Any) -> Any | None:
    """The newest checkpoint that can be restored with `like`'s structure, shardings and dtypes,
    or None when there is none. Newer ones that cannot are moved aside (see above)."""
    return self.restore_latest_with_loop(like)[0]

  def _restore(self, step: int, abstract: Any) -> tuple[Any, dict[str, Any] | None]:
    items: dict[str, Any] = {STATE_ITEM: ocp.args.StandardRestore(abstract)}
    has_loop = os.path.isdir(os.path.join(self.directory, str(step), LOOP_ITEM))
    if has_loop:
      items[LOOP_ITEM] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored[STATE_ITEM], restored[LOOP_ITEM] if has_loop else None

  def restore_latest_with_loop(self, like: Any) -> tuple[Any | None, dict[str, Any] | None]:
    """(the newest restorable state, as `restore_latest`; the loop state saved with it, or None
    for a checkpoint written without one)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    failed: list[tuple[int, Exception]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self._restore(step, abstract)
      except Exception as error:  # orbax, tensorstore and the OS raise many kinds.
        failed.append((step, error))
        # A failed restore can leave the manager's handlers in a state that fails the next one.
        self.manager.close()
        self.manager = self._manager()
        continue
      for bad_step, bad_error in failed:
        aside = self._set_aside(bad_step)
        logging.warning(
          "The checkpoint of step %d in %s cannot be restored (%s: %s); moved it "
          "to %s and resumed from step %d.",
          bad_step,
          self.directory,
          type(bad_error).__name__,
          bad_error,
          aside,
          step,
        )
      return restored
    if failed:
      newest, newest_error = failed[0]
      raise CheckpointError(
        f"No checkpoint in {self.directory} can be restored (steps "
        f"{', '.join(str(s) for s, _ in failed)}); the newest, step {newest}, fails with "
        f"{type(newest_error).__name__}: {newest_error}. If the model or optimizer changed, use "
        "a new workdir."
      )
    return None, None

  def restore_step(self, step: int, like: Any) -> Any:
    """The checkpoint of `step`, restored with `like`'s structure, shardings and dtypes; a
    CheckpointError names the step and folder when it is missing or unreadable."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    if step not in self.manager.all_steps():
      raise CheckpointError(
        f"{self.directory} holds no checkpoint of step {step} (it holds "
        f"{sorted(self.manager.all_steps()) or 'none'})."
      )
    try:
      return self._restore(step, abstract)[0]
    except Exception as error:  # orbax, tensorstore and the OS raise many kinds.
      raise CheckpointError(
        f"The checkpoint of step {step} in {self.directory} cannot be "
        f"restored ({type(error).__name__}: {error})."
      ) from error

  def delete_after(self, step: int) -> None:
    """Deletes every checkpoint of a step after `step`."""
    for later in [s for s in self.manager.all_steps() if s > step]:
      self.manager.delete(later)

  def _set_aside(self, step: int) -> str:
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory, f"unreadable-{step}-{int(time.time())}")
    if os.path.exists(source):
      os.replace(source, target)
    self.manager.reload()
    return target

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    """Waits for the last save, then closes (also when the run ends with an exception)."""
    self.wait()
    self.close()


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
