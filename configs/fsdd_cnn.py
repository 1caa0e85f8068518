"""Free Spoken Digit Dataset (wav folder or zip) as log-mel spectrograms [97, 40, 1], a small CNN,
MixupE fast (v3, the official recipe). Mixing groups of 8 examples (the default scope, with 8 per
group so that 8 devices fit the batch of 64): the same run on 1, 2, 4 or 8 devices.

Why not the exact v1 here: along x_bar - x_i (3,880 standardized inputs) the derivatives r_i reach
|r| ~ 300, and v1's penalty (1/B) sum_{r_i < -1} r_i is unbounded below, so eta = 1 (and 0.1) drove
this model to constant outputs within the first epoch (test accuracy 0.10), while ERM reached 0.93
and Mixup and v3 0.64-0.65 after one epoch (one seed, learning rate 0.01).

    python train.py --config=configs/fsdd_cnn.py --config.dataset=fsdd:/path/to/recordings
    python train.py --config=configs/fsdd_cnn.py --config.dataset=tfds:spoken_digit   # same split
"""

from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "fsdd_cnn"
  config.dataset = "fsdd:../shared/data/fsdd/fsdd_recordings.zip"  # 2,700 train / 300 test.
  config.standardize = True  # Log-mel values sit around -10; per band-and-frame z-scores.
  config.model = model_config("small_cnn", channels=(16, 32), readout="flatten")
  config.variant = "fast"
  config.batch_size = 64
  config.mixing_group_size = 8
  config.eval_batch_size = 304
  config.num_epochs = 5
  config.learning_rate = 0.01
  config.schedule = "cosine"
  config.log_every_steps = 42
  return config
