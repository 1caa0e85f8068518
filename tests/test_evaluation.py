"""Evaluation metrics against a direct NumPy computation, padding included."""

import jax.numpy as jnp
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
  with pytest.raises(ValueError, match=r"^No examples were evaluated\.$"):
    evaluation.summarize({k: np.asarray(v) for k, v in sums.items()})


def two_class_logits(confidences, correct):
  """Logits whose softmax gives class 0 the probability q (> 1/2, so class 0 is predicted), and
  labels 0 where `correct`, else 1."""
  q = np.asarray(confidences, np.float64)
  logits = np.stack([np.log(q), np.log1p(-q)], axis=1).astype(np.float32)
  return logits, np.where(correct, 0, 1).astype(np.int32)


def test_ece_by_hand_with_gaps_of_both_signs_split_over_two_batches():
  """15 bins of width 1/15. Per bin, gap = sum(correct - confidence):
    bin 14: q = 0.95 wrong, q = 1 wrong (the top edge is in the last bin)  -> -1.95
    bin 13: q = 0.9 correct                                                 -> +0.1
    bin 12: q = 0.8 wrong                                                   -> -0.8
    bin 9:  q = 0.62 correct, q = 0.62 wrong                                -> -0.24
    bin 8:  q = 0.55 correct                                                -> +0.45
  ECE = (1.95 + 0.1 + 0.8 + 0.24 + 0.45) / 7 = 3.54 / 7. Merging any two neighbouring bins of
  opposite signs, or adding the gaps before taking |.|, gives another value."""
  first, first_labels = two_class_logits([0.95, 0.9, 0.8, 0.62], [False, True, False, True])
  first = np.concatenate([first, [[0.0, -200.0]]]).astype(np.float32)  # q = 1 in float32.
  first_labels = np.append(first_labels, 1).astype(np.int32)
  second, second_labels = two_class_logits([0.62, 0.55], [False, True])  # Highest bin: 9.
  sums = [evaluation.batch_sums(logits, labels, np.ones(len(labels), np.float32))
          for logits, labels in [(first, first_labels), (second, second_labels)]]
  result = evaluation.summarize({name: np.asarray(sums[0][name]) + np.asarray(sums[1][name])
                                 for name in sums[0]})
  assert result["ece"] == pytest.approx(3.54 / 7, abs=1e-6)
  assert result["accuracy"] == pytest.approx(3 / 7)
  assert result["accuracy_top2"] == 1.0  # Two classes: the label is always in the top 2.
  assert set(result) == {"accuracy", "accuracy_top2", "nll", "ece"}
  gaps = np.asarray(sums[0]["calibration_gap"]) + np.asarray(sums[1]["calibration_gap"])
  expected_gaps = np.zeros(15)
  expected_gaps[[14, 13, 12, 9, 8]] = [-1.95, 0.1, -0.8, -0.24, 0.45]
  np.testing.assert_allclose(gaps, expected_gaps, atol=1e-6)


def test_top_1_only_reports_no_top_k_and_low_precision_logits_are_evaluated_in_float32():
  logits, labels = two_class_logits([0.9, 0.7, 0.6], [True, False, True])
  sums = evaluation.batch_sums(logits, labels, np.ones(3, np.float32), top_k=1)
  assert set(sums) == {"count", "correct", "nll", "calibration_gap"}
  # bfloat16 logits: the same metrics as their float32 values (the softmax is not in bfloat16).
  rng = np.random.default_rng(1)
  wide = (rng.normal(size=(64, 10)) * 4).astype(np.float32)
  narrow = np.asarray(wide.astype(jnp.bfloat16))
  labels = rng.integers(0, 10, 64).astype(np.int32)
  ones = np.ones(64, np.float32)
  from_bfloat16 = evaluation.batch_sums(narrow, labels, ones)
  from_float32 = evaluation.batch_sums(narrow.astype(np.float32), labels, ones)
  for name in from_float32:
    assert from_bfloat16[name].dtype == from_float32[name].dtype == np.float32, name
    np.testing.assert_allclose(from_bfloat16[name], from_float32[name], rtol=1e-6, err_msg=name)
