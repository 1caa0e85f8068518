"""Multi-host: the compiled step of the default scope gathers no batch, and real 2-process
`jax.distributed` runs on 127.0.0.1 (CPU collectives through gloo) train exactly what 1 process
with 2 devices trains, resume in 1 process, fail clearly on differing configs and end when a
peer dies."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from mixupe_jax import losses, parallel
from mixupe_jax.models import SmallCNN, flax_apply_fn, init_model
from mixupe_jax.train import optim, step as step_lib
from mixupe_jax.train.defaults import default_config

# Multi-host: processes started and killed. Deselected by -m 'not slow' (docs/development.md).
pytestmark = pytest.mark.slow


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compiled_step_text(scope):
  """The compiled default train step (MixupE v1, a BatchNorm CNN) on the 8 simulated devices."""
  inputs = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
  labels = (np.arange(16) % 4).astype(np.int32)
  module = SmallCNN(4, channels=(4, 8))
  params, state = init_model(module, jax.random.key(1), inputs[:1])
  mesh = parallel.data_mesh()
  mixer = parallel.mixer_for_scope(losses.make_mixer("mixup", alpha=1.0, num_classes=4), mesh,
                                   scope)
  loss_fn = losses.make_loss_fn("mixupe", apply_fn=flax_apply_fn(module), num_classes=4,
                                alpha=1.0, eta=1.0, variant="v1", x_bar=inputs.mean(0),
                                mixer=mixer)
  schedule = optax.constant_schedule(0.05)
  optimizer = optim.make_optimizer(default_config(), schedule)
  train_state = parallel.replicate(step_lib.TrainState(
      jnp.zeros((), jnp.int32), params, state, optimizer.init(params)), mesh)
  train_step = step_lib.make_train_step(loss_fn, optimizer, schedule, mesh, jax.random.key(2))
  batch = step_lib.global_batch((inputs, labels), mesh)
  return train_step.lower(train_state, *batch).compile().as_text()


def gathered_shapes(text):
  """Result shapes of every all-gather and all-to-all in compiled HLO text."""
  return re.findall(r"= (\S+) (?:all-gather|all-to-all)(?:-start)?\(", text)


def test_the_default_scope_gathers_neither_inputs_nor_labels():
  assert parallel.resolve_mixing_scope("auto", parallel.data_mesh()) == "device"
  batch_shapes = ("f32[16,8,8,1]", "f32[16,4]", "s32[16]", "f32[16]")
  device = gathered_shapes(compiled_step_text("auto"))
  assert not [shape for shape in device if shape.startswith(batch_shapes)], device
  # The global scope gathers the whole batch and its labels onto every device.
  global_ = gathered_shapes(compiled_step_text("global"))
  assert any(shape.startswith("f32[16,8,8,1]") for shape in global_), global_
  assert any(shape.startswith("f32[16,4]") for shape in global_), global_


def free_port():
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


STEPS = ["--config.num_train_steps=20", "--config.checkpoint_every_steps=10",
         "--config.log_every_steps=10", "--config.progress_bar=False"]


def launch(workdir, devices, *arguments):
  environment = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.Popen([sys.executable, "train.py", f"--workdir={workdir}", *STEPS, *arguments],
                          cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def launch_two(workdir, *arguments, process_arguments=((), ())):
  port = free_port()
  return [launch(workdir, 1, "--config.distributed=True",
                 f"--config.coordinator_address=127.0.0.1:{port}", "--config.num_processes=2",
                 f"--config.process_id={index}", "--config.heartbeat_timeout_seconds=10",
                 *arguments, *process_arguments[index]) for index in range(2)]


def finish(process, timeout=300):
  try:
    out, err = process.communicate(timeout=timeout)
  finally:
    process.kill()
  return process.returncode, out, err


def params_at(workdir, step):
  """The parameters of a checkpoint, onto this process's first device whatever the topology it
  was saved from."""
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  metadata = getattr(metadata, "item_metadata", metadata)
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                           sharding=one_device), metadata)
  return checkpointer.restore(path, target)["params"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("two_processes"))
  results = [finish(process) for process in launch_two(workdir)]
  for status, _, err in results:
    assert status == 0, err[-3000:]
  return workdir, results


def test_two_processes_train_what_one_process_with_two_devices_trains(two_process_run,
                                                                      tmp_path):
  workdir, results = two_process_run
  assert "test: accuracy" in results[0][1]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
  one = str(tmp_path / "one_process")
  status, _, err = finish(launch(one, 2))
  assert status == 0, err[-3000:]
  for leaf, reference in zip(jax.tree.leaves(params_at(workdir, 20)),
                             jax.tree.leaves(params_at(one, 20))):
    np.testing.assert_allclose(leaf, reference, rtol=1e-4, atol=1e-6)


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_run, tmp_path):
  workdir = str(tmp_path / "resumed")
  subprocess.run(["cp", "-r", two_process_run[0], workdir], check=True)
  os.remove(os.path.join(workdir, "summary.json"))
  status, out, err = finish(launch(workdir, 2, "--config.num_train_steps=30"))
  assert status == 0, err[-3000:]
  assert "resuming at step 20" in err
  assert "30" in os.listdir(os.path.join(workdir, "checkpoints"))


def test_processes_with_different_configs_stop_with_a_clear_error(tmp_path):
  processes = launch_two(str(tmp_path), process_arguments=((), ("--config.eta=0.5",)))
  for status, _, err in (finish(process) for process in processes):
    assert status == 2, err[-3000:]
    assert "error: Processes [1] run a config that differs from process 0's" in err


def test_when_one_process_dies_the_other_ends_too(tmp_path):
  processes = launch_two(str(tmp_path), "--config.num_train_steps=100000")
  checkpoint = tmp_path / "checkpoints" / "10"
  deadline = time.time() + 240
  while not checkpoint.exists() and time.time() < deadline:
    time.sleep(0.1)
  assert checkpoint.exists(), "the first checkpoint never appeared"
  processes[1].send_signal(signal.SIGKILL)
  start = time.time()
  status, _, _ = finish(processes[0], timeout=180)
  assert status != 0 and time.time() - start < 180
