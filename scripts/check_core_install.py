"""The light install's check: in an environment with only `pip install mixupe_jax` (the core),
the README's optax loop trains, the training system's packages fail at import naming the extra,
and the environment's size is printed. CI runs it in a fresh virtual environment, outside the
repository so that the installed package is the one imported:

    python3 -m venv /tmp/core && /tmp/core/bin/pip install . && \\
      (cd /tmp && /tmp/core/bin/python "$OLDPWD/scripts/check_core_install.py" "$OLDPWD/README.md")
"""

from __future__ import annotations

import importlib
import os
import re
import sys

import jax
import numpy as np

import mixupe_jax


def environment_megabytes() -> float:
  """The size of this Python environment (sys.prefix), in MB."""
  total = 0
  for folder, _, files in os.walk(sys.prefix):
    for name in files:
      path = os.path.join(folder, name)
      if not os.path.islink(path):
        total += os.path.getsize(path)
  return total / 1e6


def main(readme: str) -> int:
  with open(readme) as file:
    snippet = re.findall(r"```python\n(.*?)```", file.read(), flags=re.S)[0]
  rng = np.random.default_rng(0)
  namespace = {
    "x_train": rng.normal(size=(256, 64)).astype(np.float32),
    "y_train": rng.integers(0, 10, 256).astype(np.int32),
  }
  exec(snippet, namespace)
  state = namespace["params"], namespace["model_state"], namespace["opt_state"]
  losses = []
  for step in range(20):
    index = np.arange(step * 32, step * 32 + 32) % 256
    *state, metrics = namespace["step"](
      *state, namespace["x_train"][index], namespace["y_train"][index], jax.random.key(step)
    )
    losses.append(float(metrics["mixup_loss"]))
  if not np.all(np.isfinite(losses)):
    print(f"error: the README's loop gave non-finite losses {losses}")
    return 1
  try:
    importlib.import_module("mixupe_jax.train")
  except ImportError as error:
    if "mixupe_jax[train]" not in str(error):
      print(f"error: importing mixupe_jax.train without the extra says: {error}")
      return 1
    print(f"mixupe_jax.train without the extra: {error}")
  else:
    print("error: mixupe_jax.train imported in a core-only environment")
    return 1
  print(f"mixupe_jax {mixupe_jax.__version__} from {os.path.dirname(mixupe_jax.__file__)}")
  print(f"the README's loop: 20 steps, Mixup loss {losses[0]:.3f} -> {losses[-1]:.3f}")
  print(f"core-only environment: {environment_megabytes():.0f} MB at {sys.prefix}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
