"""Tiny-ImageNet-200 (64x64, 200 classes; the folder or zip as distributed, read into memory),
PreActResNet-18, the Mixup paper's CIFAR recipe. Evaluated on the labelled val split (reported as
"test"). Mixing groups of 16 examples (the default scope): the same run on 1, 2, 4 or 8 devices.

    python train.py --config=configs/tinyimagenet_preactresnet18.py \
        --config.dataset=tinyimagenet:/path/to/tiny-imagenet-200.zip
"""

from mixupe_jax.train.defaults import mixup_paper_image_config


def get_config(mixupe_setting: str = "readme"):
  return mixup_paper_image_config(
    "tinyimagenet_preactresnet18", "tinyimagenet:tiny-imagenet-200.zip", mixupe_setting
  )
