"""Test set-up: 8 simulated CPU devices, so multi-device code is always exercised.

XLA reads the flag when jax initializes its backends, so it is set before anything imports jax.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Cached x_bar files go to a throw-away folder (inherited by train.py subprocesses), never next to
# the offline data the tests read.
os.environ["MIXUPE_JAX_CACHE"] = tempfile.mkdtemp(prefix="mixupe_jax_test_cache_")

import jax  # noqa: E402  (after the flag on purpose)
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from mixupe_jax.models import MLP, SmallCNN, flax_apply_fn, init_model  # noqa: E402


@pytest.fixture
def key():
  return jax.random.key(0)


def make_model(kind: str, key, inputs, num_classes=3, dtype=jnp.float32):
  """(module, params, model_state) for a small MLP or CNN used across the tests."""
  if kind == "mlp":
    module = MLP(num_classes, hidden_sizes=(16, 16), activation="tanh", dtype=dtype)
  elif kind == "relu_mlp_no_bias":
    module = MLP(num_classes, hidden_sizes=(16, 16), activation="relu", use_bias=False,
                 dtype=dtype)
  elif kind == "cnn":
    module = SmallCNN(num_classes, channels=(4, 8), dtype=dtype)
  else:
    raise ValueError(kind)
  params, state = init_model(module, key, inputs)
  return module, params, state


@pytest.fixture
def make():
  return make_model


@pytest.fixture
def apply_of():
  return flax_apply_fn
