"""The input side of the step: uint8 images shipped to the device and normalized inside the
jitted steps (`config.normalize_on_device`, the default; its formula against the host's:
tests/test_pipeline.py): the host streams then hold uint8; the compiled step takes uint8; a short run
trains the model the host-normalized run trains. And batches read in worker processes
(`config.input_workers`) train the same run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixupe_jax.data import pipeline
from mixupe_jax.models.registry import model_config
from mixupe_jax.train import inputs as inputs_lib
from mixupe_jax.train import loop
from mixupe_jax.train import step as step_lib
from mixupe_jax.train.defaults import default_config

def image_config(tmp_path, on_device: bool):
  """A 16x16 uint8 image set (two classes told apart by brightness) with crop-flip augmentation."""
  path = tmp_path / "images.npz"
  if not path.exists():
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 2
    images = np.clip(
      rng.normal(90 + 80 * labels[:, None, None, None], 40, (96, 16, 16, 3)), 0, 255
    ).astype(np.uint8)
    np.savez(path, x_train=images[:64], y_train=labels[:64], x_test=images[64:], y_test=labels[64:])
  config = default_config()
  config.dataset = f"npz:{path}"
  config.model = model_config("small_cnn", channels=(4, 8))
  config.method, config.augment, config.crop_padding = "mixupe", "crop_flip", 2
  config.batch_size, config.eval_batch_size = 16, 32
  config.num_train_steps, config.checkpoint_every_steps, config.log_every_steps = 8, 8, 4
  config.progress_bar = False
  config.mixing_group_size = 2  # Whole groups on each of the 8 test devices.
  config.normalize_on_device = on_device
  return config


def build(config):
  return inputs_lib.build_inputs(
    config, local_batch_size=16, local_eval_batch_size=32, process_index=0, process_count=1
  )


def test_streams_hold_uint8_and_the_steps_normalize_them(tmp_path):
  """With the option, training and eval batches are the host stream's uint8 pixels, and
  `device_preprocess` maps them to the host-normalized batches of the option turned off (same
  order, same augmentation); x_bar's pass is normalized on the host either way. Fails if the host
  still normalizes (float batches), if nothing normalizes on the device, or if x_bar's pass is
  left unnormalized."""
  on, off = build(image_config(tmp_path, True)), build(image_config(tmp_path, False))
  assert off.device_preprocess is None
  for stream_on, stream_off in [
    (on.train_batches(3), off.train_batches(3)),
    (on.eval_batches["test"](), off.eval_batches["test"]()),
    (on.train_eval_batches(), off.train_eval_batches()),
  ]:
    shipped, reference = next(stream_on), next(stream_off)
    assert shipped[0].dtype == np.uint8 and reference[0].dtype == np.float32
    np.testing.assert_array_equal(shipped[1], reference[1])
    normalized = jax.jit(on.device_preprocess)(shipped[0])
    np.testing.assert_allclose(normalized, reference[0], rtol=0, atol=1e-6)
  np.testing.assert_array_equal(
    np.concatenate(list(on.x_bar_batches())), np.concatenate(list(off.x_bar_batches()))
  )


@pytest.mark.slow
def test_the_compiled_train_step_receives_uint8(tmp_path):
  """The step `train_and_evaluate` compiles takes the batch as u8 (a quarter of float32's bytes
  to the device) and its loss sees float32."""
  config = image_config(tmp_path, True)
  config.method = "mixup"  # The input side is the method's business only after the entry.
  experiment = loop.set_up(config)
  train_step = experiment.train_step()
  batch = step_lib.global_batch(next(experiment.data.train_batches(0)), experiment.mesh)
  lowered = train_step.lower(experiment.state, *batch)
  # args_info is (args, kwargs); the args are (state, images, labels).
  assert lowered.args_info[0][1].dtype == jnp.uint8
  _, metrics = lowered.compile()(experiment.state, *batch)
  assert np.isfinite(float(metrics["loss"]))


@pytest.fixture(scope="module")
def device_normalized_run(tmp_path_factory):
  """(the data folder, the summary of the default run: normalized on the device, threads)."""
  folder = tmp_path_factory.mktemp("device_normalized")
  return folder, loop.train_and_evaluate(image_config(folder, True), str(folder / "on"))


@pytest.mark.slow
def test_a_run_normalized_on_the_device_trains_the_host_normalized_model(device_normalized_run):
  """Eight MixupE steps of a small CNN: the device-normalized run's summary equals the
  host-normalized one's to float tolerance (they differ in the inputs' last bits only). Fails if
  the steps skip the normalization (pixels of 0-255 train another model) or apply it twice."""
  tmp_path, on = device_normalized_run
  off = loop.train_and_evaluate(image_config(tmp_path, False), str(tmp_path / "off"))
  for metric in ("accuracy", "nll"):
    np.testing.assert_allclose(on["test"][metric], off["test"][metric], rtol=1e-4, atol=1e-5)
  assert abs(on["test"]["nll"] - np.log(2)) > 1e-3  # It trained: not the chance-level NLL.


@pytest.mark.slow
def test_a_run_reading_in_worker_processes_equals_the_threaded_run(device_normalized_run):
  """`config.input_workers = 2` trains on the threads' batches: the same summary to the bit
  (fails if the loop ignores the field's stream order); no worker process outlives the run."""
  import multiprocessing

  tmp_path, threaded = device_normalized_run
  config = image_config(tmp_path, True)
  config.input_workers = 2
  workers = loop.train_and_evaluate(config, str(tmp_path / "workers"))
  for metric in ("accuracy", "nll", "ece"):
    assert workers["test"][metric] == threaded["test"][metric]
  assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_resize_antialias_reaches_the_crops_and_names_its_x_bar(tmp_path):
  """`config.resize_antialias = False` gives the Inception crops of the non-antialiased resize
  (other training images, the same labels and order) and another x_bar cache name; the default
  keeps the earlier name."""
  antialiased = image_config(tmp_path, False)
  antialiased.augment = "inception"
  aliased = image_config(tmp_path, False)
  aliased.augment, aliased.resize_antialias = "inception", False
  with_antialias, without = build(antialiased), build(aliased)
  first, second = next(with_antialias.train_batches(0)), next(without.train_batches(0))
  np.testing.assert_array_equal(first[1], second[1])
  assert not np.array_equal(first[0], second[0])
  assert with_antialias.x_bar_fingerprint + "|resize_antialias=False" == without.x_bar_fingerprint
