"""The docstrings' examples run as written, and every public function of the core modules has
one, with an Args: section naming each of its parameters and a Returns: section."""

import doctest
import importlib
import inspect
import re
import types

import pytest

CORE_MODULES = (
  "mixupe_jax.mixing",
  "mixupe_jax.losses",
  "mixupe_jax.regularizers",
  "mixupe_jax.directional",
  "mixupe_jax.analysis",
  "mixupe_jax.models.apply",
)
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def documentation_gaps(module) -> list[str]:
  """What the public functions of `module` lack: an example, Args: naming every parameter,
  Returns: (unless annotated to return None)."""
  functions = [
    (name, value)
    for name, value in vars(module).items()
    if inspect.isfunction(value) and value.__module__ == module.__name__ and name[0] != "_"
  ]
  gaps = []
  for name, function in functions:
    doc = inspect.getdoc(function) or ""
    signature = inspect.signature(function)
    if ">>>" not in doc:
      gaps.append(f"{name}: no example")
    parameters = list(signature.parameters)
    if parameters and "Args:" not in doc:
      gaps.append(f"{name}: no Args:")
    elif parameters:
      args = re.split(r"\n(?:Returns|Raises):", doc.split("Args:", 1)[1])[0]
      gaps += [f"{name}: Args: omits {p}" for p in parameters if not re.search(rf"\b{p}\b", args)]
    if signature.return_annotation not in (None, "None") and "Returns:" not in doc:
      gaps.append(f"{name}: no Returns:")
  return gaps


@pytest.mark.parametrize("module_name", CORE_MODULES)
@pytest.mark.slow
def test_the_examples_in_the_docstrings_run(module_name):
  module = importlib.import_module(module_name)
  result = doctest.testmod(module, optionflags=OPTIONS, verbose=False)
  assert result.attempted > 0
  assert result.failed == 0, f"{result.failed} of {module_name}'s examples fail (output above)."


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_every_public_function_has_args_returns_and_an_example(module_name):
  module = importlib.import_module(module_name)
  assert any(inspect.isfunction(value) for value in vars(module).values())
  assert documentation_gaps(module) == []


EXAMPLE_SOURCE = '''
def scale(values, factor) -> float:
  """Multiplies.

  Args:
    values: the values.

  >>> scale(1, 2)
  2
  """
  return values * factor


def _private(x):
  return x
'''


def test_the_documentation_check_finds_what_is_missing():
  module = types.ModuleType("example_module")
  exec(EXAMPLE_SOURCE, module.__dict__)
  for function in (module.scale, module._private):
    function.__module__ = "example_module"
  assert documentation_gaps(module) == ["scale: Args: omits factor", "scale: no Returns:"]
