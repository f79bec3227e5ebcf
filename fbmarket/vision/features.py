"""Photo features: a streaming extractor, an on-disk cache, and per-product pooling.

Frozen-backbone features are expensive on a CPU (ResNet50V2) and never change for a
given photo and backbone, so they are cached on disk keyed by image id *and* backbone
configuration (weights fingerprint, input size, preprocessing): a second run, or a
run with more photos, computes only what is missing. The extractor streams decoded
photos through a parallel tf.data pipeline with prefetch, so decoding overlaps the
model and the input side is not the bottleneck (benchmarks/feature_throughput.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from fbmarket.data import schema as S

log = logging.getLogger(__name__)

FEATURES_FILE = "features.npy"
IDS_FILE = "ids.json"


def backbone_key(fingerprint: str, size: int, source_size: int, arch: str = "ResNet50V2") -> str:
    """Short stable hash of everything that changes a photo's features."""
    spec = {"arch": arch, "weights": fingerprint, "size": size, "source": source_size, "pool": "avg"}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _decode(path: tf.Tensor, size: int) -> tf.Tensor:
    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.cast(tf.image.resize(image, (size, size), antialias=True), tf.float32)


def photo_dataset(
    paths: Sequence[str], size: int, batch_size: int, labels: np.ndarray | None = None
) -> tf.data.Dataset:
    """(pixels[, label]) batches decoded in parallel and prefetched; pixels are 0..255 floats."""
    data = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    data = data.map(lambda p: _decode(p, size), num_parallel_calls=tf.data.AUTOTUNE)
    if labels is not None:
        data = tf.data.Dataset.zip(data, tf.data.Dataset.from_tensor_slices(labels))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def extract_features(
    model: tf.keras.Model | object,
    paths: Sequence[str],
    size: int,
    batch_size: int,
    show_progress: bool = False,
) -> np.ndarray:
    """Run `model` (pixels -> features) over photo files; rows follow `paths`.

    Paths must exist (callers filter with `existing_photos`); our own cleaned copies
    decode, and a file that does not is a corrupt cache that should fail loudly.
    """
    if len(paths) == 0:
        dim = int(model.output_shape[-1])
        return np.zeros((0, dim), dtype=np.float32)
    batches = photo_dataset(paths, size, batch_size)
    steps = (len(paths) + batch_size - 1) // batch_size
    out = []
    iterator = tqdm(batches, total=steps, desc="photo features", unit="batch") if show_progress else batches
    for batch in iterator:
        out.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32))
    return np.concatenate(out, axis=0)


def existing_photos(images: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows whose cleaned file is present, and how many were missing (a counted skip)."""
    if images.empty:
        return images, 0
    present = images[S.IMAGE_PATH].map(lambda p: isinstance(p, str) and os.path.isfile(p))
    missing = int((~present).sum())
    if missing:
        log.warning("%d photo file(s) missing from the image cache: skipped", missing)
    return images[present], missing


class FeatureCache:
    """features.npy + ids.json under `root/<key>/`; rewritten atomically when it grows."""

    def __init__(self, root: Path, key: str):
        self.directory = Path(root) / key
        self.key = key
        self._ids: list[str] = []
        self._features: np.ndarray | None = None
        self._index: dict[str, int] = {}
        self._load()

    def _load(self) -> None:
        ids_path, feats_path = self.directory / IDS_FILE, self.directory / FEATURES_FILE
        if not (ids_path.is_file() and feats_path.is_file()):
            return
        try:
            ids = json.loads(ids_path.read_text())
            features = np.load(feats_path)
        except (OSError, ValueError) as error:  # a torn write: recompute rather than trust it
            log.warning("feature cache %s unreadable (%s): starting afresh", self.directory, error)
            return
        if len(ids) != len(features):
            log.warning("feature cache %s inconsistent: starting afresh", self.directory)
            return
        self._ids, self._features = list(ids), features
        self._index = {image_id: i for i, image_id in enumerate(self._ids)}

    def __len__(self) -> int:
        return len(self._ids)

    def missing(self, image_ids: Sequence[str]) -> list[str]:
        return [i for i in dict.fromkeys(image_ids) if i not in self._index]

    def get(self, image_ids: Sequence[str]) -> np.ndarray:
        if self._features is None:
            raise KeyError("the feature cache is empty")
        return self._features[[self._index[i] for i in image_ids]]

    def put(self, image_ids: Sequence[str], features: np.ndarray) -> None:
        new = [(i, row) for i, row in zip(image_ids, features, strict=True) if i not in self._index]
        if not new:
            return
        rows = np.stack([row for _, row in new]).astype(np.float32)
        self._features = rows if self._features is None else np.concatenate([self._features, rows])
        self._ids += [i for i, _ in new]
        self._index = {image_id: i for i, image_id in enumerate(self._ids)}
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp_feats = self.directory / (FEATURES_FILE + ".tmp")
        tmp_ids = self.directory / (IDS_FILE + ".tmp")
        with open(tmp_feats, "wb") as handle:
            np.save(handle, self._features)
        tmp_ids.write_text(json.dumps(self._ids))
        os.replace(tmp_feats, self.directory / FEATURES_FILE)
        os.replace(tmp_ids, self.directory / IDS_FILE)


@dataclass
class PhotoFeatures:
    """Feature rows of the photos that could be used, and which photo each row is."""

    image_ids: list[str]
    product_ids: list[str]
    features: np.ndarray  # (n_photos, dim)
    computed: int  # rows extracted in this call (the rest came from the cache)
    missing_files: int


def cached_photo_features(
    model: object,
    images: pd.DataFrame,
    size: int,
    batch_size: int,
    cache: FeatureCache | None,
    show_progress: bool = False,
) -> PhotoFeatures:
    """Features of every usable photo in `images`, computing only those the cache lacks."""
    usable, missing_files = existing_photos(images)
    ids = usable[S.IMAGE_ID].astype(str).tolist()
    paths = usable[S.IMAGE_PATH].astype(str).tolist()
    if cache is None:
        features = extract_features(model, paths, size, batch_size, show_progress)
        computed = len(ids)
    else:
        todo = set(cache.missing(ids))
        todo_rows = [k for k, image_id in enumerate(ids) if image_id in todo]
        if todo_rows:
            fresh = extract_features(model, [paths[k] for k in todo_rows], size, batch_size, show_progress)
            cache.put([ids[k] for k in todo_rows], fresh)
        features = cache.get(ids) if ids else np.zeros((0, 1), np.float32)
        computed = len(todo_rows)
    return PhotoFeatures(ids, usable[S.PRODUCT_ID].astype(str).tolist(), features, computed, missing_files)


def product_photo_rows(photos: PhotoFeatures, product_ids: Sequence[str], max_photos: int) -> list[list[int]]:
    """For each product, the feature rows of its first `max_photos` photos (maybe none)."""
    rows: dict[str, list[int]] = {}
    for row, pid in enumerate(photos.product_ids):
        bucket = rows.setdefault(pid, [])
        if len(bucket) < max_photos:
            bucket.append(row)
    return [rows.get(str(pid), []) for pid in product_ids]


def gather_photos(
    features: np.ndarray, rows: Sequence[Sequence[int]], max_photos: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n, max_photos, dim) features and (n, max_photos) mask, zero-padded: the pooling input."""
    dim = features.shape[1] if features.ndim == 2 else 0
    out = np.zeros((len(rows), max_photos, dim), dtype=np.float32)
    mask = np.zeros((len(rows), max_photos), dtype=np.float32)
    for i, product_rows in enumerate(rows):
        k = len(product_rows)
        if k:
            out[i, :k] = features[list(product_rows)]
            mask[i, :k] = 1.0
    return out, mask


def pool_products(features: np.ndarray, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) mean of each product's photo features and (n,) bool "has a photo".

    The image-only head reads a product through the mean of its photos' features (the
    fusion model's photo tower pools the same way), so one head serves a listing of four
    photos and a one-photo query alike. Products without photos get zeros.
    """
    dim = features.shape[1] if features.ndim == 2 else 0
    pooled = np.zeros((len(rows), dim), dtype=np.float32)
    has_photo = np.zeros(len(rows), dtype=bool)
    for i, product_rows in enumerate(rows):
        if len(product_rows):
            pooled[i] = features[list(product_rows)].mean(axis=0)
            has_photo[i] = True
    return pooled, has_photo
