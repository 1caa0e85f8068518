"""The training loop's periodic actions (train.actions): when each triggers, and what it does."""

import numpy as np
import pytest

from mixupe_jax.train import actions, runaway
from mixupe_jax.train.defaults import default_config
from mixupe_jax.train.early_stopping import EarlyStopping


def test_the_schedule_triggers_where_the_config_says():
  """21 steps per epoch, 50 steps: evaluation at the end of every 2nd epoch and after the last
  step; checkpoints every 20 steps and after the last; the log every 8 steps, at every epoch's
  end and wherever a checkpoint is saved (by hand, not by the same formula)."""
  schedule = actions.Schedule(steps_per_epoch=21, total_steps=50, log_every_steps=8,
                              eval_every_epochs=2, checkpoint_every_steps=20)
  steps = range(1, 51)
  assert [d for d in steps if schedule.evaluates(d)] == [42, 50]
  assert [d for d in steps if schedule.saves(d)] == [20, 40, 50]
  assert [d for d in steps if schedule.logs(d)] == [8, 16, 20, 21, 24, 32, 40, 42, 48, 50]


class RecordingLog:
  def __init__(self):
    self.records = []

  def write(self, step, split, metrics):
    self.records.append((step, split, dict(metrics)))


def test_train_metrics_log_their_mean_and_stop_at_a_non_finite_loss():
  log = RecordingLog()
  watch = runaway.RunawayWatch(default_config(), num_classes=10)
  metrics = actions.TrainMetrics(log, watch, batch_size=4, start_step=0,
                                 non_finite=lambda loss, step: f"loss {loss} at step {step}")
  assert metrics.flush(1) == {}
  metrics.add(1, {"loss": np.float32(1.0)})
  metrics.add(2, {"loss": np.float32(3.0)})
  mean = metrics.flush(2)
  assert mean["loss"] == 2.0 and mean["examples_per_second"] > 0
  assert log.records == [(2, "train", mean)] and metrics.pending == []
  metrics.add(3, {"loss": np.float32(1.0)})
  metrics.add(4, {"loss": np.float32(np.nan)})
  with pytest.raises(FloatingPointError, match="loss nan at step 4"):
    metrics.flush(4)


def test_evaluation_logs_stops_early_and_saves_the_best_step():
  class Best:
    saved = []

    def save(self, step, state):
      self.saved.append((step, state))

  scores = iter([0.5, 0.7, 0.6, 0.6])
  evaluate = lambda state: {"validation": {"accuracy": next(scores), "nll": 1.0}}
  log, best = RecordingLog(), Best()
  evaluation = actions.Evaluation(evaluate, log, EarlyStopping("validation", 2), best)
  assert [evaluation.run(step, f"state{step}") for step in (10, 20, 30, 40)] == [
      False, False, False, True]
  assert best.saved == [(10, "state10"), (20, "state20")]
  assert [r[0] for r in log.records] == [10, 20, 30, 40]
  without_stopping = actions.Evaluation(lambda state: {"validation": {"accuracy": 1.0, "nll": 0.0}}, log, None, None)
  assert without_stopping.run(50, "s") is False and without_stopping.results["validation"]["accuracy"] == 1.0


def test_checkpointing_saves_the_loop_state_and_raises_after_a_preemption_save():
  class Saver:
    def __init__(self):
      self.saved, self.waited = [], False

    def save(self, step, state, loop_state):
      self.saved.append((step, loop_state))

    def wait(self):
      self.waited = True

  stopper = EarlyStopping("validation", 3)
  saver = Saver()
  checkpointing = actions.Checkpointing(saver, stopper)
  checkpointing.run(5, "state", preempted=False)
  assert saver.saved == [(5, {"early_stopping": stopper.to_state()})] and not saver.waited
  with pytest.raises(actions.Preempted) as raised:
    checkpointing.run(6, "state", preempted=True)
  assert raised.value.step == 6 and raised.value.code == 143 and saver.waited
  actions.Checkpointing(saver, None).run(7, "state", preempted=False)
  assert saver.saved[-1] == (7, None)
