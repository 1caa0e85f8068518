"""The six UCI sets of the Mixup paper (Zhang et al. 2018): an MLP with two hidden layers of 128
ReLU units, Adam, batch 16, 10 epochs; MixupE (v1). Mixing groups of 16 examples (the default
scope): the same run on 1 device (on more, set --config.mixing_group_size=8 for 2 devices, or
--config.mixing_scope=device). The argument names the set:

    python train.py --config=configs/uci_mlp.py:abalone      # or arcene, arrhythmia, htru2,
                                                             # iris, phishing
"""

from mixupe_jax.data.tabular import UCI_DATASETS
from mixupe_jax.models.registry import model_config
from mixupe_jax.train.defaults import default_config


def get_config(name: str = "iris"):
  if name not in UCI_DATASETS:
    raise ValueError(f"Unknown UCI dataset {name!r}; valid: {', '.join(UCI_DATASETS)}.")
  config = default_config()
  config.name = f"uci_{name}_mlp"
  config.dataset = f"uci:{name}:../shared/data/uci"
  config.model = model_config("mlp", hidden_sizes=(128, 128))
  config.batch_size = 16
  config.eval_batch_size = 64
  config.num_epochs = 10
  config.optimizer = "adam"
  config.learning_rate = 1e-3
  config.weight_decay = 0.0
  config.schedule = "constant"
  config.log_every_steps = 20
  return config
