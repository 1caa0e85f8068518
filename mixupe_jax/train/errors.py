"""The training system's error for a config it cannot use (train.py ends it with one line)."""


class ConfigError(ValueError):
  """A config field with a value the training system cannot use."""
