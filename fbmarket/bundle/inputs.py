"""Model inputs from listings, drafts and queries: what `Bundle` feeds its networks.

Pure functions of the data and the bundle's fitted pieces (tabular scaler, sizes): no
network runs here, so the same listing is turned into the same tensors whether it is a
catalogue listing (`Bundle.arrays`), a seller's draft (`Bundle.encode_drafts`) or a
query (`Bundle.encode_query`, `Bundle.predict_category`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fbmarket.data import schema as S
from fbmarket.fusion.dataset import FusionArrays, TabularScaler
from fbmarket.text.tokenize import get_tokenizer, join, tokenize_listings
from fbmarket.vision.features import pool_products


def listing_arrays(
    products: pd.DataFrame,
    rows: list[list[int]],
    features: np.ndarray,
    tabular: TabularScaler,
    show_progress: bool = False,
) -> FusionArrays:
    """Fusion inputs for listings whose photo features are `features` (listing i: rows[i]);
    labels -1 (evaluation attaches its own)."""
    titles, descriptions = tokenize_listings(
        products[S.TITLE].tolist(), products[S.DESCRIPTION].tolist(), show_progress
    )
    raw = TabularScaler.raw(products.reset_index(drop=True), [len(r) for r in rows])
    return FusionArrays(
        [join(t) for t in titles],
        [join(d) for d in descriptions],
        titles,
        rows,
        features,
        tabular.transform(raw),
        np.full(len(products), -1),
    )


def draft_photos(
    photo_features: Sequence[np.ndarray], dim: int, max_photos: int
) -> tuple[list[list[int]], np.ndarray]:
    """Each draft's photo rows and the stacked (photos, dim) features, at most `max_photos` each."""
    rows: list[list[int]] = []
    blocks: list[np.ndarray] = []
    start = 0
    for features in photo_features:
        block = np.asarray(features, np.float32).reshape(-1, dim)[:max_photos]
        rows.append(list(range(start, start + len(block))))
        blocks.append(block)
        start += len(block)
    return rows, np.concatenate(blocks) if start else np.zeros((0, dim), np.float32)


def query_inputs(text: str | None, photo: np.ndarray | None, dim: int) -> dict[str, tf.Tensor]:
    """The query encoder's inputs for words and/or one photo's backbone features."""
    words = join(get_tokenizer().tokenize(text)) if text else ""
    if not words and photo is None:
        raise ValueError("a query needs words (letters or digits) or a photo")
    photos, mask = _one_photo(photo, dim)
    return {
        "query_text": tf.constant([words]),
        "query_text_mask": tf.constant([1.0 if words else 0.0]),
        "query_photo": tf.constant(photos),
        "query_photo_mask": tf.constant(mask),
    }


def category_inputs(
    tokens: list[str], photo: np.ndarray | None, title_length: int, dim: int, tabular: TabularScaler
) -> dict[str, tf.Tensor]:
    """The fusion network's inputs for a would-be listing: its first words as the title, all
    of them as the description when there are more, and at most one photo."""
    photos, mask = _one_photo(photo, dim)
    raw = TabularScaler.raw(pd.DataFrame(index=[0]), [int(mask.sum())])
    return {
        "title": tf.constant([join(tokens[:title_length])]),
        "description": tf.constant([join(tokens) if len(tokens) > title_length else ""]),
        "photos": tf.constant(photos),
        "photo_mask": tf.constant(mask),
        "tabular": tf.constant(tabular.transform(raw)),
    }


def _one_photo(photo: np.ndarray | None, dim: int) -> tuple[np.ndarray, np.ndarray]:
    photos = np.zeros((1, 1, dim), np.float32)
    mask = np.zeros((1, 1), np.float32)
    if photo is not None:
        photos[0, 0] = photo
        mask[0, 0] = 1.0
    return photos, mask


def unit_pooled(features: np.ndarray, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each product's mean photo features at unit length (zeros without a photo), and has-photo."""
    pooled, has_photo = pool_products(features, rows)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return (pooled / norms).astype(np.float32), has_photo


def tensors(batch: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {
        key: tf.constant(value.astype(str) if value.dtype == object else value)
        for key, value in batch.items()
    }


class Predictor:
    """What `extract_features` needs from a model, backed by a compiled function."""

    def __init__(self, fn: Any, model: keras.Model):
        self._fn = fn
        self.output_shape = model.output_shape

    def predict_on_batch(self, batch: Any) -> np.ndarray:
        return self._fn(batch).numpy()
