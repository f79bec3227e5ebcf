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
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from fbmarket.data import schema as S
from fbmarket.files import atomic_write

log = logging.getLogger(__name__)

FEATURES_FILE = "features.npy"
IDS_FILE = "ids.json"
SHARD_PREFIX, SHARD_SUFFIX = "shard-", ".npz"
_SHARD_NUMBERS = itertools.count()  # with the time and pid: a shard name no other write uses


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
    """Photo features by image id under `root/<key>/`, in append-only shards.

    Each `put` writes one new shard (`shard-<time>-<pid>-<n>.npz`: the ids and their rows,
    published atomically by `files.atomic_write`) and never rewrites what is stored, so a
    write costs what it adds, not the size of the cache. Opening the cache reads every
    shard; a torn or foreign shard is skipped with a warning (its photos are recomputed),
    and an id stored twice (two runs racing) keeps its first row. Caches written before
    shards (`features.npy` + `ids.json`) are read as the oldest shard.
    """

    def __init__(self, root: Path, key: str):
        self.directory = Path(root) / key
        self.key = key
        self._ids: list[str] = []
        self._chunks: list[np.ndarray] = []  # rows in `_ids` order; joined lazily by `_rows`
        self._index: dict[str, int] = {}
        self._load()

    def _load(self) -> None:
        legacy = self._read_legacy()
        if legacy is not None:
            self._add(*legacy)
        for shard in sorted(self.directory.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    ids, rows = [str(i) for i in data["ids"]], np.asarray(data["features"], np.float32)
            except (OSError, ValueError, KeyError) as error:
                log.warning("feature cache shard %s unreadable (%s): skipped", shard, error)
                continue
            if len(ids) != len(rows) or (self._chunks and rows.shape[1:] != self._chunks[0].shape[1:]):
                log.warning("feature cache shard %s inconsistent: skipped", shard)
                continue
            self._add(ids, rows)

    def _read_legacy(self) -> tuple[list[str], np.ndarray] | None:
        ids_path, feats_path = self.directory / IDS_FILE, self.directory / FEATURES_FILE
        if not (ids_path.is_file() and feats_path.is_file()):
            return None
        try:
            ids = json.loads(ids_path.read_text())
            features = np.load(feats_path, allow_pickle=False)
        except (OSError, ValueError) as error:  # a torn write: recompute rather than trust it
            log.warning("feature cache %s unreadable (%s): starting afresh", self.directory, error)
            return None
        if len(ids) != len(features):
            log.warning("feature cache %s inconsistent: starting afresh", self.directory)
            return None
        return [str(i) for i in ids], np.asarray(features, np.float32)

    def _add(self, ids: Sequence[str], rows: np.ndarray) -> None:
        """Append rows in memory; ids already known keep their first row."""
        fresh = [k for k, image_id in enumerate(ids) if image_id not in self._index]
        if len(fresh) < len(ids):
            ids, rows = [ids[k] for k in fresh], rows[fresh]
        if not ids:
            return
        for image_id in ids:
            self._index.setdefault(image_id, len(self._ids))
            self._ids.append(image_id)
        self._chunks.append(rows)

    def _rows(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def __len__(self) -> int:
        return len(self._ids)

    def missing(self, image_ids: Sequence[str]) -> list[str]:
        return [i for i in dict.fromkeys(image_ids) if i not in self._index]

    def get(self, image_ids: Sequence[str]) -> np.ndarray:
        if not self._chunks:
            raise KeyError("the feature cache is empty")
        return self._rows()[[self._index[i] for i in image_ids]]

    def put(self, image_ids: Sequence[str], features: np.ndarray) -> None:
        """Store the rows of ids the cache lacks, as one new shard."""
        new = [(i, row) for i, row in zip(image_ids, features, strict=True) if i not in self._index]
        if not new:
            return
        ids = list(dict.fromkeys(i for i, _ in new))
        first = {i: row for i, row in reversed(new)}
        rows = np.stack([first[i] for i in ids]).astype(np.float32)
        name = f"{SHARD_PREFIX}{time.time_ns():020d}-{os.getpid()}-{next(_SHARD_NUMBERS)}{SHARD_SUFFIX}"
        atomic_write(self.directory / name, lambda temp: _write_shard(temp, ids, rows))
        self._add(ids, rows)


def _write_shard(path: Path, ids: list[str], rows: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.savez would append ".npz" to a bare name
        np.savez(handle, ids=np.asarray(ids, dtype=str), features=rows)


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
