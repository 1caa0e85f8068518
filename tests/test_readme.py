"""The README's and the usage page's Python snippets run as written: the optax loop, evaluation,
the NNX model."""

import os
import re

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def snippets(path: str) -> list[str]:
  text = open(os.path.join(ROOT, path)).read()
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_shows_the_usage_pages_loop():
  """The README's one snippet is the loop the test below runs, character for character."""
  (readme_loop,) = snippets("README.md")
  assert readme_loop == snippets("docs/usage.md")[0]


@pytest.mark.slow
def test_the_optax_loop_evaluation_and_nnx_snippets_run():
  from mixupe_jax.data.registry import load_sklearn
  digits = load_sklearn("digits")
  namespace = {"x_train": digits.inputs("train"), "y_train": digits.labels("train"),
               "x_test": digits.inputs("test"), "y_test": digits.labels("test")}
  loop, evaluation, nnx_model = snippets("docs/usage.md")
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
