"""The XLA:CPU options (mixupe_jax.xla_cpu): when they are added, and that a MixupE step computes
the same loss and gradient with and without them, with its convolutions really moved off
YNNPACK."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import pytest

from mixupe_jax import xla_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


@pytest.fixture
def fresh_process(monkeypatch):
  """As in a process whose JAX has no backend yet, on a checked jaxlib."""
  monkeypatch.setattr(xla_cpu, "_backends_started", lambda: False)
  monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda: (0, 10))


def test_the_options_are_added_once_and_never_over_the_users(fresh_process):
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert xla_cpu.configure(environ) == [CONVOLUTIONS]
  assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {CONVOLUTIONS}"
  assert xla_cpu.configure(environ) == []  # Already there.
  assert xla_cpu.configure(environ, memory_scheduler=True) == [SCHEDULER]
  assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=8",
                                          CONVOLUTIONS, SCHEDULER]
  own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
  assert xla_cpu.configure(own) == []
  assert own["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
  empty = {}
  assert xla_cpu.configure(empty) == [CONVOLUTIONS] and empty["XLA_FLAGS"] == CONVOLUTIONS


def test_nothing_is_added_on_other_jaxlib_versions_or_after_the_backends(monkeypatch, caplog):
  for version in [(0, 9), (0, 11), None]:
    monkeypatch.setattr(xla_cpu, "_jaxlib_version", lambda v=version: v)
    environ = {}
    assert xla_cpu.configure(environ) == [] and environ == {}
  monkeypatch.undo()
  jnp.zeros(1).block_until_ready()  # This test process has its backends.
  assert xla_cpu._backends_started()
  environ = {}
  assert xla_cpu.configure(environ) == [] and environ == {}
  assert "cannot take effect" in caplog.text and CONVOLUTIONS in caplog.text


STEP = textwrap.dedent(r"""
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    from mixupe_jax import losses
    from mixupe_jax.models import PreActResNet18, flax_apply_fn, init_model
    key = jax.random.key(0)
    inputs = jax.random.normal(key, (8, 16, 16, 3)); labels = jnp.arange(8) % 10
    module = PreActResNet18(num_classes=10, width=8, stage_sizes=(1, 1, 1, 1))
    params, state = init_model(module, key, inputs)
    loss_fn = losses.make_loss_fn("mixupe", apply_fn=flax_apply_fn(module), num_classes=10,
                                  eta=1.0, threshold=0.0, x_bar=inputs.mean(0))
    step = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, state, inputs, labels, key)[0]))
    compiled = step.lower(params).compile()  # Compiled once: its text, then its run.
    text = compiled.as_text()
    loss, grads = compiled(params)
    # Convolutions that run inside a YNNPACK fusion: the fusion's called computation holds one.
    blocks = {block.split(" ", 1)[0].lstrip("%"): block for block in text.split("\n\n")}
    called = re.findall(r"calls=%([\w.-]+), backend_config=[^\n]*__ynn_fusion", text)
    ynn_convolutions = sum(" convolution(" in blocks.get(name, "") for name in called)
    print(json.dumps(dict(loss=float(loss), ynn_convolutions=ynn_convolutions,
                          grads=[np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)])))
""")


def _run_step(xla_flags: str) -> dict:
  environ = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", STEP], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_mixupe_step_is_the_same_with_the_options_and_off_ynnpack():
  default = _run_step("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")
  options = _run_step(f"{CONVOLUTIONS} {SCHEDULER}")
  assert options["loss"] == pytest.approx(default["loss"], rel=1e-6)
  for a, b in zip(default["grads"], options["grads"]):
    a, b = jnp.asarray(a), jnp.asarray(b)
    assert float(jnp.abs(a - b).max()) <= 1e-3 * float(jnp.abs(a).max()) + 1e-7
  assert default["ynn_convolutions"] > 0  # XLA's default hands convolutions to YNNPACK ...
  assert options["ynn_convolutions"] == 0  # ... the option does not.
