"""SVHN (TFDS svhn_cropped, 73,257 train), PreActResNet-18, the Mixup paper's schedule: SGD 0.1 Nesterov, weight decay
1e-4, batch 128, 200 epochs, learning rate / 10 at epochs 100 and 150; pad-4 crop, no flip (digits).

    python train.py --config=configs/svhn_preactresnet18.py --config.method=mixup
"""

from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "svhn_preactresnet18"
  config.dataset = "tfds:svhn_cropped"
  config.augment = "crop_flip"
  config.flip = False  # Digits are not mirror-symmetric.
  config.model.name = "preact_resnet18"
  config.method, config.alpha, config.eta, config.variant = "mixupe", 1.0, 1.0, "v1"
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 200
  config.learning_rate = 0.1
  config.weight_decay = 1e-4
  config.schedule = "step"
  config.decay_epochs = (100, 150)
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
