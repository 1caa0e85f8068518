"""Tiny-ImageNet-200 (64x64, 200 classes; the folder or zip as distributed, read into memory),
PreActResNet-18, the Mixup paper's CIFAR schedule: SGD 0.1 Nesterov, weight decay 1e-4, batch 128,
200 epochs, learning rate / 10 at epochs 100 and 150; pad-4 crop + flip. Evaluated on the labelled
val split (reported as "test").

    python train.py --config=configs/tinyimagenet_preactresnet18.py --config.method=mixup \
        --config.dataset=tinyimagenet:/path/to/tiny-imagenet-200.zip
"""

from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "tinyimagenet_preactresnet18"
  config.dataset = "tinyimagenet:tiny-imagenet-200.zip"
  config.augment = "crop_flip"
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
