"""The quickstart composes the losses into a plain optax loop and learns digits with each method."""

import importlib.util
import pathlib

import pytest

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart():
  spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("method", ["erm", "mixup", "mixupe"])
def test_quickstart_learns_digits(method, quickstart):
  accuracy = quickstart.train(method, seed=0, epochs=8)
  print(f"{method}: digits test accuracy after 8 epochs {accuracy:.4f}")
  assert accuracy > 0.9


def test_quickstart_is_deterministic(quickstart):
  assert quickstart.train("mixupe", seed=1, epochs=1) == quickstart.train("mixupe", seed=1,
                                                                          epochs=1)
