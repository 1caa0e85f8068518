"""FLOPs per epoch of the full-scale configs, and the time per epoch they imply on accelerators.

For each config (as `train.py` reads it) and method, the training system's step is compiled for a
small batch on this machine and XLA's cost analysis counts its FLOPs. FLOPs are linear in the
batch, so one epoch costs (FLOPs per example) x (training examples). Dividing by a device's dense
peak gives the time per epoch at 100% utilization: a lower bound on one device (divide by the number
of devices for data parallelism), not a measurement. Real ResNet training runs well below peak.

    python benchmarks/epoch_cost.py --out benchmarks/results/epoch_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provenance import provenance  # benchmarks/provenance.py, beside this script.
from train_throughput import METHODS, compiled_train_step, step_flops  # noqa: E402

from mixupe_jax.experiments.runner import DEFAULT_CONFIGS_DIR, load_config_file  # noqa: E402
from mixupe_jax.models.registry import build_model  # noqa: E402

# (config file, training examples, classes, image size the step sees).
CONFIGS = {
  "cifar10_preactresnet18.py": (50_000, 10, 32),
  "cifar100_preactresnet18.py": (50_000, 100, 32),
  "imagenet_resnet50.py": (1_281_167, 1000, 224),
}
# Dense bfloat16 peaks from the vendors' data sheets, per device.
PEAKS = {"H100 SXM": 989e12, "A100": 312e12, "TPU v4 chip": 275e12}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch-size", type=int, default=8, help="Batch compiled for counting.")
  parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  rows = []
  for config_file in args.configs:
    num_train, num_classes, image_size = CONFIGS[config_file]
    config = load_config_file(DEFAULT_CONFIGS_DIR, config_file)
    model_options = {k: v for k, v in config.model.items() if k != "name"}
    module = build_model(
      config.model.name, num_classes=num_classes, dtype="float32", **model_options
    )
    inputs = jax.random.normal(jax.random.key(0), (args.batch_size, image_size, image_size, 3))
    labels = jnp.arange(args.batch_size) % num_classes
    for method, options in METHODS.items():
      compiled, _, _ = compiled_train_step(module, options, inputs, labels, num_classes)
      per_example = step_flops(compiled) / args.batch_size
      epoch_flops = per_example * num_train
      row = {
        "config": config_file,
        "method": method,
        "epochs": config.num_epochs,
        "global_batch": config.batch_size,
        "gflop_per_example": per_example / 1e9,
        "pflop_per_epoch": epoch_flops / 1e15,
        "seconds_per_epoch_at_peak": {name: epoch_flops / peak for name, peak in PEAKS.items()},
      }
      rows.append(row)
      at_peak = "  ".join(
        f"{name} {seconds:7.1f} s" for name, seconds in row["seconds_per_epoch_at_peak"].items()
      )
      print(
        f"{config_file:28s} {method:16s} {per_example / 1e9:7.2f} GFLOP/example "
        f"{epoch_flops / 1e15:8.2f} PFLOP/epoch | at peak: {at_peak}",
        flush=True,
      )
  if args.out:
    with open(args.out, "w") as file:
      json.dump(
        {
          "provenance": provenance(),
          "batch_compiled": args.batch_size,
          "backend": jax.default_backend(),
          "peaks_flops": PEAKS,
          "rows": rows,
        },
        file,
        indent=2,
      )


if __name__ == "__main__":
  main()
