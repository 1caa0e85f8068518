"""Imported first by the training system's packages: an ImportError naming the extra
(`extras.require_train_extra`) where it is not installed, before any import that would fail with
a less helpful message."""

from mixupe_jax.extras import require_train_extra

require_train_extra()
