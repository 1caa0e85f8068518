"""Faults of a run: a corrupt newest checkpoint, a failed save, two runs on one workdir, a
finished run started again. Subprocesses run train.py where the exit status and time matter."""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.train import checkpoint, workdir as workdir_lib
from mixupe_jax.train.loop import train_and_evaluate

# Subprocesses, killed and failing runs. Deselected by -m 'not slow' (docs/development.md).
pytestmark = pytest.mark.slow


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def short_config(steps=30):
  """configs/digits_mlp.py, what train.py runs by default, for `steps` steps."""
  config = load_config_file(os.path.join(ROOT, "configs"), "digits_mlp.py")
  config.num_train_steps = steps
  config.checkpoint_every_steps = 10
  config.log_every_steps = 10
  config.progress_bar = False
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """An uninterrupted 30-step run: its checkpoints (10, 20, 30) and summary."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  summary = train_and_evaluate(short_config(), workdir)
  return workdir, summary


def copy_run(source, target):
  subprocess.run(["cp", "-r", source, str(target)], check=True)
  return str(target)


def truncate_data_files(step_dir):
  for path in glob.glob(os.path.join(step_dir, "default", "**", "d", "*"), recursive=True):
    with open(path, "r+b") as file:
      file.truncate(os.path.getsize(path) // 2)


def empty_metadata(step_dir):
  open(os.path.join(step_dir, "default", "_METADATA"), "w").close()


def empty_step_folder(step_dir):
  subprocess.run(["rm", "-rf", step_dir], check=True)
  os.makedirs(step_dir)


@pytest.mark.parametrize("corrupt", [truncate_data_files, empty_metadata, empty_step_folder],
                         ids=["truncated data file", "empty _METADATA", "empty step folder"])
@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(corrupt, finished_run,
                                                                    tmp_path):
  source, uninterrupted = finished_run
  workdir = copy_run(source, tmp_path / "run")
  os.remove(os.path.join(workdir, "summary.json"))
  checkpoints = os.path.join(workdir, "checkpoints")
  corrupt(os.path.join(checkpoints, "30"))
  summary = train_and_evaluate(short_config(), workdir)
  # Resumed from step 20 and trained steps 21-30 again: exactly the uninterrupted result.
  assert summary["test"] == uninterrupted["test"]
  moved = [name for name in os.listdir(checkpoints) if name.startswith("unreadable-30-")]
  assert len(moved) == 1, os.listdir(checkpoints)
  assert os.path.isdir(os.path.join(checkpoints, "30"))  # Saved anew.


def test_when_no_checkpoint_can_be_read_the_error_names_the_folder(finished_run, tmp_path):
  source, _ = finished_run
  workdir = copy_run(source, tmp_path / "run")
  checkpoints = os.path.join(workdir, "checkpoints")
  for step in ("10", "20", "30"):
    empty_metadata(os.path.join(checkpoints, step))
  with pytest.raises(checkpoint.CheckpointError,
                     match=rf"No checkpoint in {checkpoints} can be restored \(steps 30, 20, 10\)"):
    train_and_evaluate(short_config(), workdir)
  assert sorted(os.listdir(checkpoints)) == ["10", "20", "30"]  # Nothing moved or deleted.


def test_a_finished_run_started_again_keeps_its_summary_and_prints_it(finished_run, tmp_path):
  source, uninterrupted = finished_run
  workdir = copy_run(source, tmp_path / "run")
  path = os.path.join(workdir, "summary.json")
  before = open(path).read()
  result = subprocess.run(
      [sys.executable, "train.py", f"--workdir={workdir}", "--config.num_train_steps=30",
       "--config.checkpoint_every_steps=10", "--config.log_every_steps=10",
       "--config.progress_bar=False"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert open(path).read() == before
  accuracy = uninterrupted["test"]["accuracy"]
  assert f"test: accuracy {accuracy:.4f}" in result.stdout


def test_a_finished_run_without_its_summary_is_evaluated_again(finished_run, tmp_path):
  source, uninterrupted = finished_run
  workdir = copy_run(source, tmp_path / "run")
  os.remove(os.path.join(workdir, "summary.json"))
  assert train_and_evaluate(short_config(), workdir)["test"] == uninterrupted["test"]
  assert json.load(open(os.path.join(workdir, "summary.json")))["test"] == uninterrupted["test"]


def test_a_checkpoint_past_the_configs_last_step_is_an_error(finished_run, tmp_path):
  from mixupe_jax.train.validation import ConfigError
  workdir = copy_run(finished_run[0], tmp_path / "run")
  with pytest.raises(ConfigError, match=r"holds a checkpoint of step 30, past this config's 20"):
    train_and_evaluate(short_config(steps=20), workdir)


def test_a_failed_save_stops_the_run_promptly_with_a_clear_error(tmp_path):
  """The checkpoint folder turns into a file mid-run: the next save fails, and the process ends
  with status 1 and a line naming the step and the folder, instead of hanging in orbax threads."""
  workdir = tmp_path / "run"
  process = subprocess.Popen(
      [sys.executable, "train.py", f"--workdir={workdir}", "--config.num_train_steps=3000",
       "--config.checkpoint_every_steps=100", "--config.log_every_steps=100",
       "--config.progress_bar=False"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  checkpoints = workdir / "checkpoints"
  deadline = time.time() + 240
  while not (checkpoints / "100").exists() and time.time() < deadline:
    time.sleep(0.05)
  assert (checkpoints / "100").exists(), "the first checkpoint never appeared"
  os.rename(checkpoints, workdir / "moved")
  checkpoints.write_text("not a folder")
  start = time.time()
  try:
    _, stderr = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == 1, stderr[-2000:]
  assert time.time() - start < 120
  assert f"error: Saving the checkpoint of step " in stderr
  assert f"in {checkpoints} failed" in stderr and "training stopped" in stderr


def test_checkpoints_that_are_a_file_are_an_error_before_training(tmp_path):
  (tmp_path / "checkpoints").write_text("x")
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints exists and is not a folder"):
    train_and_evaluate(short_config(), str(tmp_path))


def test_a_second_run_on_a_workdir_in_use_fails_at_once(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.exclusive(workdir):
    start = time.time()
    result = subprocess.run(
        [sys.executable, "train.py", f"--workdir={workdir}", "--config.num_train_steps=5",
         "--config.progress_bar=False"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {os.path.abspath(workdir)} is in use by another run (process {os.getpid()}" \
        in result.stderr
    with pytest.raises(workdir_lib.WorkdirInUse, match="is in use by another run"):
      train_and_evaluate(short_config(), workdir)
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  # Released with its holder: the run now trains.
  assert "test" in train_and_evaluate(short_config(steps=5), workdir)


@pytest.mark.parametrize("arguments,message", [
    (["--config.num_epochs=0"], "error: config.num_epochs = 0: expected an integer >= 1."),
    (["--config.etaa=1"], "error: bad --config override: the config has no field 'etaa'; did you "
                          "mean 'eta'?"),
    (["--config=configs/none.py"], "error: cannot load the config file"),
    (["--config.dataset=idx:/nowhere"], "error: Missing idx dataset directory: /nowhere does not "
                                        "exist."),
    (["--config.batch_size=4096"], "error: batch_size 4096 is larger than the 1347 training "
                                   "examples of sklearn:digits."),
    (["--config.eval_splits=('valid',)"], "error: eval_splits ['valid'] not in sklearn:digits's "
                                          "splits ['test']"),
    (["--config.dataset=npz:{images}", "--config.standardize=True"],
     "error: config.standardize = True: standardize=True is for float features"),
    (["--config.train_subset=5000"], "error: train_subset = 5000 is more than the 1347 training "
                                     "examples of sklearn:digits."),
], ids=["a bad value", "a misspelled field", "a missing config file", "missing data",
        "a batch larger than the data", "an unknown split", "standardized images",
        "a subset larger than the data"])
@pytest.mark.slow
def test_config_and_data_mistakes_print_one_line_not_a_traceback(arguments, message, tmp_path):
  images = tmp_path / "images.npz"  # uint8 images, for the cases that need them.
  pixels = np.zeros((16, 4, 4, 3), np.uint8)
  np.savez(images, x_train=pixels, y_train=np.arange(16) % 2, x_test=pixels, y_test=np.arange(16) % 2)
  arguments = [a.replace("{images}", str(images)) for a in arguments]
  result = subprocess.run([sys.executable, "train.py", f"--workdir={tmp_path / 'run'}", *arguments],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert message in result.stderr
  assert "Traceback" not in result.stderr
