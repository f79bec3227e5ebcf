"""Streaming training batches for the fusion model: `tf.data.Dataset.from_generator`.

The generator assembles each batch from compact per-product arrays (lemma strings,
photo-feature row indices, tabular features), so memory holds one copy of the photo
features however many epochs run, and every epoch gets fresh randomness from a seed:
shuffled order, photos hidden for some products (so a listing without photos still
embeds well) or without description (as a typed query is), and a pseudo-query per product for the contrastive loss: the whole
title, a span of it, a few of its words, or one of the product's photos (alone or
with words), the kinds of query a buyer types or uploads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from fbmarket.data import schema as S
from fbmarket.files import dumps_json

TABULAR_COLUMNS = ("log_price", "has_price", "latitude", "longitude", "has_location", "n_photos")


@dataclass
class TabularScaler:
    """Standardises price and location with training statistics; missing values -> 0 + a flag."""

    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def raw(products: pd.DataFrame, photo_counts: Sequence[int]) -> pd.DataFrame:
        price = pd.to_numeric(products.get(S.PRICE), errors="coerce") if S.PRICE in products else None
        lat = pd.to_numeric(products[S.LATITUDE], errors="coerce") if S.LATITUDE in products else None
        lon = pd.to_numeric(products[S.LONGITUDE], errors="coerce") if S.LONGITUDE in products else None
        n = len(products)
        price = price.to_numpy(dtype=float) if price is not None else np.full(n, np.nan)
        lat = lat.to_numpy(dtype=float) if lat is not None else np.full(n, np.nan)
        lon = lon.to_numpy(dtype=float) if lon is not None else np.full(n, np.nan)
        return pd.DataFrame(
            {
                "log_price": np.log1p(np.clip(price, 0, None)),
                "latitude": lat,
                "longitude": lon,
                "n_photos": np.asarray(photo_counts, dtype=float),
            }
        )

    @classmethod
    def fit(cls, raw: pd.DataFrame) -> TabularScaler:
        means = {c: float(np.nanmean(raw[c])) if raw[c].notna().any() else 0.0 for c in raw}
        stds = {c: float(np.nanstd(raw[c])) if raw[c].notna().sum() > 1 else 1.0 for c in raw}
        return cls(means, {c: s if s > 1e-6 else 1.0 for c, s in stds.items()})

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        def scaled(column: str) -> np.ndarray:
            values = raw[column].to_numpy(dtype=float)
            return np.nan_to_num((values - self.means[column]) / self.stds[column], nan=0.0)

        has_price = raw["log_price"].notna().to_numpy(dtype=float)
        has_location = (raw["latitude"].notna() & raw["longitude"].notna()).to_numpy(dtype=float)
        columns = {
            "log_price": scaled("log_price"),
            "has_price": has_price,
            "latitude": scaled("latitude"),
            "longitude": scaled("longitude"),
            "has_location": has_location,
            "n_photos": scaled("n_photos"),
        }
        return np.stack([columns[c] for c in TABULAR_COLUMNS], axis=1).astype(np.float32)

    def to_json(self) -> dict:
        return {"columns": list(TABULAR_COLUMNS), "means": self.means, "stds": self.stds}

    @classmethod
    def from_json(cls, payload: dict) -> TabularScaler:
        return cls(dict(payload["means"]), dict(payload["stds"]))

    def save(self, path: Path) -> None:
        path.write_text(dumps_json(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: Path) -> TabularScaler:
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclass
class FusionArrays:
    """Everything the generator needs for a set of products, in product order."""

    titles: list[str]  # lemma strings
    descriptions: list[str]
    title_tokens: list[list[str]]  # for pseudo-queries
    photo_rows: list[list[int]]  # rows into `features`
    features: np.ndarray  # (n photos, feature dim)
    tabular: np.ndarray  # (n products, tabular dim)
    labels: np.ndarray  # (n products,) int
    leaf_labels: np.ndarray | None = None  # (n products,) int, -1 = leaf unseen in training

    def __len__(self) -> int:
        return len(self.titles)

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    def subset(self, index: np.ndarray) -> FusionArrays:
        return FusionArrays(
            [self.titles[i] for i in index],
            [self.descriptions[i] for i in index],
            [self.title_tokens[i] for i in index],
            [self.photo_rows[i] for i in index],
            self.features,
            self.tabular[index],
            self.labels[index],
            None if self.leaf_labels is None else self.leaf_labels[index],
        )


def pseudo_query(tokens: Sequence[str], rng: np.random.Generator) -> str:
    """The whole title, a contiguous span of 1-3 words, or 2-4 of its words in order."""
    if len(tokens) <= 1:
        return " ".join(tokens)
    draw = rng.random()
    if draw < 0.4:
        return " ".join(tokens)
    if draw < 0.7:
        length = int(rng.integers(1, min(3, len(tokens)) + 1))
        start = int(rng.integers(0, len(tokens) - length + 1))
        return " ".join(tokens[start : start + length])
    k = int(rng.integers(2, min(4, len(tokens)) + 1))
    picked = np.sort(rng.choice(len(tokens), size=k, replace=False))
    return " ".join(tokens[i] for i in picked)


def product_batch(
    arrays: FusionArrays,
    index: Sequence[int],
    max_photos: int,
    rng: np.random.Generator | None = None,
    photo_dropout: float = 0.0,
    description_dropout: float = 0.0,
    text_dropout: float = 0.0,
) -> dict[str, np.ndarray]:
    """Model inputs for products `index` (photos shuffled/hidden only when `rng` is given).

    `text_dropout`: the share of products with photos shown without any text (title and
    description empty), so the photos must carry the category on their own (modality dropout).
    """
    n, dim = len(index), arrays.feature_dim
    titles = [arrays.titles[i] for i in index]
    descriptions = [arrays.descriptions[i] for i in index]
    if rng is not None and description_dropout:
        descriptions = ["" if rng.random() < description_dropout else d for d in descriptions]
    if rng is not None and text_dropout:
        for k, i in enumerate(index):
            if arrays.photo_rows[i] and rng.random() < text_dropout:
                titles[k], descriptions[k] = "", ""
    photos = np.zeros((n, max_photos, dim), np.float32)
    mask = np.zeros((n, max_photos), np.float32)
    for k, i in enumerate(index):
        rows = list(arrays.photo_rows[i])
        if rng is not None:
            if photo_dropout and rng.random() < photo_dropout:
                rows = []
            rng.shuffle(rows)
        rows = rows[:max_photos]
        if rows:
            photos[k, : len(rows)] = arrays.features[rows]
            mask[k, : len(rows)] = 1.0
    return {
        "title": np.array(titles, dtype=object).reshape(n),
        "description": np.array(descriptions, dtype=object).reshape(n),
        "photos": photos,
        "photo_mask": mask,
        "tabular": arrays.tabular[list(index)].astype(np.float32),
    }


def query_batch(
    arrays: FusionArrays, index: Sequence[int], rng: np.random.Generator, photo_share: float
) -> dict[str, np.ndarray]:
    """One pseudo-query per product: words, a photo of it, or both."""
    n, dim = len(index), arrays.feature_dim
    text, text_mask = [], np.ones(n, np.float32)
    photo = np.zeros((n, 1, dim), np.float32)
    photo_mask = np.zeros((n, 1), np.float32)
    for k, i in enumerate(index):
        rows = arrays.photo_rows[i]
        words = pseudo_query(arrays.title_tokens[i], rng)
        if rows and rng.random() < photo_share:
            photo[k, 0] = arrays.features[rows[int(rng.integers(len(rows)))]]
            photo_mask[k, 0] = 1.0
            if rng.random() < 0.5 or not words:
                words, text_mask[k] = "", 0.0
        text.append(words)
    return {
        "query_text": np.array(text, dtype=object).reshape(n),
        "query_text_mask": text_mask,
        "query_photo": photo,
        "query_photo_mask": photo_mask,
    }


def output_signature(
    feature_dim: int, tabular_dim: int, with_queries: bool, with_leaves: bool = False
) -> tuple:
    spec = {
        "title": tf.TensorSpec((None,), tf.string),
        "description": tf.TensorSpec((None,), tf.string),
        "photos": tf.TensorSpec((None, None, feature_dim), tf.float32),
        "photo_mask": tf.TensorSpec((None, None), tf.float32),
        "tabular": tf.TensorSpec((None, tabular_dim), tf.float32),
    }
    if with_queries:
        spec |= {
            "query_text": tf.TensorSpec((None,), tf.string),
            "query_text_mask": tf.TensorSpec((None,), tf.float32),
            "query_photo": tf.TensorSpec((None, 1, feature_dim), tf.float32),
            "query_photo_mask": tf.TensorSpec((None, 1), tf.float32),
        }
    labels = tf.TensorSpec((None,), tf.int32)
    return spec, ({"category": labels, "leaf": labels} if with_leaves else labels)


def batches(
    arrays: FusionArrays,
    batch_size: int,
    max_photos: int,
    seed: int,
    training: bool,
    photo_dropout: float = 0.0,
    query_photo_share: float = 0.0,
    with_queries: bool = True,
    description_dropout: float = 0.0,
    text_dropout: float = 0.0,
) -> Iterator:
    """A generator factory: each call is one epoch (a new permutation when training)."""
    epoch = {"n": 0}

    def generate() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        rng = np.random.default_rng([seed, epoch["n"] if training else 0])  # fixed validation queries
        epoch["n"] += 1
        order = rng.permutation(len(arrays)) if training else np.arange(len(arrays))
        step = batch_size
        for start in range(0, len(order), step):
            index = order[start : start + step]
            if training and len(index) < 2:
                continue  # a contrastive batch needs negatives
            inputs = product_batch(
                arrays,
                index,
                max_photos,
                rng if training else None,
                photo_dropout if training else 0.0,
                description_dropout if training else 0.0,
                text_dropout if training else 0.0,
            )
            if with_queries:
                inputs |= query_batch(arrays, index, rng, query_photo_share)
            if arrays.leaf_labels is None:
                yield inputs, arrays.labels[index].astype(np.int32)
            else:
                yield (
                    inputs,
                    {
                        "category": arrays.labels[index].astype(np.int32),
                        "leaf": arrays.leaf_labels[index].astype(np.int32),
                    },
                )

    return generate


def make_dataset(
    arrays: FusionArrays,
    batch_size: int,
    max_photos: int,
    seed: int,
    training: bool,
    photo_dropout: float = 0.0,
    query_photo_share: float = 0.0,
    with_queries: bool = True,
    description_dropout: float = 0.0,
    text_dropout: float = 0.0,
) -> tf.data.Dataset:
    """The streaming dataset `FusionModel.fit` consumes (prefetched one batch ahead)."""
    generate = batches(
        arrays,
        batch_size,
        max_photos,
        seed,
        training,
        photo_dropout,
        query_photo_share,
        with_queries,
        description_dropout,
        text_dropout,
    )
    signature = output_signature(
        arrays.feature_dim, arrays.tabular.shape[1], with_queries, arrays.leaf_labels is not None
    )
    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    n_batches = len(arrays) // batch_size if training else -(-len(arrays) // batch_size)
    if training and len(arrays) % batch_size >= 2:
        n_batches += 1
    return data.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)
