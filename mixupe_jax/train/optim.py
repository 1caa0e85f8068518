"""The paper's optimizer and learning-rate schedules, from optax.

SGD with Nesterov momentum and L2 weight decay (added to the gradient, as PyTorch's SGD does)::

    g <- g + wd * theta,   v <- mu v + g,   theta <- theta - lr_t (g + mu v)

Schedules, over global steps t with E steps per epoch::

    "step":     linear warm-up from 0 over `warmup_epochs`, then lr * decay_factor^(number of
                `decay_epochs` boundaries passed)  (Goyal et al. 2017 for ImageNet; the Mixup
                CIFAR recipe with warmup_epochs = 0)
    "cosine":   linear warm-up, then lr * (1 + cos(pi t' / T')) / 2, reaching 0 at the last step
    "constant": lr
"""

from __future__ import annotations

import jax
import optax

SCHEDULES = ("step", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam")


def learning_rate_schedule(config, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  if config.schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {config.schedule!r}; valid: {', '.join(SCHEDULES)}.")
  base = config.learning_rate
  total = total_steps
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if config.schedule == "constant":
    after = optax.constant_schedule(base)
  elif config.schedule == "cosine":
    after = optax.cosine_decay_schedule(base, max(total - warmup, 1))
  else:
    boundaries = {
      int(round(epoch * steps_per_epoch)) - warmup: config.decay_factor
      for epoch in config.decay_epochs
    }
    after = optax.piecewise_constant_schedule(base, boundaries)
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), after], [warmup])


def _kernels_only(params):
  """Weight decay on weight matrices and convolution kernels, not on biases or BatchNorm."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _first_layer_only(params):
  """Weight decay on the input layer's parameters only (Kipf & Welling's GCN regularizes its first
  layer alone): the top-level module `Conv_0` if there is one, else `Dense_0`. Flax names modules
  by type and creation order, and a params tree does not keep the creation order, so the first
  layer is found by name; every model here starts with one of the two."""
  first = next((name for name in ("Conv_0", "Dense_0") if name in params), None)
  if first is None:
    raise ValueError(
      "weight_decay_scope='first_layer' needs a top-level module named Conv_0 or "
      f"Dense_0 (the input layer); this model's modules are {sorted(params)}."
    )
  return {
    name: jax.tree.map(lambda _, is_first=name == first: is_first, subtree)
    for name, subtree in params.items()
  }


WEIGHT_DECAY_SCOPES = {"all": None, "kernels": _kernels_only, "first_layer": _first_layer_only}


def make_optimizer(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {config.optimizer!r}; valid: {', '.join(OPTIMIZERS)}.")
  scope = "kernels" if config.weight_decay_kernels_only else config.weight_decay_scope
  if scope not in WEIGHT_DECAY_SCOPES:
    raise ValueError(
      f"Unknown weight_decay_scope {scope!r}; valid: {', '.join(WEIGHT_DECAY_SCOPES)}."
    )
  decay = optax.add_decayed_weights(config.weight_decay, mask=WEIGHT_DECAY_SCOPES[scope])
  if config.optimizer == "sgd":
    update = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  else:
    update = optax.adam(schedule)
  return optax.chain(decay, update)
