r"""Evaluation metrics from logits: top-1 / top-k accuracy, NLL and expected calibration error.

Each batch gives SUMS (over the examples with mask 1), so batches, devices and hosts combine by
addition and padded examples (mask 0) count for nothing; `summarize` turns the totals into means:

.. math::

   \text{top-}k\text{ accuracy} &= \frac{1}{N} \sum_n
     \big[y_n \text{ among the } k \text{ largest logits of } n\big] \\
   \mathrm{NLL} &= \frac{1}{N} \sum_n -\log p_n(y_n) \\
   \mathrm{ECE} &= \sum_b \frac{N_b}{N} \big|\mathrm{acc}_b - \mathrm{conf}_b\big|
     = \frac{1}{N} \sum_b \Big|\sum_{n \in b} (c_n - q_n)\Big|,

with :math:`q_n = \max_k p_n(k)` the confidence, :math:`c_n = [\arg\max p_n = y_n]`, and bins
b of equal width in q.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

NUM_CALIBRATION_BINS = 15


def batch_sums(
  logits: jax.Array,
  labels: jax.Array,
  mask: jax.Array,
  *,
  top_k: int = 5,
  num_bins: int = NUM_CALIBRATION_BINS,
) -> dict[str, jax.Array]:
  """Per-batch sums of the metric numerators (see the module docstring)."""
  chex.assert_rank(logits, 2)
  chex.assert_shape([labels, mask], (logits.shape[0],))
  logits = logits.astype(jnp.float32)
  weight = mask.astype(jnp.float32)
  log_probabilities = jax.nn.log_softmax(logits)
  label_log_probability = jnp.take_along_axis(log_probabilities, labels[:, None], axis=1)[:, 0]
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=1)
  # Rank of the label: how many classes score strictly higher (ties count in the label's favour).
  rank = jnp.sum(logits > label_logit, axis=1)
  confidence = jnp.exp(jnp.max(log_probabilities, axis=1))
  correct = (rank == 0).astype(jnp.float32)
  bins = jnp.minimum((confidence * num_bins).astype(jnp.int32), num_bins - 1)
  sums = {
    "count": jnp.sum(weight),
    "correct": jnp.sum(weight * correct),
    "nll": -jnp.sum(weight * label_log_probability),
    "calibration_gap": jax.ops.segment_sum(weight * (correct - confidence), bins, num_bins),
  }
  k = min(top_k, logits.shape[1])
  if k > 1:
    sums[f"correct_top{k}"] = jnp.sum(weight * (rank < k))
  return sums


def summarize(totals: dict[str, np.ndarray]) -> dict[str, float]:
  """Means from summed `batch_sums`: accuracy, top-k accuracy, NLL, ECE."""
  count = float(totals["count"])
  if count == 0:
    raise ValueError("No examples were evaluated.")
  result = {
    "accuracy": float(totals["correct"]) / count,
    "nll": float(totals["nll"]) / count,
    "ece": float(np.sum(np.abs(totals["calibration_gap"]))) / count,
  }
  for name, value in totals.items():
    if name.startswith("correct_top"):
      result["accuracy_" + name.removeprefix("correct_")] = float(value) / count
  return result
