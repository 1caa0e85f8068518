"""mixupe_jax: MixupE (Zou et al., UAI 2023) and the Mixup family in JAX/Flax.

from mixupe_jax import mixing, losses
mixed = mixing.mixup(key, x, y, alpha=1.0, num_classes=10)
loss, aux = losses.mixupe_loss_fn(params, state, mixed, x, y, x_bar, apply_fn=apply_fn,
                                  alpha=1.0, eta=0.1, variant="v1", num_classes=10)
"""

from mixupe_jax import analysis, directional, losses, mixing, models, parallel, regularizers
from mixupe_jax.losses import (
  LossAux,
  erm_loss_fn,
  make_loss_fn,
  manifold_mixup_loss_fn,
  manifold_mixupe_loss_fn,
  mixup_loss_fn,
  mixupe_loss_fn,
  regmixup_loss_fn,
)
from mixupe_jax.mixing import MixedBatch, cutmix, mixup, mixup_or_cutmix

__version__ = "0.1.0"

__all__ = [
  "analysis",
  "directional",
  "losses",
  "mixing",
  "models",
  "parallel",
  "regularizers",
  "LossAux",
  "MixedBatch",
  "cutmix",
  "erm_loss_fn",
  "make_loss_fn",
  "manifold_mixup_loss_fn",
  "manifold_mixupe_loss_fn",
  "mixup",
  "mixup_loss_fn",
  "mixup_or_cutmix",
  "mixupe_loss_fn",
  "regmixup_loss_fn",
]
