"""Fashion-MNIST (idx files, e.g. ../shared/data/fashion_mnist), a small CNN, MixupE (v1). Mixing
groups of 16 examples (the default scope): the same run on 1, 2, 4 or 8 devices.

    python train.py --config=configs/fashion_mnist_cnn.py --config.dataset=idx:/path/to/fmnist
"""

from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "fashion_mnist_cnn"
  config.dataset = "idx:../shared/data/fashion_mnist"
  config.model = model_config("small_cnn", channels=(32, 64))
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 3
  config.learning_rate = 0.05
  config.schedule = "cosine"
  config.log_every_steps = 100
  return config
