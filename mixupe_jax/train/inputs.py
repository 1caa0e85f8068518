"""The input side of training, built from the config: one data source per kind of data.

`config.dataset` is `tfds:<name>` (images streamed through `tfds.data_source`: cifar10, cifar100,
svhn_cropped, imagenet2012; audio decoded to log-mel arrays: spoken_digit, speech_commands) or any
spec `mixupe_jax.data.load` reads (idx:, imagefolder:, cifar_pickle:,
fsdd:, planetoid:, uci:, sklearn:). Three kinds of source give the loop the same things
(`DataSource`): `StreamedImages` (TFDS images, normalized with their published statistics),
`ArraysInMemory` (every other array set: images normalized with training-split statistics,
features and spectrograms used as loaded) and `Graph` (node classification, trained full-batch
on the training nodes). `build_inputs` looks the kind up.

Every process reads its own shard: training batches are this process's `batch_size / P` examples
of the global batch; evaluation batches are padded with mask-0 rows so that every process runs the
same number of equally shaped steps.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from mixupe_jax import data as data_lib
from mixupe_jax import parallel
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
# The training split as evaluation sees it (no augmentation), evaluated when a config asks for it:
# the fit that a regularizer trades away.
TRAIN_EVAL = "train_eval"
# (train apply, [(eval apply, the splits it evaluates)]): splits sharing an eval apply function
# share one compiled eval step.
ApplyFns = tuple[ApplyFn, list[tuple[ApplyFn, tuple[str, ...]]]]


@dataclasses.dataclass(frozen=True)
class Shard:
  """This process's share of every batch: `local_batch_size` of the global training batch and
  `local_eval_batch_size` of the evaluation batch, as process `process_index` of
  `process_count`."""

  local_batch_size: int
  local_eval_batch_size: int
  process_index: int = 0
  process_count: int = 1

  @property
  def processes(self) -> dict[str, Any]:
    return dict(process_index=self.process_index, process_count=self.process_count)

  def train_stream(self, config, source, augment, normalize) -> Callable[[int], Iterator[Batch]]:
    """start_step -> this process's infinite stream of training batches from that step."""
    return lambda start_step: pipeline.train_batches(
      source,
      batch_size=self.local_batch_size,
      seed=config.seed,
      augment=augment,
      normalize=normalize,
      start_step=start_step,
      num_threads=config.input_threads,
      num_workers=config.input_workers,
      **self.processes,
    )

  def padded(self, source, **options) -> Callable[[], Iterator[EvalBatch]]:
    """One padded evaluation pass over `source`, this process's share of each batch."""
    return functools.partial(
      pipeline.padded_eval_batches,
      source,
      num_examples=len(source),
      local_batch_size=self.local_eval_batch_size,
      **options,
      **self.processes,
    )


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where the steps run: the device mesh, the global batch size per step and the mixing scope
  (see `parallel.resolve_mixing_scope`)."""

  mesh: Any
  batch_size: int
  mixing_scope: str


class DataSource(abc.ABC):
  """What the training loop reads from a dataset, whatever its kind.

  Attributes set by each source: `name` (the spec), `num_classes`, `num_train`, `example_shape`,
  `eval_batches` ({split: one padded pass}), `dataset_path` (where x_bar's cache file goes; None:
  not cached), `x_bar_fingerprint` (what x_bar depends on: names its cache file) and
  `device_preprocess` (what the train and eval steps apply to each batch on arrival, on the
  device; None: nothing).
  """

  name: str
  num_classes: int
  num_train: int
  example_shape: tuple[int, ...]
  eval_batches: dict[str, Callable[[], Iterator[EvalBatch]]]
  dataset_path: str | None = None
  x_bar_fingerprint: str = ""
  device_preprocess: Callable[[Any], Any] | None = None

  @abc.abstractmethod
  def train_batches(self, start_step: int) -> Iterator[Batch]:
    """This process's infinite stream of training batches from global step `start_step`."""

  @abc.abstractmethod
  def train_eval_batches(self) -> Iterator[EvalBatch]:
    """One padded pass over the training split as evaluation sees it (the split TRAIN_EVAL)."""

  @abc.abstractmethod
  def x_bar_batches(self) -> Iterator[np.ndarray]:
    """This process's training inputs x_bar is the mean of (config.x_bar_inputs: preprocessed
    and normalized, augmented once each or not at all)."""

  def eval_sources(self) -> dict[str, Callable[[], Iterator[EvalBatch]]]:
    """Every split evaluation can read: the evaluation splits and TRAIN_EVAL."""
    return {**self.eval_batches, TRAIN_EVAL: self.train_eval_batches}

  def placement(self, config) -> Placement:
    """Every device of the job, `config.batch_size` examples per step, the config's scope."""
    mesh = parallel.data_mesh()
    check_batch_sizes(config, mesh)
    return Placement(mesh, config.batch_size, config.mixing_scope)

  def model_options(self) -> dict[str, Any]:
    """Options the model takes from the data (none but a graph's edges)."""
    return {}

  def apply_fns(self, model, splits: Sequence[str]) -> ApplyFns:
    """The model in train mode, and in eval mode for every split (one compiled eval step)."""
    return flax_apply_fn(model, train=True), [(flax_apply_fn(model, train=False), tuple(splits))]

  def init_sample(self) -> np.ndarray:
    """What the model is initialized on: one example of zeros."""
    return np.zeros((1,) + tuple(self.example_shape), np.float32)


def check_batch_sizes(config, mesh) -> None:
  """The training and evaluation batches are >= 1 and split evenly over processes and devices."""
  for name in ("batch_size", "eval_batch_size"):
    size = config[name]
    if size < 1:
      raise ConfigError(f"{name} must be >= 1, got {size}.")
    if size % jax.process_count():
      raise ConfigError(
        f"{name} {size} is not divisible by the number of processes {jax.process_count()}."
      )
    try:
      parallel.check_divisible(size, mesh)
    except ValueError as error:
      raise ConfigError(f"{name}: {error}") from None


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


def _resize_fingerprint(config) -> str:
  """Without antialiasing the images differ; empty for the default, so that earlier runs' cached
  x_bar files keep their names."""
  return "" if config.resize_antialias else "|resize_antialias=False"


def _subset_fingerprint(config) -> str:
  """Empty without a subset, so that earlier runs' cached x_bar files keep their names."""
  if not config.train_subset:
    return ""
  return f"|subset={config.train_subset},subset_seed={config.train_subset_seed}"


def _refuse_in_memory_options(config, why: str) -> None:
  """train_subset and label_noise act on arrays in memory; elsewhere they are an error."""
  for field in ("train_subset", "label_noise"):
    if config[field]:
      raise ConfigError(f"{field} = {config[field]}: {config.dataset} {why}.")


class _BatchedSource(DataSource):
  """A source read in batches through `pipeline` (`self._train`, the training split's source):
  the training stream (`self._stream`), padded evaluation passes (`self._pass`) and x_bar's pass,
  normalized on the host (`self._normalize`), augmented once each or not (`self._x_bar_augment`).
  """

  _train: Any
  _stream: Callable[[int], Iterator[Batch]]
  _pass: Callable[..., Callable[[], Iterator[EvalBatch]]]
  _normalize: pipeline.ChannelNormalization | None
  _x_bar_augment: Callable | None
  _config: Any
  _shard: Shard

  def train_batches(self, start_step: int) -> Iterator[Batch]:
    return self._stream(start_step)

  def train_eval_batches(self) -> Iterator[EvalBatch]:
    return self._pass(self._train)()

  def _x_bar_pass(self, batch_size: int, preprocess=None) -> Iterator[np.ndarray]:
    """This process's training inputs through `pipeline.eval_batches`: normalized, and
    augmented once each when x_bar is over augmented inputs."""
    for images, _ in pipeline.eval_batches(
      self._train,
      batch_size=batch_size,
      preprocess=preprocess,
      normalize=self._normalize,
      augment=self._x_bar_augment,
      seed=self._config.seed,
      **self._shard.processes,
    ):
      yield images


class StreamedImages(_BatchedSource):
  """TFDS images streamed through `tfds.data_source`, normalized with the set's published
  statistics; resized and center-cropped to config.image_size when set (full-size JPEGs, as
  ImageNet's, reach the crop encoded and are decoded at the lowest DCT scale the crop allows)."""

  def __init__(self, config, shard: Shard):
    _refuse_in_memory_options(
      config,
      "is streamed from TFDS, and this option is for datasets loaded into memory "
      "(e.g. imagefolder:, idx:, cifar_pickle:)",
    )
    name, data_dir = config.dataset.removeprefix("tfds:"), config.get("data_dir") or None
    image_size = config.get("image_size") or None
    encoded = name == "imagenet2012" and image_size is not None
    self._train = pipeline.tfds_source(name, "train", data_dir, encoded=encoded)
    eval_split = TFDS_EVAL_SPLIT.get(name, "test")
    evaluated = pipeline.tfds_source(name, eval_split, data_dir, encoded=encoded)
    self._resize = None
    if image_size:
      self._resize = functools.partial(
        pipeline.resize_center_crop, size=image_size, antialias=config.resize_antialias
      )
    self._normalize = pipeline.normalizer(name)
    stream_normalize, self.device_preprocess = _normalization_side(config, self._normalize)
    augment = _augmentation(config, image_size)
    self._x_bar_augment, augmented = _x_bar_augmentation(config, augment)
    self._config, self._shard = config, shard
    example = np.asarray(self._train[0]["image"])
    channels = 3 if encoded else example.shape[-1]
    self.name = config.dataset
    self.num_classes = self._train.dataset_info.features["label"].num_classes
    self.num_train = len(self._train)
    self.example_shape = (image_size, image_size, channels) if image_size else example.shape
    self._stream = shard.train_stream(config, self._train, augment, stream_normalize)
    self._pass = functools.partial(
      shard.padded, preprocess=self._resize, normalize=stream_normalize
    )
    self.eval_batches = {eval_split: self._pass(evaluated)}
    self.dataset_path = data_dir
    self.x_bar_fingerprint = (
      f"{config.dataset}|{image_size}{augmented}{_resize_fingerprint(config)}"
    )

  def x_bar_batches(self) -> Iterator[np.ndarray]:
    # An augmentation yields the training size itself; plain images are resized as for eval.
    return self._x_bar_pass(256, preprocess=None if self._x_bar_augment else self._resize)


def _carved_splits(config, dataset: data_lib.ArrayDataset) -> dict[str, Batch]:
  """The dataset's splits as the config carves them: a training subset, noisy training labels,
  a validation split from the training split, standardized features; each refuses a config the
  data cannot take (e.g. a subset larger than the split) with a ConfigError."""
  spec = config.dataset
  try:
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
  return splits


class ArraysInMemory(_BatchedSource):
  """A dataset held in memory (every offline spec but a graph, and TFDS audio decoded whole):
  uint8 images normalized per channel with training-split statistics, features and spectrograms
  used as loaded, after `_carved_splits`."""

  def __init__(self, config, dataset: data_lib.ArrayDataset, shard: Shard, path: str | None):
    splits = _carved_splits(config, dataset)
    self._x, self._y = splits["train"]
    self._normalize: pipeline.ChannelNormalization | None = None
    if self._x.dtype == np.uint8:
      self._normalize = pipeline.channel_normalizer(*pipeline.channel_statistics(self._x))
    stream_normalize, self.device_preprocess = _normalization_side(config, self._normalize)
    augment = _augmentation(config, self._x.shape[1] if self._x.ndim == 4 else None)
    if augment is not None and self._x.ndim != 4:
      raise ConfigError(
        f"augment={config.augment!r} needs images; {config.dataset} has inputs of shape "
        f"{self._x.shape[1:]}."
      )
    self._x_bar_augment, augmented = _x_bar_augmentation(config, augment)
    self._config, self._shard = config, shard
    self.name, self.num_classes = config.dataset, dataset.num_classes
    self.num_train, self.example_shape = len(self._x), self._x.shape[1:]
    self._train = pipeline.ArraySource(self._x, self._y)
    self._stream = shard.train_stream(config, self._train, augment, stream_normalize)
    self._pass = functools.partial(shard.padded, normalize=stream_normalize)
    self.eval_batches = {
      split: self._pass(pipeline.ArraySource(x, y))
      for split, (x, y) in splits.items()
      if split != "train"
    }
    self.dataset_path = path
    self.x_bar_fingerprint = (
      f"{config.dataset}|validation={config.validation_fraction}|seed={config.seed}"
      f"{_subset_fingerprint(config)}{augmented}{_resize_fingerprint(config)}"
    )

  def x_bar_batches(self) -> Iterator[np.ndarray]:
    if self._x_bar_augment is not None:
      return self._x_bar_pass(1024)
    own = self._x[self._shard.process_index :: self._shard.process_count]
    return statistics.array_batches(own, 4096, self._normalize)


class Graph(DataSource):
  """Full-batch node classification: every step is all training nodes, evaluation one batch per
  split; the model sees the whole graph (see `models.gcn.node_apply_fn`), so each split has its
  own apply function, and training runs on one device."""

  def __init__(self, config, graph: data_lib.GraphDataset):
    _refuse_in_memory_options(config, "is a graph, whose training nodes are its split's")
    if config.graph_row_normalize:
      graph = dataclasses.replace(graph, features=graphs.row_normalized(graph.features))
    self._graph, self._ids = graph, graph.split_indices
    self.name, self.num_classes = config.dataset, graph.num_classes
    self.num_train, self.example_shape = len(self._ids["train"]), graph.features.shape[1:]
    self.eval_batches = {
      split: functools.partial(self._one_batch, split) for split in self._ids if split != "train"
    }

  def _nodes(self, split: str) -> Batch:
    ids = self._ids[split]
    return self._graph.features[ids], self._graph.labels[ids]

  def _one_batch(self, split: str) -> Iterator[EvalBatch]:
    yield (*self._nodes(split), np.ones(len(self._ids[split]), np.float32))

  def train_batches(self, start_step: int) -> Iterator[Batch]:
    del start_step  # Every step reads the same batch.
    while True:
      yield self._nodes("train")

  def train_eval_batches(self) -> Iterator[EvalBatch]:
    return self._one_batch("train")

  def x_bar_batches(self) -> Iterator[np.ndarray]:
    yield self._nodes("train")[0]

  def placement(self, config) -> Placement:
    """One device and the whole training set per step: there is no batch worth splitting, so
    pairing across the whole batch gathers nothing and does not depend on a device count."""
    if jax.process_count() > 1:
      raise ConfigError(f"{self.name}: full-batch data trains on one process.")
    return Placement(parallel.data_mesh(jax.local_devices()[:1]), self.num_train, "global")

  def model_options(self) -> dict[str, Any]:
    return {"edges": normalized_edges(self._graph.adjacency)}

  def apply_fns(self, model, splits: Sequence[str]) -> ApplyFns:
    nodes = {**self._ids, TRAIN_EVAL: self._ids["train"]}
    features = self._graph.features
    return node_apply_fn(model, features, self._ids["train"], train=True), [
      (node_apply_fn(model, features, nodes[split], train=False), (split,)) for split in splits
    ]

  def init_sample(self) -> np.ndarray:
    return self._graph.features


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


def _tfds_audio(config, shard: Shard) -> DataSource:
  """TFDS audio, decoded whole into log-mel arrays (see `data.audio`) and held in memory."""
  data_dir = config.get("data_dir") or None
  dataset = audio.load_tfds_audio(config.dataset.removeprefix("tfds:"), data_dir)
  return ArraysInMemory(config, dataset, shard, data_dir)


def _offline(config, shard: Shard) -> DataSource:
  """An offline spec as `data.load` reads it: a graph, or arrays held in memory."""
  dataset = _load_offline(config.dataset)
  if isinstance(dataset, data_lib.GraphDataset):
    return Graph(config, dataset)
  return ArraysInMemory(config, dataset, shard, data_lib.dataset_path(config.dataset))


def source_kind(spec: str) -> str:
  """The kind of source that reads `spec`: TFDS images, TFDS audio, or offline (arrays or a
  graph, whichever `data.load` returns)."""
  if not spec.startswith("tfds:"):
    return "offline"
  return "tfds_audio" if spec.removeprefix("tfds:") in audio.TFDS_AUDIO_DATASETS else "tfds_images"


SOURCES: dict[str, Callable[[Any, Shard], DataSource]] = {
  "tfds_images": StreamedImages,
  "tfds_audio": _tfds_audio,
  "offline": _offline,
}


def build_inputs(
  config,
  *,
  local_batch_size: int,
  local_eval_batch_size: int,
  process_index: int,
  process_count: int,
) -> DataSource:
  """The data source of `config.dataset` (this process's shard); a clear error for an unknown
  dataset."""
  shard = Shard(local_batch_size, local_eval_batch_size, process_index, process_count)
  return SOURCES[source_kind(config.dataset)](config, shard)


def compute_x_bar(inputs: DataSource) -> np.ndarray:
  """x_bar over the training inputs of every process (augmented once each, or plain, as the
  config chose), cached outside the data (see `statistics.cache_path_for`)."""
  cache_path = None
  if inputs.dataset_path is not None:
    cache_path = statistics.cache_path_for(inputs.dataset_path, inputs.x_bar_fingerprint)
  return statistics.streamed_x_bar(inputs.x_bar_batches, cache_path=cache_path)
