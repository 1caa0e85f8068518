"""Quickstart: `mixupe_loss_fn` in a plain optax loop, on scikit-learn's digits (no download).

Trains the same MLP with ERM, Mixup and MixupE (the exact jvp version, v1) and prints the test
accuracy of each:

    python examples/quickstart.py            # ~1 minute on 2 CPU cores
    python examples/quickstart.py --seeds 0 1 2 --epochs 100
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mixupe_jax
from mixupe_jax import data
from mixupe_jax.models import MLP, flax_apply_fn, init_model

NUM_CLASSES = 10


def train(method: str, seed: int = 0, epochs: int = 60, batch_size: int = 64,
          alpha: float = 1.0, eta: float = 1.0, learning_rate: float = 0.05) -> float:
  """Trains an MLP with `method` in {"erm", "mixup", "mixupe"}; returns the test accuracy."""
  digits = data.load("sklearn:digits")  # Standardized on the training split; 1,347 / 450.
  (x_train, y_train), (x_test, y_test) = digits.splits["train"], digits.splits["test"]
  x_bar = jnp.asarray(x_train.mean(0))  # MixupE's x_bar: the training-set mean input.
  model = MLP(NUM_CLASSES, hidden_sizes=(128, 128))
  apply_fn = flax_apply_fn(model)
  key = jax.random.key(seed)
  init_key, key = jax.random.split(key)
  params, model_state = init_model(model, init_key, jnp.asarray(x_train[:1]))
  steps_per_epoch = len(x_train) // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  optimizer = optax.chain(optax.add_decayed_weights(1e-4),
                          optax.sgd(schedule, momentum=0.9, nesterov=True))
  opt_state = optimizer.init(params)

  def loss_fn(params, model_state, inputs, labels, mix_key):
    if method == "erm":
      return mixupe_jax.erm_loss_fn(params, model_state, inputs, labels, apply_fn=apply_fn,
                                    num_classes=NUM_CLASSES)
    mixed = mixupe_jax.mixup(mix_key, inputs, labels, alpha=alpha, num_classes=NUM_CLASSES)
    if method == "mixup":
      return mixupe_jax.mixup_loss_fn(params, model_state, mixed, apply_fn=apply_fn)
    return mixupe_jax.mixupe_loss_fn(params, model_state, mixed, inputs, labels, x_bar,
                                     apply_fn=apply_fn, alpha=alpha, eta=eta, variant="v1",
                                     num_classes=NUM_CLASSES)

  @jax.jit
  def step(params, model_state, opt_state, inputs, labels, mix_key):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, model_state, inputs, labels, mix_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), aux.model_state, opt_state, loss

  for epoch in range(epochs):
    key, shuffle_key = jax.random.split(key)
    order = np.asarray(jax.random.permutation(shuffle_key, len(x_train)))
    for index in range(steps_per_epoch):
      batch = order[index * batch_size:(index + 1) * batch_size]
      key, mix_key = jax.random.split(key)
      params, model_state, opt_state, loss = step(params, model_state, opt_state,
                                                  x_train[batch], y_train[batch], mix_key)
    if not np.isfinite(float(loss)):
      raise FloatingPointError(f"{method}: the loss became {float(loss)} at epoch {epoch}.")
  logits, _ = flax_apply_fn(model, train=False)(params, model_state, jnp.asarray(x_test))
  return float(np.mean(np.argmax(logits, -1) == y_test))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--epochs", type=int, default=60)
  parser.add_argument("--eta", type=float, default=1.0)
  args = parser.parse_args()
  print(f"digits (scikit-learn): MLP 64-128-128-10, {args.epochs} epochs, seeds {args.seeds}")
  for method in ("erm", "mixup", "mixupe"):
    accuracies = [train(method, seed, args.epochs, eta=args.eta) for seed in args.seeds]
    print(f"{method:>7}: test accuracy {np.mean(accuracies):.4f}"
          + (f" +- {np.std(accuracies):.4f}" if len(accuracies) > 1 else ""), flush=True)


if __name__ == "__main__":
  main()
