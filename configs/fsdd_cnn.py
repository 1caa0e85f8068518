"""Free Spoken Digit Dataset (wav folder or zip) as log-mel spectrograms [97, 40, 1], a small CNN.

    python train.py --config=configs/fsdd_cnn.py --config.dataset=fsdd:/path/to/recordings
"""

from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "fsdd_cnn"
  config.dataset = "fsdd:../shared/data/fsdd/fsdd_recordings.zip"  # 2,700 train / 300 test.
  config.standardize = True  # Log-mel values sit around -10; per band-and-frame z-scores.
  config.model.name = "small_cnn"
  config.model.channels = (16, 32)
  config.model.readout = "flatten"
  config.batch_size = 64
  config.eval_batch_size = 304
  config.num_epochs = 5
  config.learning_rate = 0.05
  config.schedule = "cosine"
  config.log_every_steps = 42
  return config
