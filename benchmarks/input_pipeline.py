"""Examples/s of the image input pipelines, grain against tf.data, in rounds of one run.

Pipelines (grain, `mixupe_jax.data.pipeline`, as `train.py` runs them):
  cifar_train     32x32 uint8 from memory, pad-crop-flip              (the CIFAR / SVHN configs)
  cifar_eval      the same without augmentation
  imagenet_train  JPEG bytes (375x500, ImageNet's typical size), Inception crop to 224
  imagenet_eval   JPEG, resize + center crop to 224
Batches leave as uint8, since the steps normalize on the device (`config.normalize_on_device`, the
default); the `+ host normalize` rows normalize on the host as before, to show its cost. The grain
rows run with `--threads` reader threads, and with 1 and 2 worker processes of one thread each
(`config.input_workers`), and the ImageNet ones with `config.resize_antialias = False` too (bilinear
without antialiasing, as tf.image.resize's default). The same four pipelines in tf.data (TensorFlow
ops, the same thread count, the same arrays and JPEG bytes) run normalized, as tf.data pipelines
usually are, and shipping uint8; the ImageNet train crop also with the antialiased resize that PIL's
BILINEAR downscaling (and so grain's) performs. Every pipeline runs once per round, the rounds
interleaved, so slow phases of the machine hit every row; the table gives medians over rounds, per
core (examples/s over the cores the pipeline keeps busy: its threads, or its workers), and the
per-round ratios of grain to tf.data with their spread. Besides: JPEG decoders and resizers per
example on one thread (PIL, OpenCV, and simplejpeg when installed), the host-to-device bytes of a
batch, and the PreActResNet-18 train step's examples/s on this backend.
The CIFAR images are the real CIFAR-10 training images when `--cifar-zip` exists (default
../shared/data/cifar10/cifar10_jpeg.zip), otherwise random ones (same cost).

    python benchmarks/input_pipeline.py --out benchmarks/results/input_pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import statistics
import time

import numpy as np
from PIL import Image
from provenance import provenance  # benchmarks/provenance.py, beside this script.

from mixupe_jax.data import pipeline


class JpegSource:
  """JPEG bytes handed on encoded, as `pipeline.tfds_source(..., encoded=True)` does for
  ImageNet."""

  def __init__(self, encoded: list[bytes], labels: np.ndarray):
    self.encoded, self.labels = encoded, labels

  def __len__(self):
    return len(self.encoded)

  def __getitem__(self, index):
    return {"image": self.encoded[index], "label": self.labels[index]}


def examples_per_second(batches, batch_size: int, num_batches: int) -> float:
  for _ in range(2):  # Start the reader threads or worker processes.
    next(batches)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(batches)
  rate = num_batches * batch_size / (time.perf_counter() - start)
  if hasattr(batches, "close"):
    batches.close()
  return rate


def cifar_images(path: str, count: int, rng) -> tuple[np.ndarray, str]:
  if os.path.exists(path):
    from mixupe_jax.data import images

    train_x, _ = images.load_image_folder(path).splits["train"]
    return train_x[:count], f"CIFAR-10 from {path}"
  return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), "random 32x32 (zip absent)"


def tf_data_pipelines(cifar, labels, encoded, args) -> dict:
  """name -> (make the batches' iterator, batch size, batches to time): the same pipelines written
  in tf.data, normalized and as uint8."""
  from mixupe_jax.data.base import require_tensorflow

  require_tensorflow("The tf.data half of this benchmark")
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")  # Input pipelines run on the host.
  options = tf.data.Options()
  options.threading.private_threadpool_size = args.threads
  options.deterministic = True
  parallel = args.threads

  def normalizer(dataset):
    mean, std = (tf.constant(v) for v in pipeline.CHANNEL_STATISTICS[dataset])
    return lambda image: (tf.cast(image, tf.float32) / 255.0 - mean) / std

  cifar_normalize, imagenet_normalize = normalizer("cifar10"), normalizer("imagenet2012")

  def uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

  def cifar_augment(image, label, normalize=cifar_normalize):
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.random_flip_left_right(tf.image.random_crop(padded, [32, 32, 3]))
    return normalize(image), label

  def inception_crop(data, label, antialias=False, normalize=imagenet_normalize):
    shape = tf.image.extract_jpeg_shape(data)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
      shape,
      tf.zeros([0, 0, 4]),
      area_range=(0.08, 1.0),
      aspect_ratio_range=(3 / 4, 4 / 3),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    image = tf.image.resize(image, [224, 224], antialias=antialias)
    return normalize(tf.image.random_flip_left_right(image)), label

  def center_crop(data, label, normalize=imagenet_normalize):
    image = tf.image.decode_jpeg(data, channels=3)
    shape = tf.shape(image)
    scale = 256.0 / tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    new_size = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
    image = tf.image.resize_with_crop_or_pad(tf.image.resize(image, new_size), 224, 224)
    return normalize(image), label

  identity = lambda image: image  # noqa: E731

  small = 32
  jpeg_labels = (np.arange(len(encoded)) % 10).astype(np.int32)
  cifar_data = lambda: tf.data.Dataset.from_tensor_slices((cifar, labels))  # noqa: E731
  jpeg_data = lambda: tf.data.Dataset.from_tensor_slices((encoded, jpeg_labels))  # noqa: E731
  pipelines = {
    "cifar_train": lambda: (
      cifar_data()
      .shuffle(len(cifar), seed=0)
      .repeat()
      .map(cifar_augment, num_parallel_calls=parallel)
    ),
    "cifar_train uint8": lambda: (
      cifar_data()
      .shuffle(len(cifar), seed=0)
      .repeat()
      .map(lambda image, label: cifar_augment(image, label, identity), num_parallel_calls=parallel)
    ),
    "cifar_eval": lambda: (
      cifar_data()
      .repeat()
      .map(lambda image, label: (cifar_normalize(image), label), num_parallel_calls=parallel)
    ),
    "imagenet_train": lambda: (
      jpeg_data()
      .shuffle(len(encoded), seed=0)
      .repeat()
      .map(inception_crop, num_parallel_calls=parallel)
    ),
    "imagenet_train uint8": lambda: (
      jpeg_data()
      .shuffle(len(encoded), seed=0)
      .repeat()
      .map(
        lambda data, label: inception_crop(data, label, normalize=uint8),
        num_parallel_calls=parallel,
      )
    ),
    # The antialiased (triangle-filter) downscaling that PIL's BILINEAR resize performs.
    "imagenet_train antialiased uint8": lambda: (
      jpeg_data()
      .shuffle(len(encoded), seed=0)
      .repeat()
      .map(
        lambda data, label: inception_crop(data, label, antialias=True, normalize=uint8),
        num_parallel_calls=parallel,
      )
    ),
    "imagenet_eval": lambda: jpeg_data().repeat().map(center_crop, num_parallel_calls=parallel),
    "imagenet_eval uint8": lambda: (
      jpeg_data()
      .repeat()
      .map(
        lambda data, label: center_crop(data, label, normalize=uint8), num_parallel_calls=parallel
      )
    ),
  }

  def batches(make, batch_size):
    dataset = make().batch(batch_size, drop_remainder=True).prefetch(4).with_options(options)
    return lambda: dataset.as_numpy_iterator()

  return {
    name: (
      batches(make, args.batch_size if name.startswith("cifar") else small),
      args.batch_size if name.startswith("cifar") else small,
      args.batches if name.startswith("cifar") else args.jpeg_batches,
    )
    for name, make in pipelines.items()
  }


def train_step_rate(method: str, batch_size: int, repeats: int) -> float:
  import jax
  import jax.numpy as jnp
  from train_throughput import compiled_train_step  # The sibling benchmark's step builder.

  from mixupe_jax.models import PreActResNet18

  inputs = jax.random.normal(jax.random.key(0), (batch_size, 32, 32, 3))
  labels = jnp.arange(batch_size) % 10
  options = dict(method=method, eta=1.0, variant="v1")
  step, state, batch = compiled_train_step(
    PreActResNet18(num_classes=10), options, inputs, labels, 10
  )
  state, metrics = step(state, *batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = step(state, *batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return batch_size / statistics.median(times)


def decoder_milliseconds(encoded: list[bytes], repeats: int) -> dict[str, float]:
  """ms per example on one thread, the candidates interleaved over `repeats` passes: full decodes
  by PIL, OpenCV and (when installed) simplejpeg; the Inception crop to 224 as the pipeline does
  it by default (PIL's draft decode + antialiased resize) and with `resize_antialias=False`
  (OpenCV's decode at the same DCT scale + bilinear without antialiasing)."""
  import cv2

  cv2.setNumThreads(1)
  bilinear = functools.partial(pipeline.random_resized_crop, antialias=False)
  candidates = {
    "decode, PIL": lambda image, rng: np.asarray(Image.open(io.BytesIO(image)).convert("RGB")),
    "decode, OpenCV": lambda image, rng: cv2.imdecode(np.frombuffer(image, np.uint8), 1),
    "crop, PIL decode + antialiased resize (the default)": pipeline.random_resized_crop,
    "crop, OpenCV decode + bilinear without antialiasing (resize_antialias=False)": bilinear,
  }
  try:
    import simplejpeg
  except ImportError:
    print("simplejpeg is not installed: its row is left out (pip install simplejpeg).")
  else:
    candidates["decode, simplejpeg"] = lambda image, rng: simplejpeg.decode_jpeg(image)
  times: dict[str, list[float]] = {name: [] for name in candidates}
  for _ in range(repeats):
    for name, decode in candidates.items():
      start = time.perf_counter()
      for index, image in enumerate(encoded):
        decode(image, np.random.default_rng(index))
      times[name].append((time.perf_counter() - start) / len(encoded) * 1e3)
  return {name: statistics.median(values) for name, values in times.items()}


def transfer_costs(batch_size: int, repeats: int) -> dict[str, float]:
  """An ImageNet batch's host-to-device bytes as float32 and as uint8, the median ms of
  `jax.device_put` for each on this backend, and of the on-device normalization (jitted)."""
  import jax

  normalization = pipeline.normalizer("imagenet2012")
  pixels = np.random.default_rng(0).integers(0, 256, (batch_size, 224, 224, 3), dtype=np.uint8)
  floats = normalization(pixels)
  on_device = jax.jit(normalization.on_device)

  def median_ms(run) -> float:
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(run())
      times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)

  resident = jax.device_put(pixels)
  return {
    "batch_size": batch_size,
    "bytes_float32": floats.nbytes,
    "bytes_uint8": pixels.nbytes,
    "device_put_ms_float32": median_ms(lambda: jax.device_put(floats)),
    "device_put_ms_uint8": median_ms(lambda: jax.device_put(pixels)),
    "host_normalize_ms": median_ms(lambda: normalization(pixels)),
    "device_normalize_ms": median_ms(lambda: on_device(resident)),
  }


def grain_pipelines(cifar, labels, jpegs, args) -> dict:
  """name -> (make the batches' iterator, batch size, batches to time, cores it keeps busy)."""
  imagenet_normalize = pipeline.normalizer("imagenet2012")
  cifar_normalize = pipeline.normalizer("cifar10")
  cifar_source = pipeline.ArraySource(cifar, labels)
  small = 32  # ImageNet batches of 32: 256 JPEGs make 8 batches per epoch.
  cores = os.cpu_count() or 1

  def train(source, augment, batch_size, normalize=None, threads=args.threads, workers=0):
    return lambda: pipeline.train_batches(
      source,
      batch_size=batch_size,
      seed=0,
      augment=augment,
      normalize=normalize,
      process_index=0,
      process_count=1,
      num_threads=threads,
      num_workers=workers,
    )

  def evaluate(source, batch_size, preprocess=None, normalize=None):
    return lambda: pipeline.eval_batches(
      source,
      batch_size=batch_size,
      preprocess=preprocess,
      normalize=normalize,
      process_index=0,
      process_count=1,
    )

  threads = min(args.threads, cores)
  rows = {
    "cifar_train": (
      train(cifar_source, pipeline.cifar_augment, args.batch_size),
      args.batch_size,
      args.batches,
      threads,
    ),
    "cifar_train + host normalize": (
      train(cifar_source, pipeline.cifar_augment, args.batch_size, cifar_normalize),
      args.batch_size,
      args.batches,
      threads,
    ),
    "cifar_eval": (
      evaluate(cifar_source, args.batch_size),
      args.batch_size,
      min(args.batches, len(cifar) // args.batch_size - 3),
      1,
    ),
    "imagenet_train": (
      train(jpegs, pipeline.random_resized_crop, small),
      small,
      args.jpeg_batches,
      threads,
    ),
    "imagenet_train + host normalize": (
      train(jpegs, pipeline.random_resized_crop, small, imagenet_normalize),
      small,
      args.jpeg_batches,
      threads,
    ),
    "imagenet_eval": (
      evaluate(jpegs, small, pipeline.resize_center_crop),
      small,
      min(args.jpeg_batches, len(jpegs) // small - 3),
      1,
    ),
    "imagenet_eval + host normalize": (
      evaluate(jpegs, small, pipeline.resize_center_crop, imagenet_normalize),
      small,
      min(args.jpeg_batches, len(jpegs) // small - 3),
      1,
    ),
  }
  no_antialias = dict(antialias=False)
  rows["imagenet_train, resize_antialias=False"] = (
    train(jpegs, functools.partial(pipeline.random_resized_crop, **no_antialias), small),
    small,
    args.jpeg_batches,
    threads,
  )
  rows["imagenet_eval, resize_antialias=False"] = (
    evaluate(jpegs, small, functools.partial(pipeline.resize_center_crop, **no_antialias)),
    small,
    min(args.jpeg_batches, len(jpegs) // small - 3),
    1,
  )
  for workers in (1, 2):
    rows[f"cifar_train, {workers} worker(s)"] = (
      train(cifar_source, pipeline.cifar_augment, args.batch_size, threads=1, workers=workers),
      args.batch_size,
      args.batches,
      min(workers, cores),
    )
    rows[f"imagenet_train, {workers} worker(s)"] = (
      train(jpegs, pipeline.random_resized_crop, small, threads=1, workers=workers),
      small,
      args.jpeg_batches,
      min(workers, cores),
    )
  return rows


# The comparisons: grain's row (as train.py runs it) against tf.data's default pipeline.
COMPARISONS = (
  ("cifar_train", "cifar_train"),
  ("cifar_train, 2 worker(s)", "cifar_train"),
  ("cifar_train, 2 worker(s)", "cifar_train uint8"),
  ("imagenet_train", "imagenet_train"),
  ("imagenet_train", "imagenet_train uint8"),
  ("imagenet_train", "imagenet_train antialiased uint8"),
  ("imagenet_train, resize_antialias=False", "imagenet_train"),
  ("imagenet_train, resize_antialias=False", "imagenet_train uint8"),
  ("imagenet_eval", "imagenet_eval"),
  ("imagenet_eval", "imagenet_eval uint8"),
  ("imagenet_eval, resize_antialias=False", "imagenet_eval"),
  ("imagenet_eval, resize_antialias=False", "imagenet_eval uint8"),
)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cifar-zip", default="../shared/data/cifar10/cifar10_jpeg.zip")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--batches", type=int, default=30, help="CIFAR batches timed per round.")
  parser.add_argument("--jpeg-batches", type=int, default=10, help="ImageNet batches of 32.")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--step-repeats", type=int, default=3)
  parser.add_argument("--out", default="benchmarks/input_pipeline.json")
  args = parser.parse_args()
  from mixupe_jax import xla_cpu

  xla_cpu.configure()  # The train steps it compares with, as train.py runs them.
  rng = np.random.default_rng(0)

  count = max(4096, args.batch_size * (args.batches + 4))
  cifar, cifar_origin = cifar_images(args.cifar_zip, count, rng)
  labels = (np.arange(len(cifar)) % 10).astype(np.int32)
  encoded = []
  for _ in range(256):
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    encoded.append(buffer.getvalue())
  jpegs = JpegSource(encoded, (np.arange(256) % 10).astype(np.int32))
  grain_rows = grain_pipelines(cifar, labels, jpegs, args)
  tf_rows = tf_data_pipelines(cifar, labels, encoded, args)
  tf_cores = min(args.threads, os.cpu_count() or 1)

  grain_rates: dict[str, list[float]] = {name: [] for name in grain_rows}
  tf_rates: dict[str, list[float]] = {name: [] for name in tf_rows}
  for round_index in range(args.rounds):
    for name, (make, batch_size, num_batches, _) in grain_rows.items():
      grain_rates[name].append(examples_per_second(make(), batch_size, num_batches))
    for name, (make, batch_size, num_batches) in tf_rows.items():
      tf_rates[name].append(examples_per_second(make(), batch_size, num_batches))
    print(f"round {round_index + 1}/{args.rounds} done", flush=True)
  per_core = {name: [r / grain_rows[name][3] for r in rates] for name, rates in grain_rates.items()}
  tf_per_core = {name: [r / tf_cores for r in rates] for name, rates in tf_rates.items()}
  ratios = {}
  for grain_name, tf_name in COMPARISONS:
    per_round = [g / t for g, t in zip(per_core[grain_name], tf_per_core[tf_name], strict=True)]
    ratios[f"{grain_name} / tf.data {tf_name}"] = dict(
      median=statistics.median(per_round), low=min(per_round), high=max(per_round)
    )
  decoders = decoder_milliseconds(encoded[:64], repeats=10)
  transfer = transfer_costs(32, repeats=20)
  step_rates = {
    f"train_step_{m}": train_step_rate(m, 32, args.step_repeats) for m in ("erm", "mixupe")
  }

  median = statistics.median
  print(
    f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} reader threads, "
    f"{args.rounds} rounds; CIFAR source: {cifar_origin}"
  )
  print("\n| grain pipeline | examples/s | per core (median; min-max over rounds) |")
  print("|---|---|---|")
  for name, rates in grain_rates.items():
    print(
      f"| {name} | {median(rates):,.0f} | {median(per_core[name]):,.0f} "
      f"({min(per_core[name]):,.0f}-{max(per_core[name]):,.0f}) |"
    )
  print("\n| tf.data pipeline | examples/s | per core (median; min-max over rounds) |")
  print("|---|---|---|")
  for name, rates in tf_rates.items():
    print(
      f"| {name} | {median(rates):,.0f} | {median(tf_per_core[name]):,.0f} "
      f"({min(tf_per_core[name]):,.0f}-{max(tf_per_core[name]):,.0f}) |"
    )
  print("\n| per core, per round | median ratio | min-max |")
  print("|---|---|---|")
  for name, ratio in ratios.items():
    print(f"| {name} | {ratio['median']:.2f}x | {ratio['low']:.2f}-{ratio['high']:.2f}x |")
  print("\n| JPEG 375x500, one thread | ms per example |")
  print("|---|---|")
  for name, milliseconds in decoders.items():
    print(f"| {name} | {milliseconds:.2f} |")
  print(
    f"\nImageNet batch of {transfer['batch_size']}: float32 "
    f"{transfer['bytes_float32']:,} bytes, uint8 {transfer['bytes_uint8']:,}; device_put "
    f"{transfer['device_put_ms_float32']:.2f} vs {transfer['device_put_ms_uint8']:.2f} ms; "
    f"normalization on the host {transfer['host_normalize_ms']:.2f} ms, on the device "
    f"{transfer['device_normalize_ms']:.2f} ms (this backend)"
  )
  fastest_step = max(step_rates.values())
  steps = ", ".join(f"{name} {rate:.0f} examples/s" for name, rate in step_rates.items())
  print(
    f"Train step (PreActResNet-18, 32x32, batch 32): {steps}; grain cifar_train / fastest "
    f"step: {median(grain_rates['cifar_train']) / fastest_step:.0f}x"
  )
  with open(args.out, "w") as file:
    json.dump(
      dict(
        provenance=provenance(),
        grain_pipelines=grain_rates,
        grain_per_core=per_core,
        tf_data_pipelines=tf_rates,
        tf_data_per_core=tf_per_core,
        ratios=ratios,
        decoders_ms=decoders,
        transfer=transfer,
        train_steps=step_rates,
        threads=args.threads,
        rounds=args.rounds,
        cifar_source=cifar_origin,
        machine=platform.machine(),
        cpus=os.cpu_count(),
      ),
      file,
      indent=2,
    )


if __name__ == "__main__":
  main()
