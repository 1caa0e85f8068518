"""The package's core dependencies are what the library and the default need: without TensorFlow
(an optional extra) the library imports and trains the default config, and the TensorFlow paths
say which extra to install. Runs in a subprocess whose imports of tensorflow fail."""

import os
import subprocess
import sys

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
  assert "tensorflow-cpu" not in core and "scikit-learn" in core
  assert any("tensorflow-cpu" in d for d in project["optional-dependencies"]["tensorflow"])
