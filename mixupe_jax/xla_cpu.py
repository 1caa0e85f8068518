"""XLA:CPU options, set before JAX creates its CPU backend (XLA reads its flags only then).

1. Convolutions by Eigen rather than YNNPACK::

       --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

   jaxlib 0.10 hands every convolution on the CPU to YNNPACK. On this project's x86-64 machine its
   kernel for a convolution's weight gradient (batch and both spatial axes contracted) runs about
   3.6x slower than a forward convolution of the same FLOPs: in the PreActResNet-18 Mixup step the
   four weight gradients of the first stage took 58 ms each, the forward convolutions 16 ms
   (profiled with `jax.profiler`). Without `individual_convolution` among the YNN fusion types,
   Eigen computes the convolutions and YNNPACK keeps the dots.
2. Opt-in (`configure(memory_scheduler=True)`), the memory-minimizing scheduler::

       --xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED

   XLA:CPU's default order keeps far more temporary memory alive (PreActResNet-18, batch 32:
   Mixup 199 -> 82 MiB, MixupE-exact with the joint split 612 -> 283 MiB, official split
   587 -> 499 MiB, at about the same step times in `step_cost.py --memory-scheduler`), and only
   with it does rematerializing the clean pass (`clean_pass_remat`) lower the peak on the CPU.
   It is not the default: one shorter run had the official split's step 1.35x slower with it,
   which the 9-round benchmark did not reproduce, so it stays a choice until measured more.

`benchmarks/step_cost.py --xla-default` measures the step without them (docs/benchmarks.md). They
change which library computes each convolution and the order of the program, not what it
computes: `tests/test_xla_cpu.py` checks a MixupE step's loss and gradient against XLA's defaults.

`configure()` adds them to XLA_FLAGS; `train.py`, the experiment runner, the benchmarks and the
tests call it first thing. An option whose flag XLA_FLAGS already names is left as the user set
it (`--xla_cpu_experimental_ynn_fusion_type=+individual_convolution` restores YNNPACK's
convolutions, `--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT` the default order). Nothing
is added outside the jaxlib versions they were checked on (XLA aborts on a flag it does not know)
or once JAX has created its backends (it then warns). They concern the CPU backend only; GPU and
TPU programs are not affected.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
MEMORY_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
# jaxlib releases checked to know both flags (requirements.txt admits jax < 0.11).
CHECKED_JAXLIB = ((0, 10), (0, 11))


def _jaxlib_version() -> tuple[int, int] | None:
  try:
    from jaxlib import version
  except ImportError:
    return None
  major, minor = version.__version__.split(".")[:2]
  return int(major), int(minor)


def _backends_started() -> bool:
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge

  return xla_bridge.backends_are_initialized()


def configure(
  environ: MutableMapping[str, str] | None = None, *, memory_scheduler: bool = False
) -> list[str]:
  """Appends the OPTIONS (and with `memory_scheduler` the MEMORY_OPTIONS) that XLA_FLAGS does not
  name yet (see the module docstring); returns the flags added. Call it before the first JAX
  computation."""
  environ = os.environ if environ is None else environ
  flags = environ.get("XLA_FLAGS", "")
  version = _jaxlib_version()
  if version is None or not CHECKED_JAXLIB[0] <= version < CHECKED_JAXLIB[1]:
    return []
  options = {**OPTIONS, **(MEMORY_OPTIONS if memory_scheduler else {})}
  added = [f"--{name}={value}" for name, value in options.items() if name not in flags]
  if not added:
    return []
  if _backends_started():
    logging.warning(
      "JAX's backends exist already, so %s cannot take effect; call "
      "mixupe_jax.xla_cpu.configure() before the first computation.",
      " ".join(added),
    )
    return []
  environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
  return added
