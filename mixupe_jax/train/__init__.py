"""Training: configs in, a trained and evaluated model, checkpoints and metrics out."""

from mixupe_jax.train.loop import Preempted, evaluate_checkpoint, train_and_evaluate
from mixupe_jax.train.step import TrainState, make_eval_step, make_train_step

__all__ = [
  "Preempted",
  "TrainState",
  "evaluate_checkpoint",
  "make_eval_step",
  "make_train_step",
  "train_and_evaluate",
]
