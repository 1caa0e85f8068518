"""Image input pipelines with grain over random-access sources.

Sources: `tfds.data_source(name, split)` (the ArrayRecord files TFDS prepares) for cifar10,
cifar100, svhn_cropped and imagenet2012, or `ArraySource` over an in-memory dataset from the offline
loaders, so both go through the same pipeline. Why grain rather than tf.data, by measurement
(`benchmarks/input_pipeline.py`, 2 CPU cores, 2 threads each, same arrays and JPEG bytes): tf.data
is faster per core (CIFAR pad-crop-flip 22,099 vs grain 8,678 examples/s; ImageNet Inception crop
950 vs 627 with tf.image.resize's default, 570 vs 627 when tf.data antialiases as PIL does; eval
776 vs 360), but both run 5x to 140x faster than the train step on the same machine, so neither
is the bottleneck there. grain is kept because it reads the same files by
random access: the shuffle is one seeded permutation of the whole source per epoch, each host
reads its rows of every global batch (so the order does not depend on the host count), and
resuming at step s is reading batch s (exact, tested), which tf.data's iterator state does not
give across a changed host count. On an accelerator host feeding ImageNet, budget
input cores from the per-core rate above (about 160-300 examples/s per core). Full-size JPEGs
(ImageNet) stay encoded until the crop (`tfds_source(..., encoded=True)`): `random_resized_crop`
and `resize_center_crop` then decode only the resolution their window needs and resize it
straight from the decoder. Batches leave as
uint8 when the steps normalize on the device (`ChannelNormalization.on_device`). Augmentation
runs in NumPy with a per-example generator derived from (seed, epoch-position), so every stream is
deterministic::

    batches = train_batches(tfds_source("cifar10", "train"), batch_size=128, seed=0,
                            augment=cifar_augment, normalize=normalizer("cifar10"))
    images, labels = next(batches)   # float32 [128, 32, 32, 3], int32 [128]
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from collections.abc import Callable, Iterator
from typing import Any

import grain
import numpy as np
from PIL import Image

TFDS_IMAGE_DATASETS = ("cifar10", "cifar100", "svhn_cropped", "imagenet2012")

# Per-channel mean and std of the training images in [0, 1] (the usual published constants).
CHANNEL_STATISTICS = {
  "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
  "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
  "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

Example = dict[str, Any]


class ArraySource:
  """A random-access source over arrays: source[i] = {"image": inputs[i], "label": labels[i]}."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray):
    if len(inputs) != len(labels):
      raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels.")
    self.inputs, self.labels = inputs, labels

  def __len__(self) -> int:
    return len(self.inputs)

  def __getitem__(self, index: int) -> Example:
    return {"image": self.inputs[index], "label": self.labels[index]}


def tfds_source(name: str, split: str, data_dir: str | None = None, *, encoded: bool = False):
  """`tfds.data_source` for one of TFDS_IMAGE_DATASETS (prepared ArrayRecord files). With
  `encoded`, images stay the stored JPEG/PNG bytes (`tfds.decode.SkipDecoding`), so that
  `random_resized_crop` and `resize_center_crop` decode them at the resolution their window
  needs."""
  if name not in TFDS_IMAGE_DATASETS:
    raise ValueError(
      f"Unknown TFDS image dataset {name!r}; valid: {', '.join(TFDS_IMAGE_DATASETS)}."
    )
  import tensorflow_datasets as tfds

  decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
  return tfds.data_source(name, split=split, data_dir=data_dir, decoders=decoders)


def normalizer(name: str) -> ChannelNormalization:
  """uint8 images -> float32 (x / 255 - mean) / std with the dataset's channel statistics."""
  if name not in CHANNEL_STATISTICS:
    raise ValueError(f"No channel statistics for {name!r}; known: {', '.join(CHANNEL_STATISTICS)}.")
  return channel_normalizer(*CHANNEL_STATISTICS[name])


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 images [N, H, W, C] scaled to [0, 1]."""
  scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return scaled.mean(axis=0), scaled.std(axis=0)


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelNormalization:
  """x -> (x / 255 - mean) / std per channel, in float32, on either side of the host-to-device copy.

  Calling it normalizes a NumPy batch on the host (one float32 buffer, the rest in place);
  `on_device` is the same three float32 operations in `jax.numpy`, for a jitted step that receives
  the uint8 batch: a quarter of the bytes to copy and no float work on the input cores. Being
  affine and applied before any mixing, the two give the model the same inputs to float32
  rounding: XLA turns the divisions into multiplications by reciprocals and fuses them (within
  1e-6 of the host's, tested), so a run differs from the host-normalized one in the last bits.
  """

  mean: np.ndarray
  std: np.ndarray

  def __post_init__(self):
    object.__setattr__(self, "mean", np.asarray(self.mean, np.float32))
    object.__setattr__(self, "std", np.asarray(self.std, np.float32))
    if np.any(self.std <= 0):
      raise ValueError(f"Channel std must be positive, got {self.std}.")

  def __call__(self, images: np.ndarray) -> np.ndarray:
    out = np.asarray(images).astype(np.float32)  # The only copy; the rest is in place.
    out /= 255.0
    out -= self.mean
    out /= self.std
    return out

  def on_device(self, images):
    import jax.numpy as jnp

    return (images.astype(jnp.float32) / 255.0 - self.mean) / self.std


def channel_normalizer(mean, std) -> ChannelNormalization:
  """uint8 images -> float32 (x / 255 - mean) / std per channel (`ChannelNormalization`)."""
  return ChannelNormalization(mean, std)


def cifar_augment(
  image: np.ndarray, rng: np.random.Generator, padding: int = 4, flip: bool = True
) -> np.ndarray:
  """Zero-pad by `padding`, take a random crop of the original size, flip left-right (p = 1/2).

  The padded image is never built: the window at (top, left) of the padded image is the original
  shifted by (top - padding, left - padding), copied into zeros (4x faster than `np.pad` and a
  slice, the same pixels and draws; tested)."""
  height, width = image.shape[:2]
  top, left = rng.integers(0, 2 * padding + 1, size=2)
  shift_y, shift_x = int(top) - padding, int(left) - padding
  crop = np.zeros_like(image)
  rows = slice(max(0, -shift_y), min(height, height - shift_y))
  cols = slice(max(0, -shift_x), min(width, width - shift_x))
  crop[rows, cols] = image[
    rows.start + shift_y : rows.stop + shift_y, cols.start + shift_x : cols.stop + shift_x
  ]
  return crop[:, ::-1] if flip and rng.random() < 0.5 else crop


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


ImageInput = np.ndarray | bytes  # Decoded pixels [H, W, C], or the encoded file (JPEG, PNG).


def _open_encoded(encoded: bytes) -> Image.Image:
  """The image's header only: PIL decodes on `load`, `resize` or `convert`."""
  return Image.open(io.BytesIO(encoded))


def _bilinear_box(
  pixels: np.ndarray, box: tuple[float, float, float, float], height: int, width: int
) -> np.ndarray:
  """The box (left, top, right, bottom) of an array resized to height x width by bilinear
  interpolation WITHOUT antialiasing, as tf.image.resize's default: each output pixel samples the
  4 input pixels around its centre, whatever the scale (half-pixel centres; OpenCV's INTER_LINEAR
  through an affine warp, so that the box may be fractional). Downscaling aliases."""
  cv2 = _opencv()
  left, top, right, bottom = box
  scale_x, scale_y = (right - left) / width, (bottom - top) / height
  # Output pixel centre x + 1/2 samples the input at left + (x + 1/2) scale_x - 1/2. In float64,
  # the precision OpenCV computes the map in.
  matrix = np.asarray(
    [[scale_x, 0.0, left + 0.5 * scale_x - 0.5], [0.0, scale_y, top + 0.5 * scale_y - 0.5]]
  )
  return cv2.warpAffine(
    np.ascontiguousarray(pixels),
    matrix,
    (width, height),
    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
    borderMode=cv2.BORDER_REPLICATE,
  )


def _opencv():
  """OpenCV, which resize_antialias=False needs, or an error saying how to install it."""
  try:
    import cv2
  except ImportError as error:
    raise ImportError(
      "resize_antialias=False resizes with OpenCV: pip install opencv-python-headless "
      "(or mixupe_jax[opencv])."
    ) from error
  return cv2


def _opencv_decode(data: bytes, scale: int) -> np.ndarray | None:
  """A JPEG decoded at 1 / scale (1, 2, 4 or 8) by OpenCV, as a BGR array; None if it fails."""
  cv2 = _opencv()
  reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
  flag = reduced.get(scale, cv2.IMREAD_REDUCED_COLOR_8) | cv2.IMREAD_IGNORE_ORIENTATION
  return cv2.imdecode(np.frombuffer(data, np.uint8), flag)  # PIL ignores EXIF orientation too.


def _decode_region(
  image: Image.Image,
  box: tuple[float, float, float, float],
  height: int,
  width: int,
  antialias: bool,
  data: bytes | None,
) -> np.ndarray:
  """The box (left, top, right, bottom) of an encoded image resized to height x width, RGB.

  For a JPEG, `draft` first picks the largest DCT scaling (1/2, 1/4, 1/8) at which the box still
  has at least height x width pixels, so the decoder produces only the resolution the output
  needs; the crop happens inside `resize(box=...)`, with no full-size copy. Without `antialias`,
  OpenCV decodes the JPEG's bytes (`data`) at the same DCT scale (the same pixels: tested) straight
  into an array, and `_bilinear_box` resizes.
  """
  left, top, right, bottom = box
  full_width, full_height = image.size
  if image.format == "JPEG":
    needed = (
      int(-(-full_width * width // (right - left))),
      int(-(-full_height * height // (bottom - top))),
    )
    image.draft(image.mode, needed)  # Sets the scale and size; decodes nothing yet.
    factor_x, factor_y = image.size[0] / full_width, image.size[1] / full_height
    box = (left * factor_x, top * factor_y, right * factor_x, bottom * factor_y)
    if not antialias and data is not None and image.mode in ("RGB", "L"):
      bgr = _opencv_decode(data, round(full_width / image.size[0]))
      if bgr is not None and bgr.shape[1::-1] == image.size:
        # Resized in BGR, then the small output's channels reversed: no full-size copy.
        return np.ascontiguousarray(_bilinear_box(bgr, box, height, width)[..., ::-1])
  if not antialias:
    return _bilinear_box(np.asarray(image.convert("RGB")), box, height, width)
  if image.mode not in ("RGB", "L"):
    image = image.convert("RGB")
  out = image.resize((width, height), Image.Resampling.BILINEAR, box=box)
  return np.asarray(out.convert("RGB") if out.mode != "RGB" else out)


def inception_window(
  height: int,
  width: int,
  rng: np.random.Generator,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """(top, left, crop_height, crop_width): area fraction ~ U(scale), log aspect ~ U(log ratio);
  the central square after 10 failed draws."""
  for _ in range(10):
    area = height * width * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    crop_width = int(round(np.sqrt(area * aspect)))
    crop_height = int(round(np.sqrt(area / aspect)))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      top = rng.integers(0, height - crop_height + 1)
      left = rng.integers(0, width - crop_width + 1)
      return int(top), int(left), crop_height, crop_width
  crop_height = crop_width = min(height, width)
  return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def random_resized_crop(
  image: ImageInput,
  rng: np.random.Generator,
  size: int = 224,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
  antialias: bool = True,
) -> np.ndarray:
  """Inception-style crop (`inception_window`) resized to size x size, flipped left-right with
  p = 1/2. `image` is decoded pixels or the encoded file: then the file is decoded at the
  resolution the window needs and the window resized from the decoder's image (`_decode_region`);
  the random draws are the same either way. The resize is PIL's BILINEAR, antialiased (a triangle
  filter as wide as the downscaling); `antialias=False` samples 4 pixels per output pixel instead
  (`_bilinear_box`, tf.image.resize's default): other pixels, a fifth less time per crop."""
  if isinstance(image, bytes):
    encoded = _open_encoded(image)
    width, height = encoded.size
    top, left, crop_height, crop_width = inception_window(height, width, rng, scale, ratio)
    crop = _decode_region(
      encoded, (left, top, left + crop_width, top + crop_height), size, size, antialias, image
    )
  else:
    image_height, image_width = image.shape[:2]
    top, left, crop_height, crop_width = inception_window(
      image_height, image_width, rng, scale, ratio
    )
    if antialias:
      crop = _resize(image[top : top + crop_height, left : left + crop_width], size, size)
    else:
      box = (left, top, left + crop_width, top + crop_height)
      crop = _bilinear_box(np.asarray(image), box, size, size)
  return crop[:, ::-1] if rng.random() < 0.5 else crop


def resize_center_crop(
  image: ImageInput, size: int = 224, crop_fraction: float = 0.875, antialias: bool = True
) -> np.ndarray:
  """Evaluation: resize the short side to size / crop_fraction, then the central size x size.
  An encoded image is decoded at the resolution the resize needs, and the crop's window in the
  original's coordinates is resized directly (`_decode_region`); `antialias` as in
  `random_resized_crop`."""
  data = image if isinstance(image, bytes) else None
  encoded = _open_encoded(data) if data is not None else None
  if encoded is not None:
    width, height = encoded.size
  else:
    height, width = np.asarray(image).shape[:2]
  short = int(round(size / crop_fraction))
  new_height, new_width = (
    (short, max(short, round(width * short / height)))
    if height <= width
    else (max(short, round(height * short / width)), short)
  )
  top, left = (new_height - size) // 2, (new_width - size) // 2
  # The crop's window in the original's coordinates.
  scale_y, scale_x = height / new_height, width / new_width
  box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
  if encoded is not None:
    return _decode_region(encoded, box, size, size, antialias, data)
  if not antialias:
    return _bilinear_box(np.asarray(image), box, size, size)
  resized = _resize(np.asarray(image), new_height, new_width)
  return resized[top : top + size, left : left + size]


def _pixels(image: Any) -> ImageInput:
  """An example's image as the augmentations take it: encoded bytes as they are, else an array."""
  return image if isinstance(image, bytes) else np.asarray(image)


def _process_of(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """(this process's index, the process count): as given, or JAX's when the count is None."""
  if process_count is None or process_index is None:
    import jax

    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
  return process_index, process_count


def _process_shard(dataset, process_index: int | None, process_count: int | None):
  process_index, process_count = _process_of(process_index, process_count)
  return dataset[process_index::process_count]


def _stack(examples: list[Example], normalize) -> tuple[np.ndarray, np.ndarray]:
  images = np.stack([np.asarray(e["image"]) for e in examples])
  labels = np.asarray([e["label"] for e in examples], np.int32)
  return (normalize(images) if normalize else images), labels


def train_batches(
  source,
  *,
  batch_size: int,
  seed: int,
  augment: Callable[[ImageInput, np.random.Generator], np.ndarray] | None = None,
  normalize: Callable[[np.ndarray], np.ndarray] | None = None,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
  num_threads: int = 2,
  num_workers: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """An infinite, deterministic stream of this process's (images, labels) training batches.

  The data order does not depend on the topology: every epoch is one seeded permutation of the
  whole source, cut into global batches of `batch_size * process_count` examples, and process p
  reads rows p * batch_size ... (p + 1) * batch_size - 1 of each. Augmentation draws come from
  (seed, position in that global stream). So the same seed gives the same global batches on 1 or
  N processes, and resuming with `start_step=s` continues exactly where step s - 1 left off.
  `num_threads` reader threads per process, with a prefetch buffer of 4 batches; `num_workers` > 0
  reads in that many worker processes (grain's `mp_prefetch`: for work that holds the GIL), the
  same batches in the same order.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  process_index, process_count = _process_of(process_index, process_count)
  dataset = grain.MapDataset.source(source)
  global_batch = batch_size * process_count
  if len(dataset) < global_batch:
    raise ValueError(
      f"The dataset has {len(dataset)} examples, fewer than the global batch size "
      f"{global_batch} ({batch_size} per process x {process_count})."
    )
  stream = dataset.shuffle(seed=seed).repeat(None)
  if augment is not None:
    stream = stream.random_map(
      lambda e, rng: {**e, "image": augment(_pixels(e["image"]), rng)}, seed=seed
    )
  offset = process_index * batch_size

  def global_position(index: int) -> int:
    step, row = divmod(index, batch_size)
    return step * global_batch + offset + row

  rows = grain.MapDataset.range(len(stream) // global_batch * batch_size).map(
    lambda index: stream[global_position(index)]
  )
  batches = rows.batch(
    batch_size, drop_remainder=True, batch_fn=functools.partial(_stack, normalize=normalize)
  )
  iterator = batches.slice(slice(start_step, None)).to_iter_dataset(
    grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4 * batch_size)
  )
  if num_workers > 0:
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; a script or notebook gets
      flags.FLAGS.mark_as_parsed()  # their defaults instead of an UnparsedFlagAccessError.
    # Each worker process reads every num_workers-th batch; the batches come back in order.
    iterator = iterator.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(iterator)


def eval_batches(
  source,
  *,
  batch_size: int,
  preprocess: Callable[[ImageInput], np.ndarray] | None = None,
  normalize: Callable[[np.ndarray], np.ndarray] | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  augment: Callable[[ImageInput, np.random.Generator], np.ndarray] | None = None,
  seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One pass over this process's shard in order; the last batch may be smaller.

  With `augment`, every example is augmented once by a generator derived from (seed, its index in
  the whole source), so the pass holds the same images whatever the process count (x_bar over
  augmented training inputs uses it).
  """
  dataset = grain.MapDataset.source(source)
  if augment is not None:
    dataset = dataset.random_map(
      lambda e, rng: {**e, "image": augment(_pixels(e["image"]), rng)}, seed=seed
    )
  shard = _process_shard(dataset, process_index, process_count)
  if preprocess is not None:
    shard = shard.map(lambda e: {**e, "image": preprocess(_pixels(e["image"]))})
  batches = shard.batch(batch_size, batch_fn=functools.partial(_stack, normalize=normalize))
  return (batches[i] for i in range(len(batches)))


def padded_eval_batches(
  source,
  *,
  num_examples: int,
  local_batch_size: int,
  process_index: int,
  process_count: int,
  preprocess=None,
  normalize=None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """This process's shard in order as (inputs, labels, mask), every batch `local_batch_size`
  long, and as many batches on every process: ceil(ceil(N / P) / local_batch_size). Padding rows
  are zeros of the batch's dtypes with mask 0 (float32); a shard one example short of another's
  may end with a batch of padding only."""
  if num_examples < process_count:
    raise ValueError(
      f"{num_examples} evaluation examples leave some of the {process_count} processes without "
      "any: each needs at least one."
    )
  num_batches = math.ceil(math.ceil(num_examples / process_count) / local_batch_size)
  batches = eval_batches(
    source,
    batch_size=local_batch_size,
    preprocess=preprocess,
    normalize=normalize,
    process_index=process_index,
    process_count=process_count,
  )
  batch = next(batches)  # Every process holds an example (checked above).
  empty = batch[0][:0], batch[1][:0]
  for _ in range(num_batches):
    inputs, labels = batch
    count = len(labels)
    mask = np.zeros(local_batch_size, np.float32)
    mask[:count] = 1.0
    pad = local_batch_size - count
    inputs = np.concatenate([inputs, np.zeros((pad,) + inputs.shape[1:], inputs.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    yield inputs, labels, mask
    # A shard one example short of another's ends with a batch of padding only.
    batch = next(batches, empty)
