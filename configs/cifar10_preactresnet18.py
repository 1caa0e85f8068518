"""CIFAR-10 (TFDS), PreActResNet-18, the Mixup paper's recipe (see
`mixupe_jax.train.defaults.mixup_paper_image_config`): 200 epochs of SGD 0.1 Nesterov, / 10 at
epochs 100 and 150, pad-4 crop + flip, MixupE at the official README's recipe (v3, eta 0.001,
tau 1, alpha 2). Mixing groups of 16 examples (the default scope): the same run on 1, 2, 4 or 8
devices.

    python train.py --config=configs/cifar10_preactresnet18.py --config.method=mixup
    # The official code's argparse default (v1, eta 1, alpha 1), which collapses training:
    python train.py --config=configs/cifar10_preactresnet18.py:official_code_default
"""

from mixupe_jax.train.defaults import mixup_paper_image_config


def get_config(mixupe_setting: str = "readme"):
  return mixup_paper_image_config("cifar10_preactresnet18", "tfds:cifar10", mixupe_setting)
