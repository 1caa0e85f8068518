"""The input side of training, built from the config: data, batches per process, x_bar.

`config.dataset` is `tfds:<name>` (images streamed through `tfds.data_source`: cifar10, cifar100,
svhn_cropped, imagenet2012; audio decoded to log-mel arrays: spoken_digit, speech_commands) or any
spec `mixupe_jax.data.load` reads (idx:, imagefolder:, cifar_pickle:,
fsdd:, planetoid:, uci:, sklearn:). Images are normalized per channel (published statistics for
the TFDS sets, training-split statistics otherwise); features and spectrograms are used as loaded.
Graphs train full-batch on the training nodes.

Every process reads its own shard: training batches are this process's `batch_size / P` examples
of the global batch; evaluation batches are padded with mask-0 rows so that every process runs the
same number of equally shaped steps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mixupe_jax import data as data_lib
from mixupe_jax.data import audio, graphs, pipeline, statistics
from mixupe_jax.data import splits as splits_lib
from mixupe_jax.models import flax_apply_fn, node_apply_fn, normalized_edges
from mixupe_jax.models.apply import ApplyFn
from mixupe_jax.train.errors import ConfigError

Batch = tuple[np.ndarray, np.ndarray]
EvalBatch = tuple[np.ndarray, np.ndarray, np.ndarray]
TFDS_EVAL_SPLIT = {"imagenet2012": "validation"}
AUGMENTATIONS = ("none", "crop_flip", "inception")
# x_bar over the training inputs as the model sees them (augmented once each: the official code's
# mean over its augmented train loader, and the mean of the distribution Mixup's partners come
# from) or over the plain training set.
X_BAR_INPUTS = ("augmented", "unaugmented")


@dataclasses.dataclass
class Inputs:
  """What the training loop reads. `train_batches(start_step)` is this process's infinite stream
  from global step `start_step`; `eval_batches[split]()` one padded pass over a split."""

  name: str
  num_classes: int
  num_train: int
  example_shape: tuple[int, ...]
  train_batches: Callable[[int], Iterator[Batch]]
  eval_batches: dict[str, Callable[[], Iterator[EvalBatch]]]
  # The training inputs x_bar is the mean of (config.x_bar_inputs): preprocessed and normalized,
  # augmented once each or not at all.
  x_bar_batches: Callable[[], Iterator[np.ndarray]]
  dataset_path: str | None = None
  x_bar_fingerprint: str = ""  # What x_bar depends on: names its cache file.
  graph: data_lib.GraphDataset | None = None
  # One padded pass over the training split as evaluation sees it (no augmentation), evaluated
  # as the split TRAIN_EVAL when a config asks for it: the fit that a regularizer trades away.
  train_eval_batches: Callable[[], Iterator[EvalBatch]] | None = None
  # What the training loop needs besides batches, so that it never asks what the data is:
  # full_batch: every step is all num_train examples, on one device (a graph's nodes);
  # model_options: options the model takes from the data (a graph's edges);
  # make_apply_fns(model, splits): (train apply, {split: eval apply}); splits sharing one eval
  #   apply function share one compiled eval step;
  # init_sample: what the model is initialized on (None: one example of zeros).
  full_batch: bool = False
  model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
  make_apply_fns: Callable[[Any, Sequence[str]], ApplyFns] | None = None
  init_sample: np.ndarray | None = None
  # What the train and eval steps apply to each batch on arrival, on the device (None: nothing):
  # the normalization of uint8 images shipped as uint8 (config.normalize_on_device).
  device_preprocess: Callable[[Any], Any] | None = None

  def apply_fns(self, model, splits: Sequence[str]) -> ApplyFns:
    if self.make_apply_fns is not None:
      return self.make_apply_fns(model, splits)
    evaluate = flax_apply_fn(model, train=False)
    return flax_apply_fn(model, train=True), {split: evaluate for split in splits}

  def sample(self) -> np.ndarray:
    if self.init_sample is not None:
      return self.init_sample
    return np.zeros((1,) + tuple(self.example_shape), np.float32)


TRAIN_EVAL = "train_eval"
ApplyFns = tuple[ApplyFn, dict[str, ApplyFn]]


def _x_bar_augmentation(config, augment):
  """The augmentation x_bar's pass applies (None: the plain training inputs) and what it adds to
  the cache fingerprint."""
  if config.x_bar_inputs not in X_BAR_INPUTS:
    raise ConfigError(
      f"Unknown x_bar_inputs {config.x_bar_inputs!r}; valid: {', '.join(X_BAR_INPUTS)}."
    )
  if augment is None or config.x_bar_inputs == "unaugmented":
    return None, ""
  return augment, (
    f"|augmented={config.augment},padding={config.crop_padding},"
    f"flip={config.flip},seed={config.seed}"
  )


def _normalization_side(config, normalization: pipeline.ChannelNormalization | None):
  """(what the host streams normalize with, what the steps apply on arrival): the uint8 images'
  normalization on the device when config.normalize_on_device, else on the host. x_bar's pass
  always normalizes on the host (once per run)."""
  if normalization is None or not config.normalize_on_device:
    return normalization, None
  return None, normalization.on_device


def _augmentation(config, image_size: int | None):
  if config.augment not in AUGMENTATIONS:
    raise ConfigError(f"Unknown augment {config.augment!r}; valid: {', '.join(AUGMENTATIONS)}.")
  if config.augment == "crop_flip":
    return functools.partial(pipeline.cifar_augment, padding=config.crop_padding, flip=config.flip)
  if config.augment == "inception":
    if image_size is None:
      raise ConfigError("augment='inception' crops to config.image_size; set it (e.g. 224).")
    return functools.partial(
      pipeline.random_resized_crop, size=image_size, antialias=config.resize_antialias
    )
  return None


# Runs of an experiment suite share one process: the decoded dataset (e.g. 60,000 CIFAR JPEGs) is
# read once, keyed by the files' content as well as the spec, so changed files are read again.
# Loaders return fresh arrays and nothing downstream writes into them.
@functools.lru_cache(maxsize=2)
def _load_offline_version(spec: str, content: str):
  del content  # Part of the cache key only.
  return data_lib.load(spec)


def _load_offline(spec: str):
  path = data_lib.dataset_path(spec)
  return _load_offline_version(spec, statistics.content_signature(path) if path else "")


def _load_dataset(spec: str, data_dir: str | None):
  """The arrays of an offline spec, or of a TFDS audio set (decoded whole; see data.audio)."""
  if spec.startswith("tfds:"):
    return audio.load_tfds_audio(spec.removeprefix("tfds:"), data_dir)
  return _load_offline(spec)


def build_inputs(
  config,
  *,
  local_batch_size: int,
  local_eval_batch_size: int,
  process_index: int,
  process_count: int,
) -> Inputs:
  """The `Inputs` for `config.dataset`; a clear error for an unknown dataset."""
  spec = config.dataset
  shard: dict[str, Any] = dict(process_index=process_index, process_count=process_count)
  padded = functools.partial(
    pipeline.padded_eval_batches, local_batch_size=local_eval_batch_size, **shard
  )

  def train_stream(source, augment, normalize):
    return lambda start_step: pipeline.train_batches(
      source,
      batch_size=local_batch_size,
      seed=config.seed,
      augment=augment,
      normalize=normalize,
      start_step=start_step,
      num_threads=config.input_threads,
      num_workers=config.input_workers,
      **shard,
    )

  data_dir = config.get("data_dir") or None
  tfds_name = spec.removeprefix("tfds:") if spec.startswith("tfds:") else None
  if tfds_name is not None and tfds_name not in audio.TFDS_AUDIO_DATASETS:
    for field in ("train_subset", "label_noise"):
      if config[field]:
        raise ConfigError(
          f"{field} = {config[field]}: {spec} is streamed from TFDS, and this option is for "
          "datasets loaded into memory (e.g. imagefolder:, idx:, cifar_pickle:)."
        )
    name = tfds_name
    image_size = config.get("image_size") or None
    # Full-size JPEGs (ImageNet) reach the crop encoded, which decodes them at the lowest DCT
    # scale its window allows and resizes the window from there; small sets are decoded whole.
    encoded = name == "imagenet2012" and image_size is not None
    train_source = pipeline.tfds_source(name, "train", data_dir, encoded=encoded)
    eval_split = TFDS_EVAL_SPLIT.get(name, "test")
    eval_source = pipeline.tfds_source(name, eval_split, data_dir, encoded=encoded)
    resize = (
      functools.partial(
        pipeline.resize_center_crop, size=image_size, antialias=config.resize_antialias
      )
      if image_size
      else None
    )
    tfds_normalize = pipeline.normalizer(name)
    stream_normalize, device_preprocess = _normalization_side(config, tfds_normalize)
    num_classes = train_source.dataset_info.features["label"].num_classes

    augment = _augmentation(config, image_size)
    x_bar_augment, augmented_fingerprint = _x_bar_augmentation(config, augment)

    def tfds_x_bar_batches():
      # An augmentation yields the training size itself; plain images are resized as for eval.
      for images, _ in pipeline.eval_batches(
        train_source,
        batch_size=256,
        preprocess=None if x_bar_augment else resize,
        normalize=tfds_normalize,
        augment=x_bar_augment,
        seed=config.seed,
        **shard,
      ):
        yield images

    example = train_source[0]["image"]
    channels = 3 if encoded else np.asarray(example).shape[-1]
    shape = (image_size, image_size, channels) if image_size else np.asarray(example).shape
    return Inputs(
      name=spec,
      num_classes=num_classes,
      num_train=len(train_source),
      example_shape=shape,
      train_batches=train_stream(train_source, augment, stream_normalize),
      eval_batches={
        eval_split: functools.partial(
          padded,
          eval_source,
          num_examples=len(eval_source),
          preprocess=resize,
          normalize=stream_normalize,
        )
      },
      x_bar_batches=tfds_x_bar_batches,
      dataset_path=data_dir or None,
      x_bar_fingerprint=f"{spec}|{image_size}{augmented_fingerprint}{_resize_fingerprint(config)}",
      train_eval_batches=functools.partial(
        padded,
        train_source,
        num_examples=len(train_source),
        preprocess=resize,
        normalize=stream_normalize,
      ),
      device_preprocess=device_preprocess,
    )

  dataset = _load_dataset(spec, data_dir if tfds_name else None)
  if isinstance(dataset, data_lib.GraphDataset):
    for field in ("train_subset", "label_noise"):
      if config[field]:
        raise ConfigError(
          f"{field} = {config[field]}: {spec} is a graph, whose training nodes are its split's."
        )
    return _graph_inputs(spec, dataset, row_normalize=config.graph_row_normalize)
  try:  # Each refuses a config field the data cannot take (a subset larger than the split).
    splits = splits_lib.train_subset(
      dataset.splits, config.train_subset, config.train_subset_seed, spec
    )
    splits = splits_lib.noisy_train_labels(
      splits, config.label_noise, dataset.num_classes, config.label_noise_seed
    )
  except ValueError as error:
    raise ConfigError(str(error)) from None
  splits = splits_lib.split_for_validation(splits, config.validation_fraction, config.seed)
  if splits is not dataset.splits:
    # The carved splits must hold the same invariants (e.g. a class whose few examples all went
    # to validation): checked by building them as a dataset.
    data_lib.ArrayDataset(spec, splits, dataset.num_classes, dataset.class_names, dataset.source)
  if config.standardize:
    try:
      splits = splits_lib.standardized(splits, spec)
    except ValueError as error:  # uint8 images: normalized per channel instead.
      raise ConfigError(f"config.standardize = True: {error}") from None
  train_x, train_y = splits["train"]
  normalize: pipeline.ChannelNormalization | None = None
  if train_x.dtype == np.uint8:
    normalize = pipeline.channel_normalizer(*pipeline.channel_statistics(train_x))
  stream_normalize, device_preprocess = _normalization_side(config, normalize)
  augment = _augmentation(config, train_x.shape[1] if train_x.ndim == 4 else None)
  if augment is not None and train_x.ndim != 4:
    raise ConfigError(
      f"augment={config.augment!r} needs images; {spec} has inputs of shape {train_x.shape[1:]}."
    )

  x_bar_augment, augmented_fingerprint = _x_bar_augmentation(config, augment)

  def x_bar_batches():
    if x_bar_augment is None:
      yield from statistics.array_batches(train_x[process_index::process_count], 4096, normalize)
      return
    for images, _ in pipeline.eval_batches(
      pipeline.ArraySource(train_x, train_y),
      batch_size=1024,
      normalize=normalize,
      augment=x_bar_augment,
      seed=config.seed,
      **shard,
    ):
      yield images

  return Inputs(
    name=spec,
    num_classes=dataset.num_classes,
    num_train=len(train_x),
    example_shape=train_x.shape[1:],
    train_batches=train_stream(pipeline.ArraySource(train_x, train_y), augment, stream_normalize),
    eval_batches={
      split: functools.partial(
        padded, pipeline.ArraySource(x, y), num_examples=len(x), normalize=stream_normalize
      )
      for split, (x, y) in splits.items()
      if split != "train"
    },
    x_bar_batches=x_bar_batches,
    dataset_path=data_dir if tfds_name else data_lib.dataset_path(spec),
    x_bar_fingerprint=(
      f"{spec}|validation={config.validation_fraction}|seed={config.seed}"
      f"{_subset_fingerprint(config)}{augmented_fingerprint}{_resize_fingerprint(config)}"
    ),
    train_eval_batches=functools.partial(
      padded,
      pipeline.ArraySource(train_x, train_y),
      num_examples=len(train_x),
      normalize=stream_normalize,
    ),
    device_preprocess=device_preprocess,
  )


def _resize_fingerprint(config) -> str:
  """Without antialiasing the images differ; empty for the default, so that earlier runs' cached
  x_bar files keep their names."""
  return "" if config.resize_antialias else "|resize_antialias=False"


def _subset_fingerprint(config) -> str:
  """Empty without a subset, so that earlier runs' cached x_bar files keep their names."""
  if not config.train_subset:
    return ""
  return f"|subset={config.train_subset},subset_seed={config.train_subset_seed}"


def _graph_inputs(
  spec: str, graph: data_lib.GraphDataset, *, row_normalize: bool = False
) -> Inputs:
  """Full-batch node classification: every step is all training nodes, evaluation one batch per
  split (the model sees the whole graph; see `models.gcn.node_apply_fn`)."""
  if row_normalize:
    graph = dataclasses.replace(graph, features=graphs.row_normalized(graph.features))
  features, labels = graph.features, graph.labels
  ids = graph.split_indices

  def train_batches(start_step):
    del start_step  # Every step reads the same batch.
    while True:
      yield features[ids["train"]], labels[ids["train"]]

  def one_batch(split):
    yield (features[ids[split]], labels[ids[split]], np.ones(len(ids[split]), np.float32))

  def apply_fns(model, splits):
    # The batch of a split is its nodes, so each split has its own apply function.
    nodes = {**ids, TRAIN_EVAL: ids["train"]}
    return (
      node_apply_fn(model, features, ids["train"], train=True),
      {split: node_apply_fn(model, features, nodes[split], train=False) for split in splits},
    )

  return Inputs(
    name=spec,
    num_classes=graph.num_classes,
    num_train=len(ids["train"]),
    example_shape=features.shape[1:],
    train_batches=train_batches,
    eval_batches={split: functools.partial(one_batch, split) for split in ids if split != "train"},
    x_bar_batches=lambda: iter([features[ids["train"]]]),
    dataset_path=None,
    graph=graph,
    train_eval_batches=functools.partial(one_batch, "train"),
    full_batch=True,
    model_options={"edges": normalized_edges(graph.adjacency)},
    make_apply_fns=apply_fns,
    init_sample=features,
  )


def compute_x_bar(inputs: Inputs) -> np.ndarray:
  """x_bar over the training inputs of every process (augmented once each, or plain, as the
  config chose), cached outside the data (see `statistics.cache_path_for`)."""
  cache_path = None
  if inputs.dataset_path is not None:
    cache_path = statistics.cache_path_for(inputs.dataset_path, inputs.x_bar_fingerprint)
  return statistics.streamed_x_bar(inputs.x_bar_batches, cache_path=cache_path)
