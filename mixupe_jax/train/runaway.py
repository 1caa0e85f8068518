"""A warning when MixupE's term runs away, long before the loss is NaN.

A Mixup loss far above log C (the cross-entropy of a uniform prediction over C classes) means
confident wrong predictions; a regularizer as large as the Mixup loss means the term, not the
data, drives the step. Either is how the collapsing settings of the converged suite's search
began (docs/training.md, "When MixupE's term runs away").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

GROWTH = 3.0  # The Mixup loss above GROWTH log C counts as run away.


def runaway_reason(metrics: dict[str, float], num_classes: int) -> str | None:
  """Why the logged metrics look run away, or None: L_mix > GROWTH log C, or
  abs(eta m_1 P) >= L_mix. Metrics without a MixupE regularizer never do.

  Args:
    metrics: one flush's mean train metrics ("mixup_loss", "regularizer").
    num_classes: C.

  Returns:
    A phrase naming the values, or None.

  >>> from mixupe_jax.train import runaway
  >>> runaway.runaway_reason({"mixup_loss": 2.0, "regularizer": 0.01}, 10) is None
  True
  >>> runaway.runaway_reason({"mixup_loss": 25.7, "regularizer": -16.5}, 10)
  'the Mixup loss 25.7 is 11.2 times log C = 2.3'
  """
  if "regularizer" not in metrics or "mixup_loss" not in metrics:
    return None
  mix, regularizer = metrics["mixup_loss"], metrics["regularizer"]
  uniform = math.log(num_classes)
  if mix > GROWTH * uniform:
    return f"the Mixup loss {mix:.3g} is {mix / uniform:.3g} times log C = {uniform:.3g}"
  if abs(regularizer) >= abs(mix):
    return f"the regularizer {regularizer:.3g} is as large as the Mixup loss {mix:.3g}"
  return None


@dataclasses.dataclass
class RunawayWatch:
  """Warns once per run, at the first flush whose metrics look run away (`runaway_reason`),
  naming eta, the variant, the sign and flip_sign."""

  config: Any
  num_classes: int
  warned: bool = False

  def update(self, step: int, metrics: dict[str, float]) -> str | None:
    """Checks one flush's metrics; returns (and logs) the warning the first time it fires."""
    if self.warned:
      return None
    reason = runaway_reason(metrics, self.num_classes)
    if reason is None:
      return None
    self.warned = True
    config = self.config
    sign = "flipped" if config.flip_sign else "published"
    message = (
      f"step {step}: {reason}: MixupE's term may be running away (eta = {config.eta:g}, "
      f"variant {config.variant}, the {sign} sign, flip_sign = {config.flip_sign}); a smaller "
      f"eta or --config.flip_sign={not config.flip_sign} may train (docs/training.md)."
    )
    logging.warning(message)
    return message
