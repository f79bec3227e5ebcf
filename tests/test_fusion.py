"""Fusion: the generator dataset, the subclassed model, its losses, save/load."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from fbmarket.config import TextSettings
from fbmarket.data import schema as S
from fbmarket.fusion.dataset import (
    TABULAR_COLUMNS,
    FusionArrays,
    TabularScaler,
    make_dataset,
    pseudo_query,
)
from fbmarket.fusion.model import PRODUCT_INPUTS, QUERY_INPUTS, CosineLogits, FusionModel, info_nce
from fbmarket.text.branch import build_text_encoder

DIM = 6  # photo feature size in these tests
N = 24
TITLES = ["red sofa", "oak table", "iphone case", "kid bike"]


def arrays(with_leaves: bool = False) -> FusionArrays:
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 4
    centres = np.repeat(np.eye(4, DIM) * 3, [8, 8, 7, 7], axis=0)
    features = (rng.normal(size=(30, DIM)) + centres).astype(np.float32)
    photo_rows = [
        [] if i % 6 == 5 else [int(r) for r in np.flatnonzero(np.arange(30) // 8 == labels[i])[:2]]
        for i in range(N)
    ]
    titles = [TITLES[k] for k in labels]
    return FusionArrays(
        titles,
        [f"{t} for sale good condition" if i % 5 else "" for i, t in enumerate(titles)],
        [t.split() for t in titles],
        photo_rows,
        features,
        rng.normal(size=(N, len(TABULAR_COLUMNS))).astype(np.float32),
        labels,
        (np.arange(N) % 8 if with_leaves else None),
    )


def model(
    data: FusionArrays, contrastive_weight: float = 0.5, text_skip: bool = False, cosine_scale: float = 0.0
) -> FusionModel:
    settings = TextSettings(
        conv_filters=4, text_dim=8, wide_max_tokens=100, max_tokens=8, max_title_tokens=4, dropout=0.0
    )
    words = sorted({w for t in data.titles + data.descriptions for w in t.split()})
    matrix = np.random.default_rng(0).normal(size=(len(words) + 2, 5)).astype(np.float32)
    encoder = build_text_encoder(settings, words, matrix, data.titles, data.descriptions, seed=0)
    return FusionModel(
        encoder, 4, DIM, len(TABULAR_COLUMNS), embedding_dim=8, hidden_dim=8, dropout=0.0,
        contrastive_weight=contrastive_weight, seed=0, text_skip=text_skip, cosine_scale=cosine_scale,
        n_leaves=0 if data.leaf_labels is None else 8, leaf_weight=0.5,
    )  # fmt: skip


def test_generator_dataset_yields_what_the_model_expects() -> None:
    data = arrays()
    dataset = make_dataset(
        data, 8, max_photos=3, seed=0, training=True, photo_dropout=0.5, query_photo_share=0.5
    )
    assert dataset.cardinality().numpy() == 3
    x, y = next(iter(dataset))
    assert set(x) == set(PRODUCT_INPUTS) | set(QUERY_INPUTS)
    assert x["title"].dtype == tf.string and x["title"].shape == (8,)
    assert x["photos"].shape == (8, 3, DIM) and x["photo_mask"].shape == (8, 3)
    assert x["query_photo"].shape == (8, 1, DIM) and y.shape == (8,) and y.dtype == tf.int32
    out = model(data)(x)
    assert out["category"].shape == (8, 4) and out["embedding"].shape == (8, 8)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["query_embedding"], axis=1), 1.0, rtol=1e-5)
    # a query without words must have a photo, and vice versa
    has_words = x["query_text_mask"].numpy() > 0
    has_photo = x["query_photo_mask"].numpy()[:, 0] > 0
    assert np.all(has_words | has_photo)


def test_epochs_differ_when_training_and_repeat_when_validating() -> None:
    data = arrays()
    train = make_dataset(data, 8, 2, seed=0, training=True)
    first, second = (next(iter(train))[1].numpy() for _ in range(2))
    assert not np.array_equal(first, second)  # reshuffled each epoch
    val = make_dataset(data, 8, 2, seed=0, training=False)
    a, b = (next(iter(val))[0]["query_text"].numpy() for _ in range(2))
    np.testing.assert_array_equal(a, b)  # fixed validation queries
    assert sum(1 for _ in val) == 3


def test_pseudo_queries_come_from_the_title() -> None:
    rng = np.random.default_rng(0)
    tokens = ["blue", "velvet", "corner", "sofa", "bed"]
    queries = {pseudo_query(tokens, rng) for _ in range(200)}
    assert " ".join(tokens) in queries and len(queries) > 10
    assert all(set(q.split()) <= set(tokens) and q for q in queries)
    assert pseudo_query([], rng) == ""


def test_contrastive_loss_rewards_matching_pairs() -> None:
    eye = tf.eye(4)
    assert float(info_nce(eye, eye, 0.1)) < 0.01
    assert float(info_nce(eye, tf.roll(eye, 1, axis=0), 0.1)) > 5


@pytest.mark.parametrize(("text_skip", "cosine_scale"), [(False, 0.0), (True, 0.0), (False, 16.0)])
def test_training_lowers_the_losses_and_save_load_predicts_identically(
    tmp_path: Path, text_skip: bool, cosine_scale: float
) -> None:
    keras.utils.set_random_seed(0)
    data = arrays(with_leaves=cosine_scale > 0)
    fusion = model(data, text_skip=text_skip, cosine_scale=cosine_scale)
    assert (fusion.text_head is not None) == text_skip
    head_layer = fusion.category_head.get_layer("logits")
    assert isinstance(head_layer, CosineLogits) == (cosine_scale > 0)
    fusion.compile(optimizer=keras.optimizers.Adam(1e-2))
    train = make_dataset(data, 8, 2, seed=0, training=True, query_photo_share=0.3)
    history = fusion.fit(train, epochs=8, verbose=0).history
    losses = ["category_loss", "contrastive_loss"] + (["leaf_loss"] if cosine_scale > 0 else [])
    for name in losses:
        assert history[name][-1] < history[name][0], name
    x, _ = next(iter(make_dataset(data, N, 2, seed=0, training=False)))
    before = fusion(x)
    fusion.save(tmp_path / "fusion.keras")
    loaded = keras.models.load_model(tmp_path / "fusion.keras", compile=False)
    assert isinstance(loaded, FusionModel) and loaded.text_skip == text_skip
    assert loaded.cosine_scale == cosine_scale
    after = loaded(x)
    keys = ("category", "embedding", "query_embedding") + (("leaf_logits",) if cosine_scale > 0 else ())
    for key in keys:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)


def test_cosine_logits_read_only_the_angle() -> None:
    layer = CosineLogits(3, scale=10.0)
    x = tf.constant([[3.0, 4.0], [-1.0, 0.0]])
    logits = layer(x).numpy()
    prototypes = layer.prototypes.numpy()
    expected = 10.0 * (x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)) @ (
        prototypes / np.linalg.norm(prototypes, axis=0, keepdims=True)
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x * 7.0).numpy(), logits, rtol=1e-5, atol=1e-5)  # length ignored
    assert np.all(np.abs(logits) <= 10.0 + 1e-4)
    layer.prototypes.assign(prototypes * np.array([1.0, 5.0, 0.1], np.float32))
    np.testing.assert_allclose(layer(x).numpy(), logits, rtol=1e-5, atol=1e-5)  # so is the prototypes'


def test_query_encoder_handles_words_photo_or_both() -> None:
    data = arrays()
    fusion = model(data)
    photo = tf.constant(data.features[None, :1])
    inputs = {
        "query_text": tf.constant(["red sofa", "", "oak table"]),
        "query_text_mask": tf.constant([1.0, 0.0, 1.0]),
        "query_photo": tf.concat([tf.zeros((1, 1, DIM)), photo, photo], axis=0),
        "query_photo_mask": tf.constant([[0.0], [1.0], [1.0]]),
    }
    vectors = fusion.encode_query(inputs).numpy()
    assert vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_tabular_scaler_standardises_and_flags_missing_values(tmp_path: Path) -> None:
    products = pd.DataFrame(
        {S.PRICE: [10.0, 1000.0, np.nan], S.LATITUDE: [51.5, 55.9, np.nan], S.LONGITUDE: [-0.1, -3.2, np.nan]}
    )
    raw = TabularScaler.raw(products, [1, 3, 0])
    scaler = TabularScaler.fit(raw)
    table = scaler.transform(raw)
    assert table.shape == (3, len(TABULAR_COLUMNS)) and np.isfinite(table).all()
    column = {name: i for i, name in enumerate(TABULAR_COLUMNS)}
    assert table[:, column["has_price"]].tolist() == [1, 1, 0]
    assert table[2, column["log_price"]] == 0  # missing -> the mean
    scaler.save(tmp_path / "tabular.json")
    np.testing.assert_array_equal(TabularScaler.load(tmp_path / "tabular.json").transform(raw), table)
    no_columns = scaler.transform(TabularScaler.raw(pd.DataFrame(index=[0]), [0]))
    assert np.isfinite(no_columns).all()


@pytest.mark.parametrize("weight", [0.0])
def test_contrastive_weight_zero_trains_classification_only(weight: float) -> None:
    data = arrays()
    fusion = model(data, contrastive_weight=weight)
    fusion.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = fusion.fit(make_dataset(data, 8, 2, seed=0, training=True), epochs=1, verbose=0).history
    assert history["loss"][0] == pytest.approx(history["category_loss"][0], rel=1e-5)
