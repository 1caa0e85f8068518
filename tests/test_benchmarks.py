"""The benchmarks' behaviour a user depends on without running them: the PyTorch comparison names
its optional dependency and how to install it when PyTorch is absent."""

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


def test_the_pod_benchmark_counts_collective_bytes_as_hand_computed():
  """benchmarks/pod_step.py reads the collectives of optimized HLO text: tuple results (with the
  `/*index=k*/` comments long tuples carry) summed, an async start counted once by its output."""
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import pod_step

  hlo = "\n".join([
    "  %all-reduce.1 = (f32[7,7,3,64]{3,2,1,0}, f32[1000]{0}, /*index=2*/bf16[10,2]{1,0}, f32[]) "
    "all-reduce(%a, %b, %c, %d), channel_id=1, replica_groups={{0,1}}, to_apply=%add",
    "  %all-gather-start.2 = (f32[4,8]{1,0}, f32[32,8]{1,0}) all-gather-start(%x), dimensions={0}",
    "  %all-gather-done.2 = f32[32,8]{1,0} all-gather-done(%all-gather-start.2)",
    "  ROOT %collective-permute.3 = s32[16]{0} collective-permute(%y), source_target_pairs={{0,1}}",
    "  %add.4 = f32[16]{0} add(%p, %q)",
  ])
  found = pod_step.collectives_of(hlo)
  assert [c["kind"] for c in found] == ["all-reduce", "all-gather", "collective-permute"]
  assert [c["bytes"] for c in found] == [
    4 * (7 * 7 * 3 * 64 + 1000 + 1) + 2 * 20, 4 * 32 * 8, 4 * 16]
  row = {"devices": 8, "flops_per_device": 2.75e12, "temp_bytes": 2**30, "argument_bytes": 2**30,
         "collective_bytes": {"all-reduce": 100e6}}
  estimate = pod_step.estimate(row, pod_step.ACCELERATORS["TPU v4"])
  # 2.75e12 / 275e12 = 10 ms of compute; 2 * 7/8 * 100 MB at 1.1 PB/s / 4096 chips.
  assert abs(estimate["compute_seconds_at_peak"] - 0.01) < 1e-12
  assert abs(estimate["all_reduce_seconds"] - 175e6 / (1.1e15 / 4096)) < 1e-12
  assert estimate["fits"] and abs(estimate["memory_fraction"] - 2 / 32) < 1e-12
