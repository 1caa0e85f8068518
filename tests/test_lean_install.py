"""The package's core dependencies are what the library and the default need: without TensorFlow
(an optional extra) the library imports and trains the default config, and the TensorFlow paths
say which extra to install. Runs in a subprocess whose imports of tensorflow fail."""

import os
import re
import subprocess
import sys

import pytest

# Subprocesses with packages hidden. Deselected by -m 'not slow' (docs/development.md).
pytestmark = pytest.mark.slow


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import importlib.abc, sys, tempfile

class WithoutTensorFlow(importlib.abc.MetaPathFinder):
  """Every import finder, blind to tensorflow: as if it were not installed (find_spec -> None)."""

  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
      return None
    return self.finder.find_spec(name, path, target)

  def invalidate_caches(self):
    getattr(self.finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [WithoutTensorFlow(finder) for finder in sys.meta_path]
import mixupe_jax, mixupe_jax.data, mixupe_jax.train, mixupe_jax.experiments
from mixupe_jax.experiments.runner import load_config_file
from mixupe_jax.train import train_and_evaluate
from mixupe_jax.data import audio

config = load_config_file("configs", "digits_mlp.py")
config.num_train_steps, config.progress_bar = 30, False
summary = train_and_evaluate(config, tempfile.mkdtemp())
print("accuracy", summary["test"]["accuracy"])
try:
  audio.load_tfds_audio("spoken_digit")
except ImportError as error:
  print("audio:", error)
print("tensorflow imported:", any(m == "tensorflow" or m.startswith("tensorflow.")
                                  for m in sys.modules))
'''


def test_the_default_trains_without_tensorflow_and_audio_names_the_extra():
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  accuracy = float(result.stdout.split("accuracy ")[1].split()[0])
  assert accuracy > 0.5
  assert "audio: tfds:spoken_digit (TFDS's audio builders import TensorFlow) needs TensorFlow" \
      in result.stdout
  assert "pip install 'mixupe_jax[tensorflow]'" in result.stdout
  assert "tensorflow imported: False" in result.stdout


def test_the_package_metadata_keeps_tensorflow_optional():
  import tomllib
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
    project = tomllib.load(file)["project"]
  core = " ".join(project["dependencies"])
  assert "tensorflow-cpu" not in core
  assert "scikit-learn" in " ".join(project["optional-dependencies"]["train"])
  assert any("tensorflow-cpu" in d for d in project["optional-dependencies"]["tensorflow"])


CORE_SCRIPT = r"""
import importlib.abc, re, sys
import numpy as np

HIDDEN = set(sys.argv[1].split(","))

class WithoutTheTrainingSystem(importlib.abc.MetaPathFinder):
  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in HIDDEN:
      return None
    return self.finder.find_spec(name, path, target)

  def invalidate_caches(self):
    getattr(self.finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [WithoutTheTrainingSystem(finder) for finder in sys.meta_path]
import jax
import mixupe_jax
snippet = re.findall(r"```python\n(.*?)```", open("README.md").read(), flags=re.S)[0]
rng = np.random.default_rng(0)
namespace = {"x_train": rng.normal(size=(256, 64)).astype(np.float32),
             "y_train": rng.integers(0, 10, 256).astype(np.int32)}
exec(snippet, namespace)
params, model_state, opt_state = namespace["params"], namespace["model_state"], namespace["opt_state"]
losses = []
for step in range(20):
  index = np.arange(step * 32, step * 32 + 32) % 256
  params, model_state, opt_state, metrics = namespace["step"](
      params, model_state, opt_state, namespace["x_train"][index], namespace["y_train"][index],
      jax.random.key(step))
  losses.append(float(metrics["mixup_loss"]))
print("finite", all(np.isfinite(losses)))
for module in ("mixupe_jax.train", "mixupe_jax.data", "mixupe_jax.experiments"):
  try:
    __import__(module)
    print(module, "imported")
  except ImportError as error:
    print(module, "error:", error)
print("loaded:", sorted(m for m in HIDDEN if m in sys.modules))
"""


def test_the_core_runs_the_readme_loop_without_the_training_system_and_names_the_extra():
  """With every package of the `train` extra hidden (as in a core-only install), `import
  mixupe_jax` and the README's optax loop run; each training package fails at import with one
  ImportError naming the missing packages and `pip install "mixupe_jax[train]"`."""
  from mixupe_jax import extras
  hidden = ",".join(extras.TRAIN_MODULES)
  result = subprocess.run([sys.executable, "-c", CORE_SCRIPT, hidden], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "finite True" in result.stdout
  for module in ("mixupe_jax.train", "mixupe_jax.data", "mixupe_jax.experiments"):
    line = next(l for l in result.stdout.splitlines() if l.startswith(module + " "))
    assert "error: mixupe_jax's training system" in line, line
    assert 'pip install "mixupe_jax[train]"' in line and "missing: grain, matplotlib" in line
  assert "loaded: []" in result.stdout


def test_the_core_dependencies_are_what_the_core_imports_and_the_extra_has_the_rest():
  import tomllib

  from mixupe_jax import extras
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
    project = tomllib.load(file)["project"]
  names = lambda requirements: {re.split(r"[<>=\[ ]", r)[0].lower() for r in requirements}
  assert names(project["dependencies"]) == {"jax", "flax", "optax", "chex", "numpy", "scipy"}
  train = names(project["optional-dependencies"]["train"])
  assert {package.lower() for package in extras.TRAIN_MODULES.values()} <= train
  with open(os.path.join(ROOT, "requirements.txt")) as file:
    requirements = names(l for l in file.read().splitlines() if l and not l.startswith(("#", "-")))
  assert train <= requirements
