"""SVHN (TFDS svhn_cropped, 73,257 train), PreActResNet-18, the Mixup paper's recipe without the
flip (digits are not mirror-symmetric). Mixing groups of 16 examples (the default scope): the same
run on 1, 2, 4 or 8 devices.

    python train.py --config=configs/svhn_preactresnet18.py
"""

from mixupe_jax.train.defaults import mixup_paper_image_config


def get_config(mixupe_setting: str = "readme"):
  config = mixup_paper_image_config("svhn_preactresnet18", "tfds:svhn_cropped", mixupe_setting)
  config.flip = False
  return config
