"""Google Speech Commands (the archive as distributed: word folders plus validation_list.txt and
testing_list.txt) as 1 s log-mel spectrograms [98, 40, 1], a small CNN, MixupE fast (v3) as in
fsdd_cnn.py. Every word folder is a class (30 in v0.01, 35 in v0.02). Mixing groups of 16 examples
(the default scope): the same run on 1, 2, 4 or 8 devices.

    python train.py --config=configs/speech_commands_cnn.py \
        --config.dataset=speech_commands:/path/to/speech_commands_v0.02
    python train.py --config=configs/speech_commands_cnn.py --config.dataset=tfds:speech_commands

Through TFDS (downloaded and prepared on first use) the classes are TFDS's 12: ten words,
silence and unknown.
"""

from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config():
  config = default_config()
  config.name = "speech_commands_cnn"
  config.dataset = "speech_commands:speech_commands_v0.02"
  config.standardize = True
  config.model = model_config("small_cnn", channels=(32, 64, 128), readout="flatten")
  config.variant = "fast"
  config.batch_size = 128
  config.eval_batch_size = 1024
  config.num_epochs = 30
  config.learning_rate = 0.05
  config.schedule = "cosine"
  config.warmup_epochs = 1.0
  config.log_every_steps = 100
  return config
