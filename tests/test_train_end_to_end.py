"""train.py end to end in subprocesses (8 simulated devices, inherited from conftest): the default
reaches its stated accuracy; a run killed by SIGTERM or SIGKILL resumes to exactly the parameters
of an uninterrupted run; ImageNet's config runs a step on mock data. Every offline config trains
a few steps in this process and writes metrics and checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.train.loop import PREEMPTED_EXIT_STATUS, train_and_evaluate

# train.py in subprocesses, kill and resume, whole trainings. Deselected by -m 'not slow' (docs/development.md).
pytestmark = pytest.mark.slow


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("MIXUPE_JAX_DATA", os.path.join(ROOT, "..", "shared", "data"))
UCI_SETS = ("abalone", "arcene", "arrhythmia", "htru2", "iris", "phishing")


def command(config, workdir, *overrides):
  return [sys.executable, os.path.join(ROOT, "train.py"), f"--config={config}",
          f"--workdir={workdir}", "--config.progress_bar=False", *overrides]


def run(config, workdir, *overrides, timeout=600):
  result = subprocess.run(command(config, workdir, *overrides), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def require_shared(folder):
  path = os.path.join(SHARED, folder)
  if not os.path.exists(path):
    pytest.skip(f"Needs the offline data folder {path} (set MIXUPE_JAX_DATA to the folder that "
                f"holds {folder}); it is absent here.")
  return path


def final_params(workdir):
  checkpoints = os.path.join(workdir, "checkpoints")
  step = max(int(name) for name in os.listdir(checkpoints) if name.isdigit())
  restored = ocp.StandardCheckpointer().restore(os.path.join(checkpoints, str(step), "default"))
  return step, restored["params"]


def test_default_config_reaches_its_accuracy_on_digits(tmp_path):
  workdir = str(tmp_path / "digits")
  result = run("configs/digits_mlp.py", workdir)
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  # Measured 0.987 for seed 0 (README); 0.96 leaves room for other platforms' float order.
  assert summary["test"]["accuracy"] >= 0.96, summary
  assert "test: accuracy" in result.stdout
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert {r["split"] for r in records} == {"train", "test"}
  assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
  assert {"accuracy", "accuracy_top5", "nll", "ece"} <= set(records[-1])
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert os.path.getsize(os.path.join(workdir, "curves.png")) > 10_000
  assert final_params(workdir)[0] == 1260


OFFLINE_CONFIGS = [
    ("fashion_mnist_cnn.py", "fashion_mnist", {}),
    ("fsdd_cnn.py", "fsdd", {}),
    ("cora_gcn.py", "planetoid", {}),
] + [  # Batch 16 holds one mixing group: on 8 devices, as its docstring says, pair per device.
    (f"uci_mlp.py:{name}", "uci", {"mixing_scope": "device"}) for name in UCI_SETS]


@pytest.mark.parametrize("config_name,folder,extra", OFFLINE_CONFIGS,
                         ids=[c[0] for c in OFFLINE_CONFIGS])
def test_offline_config_trains_a_few_steps(tmp_path, config_name, folder, extra):
  """In this process (train.py's command line is the other tests'): 3 steps, a checkpoint at
  step 2 and at the end, the summary the last evaluation's."""
  require_shared(folder)
  workdir = str(tmp_path / "run")
  config = load_config_file(os.path.join(ROOT, "configs"), config_name)
  # Point the config at the data wherever it is.
  config.dataset = {"fashion_mnist": f"idx:{SHARED}/fashion_mnist",
                    "fsdd": f"fsdd:{SHARED}/fsdd/fsdd_recordings.zip",
                    "planetoid": f"planetoid:cora:{SHARED}/planetoid",
                    "uci": f"uci:{config_name.split(':')[-1]}:{SHARED}/uci"}[folder]
  config.update(num_train_steps=3, checkpoint_every_steps=2, log_every_steps=1,
                progress_bar=False, **extra)
  train_and_evaluate(config, workdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
  evaluated = [r for r in records if r["split"] != "train"]
  # The run's summary is its last evaluation, split for split.
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  last = {r["split"]: r for r in evaluated if r["step"] == 3}
  assert last and set(last) == {s for s in summary if isinstance(summary[s], dict)}
  for split, record in last.items():
    assert {k: v for k, v in record.items() if k not in ("step", "split")} == summary[split]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "3"


def _wait_for_checkpoint(workdir, process, timeout=300):
  checkpoints = os.path.join(workdir, "checkpoints")
  start = time.time()
  while time.time() - start < timeout:
    if os.path.isdir(checkpoints) and any(
        os.path.exists(os.path.join(checkpoints, n, "commit_success.txt")) or
        os.path.exists(os.path.join(checkpoints, n, "_CHECKPOINT_METADATA"))
        for n in os.listdir(checkpoints) if n.isdigit()):
      return
    assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.05)
  raise TimeoutError("no checkpoint appeared")


RESUME = ("--config.num_train_steps=200", "--config.checkpoint_every_steps=40",
          "--config.eval_every_epochs=100")


def test_killed_run_resumes_to_the_uninterrupted_parameters(tmp_path):
  """Stopped by SIGTERM (a preemption: it saves and exits with PREEMPTED_EXIT_STATUS) or by
  SIGKILL (nothing saved after the last checkpoint) after its first checkpoint, then rerun: the
  same parameters as one uninterrupted run, bit for bit, and a log without repeated steps."""
  reference = str(tmp_path / "reference")
  run("configs/digits_mlp.py", reference, *RESUME)
  reference_step, reference_params = final_params(reference)
  for kill_signal in (signal.SIGTERM, signal.SIGKILL):
    interrupted = str(tmp_path / kill_signal.name)
    process = subprocess.Popen(command("configs/digits_mlp.py", interrupted, *RESUME), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(interrupted, process)
    process.send_signal(kill_signal)
    _, stderr = process.communicate(timeout=300)
    if process.returncode == 0:
      pytest.fail("the run finished before the signal landed; lengthen it")
    if kill_signal == signal.SIGTERM:
      assert process.returncode == PREEMPTED_EXIT_STATUS, stderr[-3000:]
      assert "Preempted: saved a checkpoint at step" in stderr
    else:
      assert process.returncode == -signal.SIGKILL
    stopped_at, _ = final_params(interrupted)
    assert 0 < stopped_at < 200, kill_signal.name
    run("configs/digits_mlp.py", interrupted, *RESUME)
    step, params = final_params(interrupted)
    assert step == reference_step == 200
    for leaf, reference_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params)):
      np.testing.assert_array_equal(leaf, reference_leaf, err_msg=kill_signal.name)
    steps = [r["step"] for r in map(json.loads, open(os.path.join(interrupted, "metrics.jsonl")))
             if r["split"] == "train"]
    assert steps == sorted(set(steps)), f"the resumed log repeats steps ({kill_signal.name})"


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "nan")
  result = subprocess.run(
      command("configs/digits_mlp.py", workdir, "--config.learning_rate=1e6",
              "--config.method=erm", "--config.schedule=constant", "--config.num_train_steps=400",
              "--config.checkpoint_every_steps=1", "--config.log_every_steps=1"),
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 1
  assert "error: The training loss is nan at step" in result.stderr or \
      "error: The training loss is inf at step" in result.stderr, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  bad_step = int(result.stderr.split("at step ")[1].split(" ")[0])
  saved_step, params = final_params(workdir)
  assert saved_step == bad_step - 1
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params))


IMAGENET_STEP = r"""
import json, sys
sys.path.insert(0, "configs")
import imagenet_resnet50
import tensorflow_datasets as tfds
from mixupe_jax.train.loop import train_and_evaluate
config = imagenet_resnet50.get_config()
config.image_size, config.batch_size, config.eval_batch_size = 32, 8, 8
config.mixing_group_size = 4  # 2 devices hold 4 images each.
config.num_train_steps, config.progress_bar, config.input_threads = 1, False, 1
with tfds.testing.mock_data(num_examples=16):
  print(json.dumps(train_and_evaluate(config, sys.argv[1])))
"""


def test_imagenet_config_runs_a_step_on_mock_data_at_reduced_size(tmp_path):
  """ResNet-50 in bfloat16, MixupE fast, on 2 simulated devices in a subprocess: compiling it for 8
  took 6.4 GB of memory, for 2 it takes 2.7 GB (the 8-device step is tested on smaller models)."""
  environment = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run([sys.executable, "-c", IMAGENET_STEP, str(tmp_path)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["steps"] == 1
  assert summary["final_step"] == 1
  assert set(summary["validation"]) == {"accuracy", "accuracy_top5", "nll", "ece"}
  assert summary["validation"]["accuracy_top5"] >= summary["validation"]["accuracy"]