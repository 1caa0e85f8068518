"""Data for the four domains of the paper: images, tabular data, speech and graphs.

`load(spec)` reads a dataset named by a string (see `registry`), checked against the same
invariants whatever its format (`invariants`); `splits` derives a run's training subset,
validation split and standardization from it; `pipeline` batches it; `statistics.x_bar` computes
the training-set mean input MixupE needs, in one streaming pass, cached outside the data folder.
"""

# Fails with an ImportError naming the extra where the training system is not installed.
import mixupe_jax.train_extra  # noqa: F401
from mixupe_jax.data.base import ArrayDataset, DataError, GraphDataset
from mixupe_jax.data.registry import dataset_path, load
from mixupe_jax.data.statistics import x_bar

__all__ = ["ArrayDataset", "DataError", "GraphDataset", "dataset_path", "load", "x_bar"]
