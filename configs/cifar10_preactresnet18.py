"""CIFAR-10 (TFDS), PreActResNet-18, the Mixup paper's recipe (see
`mixupe_jax.train.defaults.mixup_paper_image_config`): 200 epochs of SGD 0.1 Nesterov, / 10 at
epochs 100 and 150, pad-4 crop + flip, MixupE v1. Mixing groups of 16 examples (the default scope):
the same run on 1, 2, 4 or 8 devices.

    python train.py --config=configs/cifar10_preactresnet18.py --config.method=mixup
"""

from mixupe_jax.train.defaults import mixup_paper_image_config


def get_config():
  return mixup_paper_image_config("cifar10_preactresnet18", "tfds:cifar10")
