"""Image classification data from an image folder or zip (`<split>/<class>/*.jpg|png`) or from the
official CIFAR-10/100 python pickles."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
from PIL import Image, ImageOps

from mixupe_jax.data import invariants
from mixupe_jax.data.base import ArrayDataset, DataError, list_members, require_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


# Modes whose pixels do not fit 8 bits: converting them to RGB would clip them silently.
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _decode(data: bytes, where: str) -> np.ndarray:
  """An 8-bit image file as uint8 RGB [H, W, 3]: grey, palette and CMYK are converted, the EXIF
  orientation (phone cameras) is applied; 16-bit or float pixels are an error, not clipped."""
  try:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode in WIDE_MODES:
      raise DataError(
        f"{where} has {image.mode} pixels (more than 8 bits); convert the images to 8-bit first."
      )
    return np.asarray(image.convert("RGB"))
  except DataError:
    raise
  except Exception as error:  # PIL raises several types for corrupt files.
    raise DataError(f"{where} is not a readable image ({error}).") from error


def members_by_split(names: list[str]) -> dict[str, dict[str, list[str]]]:
  """{split: {class: image files}} of `<split>/<class>/<image>` names (a leading folder allowed),
  each class's files sorted: the order `load_image_folder` reads them in, class by class in sorted
  class order. Names that are not images at that depth are left out."""
  by_split: dict[str, dict[str, list[str]]] = {}
  for member in sorted(names):
    parts = member.split("/")
    if len(parts) < 3 or not member.lower().endswith(IMAGE_SUFFIXES):
      continue
    by_split.setdefault(parts[-3], {}).setdefault(parts[-2], []).append(member)
  return by_split


def load_image_folder(
  path: str, name: str = "imagefolder", splits: tuple[str, ...] = ("train", "test")
) -> ArrayDataset:
  """Reads `<split>/<class>/<image>` (a leading folder inside a zip is allowed) into uint8 NHWC.

  Classes are the sorted folder names of the first split; every split must use the same ones.
  """
  require_file(path, "image folder or zip")
  names, read = list_members(path, "<split>/<class>/<image>")
  by_split = members_by_split(names)
  missing = [s for s in splits if s not in by_split]
  if missing:
    raise DataError(
      f"{path} has no {', '.join(missing)} folder of <class>/<image> files "
      f"(found: {', '.join(sorted(by_split)) or 'none'})."
    )
  class_names = tuple(sorted(by_split[splits[0]]))
  arrays = {}
  for split in splits:
    if tuple(sorted(by_split[split])) != class_names:
      raise DataError(f"{path}: the classes of {split} differ from those of {splits[0]}.")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for class_id, class_name in enumerate(class_names):
      for member in by_split[split][class_name]:
        images.append(_decode(read(member), f"{path}:{member}"))
        labels.append(class_id)
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
      raise DataError(f"{path} {split}: images of different shapes {sorted(shapes)[:3]}.")
    arrays[split] = (np.stack(images), np.asarray(labels, np.int32))
  return ArrayDataset(name, arrays, len(class_names), class_names, source=path)


# The published sets' examples per split, checked last (after the invariants): the whole set.
PUBLISHED_ROWS = {
  "CIFAR-10": {"train": 50000, "test": 10000},
  "CIFAR-100": {"train": 50000, "test": 10000},
  # 500 training images per class; the labelled val split (returned as "test") 50 per class.
  "Tiny-ImageNet-200": {"train": 100000, "test": 10000},
}


def _rows(splits) -> dict[str, int]:
  return {split: len(labels) for split, (_, labels) in splits.items()}


def _unpickle(path: str) -> dict:
  require_file(path, "CIFAR python pickle")
  try:
    with open(path, "rb") as file:
      return pickle.load(file, encoding="bytes")
  except Exception as error:
    raise DataError(f"{path} is not a readable CIFAR pickle ({error}).") from error


def load_cifar_pickles(directory: str, name: str = "cifar10") -> ArrayDataset:
  """The official `cifar-10-batches-py` (data_batch_1..5, test_batch) or `cifar-100-python`
  (train, test; fine labels) directory -> uint8 [N, 32, 32, 3]."""
  require_file(directory, "CIFAR pickle directory")
  if os.path.exists(os.path.join(directory, "data_batch_1")):
    parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    label_key, meta, names_key = b"labels", "batches.meta", b"label_names"
  else:
    parts = {"train": ["train"], "test": ["test"]}
    label_key, meta, names_key = b"fine_labels", "meta", b"fine_label_names"
  splits = {}
  for split, files in parts.items():
    images, labels = [], []
    for file_name in files:
      path = os.path.join(directory, file_name)
      batch = _unpickle(path)
      if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path}: expected a dict with {b'data'!r} and {label_key!r}.")
      data = np.asarray(batch[b"data"])
      if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: expected uint8 data [N, 3072], got {data.dtype} {data.shape}.")
      batch_labels = np.asarray(batch[label_key])
      if batch_labels.shape != (len(data),):
        raise DataError(f"{path}: {batch_labels.shape} labels for {len(data)} images.")
      images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
      labels.append(batch_labels.astype(np.int32))
    splits[split] = (np.concatenate(images), np.concatenate(labels))
  meta_path = os.path.join(directory, meta)
  meta_content = _unpickle(meta_path)
  if not isinstance(meta_content, dict) or names_key not in meta_content:
    raise DataError(f"{meta_path}: expected a dict with {names_key!r}.")
  class_names = tuple(
    n.decode() if isinstance(n, bytes) else str(n) for n in meta_content[names_key]
  )
  # The published class count of the layout found (CIFAR-10's batches, CIFAR-100's fine labels).
  published = 10 if "data_batch_1" in parts["train"] else 100
  published_name = "CIFAR-10" if published == 10 else "CIFAR-100"
  invariants.check_published(
    published_name, meta_path, {"classes": len(class_names)}, {"classes": published}
  )
  for split, (_, split_labels) in splits.items():
    if split_labels.size and (split_labels.min() < 0 or split_labels.max() >= len(class_names)):
      bad = int(split_labels.min() if split_labels.min() < 0 else split_labels.max())
      raise DataError(
        f"{directory} {split}: label {bad} is not one of the {len(class_names)} "
        f"classes of {meta_path}."
      )
  dataset = ArrayDataset(name, splits, len(class_names), class_names, source=directory)
  invariants.check_published_rows(
    published_name, directory, _rows(splits), PUBLISHED_ROWS[published_name]
  )
  return dataset


def load_tiny_imagenet(path: str, name: str = "tinyimagenet") -> ArrayDataset:
  """Tiny-ImageNet-200 as distributed (folder or `tiny-imagenet-200.zip`) -> uint8 [N, 64, 64, 3].

  Layout: `wnids.txt` (the 200 class ids), `train/<wnid>/images/*.JPEG` (500 per class) and
  `val/images/*.JPEG` labelled by `val/val_annotations.txt` (file, wnid, box; tab-separated).
  The labelled val split is returned as "test" (the official test split has no labels).
  """
  require_file(path, "Tiny-ImageNet folder or zip")
  names, read = list_members(path, "Tiny-ImageNet (wnids.txt, train/, val/)")
  roots = [n[: -len("wnids.txt")] for n in names if n.endswith("wnids.txt")]
  if not roots:
    raise DataError(f"{path} has no wnids.txt: not a Tiny-ImageNet folder or zip.")
  root = roots[0]
  wnids = read(root + "wnids.txt").decode().split()
  label_of = {wnid: index for index, wnid in enumerate(wnids)}
  annotations = root + "val/val_annotations.txt"
  if annotations not in set(names):
    raise DataError(f"{path} has no {annotations} (the labels of the val images).")
  val_labels = {}
  for line_number, line in enumerate(read(annotations).decode().splitlines(), start=1):
    fields = line.split("\t")
    if len(fields) < 2 or fields[1] not in label_of:
      raise DataError(
        f"{path}:{annotations} line {line_number}: expected "
        f"'<file>\\t<wnid>\\t...' with a wnid from wnids.txt, got {line!r}."
      )
    val_labels[fields[0]] = label_of[fields[1]]

  def collect(members_and_labels, split):
    images, labels = [], []
    for member, label in members_and_labels:
      image = _decode(read(member), f"{path}:{member}")
      if image.shape != (64, 64, 3):
        raise DataError(f"{path}:{member}: expected a 64x64 RGB image, got {image.shape}.")
      images.append(image)
      labels.append(label)
    if not images:
      raise DataError(f"{path}: no {split} images found.")
    return np.stack(images), np.asarray(labels, np.int32)

  train, test = [], []
  for member in sorted(names):
    if not member.startswith(root) or not member.lower().endswith(IMAGE_SUFFIXES):
      continue
    parts = member[len(root) :].split("/")
    if parts[0] == "train" and len(parts) == 4 and parts[1] in label_of:
      train.append((member, label_of[parts[1]]))
    elif parts[0] == "val" and len(parts) == 3:
      if parts[2] not in val_labels:
        raise DataError(f"{path}:{member} has no line in {annotations}.")
      test.append((member, val_labels[parts[2]]))
  splits = {"train": collect(train, "train"), "test": collect(test, "val")}
  invariants.check_published(
    "Tiny-ImageNet-200", f"{path}:{root}wnids.txt", {"classes": len(wnids)}, {"classes": 200}
  )
  dataset = ArrayDataset(name, splits, len(wnids), tuple(wnids), source=path)
  invariants.check_published_rows(
    "Tiny-ImageNet-200", path, _rows(splits), PUBLISHED_ROWS["Tiny-ImageNet-200"]
  )
  return dataset
