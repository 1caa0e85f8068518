"""Every config field with its default; the files in configs/ start from this and change what
their experiment needs. The config is locked, so a misspelled field is an error, not a no-op."""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from mixupe_jax.models.registry import model_config


def default_config() -> ml_collections.ConfigDict:
  """Every field with its default, in sections (the order of the fields is the order of a
  config's JSON)."""
  config = ml_collections.ConfigDict()
  config.name = "experiment"  # The default workdir is workdir/<name>.
  config.seed = 0  # Every random choice (init, data order, augmentation, mixing) derives from it.
  _data_fields(config)
  _model_fields(config)
  _method_fields(config)
  _optimization_fields(config)
  _bookkeeping_fields(config)
  return config


def _data_fields(config: ml_collections.ConfigDict) -> None:
  """The data, its splits and the input pipeline (see mixupe_jax.train.inputs), and what is
  evaluated."""
  config.dataset = "sklearn:digits"
  config.data_dir = config_dict.placeholder(str)  # TFDS data_dir.
  config.image_size = 0  # TFDS images: crop/resize to this size (0: keep the native size).
  # > 0: train on a stratified subset of this many training examples, drawn with its own seed
  # (the same subset for every run seed and method), before any validation split is carved.
  config.train_subset = 0
  config.train_subset_seed = 0
  # > 0: this fraction of the training labels made wrong (symmetric noise: each moved to another
  # class uniformly), drawn with its own seed (the same noisy labels for every run seed and
  # method), after the subset and before the validation split (whose labels are then noisy too;
  # the test labels never are). Datasets loaded into memory only.
  config.label_noise = 0.0
  config.label_noise_seed = 0
  config.validation_fraction = 0.0  # Stratified, seeded validation split carved from train.
  config.standardize = False  # Float inputs: zero mean, unit variance per position (train fit).
  config.graph_row_normalize = False  # Graphs: each node's features divided by their sum (Kipf).
  config.augment = "none"  # "none", "crop_flip" (pad-crop + flip) or "inception".
  config.crop_padding = 4
  # The Inception crop's and the eval resize's resampling: PIL's antialiased BILINEAR (True), or
  # False: bilinear without antialiasing (4 pixels per output pixel, as tf.image.resize's default,
  # OpenCV's INTER_LINEAR): other pixels, aliased when downscaling, a fifth less time per crop.
  config.resize_antialias = True
  config.flip = True
  config.input_threads = 2
  # > 0: training batches are read in this many worker processes (each with input_threads
  # threads), the same batches in the same order. Pays where augmentation holds the GIL (small
  # images: CIFAR pad-crop-flip 2-3x faster with 2 workers); JPEG decoding and resizing release it.
  config.input_workers = 0
  # uint8 images travel to the device as uint8 and are normalized inside the jitted train and eval
  # steps (a quarter of the host-to-device bytes, no float work on the input cores); False
  # normalizes on the host. The same affine map either way, to float32 rounding.
  config.normalize_on_device = True
  # x_bar, the training-set mean input of MixupE v1/v2: over the inputs augmented once each
  # ("augmented", as the official code's train loader) or over the plain inputs ("unaugmented").
  # The same without augmentation.
  config.x_bar_inputs = "augmented"
  # Splits to evaluate; () = every split but train (e.g. only "validation").
  config.eval_splits = ()
  # > 0: stop after this many evaluations without a better accuracy on `early_stopping_split`; the
  # result is the best evaluation (every split's metrics at that step).
  config.early_stopping_patience = 0
  config.early_stopping_split = "validation"
  # With early stopping: splits evaluated once, at the end, on the kept checkpoint of the best
  # step (e.g. "test", and "train_eval": the training split without augmentation), instead of at
  # every evaluation. The summary's numbers are then those of the saved model by construction.
  config.best_eval_splits = ()


def _model_fields(config: ml_collections.ConfigDict) -> None:
  """The model (see mixupe_jax.models.registry); every field but `name` goes to the module."""
  config.model = model_config("mlp")  # Every option of the model, so each can be overridden.
  config.dtype = "float32"  # Compute dtype; "bfloat16" on accelerators. Params stay float32.


def _method_fields(config: ml_collections.ConfigDict) -> None:
  """The method, its mixer, and how examples pair across devices (see
  mixupe_jax.losses.make_loss_fn)."""
  config.method = "mixupe"  # erm, mixup, mixupe, manifold_mixup, manifold_mixupe, regmixup.
  config.alpha = 1.0
  config.eta = 1.0
  config.variant = "v1"  # v1 (= exact), v2, v3 (= fast), v4.
  config.threshold = config_dict.placeholder(float)  # tau; None: the variant's default.
  # Which per-example r_i v1/v2 threshold under train-mode BatchNorm: "official" (example i moved
  # alone, as the official code) or "joint" (the whole batch moved; one jvp).
  config.term_split = "official"
  # rho < 1: the MixupE term on round(rho B) clean examples (per device), an estimate at
  # (1 + 2 rho) Mixup's cost instead of 3x (see mixupe_jax.regularizers.subsample_examples).
  config.term_fraction = 1.0
  # A jax.checkpoint policy for the clean pass (e.g. "dots_saveable"): less memory, more FLOPs.
  config.clean_pass_remat = config_dict.placeholder(str)
  config.rescale = True
  config.scale_by_moment = True
  config.flip_sign = False
  config.mixer = "mixup"  # mixup, cutmix, mixup_or_cutmix.
  config.mixer_options = ml_collections.ConfigDict()  # E.g. granularity, pairing, switch_prob.
  # timm's mixup_off_epoch: from this epoch on (its first step, epoch * steps per epoch) every
  # method trains on the clean batch with the mixer's label smoothing. None: mixing throughout.
  config.mixup_off_epoch = config_dict.placeholder(int)
  # Pair examples within consecutive groups of mixing_group_size examples of the global batch
  # ("group", the default: the same run on every device count whose per-device batch is a
  # multiple of it, and no gather of the batch), within each device's shard ("device": no
  # gather, but the run depends on the device count), or across the global batch ("global": the
  # same run on any device count, the official pairing, but the batch is gathered onto every
  # device); "auto": device on >1 device, else global. Full-batch data (graphs) trains on one
  # device and pairs across the whole batch in every scope.
  config.mixing_scope = "group"
  config.mixing_group_size = 16  # Read by mixing_scope = "group" only.
  config.manifold_layers = (0, 1, 2)
  # On several devices each computes the loss of its shard and the gradient is all-reduced
  # once (train.step): "float32" sums it exactly (the same run on any device count, to float
  # rounding); "bfloat16" halves the bytes on the wire and rounds each device's part to 8 bits.
  config.gradient_all_reduce_dtype = "float32"


def _optimization_fields(config: ml_collections.ConfigDict) -> None:
  """Batches, length and the optimizer (see mixupe_jax.train.optim)."""
  config.batch_size = 128  # Global, over all devices and hosts.
  config.eval_batch_size = 256
  config.num_epochs = 10
  config.num_train_steps = 0  # > 0: stop after this many steps instead (smoke tests, budgets).
  config.optimizer = "sgd"  # sgd (Nesterov momentum) or adam.
  config.learning_rate = 0.1
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 1e-4
  config.weight_decay_kernels_only = False  # Shorthand for weight_decay_scope = "kernels".
  config.weight_decay_scope = "all"  # all, kernels, first_layer (Kipf & Welling's GCN).
  config.schedule = "step"  # step, cosine, constant.
  config.warmup_epochs = 0.0
  config.decay_epochs = (100, 150)
  config.decay_factor = 0.1


def _bookkeeping_fields(config: ml_collections.ConfigDict) -> None:
  """Logging, evaluation and checkpoint periods, and the multi-host job."""
  config.log_every_steps = 50
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.progress_bar = True
  # Multi-host (docs/training.md, "Multi-host"): jax.distributed.initialize() first. Unset fields
  # are detected (TPU pods, SLURM); on plain hosts give all three.
  config.distributed = False
  config.coordinator_address = config_dict.placeholder(str)  # "host:port" of process 0.
  config.num_processes = config_dict.placeholder(int)
  config.process_id = config_dict.placeholder(int)
  config.heartbeat_timeout_seconds = 100  # A process unheard for this long ends the others.


# MixupE's settings a shipped image config starts from (`mixup_paper_image_config`), by name.
MIXUPE_SETTINGS = {
  # The official README's CIFAR recipe (its CIFAR-100 command): v3, eta 0.001, tau 1, alpha 2.
  "readme": dict(alpha=2.0, eta=0.001, variant="v3", threshold=1.0),
  # The official code's argparse default: v1, eta 1, tau -1 (v1's default), alpha 1. With its
  # published sign it collapsed CIFAR-10 training in the converged suite's search (13.2% on
  # validation against 50.4% flipped; docs/results.md).
  "official_code_default": dict(alpha=1.0, eta=1.0, variant="v1", threshold=None),
}


def mixup_paper_image_config(
  name: str, dataset: str, mixupe_setting: str = "readme"
) -> ml_collections.ConfigDict:
  """The Mixup papers' CIFAR recipe (Zhang et al. 2018; the MixupE paper follows it):
  PreActResNet-18, SGD 0.1 with Nesterov momentum, weight decay 1e-4, batch 128, 200 epochs,
  learning rate / 10 at epochs 100 and 150, pad-4 crop + flip; MixupE with the settings
  MIXUPE_SETTINGS[mixupe_setting]: by default the official README's recipe (v3, eta 0.001,
  tau 1, alpha 2), which trains; "official_code_default" (v1, eta 1, alpha 1) is the official
  code's argparse default, whose published sign collapses CIFAR-10 training.

  Args:
    name: the config's name (its workdir).
    dataset: the dataset spec.
    mixupe_setting: a key of MIXUPE_SETTINGS (a config file's argument:
      `--config=configs/cifar10_preactresnet18.py:official_code_default`).

  Returns:
    The config.
  """
  if mixupe_setting not in MIXUPE_SETTINGS:
    raise ValueError(
      f"unknown MixupE setting {mixupe_setting!r} for {name}; valid settings are "
      f"{', '.join(MIXUPE_SETTINGS)}"
    )
  config = default_config()
  config.name = name
  config.dataset = dataset
  config.augment = "crop_flip"
  config.model = model_config("preact_resnet18")
  config.method = "mixupe"
  for field, value in MIXUPE_SETTINGS[mixupe_setting].items():
    config[field] = value
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_epochs = 200
  config.learning_rate = 0.1
  config.weight_decay = 1e-4
  config.schedule = "step"
  config.decay_epochs = (100, 150)
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  # Pad-crop-flip holds the GIL, so an accelerator host reads faster in worker processes than in
  # threads: 2 workers of 1 thread each read 1.33x tf.data's default pipeline's examples/s per
  # core (docs/benchmarks.md, "Input pipeline throughput"); the same batches as threads. Workers
  # are spawned: a script that trains needs `if __name__ == "__main__":` (train.py has it).
  config.input_workers, config.input_threads = 2, 1
  return config
