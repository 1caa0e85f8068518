"""The README's Python snippets run as written: the optax loop, evaluation, the NNX model."""

import os
import re

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snippets(section: str) -> list[str]:
  text = open(os.path.join(ROOT, "README.md")).read()
  body = text[text.index(f"## {section}"):]
  body = body[:body.index("\n## ", 3)]
  return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_the_optax_loop_evaluation_and_nnx_snippets_run():
  from mixupe_jax.data.registry import load_sklearn
  digits = load_sklearn("digits")
  namespace = {"x_train": digits.inputs("train"), "y_train": digits.labels("train"),
               "x_test": digits.inputs("test"), "y_test": digits.labels("test")}
  loop, evaluation, nnx_model = snippets("The loss in your optax loop")
  exec(loop, namespace)
  params, model_state, opt_state = namespace["params"], namespace["model_state"], \
      namespace["opt_state"]
  x, y = namespace["x_train"], namespace["y_train"]
  for step in range(60):
    index = np.arange(step * 64, step * 64 + 64) % len(x)
    params, model_state, opt_state, metrics = namespace["step"](
        params, model_state, opt_state, x[index], y[index], jax.random.key(step))
  namespace.update(params=params, model_state=model_state)
  exec(evaluation, namespace)
  assert namespace["accuracy"] > 0.8
  exec(nnx_model, namespace)
  logits, _ = namespace["apply_fn"](namespace["params"], namespace["model_state"], x[:8])
  assert logits.shape == (8, 10)
