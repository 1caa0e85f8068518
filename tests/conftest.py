"""Test set-up: 8 simulated CPU devices, so multi-device code is always exercised.

XLA reads the flag when jax initializes its backends, so it is set before anything imports jax.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most of the suite's time is XLA compiling small programs once: compile them without the
# optimizations that pay on long runs (as flax's example tests do). Inherited by the train.py
# subprocesses; set JAX_DISABLE_MOST_OPTIMIZATIONS=false to test the optimized programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# Many tests, and the train.py runs of one test (a reference, a killed run, its resumption),
# compile the same programs: JAX's compilation cache keeps each one (keyed by the program, the
# compile options, XLA_FLAGS and the devices) in a throw-away folder per test process, inherited
# by its subprocesses. A cached program is the executable XLA compiled, so no numerics change.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mixupe_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
from mixupe_jax import xla_cpu  # noqa: E402  (imports jax, creates no backend)

xla_cpu.configure()  # What train.py runs; tests/test_xla_cpu.py compares both.
# Cached x_bar files go to a throw-away folder (inherited by train.py subprocesses), never next to
# the offline data the tests read.
os.environ["MIXUPE_JAX_CACHE"] = tempfile.mkdtemp(prefix="mixupe_jax_test_cache_")
atexit.register(shutil.rmtree, os.environ["MIXUPE_JAX_CACHE"], ignore_errors=True)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402  (after the flag on purpose)
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from mixupe_jax.models import MLP, SmallCNN, flax_apply_fn, init_model  # noqa: E402
from mixupe_jax.models.apply import maybe_transform  # noqa: E402


class BatchNormMLP(nn.Module):
  """Dense - BatchNorm - tanh, twice, then a dense readout: smooth, and batch-coupled in train
  mode. Hidden layer k is the output of block k (0: the input)."""

  num_classes: int
  width: int = 12
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=True, hidden_layer=None, hidden_transform=None):
    h = maybe_transform(x.reshape(x.shape[0], -1).astype(self.dtype), 0, hidden_layer,
                        hidden_transform)
    for layer in (1, 2):
      h = nn.Dense(self.width, dtype=self.dtype)(h)
      h = jnp.tanh(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(h))
      h = maybe_transform(h, layer, hidden_layer, hidden_transform)
    return nn.Dense(self.num_classes, dtype=self.dtype)(h)


@pytest.fixture
def key():
  return jax.random.key(0)


def make_model(kind: str, key, inputs, num_classes=3, dtype=jnp.float32):
  """(module, params, model_state) for a small MLP or CNN used across the tests; with a float64
  dtype (under x64) the parameters and state are float64 too."""
  if kind == "mlp":
    module = MLP(num_classes, hidden_sizes=(16, 16), activation="tanh", dtype=dtype)
  elif kind == "relu_mlp_no_bias":
    module = MLP(num_classes, hidden_sizes=(16, 16), activation="relu", use_bias=False,
                 dtype=dtype)
  elif kind == "mlp_bn":
    module = BatchNormMLP(num_classes, dtype=dtype)
  elif kind == "cnn":
    module = SmallCNN(num_classes, channels=(4, 8), dtype=dtype)
  else:
    raise ValueError(kind)
  params, state = init_model(module, key, inputs)
  if dtype == jnp.float64:
    params, state = jax.tree.map(lambda a: a.astype(jnp.float64), (params, state))
  return module, params, state


@pytest.fixture
def make():
  return make_model


@pytest.fixture
def apply_of():
  return flax_apply_fn


def pytest_collection_modifyitems(config, items):
  """The tests marked slow run first, each group in its collected order: in two workers the long
  tests then start early and the short ones fill the end, rather than one worker finishing a
  minute-long test alone while the other idles."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)
