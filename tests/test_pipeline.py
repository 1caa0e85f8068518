"""Input pipelines: TFDS sources under tfds.testing.mock_data, and exact sharding/determinism on
in-memory sources."""

import functools
import io
import itertools
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy import stats

from mixupe_jax.data import pipeline


def first(iterator, count):
  return list(itertools.islice(iterator, count))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn_cropped"])
def test_tfds_small_image_pipelines(name):
  with tfds.testing.mock_data(num_examples=64):
    source = pipeline.tfds_source(name, "train")
    stream = pipeline.train_batches(source, batch_size=16, seed=0, process_index=0,
                                    process_count=1, augment=pipeline.cifar_augment,
                                    normalize=pipeline.normalizer(name))
    batches = first(stream, 5)  # More than one epoch (64 / 16 = 4 batches).
    again = first(pipeline.train_batches(source, batch_size=16, seed=0, process_index=0,
                                         process_count=1, augment=pipeline.cifar_augment,
                                         normalize=pipeline.normalizer(name)), 5)
  images, labels = batches[0]
  assert images.shape == (16, 32, 32, 3) and images.dtype == np.float32
  assert labels.shape == (16,) and labels.dtype == np.int32
  mean, std = (np.asarray(v) for v in pipeline.CHANNEL_STATISTICS[name])
  assert images.min() >= (-mean / std).min() - 1e-5 and images.max() <= ((1 - mean) / std).max() + 1e-5
  for (a_images, a_labels), (b_images, b_labels) in zip(batches, again):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_tfds_imagenet_train_and_eval_at_reduced_size():
  with tfds.testing.mock_data(num_examples=8):
    source = pipeline.tfds_source("imagenet2012", "train")
    augment = lambda image, rng: pipeline.random_resized_crop(image, rng, size=64)
    images, labels = next(pipeline.train_batches(
        source, batch_size=4, seed=1, augment=augment, process_index=0, process_count=1,
        normalize=pipeline.normalizer("imagenet2012")))
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.float32
    evaluation = list(pipeline.eval_batches(
        pipeline.tfds_source("imagenet2012", "validation"), batch_size=3, process_index=0,
        process_count=1, preprocess=lambda image: pipeline.resize_center_crop(image, 64)))
  assert [len(b[1]) for b in evaluation] == [3, 3, 2]
  assert evaluation[0][0].shape == (3, 64, 64, 3) and evaluation[0][0].dtype == np.uint8


@pytest.mark.slow
def test_tfds_imagenet_encoded_reaches_the_crop_as_bytes():
  """`encoded=True` hands the stored JPEG bytes on; the crop and the eval resize decode them."""
  with tfds.testing.mock_data(num_examples=8):
    source = pipeline.tfds_source("imagenet2012", "train", encoded=True)
    assert isinstance(source[0]["image"], bytes)
    augment = lambda image, rng: pipeline.random_resized_crop(image, rng, size=64)
    images, _ = next(pipeline.train_batches(
        source, batch_size=4, seed=1, augment=augment, process_index=0, process_count=1,
        normalize=pipeline.normalizer("imagenet2012")))
    evaluation = next(pipeline.eval_batches(
        pipeline.tfds_source("imagenet2012", "validation", encoded=True), batch_size=3,
        process_index=0, process_count=1,
        preprocess=lambda image: pipeline.resize_center_crop(image, 64)))
  assert images.shape == (4, 64, 64, 3) and images.dtype == np.float32
  assert evaluation[0].shape == (3, 64, 64, 3) and evaluation[0].dtype == np.uint8


def _smooth_image(height, width):
  rows, columns = np.mgrid[0:height, 0:width]
  # A few periods across the image, so that a 64-pixel crop of it is well sampled.
  channels = [128 + 100 * np.sin(rows * 20.0 / height + c) * np.cos(columns * 25.0 / width - c)
              for c in range(3)]
  return np.stack(channels, -1).astype(np.uint8)


def _jpeg(image, **options):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=95, **options)
  return buffer.getvalue()


@pytest.mark.parametrize("height,width", [(120, 160), (900, 1200)])
def test_crops_of_encoded_images_match_crops_of_decoded_ones(height, width):
  """The same draws give the same window and flip whether the crop gets the JPEG or its pixels;
  the images differ only by resampling at the window's edge and, for the large image, by the
  reduced-size DCT decode (1/2: the window still has at least 2 x 64 pixels a side)."""
  image = _smooth_image(height, width)
  encoded = _jpeg(image)
  decoded = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
  for seed in range(6):
    from_bytes = pipeline.random_resized_crop(encoded, np.random.default_rng(seed), size=64)
    from_pixels = pipeline.random_resized_crop(decoded, np.random.default_rng(seed), size=64)
    assert from_bytes.shape == from_pixels.shape == (64, 64, 3)
    difference = np.abs(from_bytes.astype(float) - from_pixels.astype(float))
    assert difference.mean() < 2.0, (seed, difference.mean())
  center_bytes = pipeline.resize_center_crop(encoded, 64)
  center_pixels = pipeline.resize_center_crop(decoded, 64)
  assert np.abs(center_bytes.astype(float) - center_pixels.astype(float)).mean() < 2.0


def _spy_decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
  """(width, height) of every JPEG decode by PIL's draft."""
  from PIL import JpegImagePlugin
  decoded_sizes = []
  original_draft = JpegImagePlugin.JpegImageFile.draft

  def draft(self, mode, size):
    result = original_draft(self, mode, size)
    decoded_sizes.append(self.size)
    return result

  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
  return decoded_sizes


def test_only_the_needed_resolution_of_a_jpeg_is_decoded(monkeypatch):
  """A 1200 x 900 JPEG cropped to 64 x 64 is decoded at 1/8 or 1/4 scale, never at full size;
  grayscale and PNG inputs come out RGB."""
  decoded_sizes = _spy_decoded_sizes(monkeypatch)
  encoded = _jpeg(_smooth_image(900, 1200))
  for seed in range(5):
    pipeline.random_resized_crop(encoded, np.random.default_rng(seed), size=64)
  pipeline.resize_center_crop(encoded, 64)
  assert len(decoded_sizes) == 6 and all(w <= 1200 // 4 for w, _ in decoded_sizes)
  gray = _jpeg(_smooth_image(90, 120)[..., 0])
  buffer = io.BytesIO()
  Image.fromarray(_smooth_image(90, 120)).save(buffer, format="PNG")
  for encoded in (gray, buffer.getvalue()):
    out = pipeline.random_resized_crop(encoded, np.random.default_rng(0), size=32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_the_normalizer_is_the_formula():
  images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  mean, std = (np.asarray(v, np.float32) for v in pipeline.CHANNEL_STATISTICS["imagenet2012"])
  expected = (images.astype(np.float32) / 255.0 - mean) / std
  out = pipeline.normalizer("imagenet2012")(images)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, expected)


ALL_VALUES = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None], (256, 3)).reshape(
  1, 16, 16, 3
)


@pytest.mark.parametrize("name", sorted(pipeline.CHANNEL_STATISTICS))
def test_device_normalization_is_the_host_formula_to_float32_rounding(name):
  """Every uint8 value of every channel, jitted: within 1e-6 of the host's float32 result and of
  (x / 255 - mean) / std in float64. Fails if on_device drops a term or uses another constant."""
  normalization = pipeline.normalizer(name)
  mean, std = (np.asarray(v, np.float64) for v in pipeline.CHANNEL_STATISTICS[name])
  on_device = np.asarray(jax.jit(normalization.on_device)(ALL_VALUES))
  assert on_device.dtype == np.float32
  np.testing.assert_allclose(on_device, normalization(ALL_VALUES), rtol=0, atol=1e-6)
  np.testing.assert_allclose(on_device, (ALL_VALUES / 255.0 - mean) / std, rtol=0, atol=2e-6)
  with jax.enable_x64(True):  # float32 whatever JAX's default float (a mutant cast to it).
    assert normalization.on_device(ALL_VALUES).dtype == np.float32

def test_a_channel_std_that_is_not_positive_is_a_clear_error():
  """Mutants that fail it (checked by hand): the check dropped, or `<` for `<=` (a zero std would
  divide by zero)."""
  for std in ((0.2, 0.0, 0.3), (0.2, -0.1, 0.3)):
    with pytest.raises(ValueError, match=r"Channel std must be positive, got \["):
      pipeline.channel_normalizer((0.5, 0.5, 0.5), std)


def test_channel_statistics_are_each_channel_s_mean_and_std_in_0_1():
  """Against numpy, channel by channel, on images whose height, width and channel count differ.
  Mutants that fail it (checked by hand): another scale (* 255, / 256), the channel axis read as
  the width or height, the statistics over all channels at once or over the wrong axis."""
  images = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
  mean, std = pipeline.channel_statistics(images)
  channels = [images[..., c].astype(np.float64) / 255.0 for c in range(3)]
  assert mean.shape == std.shape == (3,)
  np.testing.assert_allclose(mean, [c.mean() for c in channels], rtol=1e-12)
  np.testing.assert_allclose(std, [c.std() for c in channels], rtol=1e-12)


def test_unknown_tfds_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match=r"Unknown TFDS image dataset 'mnist2'; valid: cifar10"):
    pipeline.tfds_source("mnist2", "train")


def _indexed_source(count=40):
  # Each image holds its own index, so a batch shows which examples it contains.
  return pipeline.ArraySource(np.arange(count, dtype=np.uint8).reshape(count, 1, 1, 1),
                              np.arange(count) % 10)


def _indices(batch):
  return batch[0].reshape(len(batch[0])).tolist()


def test_epochs_are_new_permutations_of_the_whole_source():
  batches = first(pipeline.train_batches(_indexed_source(), batch_size=20, seed=3,
                                         process_index=0, process_count=1), 4)
  epoch1, epoch2 = sum(map(_indices, batches[:2]), []), sum(map(_indices, batches[2:]), [])
  assert sorted(epoch1) == sorted(epoch2) == list(range(40))
  assert epoch1 != epoch2


@pytest.mark.parametrize("augment", [None, pipeline.cifar_augment], ids=["plain", "augmented"])
def test_global_batches_do_not_depend_on_the_process_count(augment):
  """P processes of batch 12 / P read, together, exactly the global batches of 1 process of batch
  12, augmentation included, for 5 steps (across an epoch boundary of the 40 examples)."""
  if augment is None:
    source = _indexed_source()
  else:  # Images with content, so that a crop or flip shows.
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    source = pipeline.ArraySource(images, np.arange(40) % 10)
    augment = functools.partial(pipeline.cifar_augment, padding=2)
  def run(process_count, process_index):
    return first(pipeline.train_batches(source, batch_size=12 // process_count, seed=5,
                                        augment=augment, process_index=process_index,
                                        process_count=process_count), 5)

  single = run(1, 0)
  for process_count in (2, 3, 4):
    per_process = [run(process_count, p) for p in range(process_count)]
    for step in range(5):
      images = np.concatenate([batches[step][0] for batches in per_process])
      labels = np.concatenate([batches[step][1] for batches in per_process])
      np.testing.assert_array_equal(images, single[step][0])
      np.testing.assert_array_equal(labels, single[step][1])


@pytest.mark.slow
def test_worker_processes_read_the_same_batches_in_the_same_order():
  """2 grain worker processes (`num_workers`) give the threads' batches, augmentation included,
  across an epoch boundary, from the start and resumed at step 3 (an odd step: each worker's
  share shifts). Fails if the workers reorder batches or draw augmentation from another key."""
  images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
  source = pipeline.ArraySource(images, np.arange(40) % 10)
  augment = functools.partial(pipeline.cifar_augment, padding=2)

  def run(num_workers, start_step=0):
    stream = pipeline.train_batches(source, batch_size=8, seed=5, augment=augment,
                                    process_index=0, process_count=1, start_step=start_step,
                                    num_workers=num_workers)
    batches = first(stream, 7)
    stream.close()
    return batches

  threads = run(0)
  for start_step in (0, 3):
    for got, expected in zip(run(2, start_step), threads[start_step:]):
      np.testing.assert_array_equal(got[0], expected[0])
      np.testing.assert_array_equal(got[1], expected[1])


def test_resuming_at_a_step_continues_the_same_stream():
  full = first(pipeline.train_batches(_indexed_source(), batch_size=4, seed=7, process_index=0,
                                      process_count=1), 12)
  resumed = first(pipeline.train_batches(_indexed_source(), batch_size=4, seed=7,
                                         process_index=0, process_count=1, start_step=9), 3)
  assert [_indices(b) for b in resumed] == [_indices(b) for b in full[9:]]
  other_seed = first(pipeline.train_batches(_indexed_source(), batch_size=4, seed=8,
                                            process_index=0, process_count=1), 12)
  assert [_indices(b) for b in other_seed] != [_indices(b) for b in full]


def test_cifar_augment_is_a_shifted_possibly_flipped_copy():
  image = np.arange(32 * 32 * 3, dtype=np.int32).reshape(32, 32, 3)
  out = pipeline.cifar_augment(image, np.random.default_rng(0))
  assert out.shape == image.shape
  unflipped = out if np.all(np.diff(out[16, :, 0]) >= 0) else out[:, ::-1]
  nonzero = unflipped[unflipped[..., 0] > 0]
  assert len(nonzero) >= (32 - 8) ** 2  # At most 4 rows/columns of zero padding each way.


@pytest.mark.parametrize("padding", [0, 1, 4, 7])
def test_cifar_augment_is_the_crop_of_the_zero_padded_image(padding):
  """Against the definition: np.pad with zeros, the window at the generator's (top, left), then
  the flip at its draw; every offset of a 10x12 image (non-square: rows and columns not swapped)
  and both flips appear over the seeds. Fails on an off-by-one shift or swapped axes."""
  image = np.random.default_rng(1).integers(1, 256, (10, 12, 3), dtype=np.uint8)
  offsets = set()
  for seed in range(4000):
    rng = np.random.default_rng(seed)
    top, left = rng.integers(0, 2 * padding + 1, size=2)
    flip = rng.random() < 0.5
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    expected = padded[top : top + 10, left : left + 12]
    expected = expected[:, ::-1] if flip else expected
    np.testing.assert_array_equal(pipeline.cifar_augment(image, np.random.default_rng(seed),
                                                         padding=padding), expected)
    offsets.add((int(top), int(left), bool(flip)))
  assert len(offsets) == (2 * padding + 1) ** 2 * 2


def test_dataset_smaller_than_the_global_batch_is_a_clear_error():
  with pytest.raises(ValueError, match=r"The dataset has 40 examples, fewer than the global batch "
                                       r"size 64 \(16 per process x 4\)"):
    pipeline.train_batches(_indexed_source(40), batch_size=16, seed=0, process_index=0,
                           process_count=4)


def _bilinear_reference(pixels, box, height, width):
  """Bilinear sampling at half-pixel centres, edges clamped, in float64: output pixel (y, x)
  samples the input at (top + (y + 1/2) s_y - 1/2, left + (x + 1/2) s_x - 1/2)."""
  left, top, right, bottom = box
  ys = top + (np.arange(height) + 0.5) * (bottom - top) / height - 0.5
  xs = left + (np.arange(width) + 0.5) * (right - left) / width - 0.5
  image = pixels.astype(np.float64)

  def taps(coordinates, size):
    low = np.floor(coordinates).astype(int)
    weight = coordinates - low
    return np.clip(low, 0, size - 1), np.clip(low + 1, 0, size - 1), weight

  y0, y1, wy = taps(ys, pixels.shape[0])
  x0, x1, wx = taps(xs, pixels.shape[1])
  wy, wx = wy[:, None, None], wx[None, :, None]
  top_row = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
  bottom_row = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
  return top_row * (1 - wy) + bottom_row * wy


@pytest.mark.parametrize("box,size", [((0, 0, 160, 120), 40), ((10.5, 7.25, 90.5, 67.25), 64),
                                      ((30, 20, 50, 35), 64), ((3, 5, 147, 101), 224),
                                      ((0, 0, 20, 15), 64), ((140, 105, 160, 120), 64)],
                         ids=["down-4x", "fractional", "up-3x", "down-to-224", "up-top-left",
                              "up-bottom-right"])
def test_resizing_without_antialiasing_is_bilinear_sampling(box, size):
  """`antialias=False` samples the 4 input pixels around each output pixel's centre, at any box
  (fractional ones included): within one grey level of the float64 reference (OpenCV rounds in
  fixed point). Fails on a half-pixel shift (off by up to a level's fraction of the image's
  gradient: tens of levels here) or swapped axes. An upscaled box at the image's corner samples
  past its edge, which repeats the edge pixels (mutant that fails it, checked by hand: OpenCV's
  default border, black)."""
  pixels = _smooth_image(120, 160)
  out = pipeline._bilinear_box(pixels, box, size, size)
  assert out.shape == (size, size, 3) and out.dtype == np.uint8
  np.testing.assert_allclose(out, _bilinear_reference(pixels, box, size, size), atol=1.0)


def test_crops_without_antialiasing_alias_and_keep_the_draws():
  """Stripes one pixel wide, downscaled 4x: the antialiased resize averages them to grey, the
  bilinear one without antialiasing keeps sampling black or white (what tf.image.resize's default
  does). The random window and flip are the same either way, and the encoded and the decoded
  image give the same crop (no DCT scaling at this size)."""
  stripes = np.zeros((256, 256, 3), np.uint8)
  stripes[:, ::2] = 255
  antialiased = pipeline.resize_center_crop(stripes, 50)  # Scale 256 / 57: 4.49...
  aliased = pipeline.resize_center_crop(stripes, 50, antialias=False)
  assert antialiased.std() < 10 < aliased.std()
  image = _smooth_image(120, 160)
  encoded = _jpeg(image)
  decoded = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
  for seed in range(4):
    from_bytes = pipeline.random_resized_crop(encoded, np.random.default_rng(seed), size=64,
                                              antialias=False)
    from_pixels = pipeline.random_resized_crop(decoded, np.random.default_rng(seed), size=64,
                                               antialias=False)
    np.testing.assert_array_equal(from_bytes, from_pixels)
    rng = np.random.default_rng(seed)
    top, left, crop_height, crop_width = pipeline.inception_window(120, 160, rng)
    expected = _bilinear_reference(decoded, (left, top, left + crop_width, top + crop_height),
                                   64, 64)
    expected = expected[:, ::-1] if rng.random() < 0.5 else expected
    np.testing.assert_allclose(from_pixels, expected, atol=1.0)
  center = pipeline.resize_center_crop(encoded, 64, antialias=False)
  np.testing.assert_array_equal(center, pipeline.resize_center_crop(decoded, 64, antialias=False))


def _cmyk_jpeg(image):
  buffer = io.BytesIO()
  Image.fromarray(image).convert("CMYK").save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


@pytest.mark.parametrize("make", [
    lambda: _jpeg(_smooth_image(375, 500)),
    lambda: _jpeg(_smooth_image(1500, 2000)),  # DCT scales 1/2 to 1/8 for most windows.
    lambda: _jpeg(_smooth_image(777, 1003)),  # Odd sides: the scaled size rounds up.
    lambda: _jpeg(_smooth_image(600, 800), subsampling=0),  # 4:4:4 chroma.
    lambda: _jpeg(_smooth_image(640, 480), progressive=True),
    lambda: _jpeg(_smooth_image(700, 900)[..., 0]),  # Grayscale.
    lambda: _cmyk_jpeg(_smooth_image(500, 600)),  # PIL decodes CMYK.
], ids=["375x500", "1500x2000", "odd", "444", "progressive", "gray", "cmyk"])
def test_without_antialiasing_opencv_decodes_the_pixels_pil_decodes(make, monkeypatch):
  """With `antialias=False`, OpenCV decodes the JPEG at draft's DCT scale: the crops and center
  crops equal, to the bit, those resized from PIL's decode of the same windows, and OpenCV's
  decode is the one used (all but CMYK): PIL reads the header only. Fails if OpenCV's scale or
  channel order differs from PIL's, or if it is never used. Mutants that fail it (checked by
  hand): OpenCV asked for another DCT scale (a wrong key in its table of flags, the scale from
  the height, None), or its decode thrown away by a wrong size check (PIL then decodes)."""
  from PIL import JpegImagePlugin
  encoded = make()
  is_cmyk = Image.open(io.BytesIO(encoded)).mode == "CMYK"
  calls = []
  original = pipeline._opencv_decode
  monkeypatch.setattr(pipeline, "_opencv_decode", lambda *a: calls.append(1) or original(*a))
  if not is_cmyk:
    def pil_decode(self):
      raise AssertionError("PIL decoded the JPEG that OpenCV decodes")

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", pil_decode)

  def crops():
    out = [pipeline.random_resized_crop(encoded, np.random.default_rng(seed), size=size,
                                        antialias=False)
           for seed in range(6) for size in (32, 224)]
    return out + [pipeline.resize_center_crop(encoded, 64, antialias=False)]

  with_opencv = crops()
  used = len(calls)
  monkeypatch.undo()
  monkeypatch.setattr(pipeline, "_opencv_decode", lambda *a: None)  # PIL decodes.
  for got, expected in zip(with_opencv, crops(), strict=True):
    np.testing.assert_array_equal(got, expected)
  assert used == (0 if is_cmyk else 13)


def test_without_opencv_the_unantialiased_resize_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "cv2", None)  # Importing it now fails, as if not installed.
  with pytest.raises(ImportError, match="pip install opencv-python-headless"):
    pipeline.random_resized_crop(_jpeg(_smooth_image(60, 80)), np.random.default_rng(0), size=32,
                                 antialias=False)


def test_tfds_source_hands_tfds_the_data_dir_and_a_decoder_of_the_image_feature(monkeypatch):
  """The caller's data_dir reaches `tfds.data_source` (where the prepared files are), and
  `encoded` skips the decoding of the dataset's "image" feature only: a key TFDS knows (real TFDS
  rejects an unknown one, which mock_data does not check) and the labels still decoded.
  Mutants that fail it (checked by hand): data_dir dropped or None, the decoder's key misspelt."""
  calls = []
  with tfds.testing.mock_data(num_examples=4):
    original = tfds.data_source
    monkeypatch.setattr(tfds, "data_source", lambda *a, **k: calls.append(k) or original(*a, **k))
    encoded = pipeline.tfds_source("imagenet2012", "train", data_dir="/data/tfds", encoded=True)
    plain = pipeline.tfds_source("cifar10", "test")
    example = encoded[0]
  assert [call["data_dir"] for call in calls] == ["/data/tfds", None]
  assert set(encoded.decoders) == {"image"} <= set(encoded.dataset_info.features)
  assert isinstance(encoded.decoders["image"], tfds.decode.SkipDecoding)
  assert plain.decoders is None
  assert isinstance(example["image"], bytes) and np.issubdtype(example["label"].dtype, np.integer)


@pytest.mark.parametrize("box,scale", [
    ((0, 0, 1600, 1200), 8),  # 200 x 150 pixels at 1/8: enough for 64 x 64.
    ((10, 20, 74, 84), 1),  # 64 x 64: only full scale has them.
    ((100, 50, 355.7, 650), 2),  # 255.7 wide: 63.9 pixels at 1/4, one short.
    ((50, 100, 650, 355.7), 2),  # The same along the height.
    ((300, 200, 812, 712), 8),  # 512 x 512: exactly 64 at 1/8.
    ((300, 200, 811.5, 712), 4),  # Half a pixel short of that, along the width.
    ((300, 200, 812, 711.5), 4),  # ... along the height.
])
def test_a_jpeg_is_decoded_at_the_smallest_dct_scale_that_keeps_the_window_s_resolution(
    box, scale, monkeypatch):
  """PIL's draft decodes a JPEG at 1/s, s in (1, 2, 4, 8): the largest s at which the window,
  (right - left) / s by (bottom - top) / s, still has at least the output's 64 x 64 pixels (the
  expected s worked out by hand next to each box, the sides divisible by 8). Mutants that fail it
  (checked by hand): the ceiling of either side's needed size as a floor (`/` for `//`), its
  product as a quotient, the window's side as right + left or bottom + top."""
  decoded_sizes = _spy_decoded_sizes(monkeypatch)
  image = pipeline._open_encoded(_jpeg(_smooth_image(1200, 1600)))
  out = pipeline._decode_region(image, box, 64, 64, True, None)
  assert out.shape == (64, 64, 3)
  assert decoded_sizes == [(1600 // scale, 1200 // scale)]


def _encoded(image, mode, kind):
  buffer = io.BytesIO()
  Image.fromarray(image).convert(mode).save(buffer, format=kind)
  return buffer.getvalue()


@pytest.mark.parametrize("mode,kind", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"),
                                       ("P", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG")])
def test_an_encoded_window_is_the_rgb_image_s_bilinear_resize_in_any_mode(mode, kind):
  """Whatever the file's mode, the window is PIL's antialiased BILINEAR resize of the image as
  RGB, to the bit: converted to RGB before the resize (a palette image would otherwise be
  resized by nearest neighbour, CMYK in its own inks). Mutants that fail it (checked by hand):
  no conversion, conversion to None or to another mode name, another resampling filter."""
  encoded = _encoded(_smooth_image(60, 80), mode, kind)
  box = (10.5, 5.25, 70.5, 50.25)
  out = pipeline._decode_region(pipeline._open_encoded(encoded), box, 32, 48, True, encoded)
  rgb = Image.open(io.BytesIO(encoded)).convert("RGB")
  expected = np.asarray(rgb.resize((48, 32), Image.Resampling.BILINEAR, box=box))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("height,width", [(120, 160), (160, 120)], ids=["landscape", "portrait"])
def test_the_center_crop_is_the_middle_of_the_short_side_resize_by_hand(height, width):
  """size 64, crop_fraction 0.875: the short side resized to round(64 / 0.875) = 73, the long
  one to round(160 * 73 / 120) = 97 (the aspect kept), then rows 4:68 and columns 16:80 (or
  transposed), worked out by hand. An encoded image is resized from that window of the original
  directly, antialiased by default; `size` defaults to 224. Mutants that fail it (checked by
  hand): either branch of the orientation test taken always, the long side's formula changed,
  another divisor of the margins, the encoded path not antialiased, another default size."""
  image = _smooth_image(height, width)
  landscape = width > height
  new_size = (97, 73) if landscape else (73, 97)  # PIL's (width, height).
  resized = np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BILINEAR))
  rows, columns = (slice(4, 68), slice(16, 80)) if landscape else (slice(16, 80), slice(4, 68))
  np.testing.assert_array_equal(pipeline.resize_center_crop(image, 64), resized[rows, columns])
  encoded = _encoded(image, "RGB", "PNG")
  scale_y, scale_x = height / resized.shape[0], width / resized.shape[1]
  box = (columns.start * scale_x, rows.start * scale_y, columns.stop * scale_x,
         rows.stop * scale_y)
  expected = Image.fromarray(image).resize((64, 64), Image.Resampling.BILINEAR, box=box)
  np.testing.assert_array_equal(pipeline.resize_center_crop(encoded, 64), np.asarray(expected))
  assert pipeline.resize_center_crop(_smooth_image(256, 320)).shape == (224, 224, 3)


def test_inception_windows_follow_the_documented_distributions():
  """Area fraction ~ U(scale) and log aspect ~ U(log ratio) (Kolmogorov-Smirnov at a fixed seed,
  on windows that always fit), the position uniform over every place the window fits (each of the
  5 rows and 5 columns a 6-pixel window has in 10 pixels). Mutants that fail it (checked by hand):
  the area divided by the draw, one end of the ratio for both, the width from area / aspect, a
  position range one short or one long at either end."""
  rng = np.random.default_rng(0)
  square = [pipeline.inception_window(1000, 1000, rng, ratio=(1.0, 1.0)) for _ in range(500)]
  fractions = [h * w / 1e6 for _, _, h, w in square]
  assert stats.kstest(fractions, stats.uniform(0.08, 0.92).cdf).pvalue > 1e-3
  thin = [pipeline.inception_window(1000, 1000, rng, scale=(0.05, 0.05)) for _ in range(500)]
  log_aspects = [np.log(w / h) for _, _, h, w in thin]
  low, high = np.log(3 / 4), np.log(4 / 3)
  # Rounding the sides to whole pixels blurs the aspect by about 1/224: compare coarsely.
  assert stats.kstest(log_aspects, stats.uniform(low, high - low).cdf).pvalue > 1e-3
  assert min(log_aspects) > low - 0.01 and max(log_aspects) < high + 0.01
  windows = [pipeline.inception_window(10, 10, rng, scale=(0.36, 0.36), ratio=(1.0, 1.0))
             for _ in range(400)]
  assert {(h, w) for _, _, h, w in windows} == {(6, 6)}
  for positions in ([t for t, _, _, _ in windows], [l for _, l, _, _ in windows]):
    counts = np.bincount(positions, minlength=5)
    assert len(counts) == 5 and stats.chisquare(counts).pvalue > 1e-3, counts


def test_inception_window_bounds_and_the_central_square_after_ten_failed_draws():
  """A 1-pixel window is accepted, a 0-pixel one is not; a window the whole image's size is
  accepted; 10 failed draws (two uniforms each) give the central square, in whole pixels.
  Mutants that fail it (checked by hand): each bound of the fit test moved by one (1 <, 0 <=,
  <), 11 tries, the central square's side or its offsets changed (+, // 3, / 2)."""
  one_pixel = pipeline.inception_window(4, 4, np.random.default_rng(0), (1 / 16, 1 / 16), (1, 1))
  assert one_pixel[2:] == (1, 1)
  for ratio in (1 / 16, 16.0):  # One side rounds to 0 pixels (the other to 4): never accepted.
    rng, reference = np.random.default_rng(1), np.random.default_rng(1)
    assert pipeline.inception_window(4, 4, rng, (1 / 16, 1 / 16), (ratio, ratio)) == (0, 0, 4, 4)
    reference.uniform(size=20)
    assert rng.random() == reference.random()  # Exactly 10 draws of (area, aspect) were made.
  whole = pipeline.inception_window(4, 8, np.random.default_rng(0), (1.0, 1.0), (2.0, 2.0))
  assert whole == (0, 0, 4, 8)
  for height, width, expected in ((10, 15, (0, 2, 10, 10)), (15, 10, (2, 0, 10, 10))):
    window = pipeline.inception_window(height, width, np.random.default_rng(0), (2.0, 3.0))
    assert window == expected and all(type(v) is int for v in window), window


def test_random_resized_crop_resizes_the_window_its_draws_pick_and_flips_half_of_them():
  """The crop is the window `inception_window` draws from the same generator (with the caller's
  scale and ratio), resized by PIL's antialiased bilinear filter by default, to 224 by default,
  and flipped when the next draw is below 1/2; from pixels or from the encoded file alike.
  Mutants that fail it (checked by hand): the ratio not passed on (either input), the encoded
  path or the default not antialiased, another default size."""
  image = _smooth_image(60, 80)
  encoded = _encoded(image, "RGB", "PNG")
  flips = []
  for seed in range(6):
    rng = np.random.default_rng(seed)
    top, left, height, width = pipeline.inception_window(60, 80, rng, (0.3, 0.6), (1.5, 2.0))
    box = (left, top, left + width, top + height)
    expected = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR,
                                                        box=box))
    flips.append(rng.random() < 0.5)
    expected = expected[:, ::-1] if flips[-1] else expected
    from_bytes = pipeline.random_resized_crop(encoded, np.random.default_rng(seed), 32,
                                              (0.3, 0.6), (1.5, 2.0))
    np.testing.assert_array_equal(from_bytes, expected)
    from_pixels = pipeline.random_resized_crop(image, np.random.default_rng(seed), 32,
                                               (0.3, 0.6), (1.5, 2.0))
    cropped = Image.fromarray(image[top:top + height, left:left + width])
    by_pixels = np.asarray(cropped.resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(from_pixels, by_pixels[:, ::-1] if flips[-1] else by_pixels)
  assert 0 < sum(flips) < 6
  assert pipeline.random_resized_crop(_smooth_image(256, 320), np.random.default_rng(0)).shape == (
      224, 224, 3)


def test_cifar_augment_pads_by_4_by_default():
  """The default padding is CIFAR's 4 pixels: the same crops as padding=4, not those of 5.
  Mutant that fails it (checked by hand): a default of 5."""
  image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  default = [pipeline.cifar_augment(image, np.random.default_rng(s)) for s in range(8)]
  four = [pipeline.cifar_augment(image, np.random.default_rng(s), padding=4) for s in range(8)]
  five = [pipeline.cifar_augment(image, np.random.default_rng(s), padding=5) for s in range(8)]
  assert all(np.array_equal(a, b) for a, b in zip(default, four, strict=True))
  assert not all(np.array_equal(a, b) for a, b in zip(default, five, strict=True))


def test_padded_eval_batches_give_every_process_as_many_batches_masked_where_padded():
  """11 examples, 2 processes, batches of 2: process 0 holds examples 0, 2, ..., 10 and process
  1 examples 1, 3, ..., 9, both in ceil(ceil(11 / 2) / 2) = 3 batches, process 1's last one
  padded (mask 1, 0); 9 examples in batches of 4 give process 1 (4 examples) a second batch
  that is all padding. Every batch is 2 long with the normalized float32 inputs, padding
  included, and a float32 mask. As many examples as processes is allowed (one each); fewer is an
  error. Mutants that fail it (checked by hand): N = P refused, the batch count from N x P, the
  preprocessing, the normalization or the process not passed on, the padding or the mask in
  NumPy's default float64, the mask 2 for examples."""
  preprocess = lambda image: image + 100
  normalize = lambda images: images.astype(np.float32) / 2

  def read(count, batch_size, process_index):
    return list(pipeline.padded_eval_batches(
        _indexed_source(count), num_examples=count, local_batch_size=batch_size,
        process_index=process_index, process_count=2, preprocess=preprocess, normalize=normalize))

  for process_index, expected, mask in ((0, [0, 2, 4, 6, 8, 10], [1] * 6),
                                        (1, [1, 3, 5, 7, 9, 0], [1] * 5 + [0])):
    batches = read(11, 2, process_index)
    assert len(batches) == 3 and all(len(b[0]) == len(b[1]) == 2 for b in batches)
    assert {(b[0].dtype, b[1].dtype, b[2].dtype) for b in batches} == {
        (np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.float32))}
    images = np.concatenate([b[0] for b in batches]).reshape(-1)
    masks = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(masks, mask)
    np.testing.assert_array_equal(images[masks == 1], (np.asarray(expected)[masks == 1] + 100) / 2)
    np.testing.assert_array_equal(images[masks == 0], 0)
  short = read(9, 4, 1)
  assert [b[2].tolist() for b in short] == [[1, 1, 1, 1], [0, 0, 0, 0]]
  assert [b[0].shape for b in short] == [(4, 1, 1, 1)] * 2 and not short[1][0].any()
  (one,) = read(2, 4, 1)  # As many examples as processes: one each, the least that is allowed.
  assert one[2].tolist() == [1, 0, 0, 0] and one[0].reshape(-1).tolist() == [50.5, 0, 0, 0]
  with pytest.raises(ValueError, match="1 evaluation examples leave some of the 2 processes"):
    read(1, 4, 1)


def test_a_source_of_pil_images_is_augmented_as_its_arrays():
  """A user's source may hold PIL images (as torchvision datasets do): the augmentation receives
  each as its array, so the batches equal those of the same images as arrays. Mutant that fails
  it (checked by hand): images other than bytes handed on as they are."""
  images = np.random.default_rng(0).integers(0, 256, (8, 6, 6, 3), dtype=np.uint8)
  labels = np.arange(8) % 2

  class PILSource(pipeline.ArraySource):
    def __getitem__(self, index):
      return {"image": Image.fromarray(self.inputs[index]), "label": self.labels[index]}

  def batches(source):
    return first(pipeline.train_batches(source, batch_size=4, seed=1, process_index=0,
                                        process_count=1, augment=pipeline.cifar_augment), 2)

  for (a_images, a_labels), (b_images, b_labels) in zip(
      batches(PILSource(images, labels)), batches(pipeline.ArraySource(images, labels)),
      strict=True):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_augmented_eval_batches_draw_per_example_from_the_seed_whatever_the_process_count():
  """With `augment` (x_bar over augmented training inputs), every example is augmented once from
  (seed, its index in the whole source): the pass differs from the originals, is the default
  seed 0's, differs for seed 1, and process p of 3 reads exactly examples p, p + 3, ... of it.
  Mutants that fail it (checked by hand): the augmented image not stored under "image", the
  augmentation handed no image or no generator, the seed not passed or another default, the
  process not passed on."""
  images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
  source = pipeline.ArraySource(images, np.arange(12) % 3)
  augment = functools.partial(pipeline.cifar_augment, padding=2)

  def read(process_count, process_index, **seed):
    return np.concatenate([b[0] for b in pipeline.eval_batches(
        source, batch_size=4, augment=augment, process_index=process_index,
        process_count=process_count, **seed)])

  whole = read(1, 0)
  assert whole.shape == images.shape and not np.array_equal(whole, images)
  np.testing.assert_array_equal(whole, read(1, 0, seed=0))
  assert not np.array_equal(whole, read(1, 0, seed=1))
  for process_index in range(3):
    np.testing.assert_array_equal(read(3, process_index), whole[process_index::3])


def test_the_process_is_jax_s_unless_both_are_given_and_must_be_one_of_the_count():
  """Given neither or only one of process_index and process_count, the stream is JAX's process's
  (here 0 of 1: the whole source); an index outside [0, count) is an error; batches of one
  example are allowed. Mutants that fail it (checked by hand): JAX's process taken only when
  both are missing, or never set; the index allowed to equal the count; batch_size 1 refused."""
  source = _indexed_source(6)
  for given in ({}, {"process_count": 3}, {"process_index": 2}):
    batches = list(pipeline.eval_batches(source, batch_size=6, **given))
    assert _indices(batches[0]) == list(range(6)), given
  with pytest.raises(ValueError, match=r"process_index 2 is not in \[0, 2\)"):
    list(pipeline.eval_batches(source, batch_size=2, process_index=2, process_count=2))
  ones = first(pipeline.train_batches(source, batch_size=1, seed=0, process_index=0,
                                      process_count=1), 6)
  assert sorted(sum(map(_indices, ones), [])) == list(range(6))
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    pipeline.train_batches(source, batch_size=0, seed=0, process_index=0, process_count=1)


def test_train_batches_hand_grain_its_threads_prefetch_and_worker_processes(monkeypatch):
  """The reader threads asked for (2 by default) and a prefetch buffer of 4 batches reach
  grain's ReadOptions; worker processes are used exactly when asked for (none by default, one
  when num_workers=1), with that many workers. A source of exactly one global batch is enough.
  Mutants that fail it (checked by hand): ReadOptions not passed, or without the threads or the
  buffer, another buffer; workers by default, for 0 or not for 1, their options dropped; a source
  of one global batch refused."""
  import grain
  read_options, worker_options = [], []
  real = grain.ReadOptions
  monkeypatch.setattr(grain, "ReadOptions", lambda **k: read_options.append(k) or real(**k))
  monkeypatch.setattr(grain.IterDataset, "mp_prefetch",
                      lambda self, options: worker_options.append(options) or self)
  source = _indexed_source(8)
  for given in ({}, {"num_threads": 3}, {"num_workers": 1}, {"num_workers": 0}):
    batches = first(pipeline.train_batches(source, batch_size=8, seed=0, process_index=0,
                                           process_count=1, **given), 2)
    assert sorted(_indices(batches[0])) == list(range(8)), given
  assert read_options == [{"num_threads": 2, "prefetch_buffer_size": 32},
                          {"num_threads": 3, "prefetch_buffer_size": 32}] + [
                              {"num_threads": 2, "prefetch_buffer_size": 32}] * 2
  assert [options.num_workers for options in worker_options] == [1]
