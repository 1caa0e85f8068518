"""The data side's error: what a loader or a dataset's invariants raise."""


class DataError(ValueError):
  """A missing, corrupt or malformed data file; the message names the file and the expectation."""
