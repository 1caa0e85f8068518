"""The training system's packages: an extra of the install, checked where its modules start.

`pip install mixupe_jax` brings what the library's core imports (jax, flax, optax, chex, numpy,
scipy): mixing, losses, regularizers, directional, analysis, parallel, models. The training system
(`mixupe_jax.train`, `mixupe_jax.data`, `mixupe_jax.experiments`, `train.py`) needs the extra
`pip install "mixupe_jax[train]"`; `requirements.txt` installs everything.
"""

from __future__ import annotations

import importlib.util

TRAIN_EXTRA = "train"
# The importable names of the extra's packages that the core's own dependencies do not bring.
TRAIN_MODULES = {
  "grain": "grain",
  "matplotlib": "matplotlib",
  "ml_collections": "ml-collections",
  "PIL": "pillow",
  "sklearn": "scikit-learn",
  "statsmodels": "statsmodels",
  "tensorboardX": "tensorboardX",
  "tensorflow_datasets": "tensorflow-datasets",
  "tqdm": "tqdm",
}


def missing_train_packages() -> list[str]:
  """The extra's packages (distribution names) that cannot be imported here.

  >>> from mixupe_jax import extras
  >>> extras.missing_train_packages()  # the full install
  []
  """
  return [
    package for module, package in TRAIN_MODULES.items() if importlib.util.find_spec(module) is None
  ]


def require_train_extra() -> None:
  """Raises ImportError naming the missing packages and the extra that brings them."""
  missing = missing_train_packages()
  if missing:
    raise ImportError(
      "mixupe_jax's training system (mixupe_jax.train, mixupe_jax.data, mixupe_jax.experiments, "
      "train.py) needs packages that are not installed here "
      f"(missing: {', '.join(missing)}); install them with: "
      f'pip install "mixupe_jax[{TRAIN_EXTRA}]" (or pip install -r requirements.txt).'
    )
