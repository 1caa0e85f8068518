"""Training: configs in, a trained and evaluated model, checkpoints and metrics out."""

# Fails with an ImportError naming the extra where the training system is not installed.
import mixupe_jax.train_extra  # noqa: F401
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
