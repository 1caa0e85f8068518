"""CIFAR-100 (TFDS), PreActResNet-18, the Mixup paper's recipe (as cifar10_preactresnet18.py).
Mixing groups of 16 examples (the default scope): the same run on 1, 2, 4 or 8 devices.

    python train.py --config=configs/cifar100_preactresnet18.py
"""

from mixupe_jax.train.defaults import mixup_paper_image_config


def get_config(mixupe_setting: str = "readme"):
  return mixup_paper_image_config("cifar100_preactresnet18", "tfds:cifar100", mixupe_setting)
