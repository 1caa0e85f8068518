"""The benchmarks' behaviour a user depends on without running them: the PyTorch comparison names
its optional dependency and how to install it when PyTorch is absent; the pod benchmark's
estimates."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vs_pytorch_without_pytorch_says_how_to_install_it():
  # sys.modules["torch"] = None makes `import torch` fail as on a machine without it.
  script = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['vs_pytorch.py']; "
            "runpy.run_path('benchmarks/vs_pytorch.py', run_name='__main__')")
  result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1
  assert "needs PyTorch, an optional benchmark dependency: pip install torch" in result.stderr
  assert "Traceback" not in result.stderr


def test_the_pod_benchmark_estimates_the_step_as_hand_computed():
  """benchmarks/pod_step.py's estimate on paper: the FLOPs at the chip's bf16 peak plus a ring
  all-reduce, 2 (N - 1) / N of the all-reduced bytes through each chip's link, at the pod's
  all-reduce bandwidth (TPU v4) or NVLink inside an 8-GPU node and the network across nodes."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import pod_step

  row = {"chip": "TPU v4", "chips": 8, "collectives": {"all-reduce": {"bytes": 100e6}}}
  estimate = pod_step.estimate(row, 2.75e12)
  # 2.75e12 / 275e12 = 10 ms of compute; 2 * 7/8 * 100 MB at 1.1 PB/s / 4096 chips.
  assert abs(estimate["compute_ms"] - 10) < 1e-9
  assert abs(estimate["all_reduce_ms"] - 1e3 * 175e6 / (1.1e15 / 4096)) < 1e-9
  gpus = {"chip": "H100 SXM", "collectives": {"all-reduce": {"bytes": 100e6}}}
  inside, across = (pod_step.estimate({**gpus, "chips": n}, 989e9) for n in (8, 64))
  assert abs(inside["all_reduce_ms"] - 1e3 * 175e6 / 450e9) < 1e-9
  assert abs(across["all_reduce_ms"] - 1e3 * 2 * 63 / 64 * 100e6 / 50e9) < 1e-9
  assert pod_step.estimate({**row, "chip": "CPU"}, 1e9) is None


def test_every_benchmark_json_records_its_commit_date_and_machine():
  """provenance() gives the checkout's commit, whether it had uncommitted changes, the UTC date
  and the machine; every benchmark that writes JSON puts it there."""
  import datetime
  import glob
  import re
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  from provenance import provenance

  record = provenance()
  assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]) and record["dirty"] in ("True", "False")
  assert datetime.datetime.fromisoformat(record["date"]).tzinfo is not None
  assert f"{os.cpu_count()} CPUs" in record["machine"]
  for path in glob.glob(os.path.join(ROOT, "benchmarks", "*.py")):
    with open(path) as file:
      source = file.read()
    if "json.dump(" in source:
      assert "provenance()" in source, path


def test_the_pod_benchmark_reads_both_of_the_tpu_compiler_s_refusals():
  """A refused compilation is a row that does not fit, with what the compiler said it needed:
  the temporaries (refused before buffer assignment) or all it placed in HBM (after); any other
  error is not a refusal."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import pod_step

  before = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
            "temporaries (30.79G) exceeds available HBM (30.75G).")
  after = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
           "space hbm. Used 15.80G of 15.75G hbm. Exceeded hbm capacity by 51.06M.")
  assert pod_step.refused_bytes(before) == 30.79 * 2**30
  assert pod_step.refused_bytes(after) == 15.80 * 2**30
  assert pod_step.refused_bytes("INTERNAL: Ran out of memory in memory space hbm. Used 1G of") is None
  assert pod_step.refused_bytes("RESOURCE_EXHAUSTED: something else") is None
