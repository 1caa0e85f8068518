"""Examples/s of the image input pipelines against the train step's examples/s, in one run.

Pipelines (grain, `mixupe_jax.data.pipeline`, `--threads` reader threads):
  cifar_train     32x32 uint8 from memory, pad-crop-flip, normalize     (the CIFAR / SVHN configs)
  cifar_eval      the same without augmentation
  imagenet_train  JPEG bytes (375x500, ImageNet's typical size) decoded, Inception crop to 224
  imagenet_eval   JPEG decoded, resize + center crop to 224
The CIFAR images are the real CIFAR-10 training images when `--cifar-zip` exists (default
../shared/data/cifar10/cifar10_jpeg.zip), otherwise random ones (same cost). The train step is the
training system's PreActResNet-18 step (ERM, the cheapest, and MixupE-exact v1 with eta 1) on
32x32 batches of 32, on this backend. The same four pipelines in tf.data (TensorFlow ops, the same
thread count, the same in-memory arrays and JPEG bytes) are measured in the same run, which is
what `mixupe_jax.data.pipeline`'s choice of grain rests on; the ImageNet train crop twice there,
with tf.image.resize's default (no antialiasing) and antialiased as PIL's BILINEAR downscaling is.
The grain ImageNet pipelines also run as they were before the encoded path ("grain before":
whole images decoded at the source, cropped as arrays, normalized with temporaries).

    python benchmarks/input_pipeline.py --out benchmarks/results/input_pipeline_cpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time

import numpy as np
from PIL import Image

from mixupe_jax.data import pipeline


class JpegSource:
  """JPEG bytes, decoded whole on access as `tfds.data_source` does by default (`decode=True`),
  or handed on encoded as `pipeline.tfds_source(..., encoded=True)` does for ImageNet."""

  def __init__(self, encoded: list[bytes], labels: np.ndarray, decode: bool):
    self.encoded, self.labels, self.decode = encoded, labels, decode

  def __len__(self):
    return len(self.encoded)

  def __getitem__(self, index):
    image = self.encoded[index]
    if self.decode:
      image = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    return {"image": image, "label": self.labels[index]}


def earlier_normalizer(name: str):
  """The normalization as it was before the single-buffer version (four float32 temporaries)."""
  mean, std = (np.asarray(v, np.float32) for v in pipeline.CHANNEL_STATISTICS[name])
  return lambda images: (images.astype(np.float32) / 255.0 - mean) / std


def examples_per_second(batches, batch_size: int, num_batches: int) -> float:
  next(batches)  # Start the reader threads.
  start = time.perf_counter()
  for _ in range(num_batches):
    next(batches)
  return num_batches * batch_size / (time.perf_counter() - start)


def cifar_images(path: str, count: int, rng) -> tuple[np.ndarray, str]:
  if os.path.exists(path):
    from mixupe_jax.data import images
    train_x, _ = images.load_image_folder(path).splits["train"]
    return train_x[:count], f"CIFAR-10 from {path}"
  return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), "random 32x32 (zip absent)"


def tf_data_rates(cifar, labels, encoded, args) -> dict[str, float]:
  """examples/s of the same four pipelines written in tf.data."""
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

  def cifar_augment(image, label):
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.random_flip_left_right(tf.image.random_crop(padded, [32, 32, 3]))
    return cifar_normalize(image), label

  def inception_crop(data, label, antialias=False):
    shape = tf.image.extract_jpeg_shape(data)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4]), area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(data, window, channels=3)
    image = tf.image.resize(image, [224, 224], antialias=antialias)
    return imagenet_normalize(tf.image.random_flip_left_right(image)), label

  def center_crop(data, label):
    image = tf.image.decode_jpeg(data, channels=3)
    shape = tf.shape(image)
    scale = 256.0 / tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
    new_size = tf.cast(tf.round(tf.cast(shape[:2], tf.float32) * scale), tf.int32)
    image = tf.image.resize_with_crop_or_pad(tf.image.resize(image, new_size), 224, 224)
    return imagenet_normalize(image), label

  small = 32
  jpeg_labels = (np.arange(len(encoded)) % 10).astype(np.int32)
  pipelines = {
      "cifar_train": (tf.data.Dataset.from_tensor_slices((cifar, labels)).shuffle(len(cifar), seed=0)
                      .repeat().map(cifar_augment, num_parallel_calls=parallel), args.batch_size),
      "cifar_eval": (tf.data.Dataset.from_tensor_slices((cifar, labels)).repeat().map(
          lambda image, label: (cifar_normalize(image), label), num_parallel_calls=parallel),
          args.batch_size),
      "imagenet_train": (tf.data.Dataset.from_tensor_slices((encoded, jpeg_labels)).shuffle(
          len(encoded), seed=0).repeat().map(inception_crop, num_parallel_calls=parallel), small),
      "imagenet_eval": (tf.data.Dataset.from_tensor_slices((encoded, jpeg_labels)).repeat().map(
          center_crop, num_parallel_calls=parallel), small),
      # The same crop with the antialiased (triangle-filter) downscaling that PIL's BILINEAR
      # resize, and so the grain pipeline, performs: the same output, hence the same work.
      "imagenet_train_antialiased": (tf.data.Dataset.from_tensor_slices((encoded, jpeg_labels))
                                     .shuffle(len(encoded), seed=0).repeat().map(
                                         lambda d, l: inception_crop(d, l, antialias=True),
                                         num_parallel_calls=parallel), small),
  }
  rates = {}
  for name, (dataset, batch_size) in pipelines.items():
    batches = dataset.batch(batch_size, drop_remainder=True).prefetch(4).with_options(options)
    rates[name] = examples_per_second(batches.as_numpy_iterator(), batch_size,
                                      args.batches if name.startswith("cifar") else 6)
  return rates


def train_step_rate(method: str, batch_size: int, repeats: int) -> float:
  import jax
  import jax.numpy as jnp
  from mixupe_jax.models import PreActResNet18
  from train_throughput import compiled_train_step  # The sibling benchmark's step builder.
  inputs = jax.random.normal(jax.random.key(0), (batch_size, 32, 32, 3))
  labels = jnp.arange(batch_size) % 10
  options = dict(method=method, eta=1.0, variant="v1")
  step, state, batch = compiled_train_step(PreActResNet18(num_classes=10), options, inputs,
                                           labels, 10)
  state, metrics = step(state, *batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state, metrics = step(state, *batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return batch_size / statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cifar-zip", default="../shared/data/cifar10/cifar10_jpeg.zip")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--step-repeats", type=int, default=3)
  parser.add_argument("--out", default="benchmarks/input_pipeline.json")
  args = parser.parse_args()
  from mixupe_jax import xla_cpu
  xla_cpu.configure()  # The train steps it compares with, as train.py runs them.
  rng = np.random.default_rng(0)

  count = max(4096, args.batch_size * (args.batches + 2))
  cifar, cifar_origin = cifar_images(args.cifar_zip, count, rng)
  labels = (np.arange(len(cifar)) % 10).astype(np.int32)
  encoded = []
  for _ in range(256):
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    encoded.append(buffer.getvalue())
  jpeg_labels = (np.arange(256) % 10).astype(np.int32)
  decoded_jpegs, jpegs = JpegSource(encoded, jpeg_labels, True), JpegSource(encoded, jpeg_labels, False)
  imagenet_normalize = pipeline.normalizer("imagenet2012")
  cifar_normalize = pipeline.normalizer("cifar10")
  common = dict(batch_size=args.batch_size, seed=0, num_threads=args.threads, process_index=0,
                process_count=1)
  small = 32  # ImageNet batches of 32: 256 JPEGs make 8 batches per epoch.
  rates = {
      "cifar_train": examples_per_second(pipeline.train_batches(
          pipeline.ArraySource(cifar, labels), augment=pipeline.cifar_augment,
          normalize=cifar_normalize, **common), args.batch_size, args.batches),
      "cifar_eval": examples_per_second(pipeline.eval_batches(
          pipeline.ArraySource(cifar, labels), batch_size=args.batch_size,
          normalize=cifar_normalize, process_index=0, process_count=1), args.batch_size,
          min(args.batches, len(cifar) // args.batch_size - 1)),
      "imagenet_train": examples_per_second(pipeline.train_batches(
          jpegs, augment=pipeline.random_resized_crop, normalize=imagenet_normalize,
          **{**common, "batch_size": small}), small, args.batches),
  }
  rates["imagenet_eval"] = examples_per_second(pipeline.eval_batches(
      jpegs, batch_size=small, preprocess=pipeline.resize_center_crop,
      normalize=imagenet_normalize, process_index=0, process_count=1), small, 6)
  # The same two pipelines as they were before: whole images decoded at the source, cropped and
  # resized as arrays, normalized with temporaries.
  earlier = {
      "imagenet_train": examples_per_second(pipeline.train_batches(
          decoded_jpegs, augment=pipeline.random_resized_crop,
          normalize=earlier_normalizer("imagenet2012"), **{**common, "batch_size": small}),
          small, args.batches),
      "imagenet_eval": examples_per_second(pipeline.eval_batches(
          decoded_jpegs, batch_size=small, preprocess=pipeline.resize_center_crop,
          normalize=earlier_normalizer("imagenet2012"), process_index=0, process_count=1),
          small, 6),
  }
  tf_rates = tf_data_rates(cifar, labels, encoded, args)

  step_rates = {f"train_step_{m}": train_step_rate(m, 32, args.step_repeats)
                for m in ("erm", "mixupe")}
  fastest_step = max(step_rates.values())
  cores = min(args.threads, os.cpu_count())
  print(f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} reader threads "
        f"(per core: divided by {cores}); CIFAR source: {cifar_origin}")
  print("| stage | grain examples/s | per core | grain before | per core | tf.data examples/s "
        "| per core | grain / tf.data | grain vs fastest train step |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, rate in rates.items():
    before = earlier.get(name)
    before_text = f"{before:.0f} | {before / cores:.0f}" if before else " | "
    print(f"| {name} | {rate:.0f} | {rate / cores:.0f} | {before_text} | {tf_rates[name]:.0f} | "
          f"{tf_rates[name] / cores:.0f} | {rate / tf_rates[name]:.2f}x | "
          f"{rate / fastest_step:.1f}x |")
  rate = tf_rates["imagenet_train_antialiased"]
  print(f"| imagenet_train, tf.data resize antialiased as PIL's | {rates['imagenet_train']:.0f} | "
        f"{rates['imagenet_train'] / cores:.0f} | | | {rate:.0f} | {rate / cores:.0f} | "
        f"{rates['imagenet_train'] / rate:.2f}x | |")
  for name, rate in step_rates.items():
    print(f"| {name} | {rate:.0f} | | | | | | | {rate / fastest_step:.1f}x |")
  with open(args.out, "w") as file:
    json.dump(dict(pipelines=rates, earlier_pipelines=earlier, tf_data_pipelines=tf_rates,
                   train_steps=step_rates, threads=args.threads, cores_used=cores,
                   cifar_source=cifar_origin, machine=platform.machine(),
                   cpus=os.cpu_count()), file, indent=2)


if __name__ == "__main__":
  main()
