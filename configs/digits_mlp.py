"""The embedded default: scikit-learn's digits (bundled, no download), an MLP, MixupE (exact, v1).
Mixing groups of 8 examples (the default scope, with 8 per group so that 8 devices fit the batch
of 64): the same run on 1, 2, 4 or 8 devices.

    python train.py                       # = --config=configs/digits_mlp.py; about a minute on CPU
"""

from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "digits_mlp"
  config.dataset = "sklearn:digits"  # 1,347 train / 450 test, standardized on train.
  config.model = model_config("mlp", hidden_sizes=(128, 128))
  config.method, config.alpha, config.eta, config.variant = "mixupe", 1.0, 1.0, "v1"
  config.batch_size = 64
  config.mixing_group_size = 8
  config.eval_batch_size = 128
  config.num_epochs = 60
  config.learning_rate = 0.05
  config.schedule = "cosine"
  config.log_every_steps = 21
  config.checkpoint_every_steps = 420
  return config
