"""timm's mixup_off_epoch: from that epoch's first step every method trains on the clean batch
with its smoothed labels; the switch follows the global step, so a resume on either side of it
continues the uninterrupted run."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train_end_to_end import final_params

from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.train import validation
from mixupe_jax.train.loop import set_up, train_and_evaluate
from mixupe_jax.train.step import global_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digits_config(**fields):
  """configs/digits_mlp.py (21 steps per epoch) for 2 epochs, checkpoints every 7 steps."""
  config = load_config_file(os.path.join(ROOT, "configs"), "digits_mlp.py")
  config.num_epochs = 2
  config.checkpoint_every_steps = 7
  config.keep_checkpoints = 10
  config.log_every_steps = 7
  config.progress_bar = False
  for name, value in fields.items():
    config[name] = value
  return config


def test_the_step_after_the_off_epoch_is_the_erm_step():
  """MixupE with mixup_off_epoch = 1 mixes in steps 0..20 and not from step 21 (the first of
  epoch 1); its unmixed step takes a state and batch where ERM's step (another loss function,
  built from method = "erm") takes them, and its mixing step does not."""
  mixupe = set_up(digits_config(mixup_off_epoch=1))
  erm = set_up(digits_config(method="erm"))
  assert mixupe.steps_per_epoch == 21
  assert mixupe.mixes_at(20) and not mixupe.mixes_at(21) and not mixupe.mixes_at(41)
  assert set_up(digits_config()).mixes_at(10_000)
  batch = global_batch(next(mixupe.data.train_batches(21)), mixupe.mesh)
  def copy(state):  # The train step donates its state.
    return jax.tree.map(jnp.copy, state)

  after_off, _ = mixupe.train_step_at(21)(copy(mixupe.state), *batch)
  after_erm, _ = erm.train_step()(copy(erm.state), *batch)
  after_mixing, _ = mixupe.train_step_at(20)(copy(mixupe.state), *batch)
  for name in ("params", "opt_state"):
    jax.tree.map(np.testing.assert_allclose, getattr(after_off, name), getattr(after_erm, name))
  differences = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), after_mixing.params,
                             after_erm.params)
  assert max(jax.tree.leaves(differences)) > 1e-4


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  train_and_evaluate(digits_config(mixup_off_epoch=1), workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("resume_from", [14, 28])
def test_a_resume_on_either_side_of_the_off_step_continues_the_uninterrupted_run(
    uninterrupted, tmp_path, resume_from):
  """The run's checkpoints after `resume_from` removed, the run started again reaches the
  uninterrupted run's final parameters (resumed before step 21 it must switch by itself; after
  it, it must not mix again); a run that mixes throughout ends elsewhere."""
  workdir = str(tmp_path / "resumed")
  shutil.copytree(uninterrupted, workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  for name in os.listdir(checkpoints):
    if name.isdigit() and int(name) > resume_from:
      shutil.rmtree(os.path.join(checkpoints, name))
  os.remove(os.path.join(workdir, "summary.json"))
  train_and_evaluate(digits_config(mixup_off_epoch=1), workdir)
  (step, resumed), (_, expected) = final_params(workdir), final_params(uninterrupted)
  assert step == 42
  jax.tree.map(np.testing.assert_array_equal, resumed, expected)
  if resume_from == 14:
    mixing_throughout = str(tmp_path / "mixing")
    train_and_evaluate(digits_config(), mixing_throughout)
    differences = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                               final_params(mixing_throughout)[1], expected)
    assert max(jax.tree.leaves(differences)) > 1e-3


@pytest.mark.parametrize("value", [0, -1])
def test_a_bad_off_epoch_is_a_config_error_naming_it(value):
  with pytest.raises(validation.ConfigError, match="config.mixup_off_epoch = "):
    validation.validate(digits_config(mixup_off_epoch=value))
