"""Evaluation metrics against a direct NumPy computation, padding included."""

import numpy as np
import pytest
import scipy.special

from mixupe_jax import evaluation


def reference(logits, labels, num_bins=15):
  probabilities = scipy.special.softmax(logits.astype(np.float64), axis=1)
  predictions = probabilities.argmax(1)
  confidence = probabilities.max(1)
  correct = predictions == labels
  ece = 0.0
  for b in range(num_bins):
    low, high = b / num_bins, (b + 1) / num_bins
    members = (confidence > low) & (confidence <= high) if b else (confidence <= high)
    if members.any():
      ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
  top5 = np.mean([label in np.argsort(-row)[:5] for row, label in zip(logits, labels)])
  nll = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
  return {"accuracy": correct.mean(), "accuracy_top5": top5, "nll": nll, "ece": ece}


def test_metrics_match_reference_and_ignore_padding():
  rng = np.random.default_rng(0)
  logits = (rng.normal(size=(200, 10)) * 3).astype(np.float32)
  labels = rng.integers(0, 10, 200).astype(np.int32)
  # Two batches, the second padded with 24 garbage rows of mask 0.
  pad_logits = np.concatenate([logits[120:], rng.normal(size=(24, 10)).astype(np.float32) * 50])
  pad_labels = np.concatenate([labels[120:], np.zeros(24, np.int32)])
  mask = np.concatenate([np.ones(80), np.zeros(24)]).astype(np.float32)
  first = evaluation.batch_sums(logits[:120], labels[:120], np.ones(120, np.float32))
  second = evaluation.batch_sums(pad_logits, pad_labels, mask)
  totals = {name: np.asarray(first[name]) + np.asarray(second[name]) for name in first}
  result = evaluation.summarize(totals)
  expected = reference(logits, labels)
  for name, value in expected.items():
    assert result[name] == pytest.approx(value, abs=1e-5), name


def test_top_k_is_capped_by_the_number_of_classes():
  sums = evaluation.batch_sums(np.eye(3, dtype=np.float32), np.array([0, 1, 0], np.int32),
                               np.ones(3, np.float32))
  result = evaluation.summarize({k: np.asarray(v) for k, v in sums.items()})
  assert result["accuracy"] == pytest.approx(2 / 3)
  assert result["accuracy_top3"] == 1.0


def test_no_examples_is_an_error():
  sums = evaluation.batch_sums(np.zeros((2, 3), np.float32), np.zeros(2, np.int32),
                               np.zeros(2, np.float32))
  with pytest.raises(ValueError, match="No examples"):
    evaluation.summarize({k: np.asarray(v) for k, v in sums.items()})
