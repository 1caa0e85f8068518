"""Every notebook runs top to bottom (with MIXUPE_JAX_NOTEBOOK_SMALL=1: the same cells, smaller
sizes) and is stored without outputs, so what is committed is what this run regenerates."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

# Notebooks executed top to bottom. Deselected by -m 'not slow' (docs/development.md).
pytestmark = pytest.mark.slow


NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
  assert {path.name for path in NOTEBOOKS} >= {"quickstart.ipynb", "theory.ipynb",
                                               "results.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
  notebook = nbformat.read(path, as_version=4)
  for cell in notebook.cells:
    assert not cell.get("outputs") and cell.get("execution_count") is None, (
        f"{path.name} is stored with outputs; clear them before committing.")
  # The kernel inherits this environment (and conftest's 8 simulated CPU devices).
  monkeypatch.setenv("MIXUPE_JAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(path.parent)}})
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on any error.
  errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
            if output.get("output_type") == "error"]
  assert not errors
