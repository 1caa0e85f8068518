"""The benchmarks' behaviour a user depends on without running them: the PyTorch comparison names
its optional dependency and how to install it when PyTorch is absent."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vs_pytorch_without_pytorch_says_how_to_install_it():
  # sys.modules["torch"] = None makes `import torch` fail as on a machine without it.
  script = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['vs_pytorch.py']; "
            "runpy.run_path('benchmarks/vs_pytorch.py', run_name='__main__')")
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1
  assert "needs PyTorch, an optional benchmark dependency: pip install torch" in result.stderr
  assert "Traceback" not in result.stderr
