"""The price model on synthetic data: save/load without pickle, ordered quantiles, CQR coverage, free class."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbmarket.config import PriceSettings, Settings
from fbmarket.data import schema as S
from fbmarket.price.conformal import conformal_offset, coverage_and_width, nonconformity
from fbmarket.price.features import PriceFeatureSpec
from fbmarket.price.metrics import suggestion_metrics
from fbmarket.price.model import FREE_FILE, PRICE_FILE, QUANTILE_FILES, PriceModel, PriceModelError, round_gbp

ROOTS = ["Electronics", "Home & Garden", "Sports"]


def synthetic_listings(
    n: int, seed: int, free_share: float = 0.05
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Listings whose log price depends on category, one embedding axis, and noise; some free.

    Free listings are the ones with a high value on embedding axis 1 (learnable), so the
    classifier has a signal to find."""
    rng = np.random.default_rng(seed)
    root = rng.choice(ROOTS, n)
    leaf = np.array([f"{r} / Leaf {rng.integers(4)}" for r in root])
    embeddings = rng.normal(size=(n, 8)).astype(np.float32)
    base = np.select([root == ROOTS[0], root == ROOTS[1]], [5.0, 3.5], 2.5)
    log_price = base + 0.8 * embeddings[:, 0] + rng.normal(scale=0.5, size=n)
    price = np.round(np.expm1(np.clip(log_price, 0.2, None)), 2)
    free = embeddings[:, 1] > np.quantile(embeddings[:, 1], 1 - free_share)
    price[free] = 0.0
    products = pd.DataFrame(
        {
            S.PRODUCT_ID: [f"p{i}" for i in range(n)],
            S.TITLE: [f"item {i} set of {i % 3}" for i in range(n)],
            S.DESCRIPTION: ["" if i % 4 == 0 else "good condition " * (i % 5) for i in range(n)],
            S.ROOT_CATEGORY: root,
            S.LEAF_CATEGORY: leaf,
            S.LATITUDE: rng.uniform(50, 56, n),
            S.LONGITUDE: rng.uniform(-4, 1, n),
            S.PRICE: price,
        }
    )
    return products, embeddings, price


def fitted(n: int = 1500, seed: int = 0, **overrides: object) -> tuple[PriceModel, pd.DataFrame, np.ndarray]:
    products, embeddings, price = synthetic_listings(n, seed)
    settings = PriceSettings(num_boost_round=120, free_rounds=60, threads=1, **overrides)  # type: ignore[arg-type]
    spec = PriceFeatureSpec.fit(products, embeddings.shape[1])
    features = spec.frame(products, embeddings, np.ones(n))
    return PriceModel.fit(features, price, spec, settings, seed=1), features, price


def test_save_load_round_trip_gives_identical_predictions_without_pickle(tmp_path: Path) -> None:
    model, features, price = fitted()
    model.calibrate(features.iloc[:300], price[:300])
    files = model.save(tmp_path)
    assert set(files) == {*QUANTILE_FILES, FREE_FILE, PRICE_FILE}
    for name in files:  # LightGBM's text format and JSON: readable text, no pickle opcodes
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert "\x80" not in text
    assert (tmp_path / QUANTILE_FILES[1]).read_text().startswith("tree")
    meta = json.loads((tmp_path / PRICE_FILE).read_text())
    assert meta["features"]["columns"][:2] == ["root_category", "leaf_category"]
    assert meta["features"]["roots"] == sorted(ROOTS)
    assert meta["conformal_offset_log"] == pytest.approx(model.offset)
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temporary file"
    loaded = PriceModel.load(tmp_path)
    before, after = model.predict(features), loaded.predict(features)
    for name in ("median", "low", "high", "free_probability"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))


def test_quantiles_are_ordered_and_the_median_tracks_the_price() -> None:
    model, features, price = fitted()
    test, truth_features, truth = synthetic_listings(600, seed=9)
    spec = model.spec
    frame = spec.frame(test, truth_features, np.ones(len(test)))
    for calibrated in (False, True):
        prediction = model.predict(frame, calibrated=calibrated)
        assert np.all(prediction.low <= prediction.median)
        assert np.all(prediction.median <= prediction.high)
        assert np.all(prediction.low >= 0)
    priced = truth > 0
    prediction = model.predict(frame)
    correlation = np.corrcoef(np.log1p(truth[priced]), np.log1p(prediction.median[priced]))[0, 1]
    assert correlation > 0.7


def test_conformal_calibration_reaches_nominal_coverage_on_held_out_data() -> None:
    """Deliberately mis-sized ranges (too narrow: alphas 0.3/0.7) are widened by CQR to ~80%."""
    products, embeddings, price = synthetic_listings(4000, seed=3, free_share=0.0)
    settings = PriceSettings(alphas=(0.3, 0.5, 0.7), num_boost_round=120, threads=1)
    spec = PriceFeatureSpec.fit(products.iloc[:2000], embeddings.shape[1])
    features = spec.frame(products, embeddings, np.ones(len(products)))
    model = PriceModel.fit(features.iloc[:2000], price[:2000], spec, settings, seed=1)
    raw = model.predict(features.iloc[3000:], calibrated=False)
    raw_coverage, _ = coverage_and_width(price[3000:], raw.low, raw.high)
    assert raw_coverage < 0.55  # a nominal 40% range
    model.alphas = (0.1, 0.5, 0.9)  # ask for 80%
    record = model.calibrate(features.iloc[2000:3000], price[2000:3000])
    assert record["calibrated"] and model.offset > 0
    calibrated = model.predict(features.iloc[3000:])
    coverage, _ = coverage_and_width(price[3000:], calibrated.low, calibrated.high)
    assert 0.76 <= coverage <= 0.84


def test_conformal_offset_is_the_finite_sample_quantile() -> None:
    y = np.arange(10.0)
    low, high = np.full(10, 2.0), np.full(10, 6.0)
    scores = nonconformity(y, low, high)
    assert scores.tolist() == [2, 1, 0, -1, -2, -1, 0, 1, 2, 3]
    # sorted: -2 -1 -1 0 0 1 1 2 2 3; k = ceil(11 * 0.8) = 9 -> 2; k = ceil(11 * 0.5) = 6 -> 1
    assert conformal_offset(y, low, high, 0.8) == 2.0
    assert conformal_offset(y, low, high, 0.5) == 1.0
    assert conformal_offset(y[:3], low[:3], high[:3], 0.9) == 2.0  # k > n: the largest
    with pytest.raises(ValueError):
        conformal_offset(y[:0], low[:0], high[:0], 0.8)


def test_free_listings_are_a_class_not_a_zero_price() -> None:
    model, features, price = fitted(n=2000)
    assert model.free is not None and model.training["free"] == int((price == 0).sum())
    assert model.training["priced"] == int((price > 0).sum())
    test, embeddings, truth = synthetic_listings(800, seed=11)
    frame = model.spec.frame(test, embeddings, np.ones(len(test)))
    prediction = model.predict(frame)
    figures = suggestion_metrics(
        truth, prediction.median, prediction.low, prediction.high, prediction.free_probability
    )
    assert figures["free"]["recall"] >= 0.5 and figures["free"]["precision"] >= 0.5
    # the regression never saw a £0 target: its median stays a real price for free listings too
    assert np.all(prediction.median[truth == 0] > 0.5)


def test_missing_prices_are_excluded_and_counted() -> None:
    products, embeddings, price = synthetic_listings(500, seed=5)
    price = price.copy()
    price[:37] = np.nan
    spec = PriceFeatureSpec.fit(products, embeddings.shape[1])
    model = PriceModel.fit(
        spec.frame(products, embeddings, np.zeros(500)),
        price,
        spec,
        PriceSettings(num_boost_round=20, threads=1),
    )
    assert model.training["excluded_missing_price"] == 37
    assert model.training["priced"] + model.training["free"] == 500 - 37


def test_unknown_categories_and_places_are_missing_values_not_errors() -> None:
    model, _, _ = fitted(n=600)
    draft = pd.DataFrame(
        {S.TITLE: ["a thing"], S.DESCRIPTION: [""], S.ROOT_CATEGORY: ["Nowhere"], S.LEAF_CATEGORY: ["Nowhere / X"],
         S.LATITUDE: [np.nan], S.LONGITUDE: [np.nan]}
    )  # fmt: skip
    frame = model.spec.frame(draft, np.zeros((1, 8), np.float32), [0])
    assert frame["root_category"].iloc[0] == -1
    prediction = model.predict(frame)
    assert prediction.low[0] <= prediction.median[0] <= prediction.high[0]


def test_loading_what_is_not_there_says_retrain(tmp_path: Path) -> None:
    with pytest.raises(PriceModelError, match="retrain with fbmarket train"):
        PriceModel.load(tmp_path)
    model, _, _ = fitted(n=400)
    model.save(tmp_path)
    (tmp_path / QUANTILE_FILES[2]).unlink()
    with pytest.raises(PriceModelError, match=QUANTILE_FILES[2]):
        PriceModel.load(tmp_path)


def test_rounding_is_monotone_and_sensible() -> None:
    assert (
        round_gbp(3.26) == 3.5 and round_gbp(47.4) == 47 and round_gbp(432) == 430 and round_gbp(1234) == 1230
    )
    values = np.linspace(0, 3000, 4001)
    rounded = [round_gbp(v) for v in values]
    assert all(a <= b for a, b in zip(rounded, rounded[1:], strict=False))


def test_price_settings_round_trip_and_validation() -> None:
    settings = Settings()
    settings.price.alphas = (0.05, 0.5, 0.95)
    loaded = Settings.from_json(json.loads(json.dumps(settings.to_json())))
    assert loaded.price.alphas == (0.05, 0.5, 0.95) and loaded.price.interval == 0.9
    assert Settings().price.interval == 0.8
    with pytest.raises(ValueError):
        PriceSettings(alphas=(0.5, 0.1, 0.9))


class _NoEmbeddingBundle:
    """What train_price_model reads from a bundle when the embedding is off."""

    embedding_dim = 8


def test_the_training_stage_stacks_the_text_ridge_and_saves_it_without_pickle(tmp_path: Path) -> None:
    from fbmarket.price.text_price import CONFIG_FILE, WEIGHTS_FILE
    from fbmarket.price.train import train_price_model

    products, embeddings, price = synthetic_listings(900, seed=4)
    products[S.TITLE] = [f"{'deluxe' if p > 100 else 'basic'} item {i}" for i, p in enumerate(price)]
    products[S.SPLIT] = np.where(np.arange(900) < 600, "train", np.where(np.arange(900) < 750, "val", "test"))
    products.loc[3, S.PRICE] = np.nan
    images = pd.DataFrame(columns=[S.PRODUCT_ID])
    settings = PriceSettings(num_boost_round=60, free_rounds=30, threads=1)
    model, record = train_price_model(
        _NoEmbeddingBundle(), products, images, settings, tmp_path, seed=1, embeddings=embeddings
    )
    assert model.spec.text_price and model.spec.columns[0] == "text_price_log"
    assert {CONFIG_FILE, WEIGHTS_FILE, PRICE_FILE} <= set(record["files"])
    assert record["training"]["excluded_missing_price"] == 1
    assert record["calibration"]["calibrated"] and record["evaluated_on"] == "test"
    # served: refit on train + val (ridge, comparables and boosters) with the offset val chose
    # for the model fit on train alone
    assert record["training"]["listings"] == 750 and record["calibration"]["applied_to"] == "train + val refit"
    assert len(model.neighbours.log_price) == int(np.isfinite(price[:750]).sum()) - 1
    train_only, plain = train_price_model(
        _NoEmbeddingBundle(), products, images, replace(settings, refit_on_val=False), tmp_path / "train-only",
        seed=1, embeddings=embeddings,
    )  # fmt: skip
    assert plain["training"]["listings"] == 600 and "applied_to" not in plain["calibration"]
    assert plain["calibration"]["offset_log"] == pytest.approx(record["calibration"]["offset_log"])
    assert train_only.free_threshold == model.free_threshold
    assert record["metrics"]["priced"]["n"] > 0
    with np.load(tmp_path / WEIGHTS_FILE, allow_pickle=False) as arrays:  # plain numeric arrays
        assert all(arrays[key].dtype != object for key in arrays.files)
    loaded = PriceModel.load(tmp_path)
    test = products.iloc[750:]
    before = model.predict(model.features(test, embeddings[750:], np.zeros(150)))
    after = loaded.predict(loaded.features(test, embeddings[750:], np.zeros(150)))
    np.testing.assert_allclose(after.median, before.median, rtol=1e-6)
    np.testing.assert_allclose(after.high, before.high, rtol=1e-6)
    np.testing.assert_allclose(after.free_probability, before.free_probability, rtol=1e-6)
    # the comparables' prices (by embedding and by TF-IDF text) are features, saved with the model
    assert model.spec.knn_sources == ["embedding", "text"] and loaded.neighbours is not None
    assert "knn_embedding_5_median" in model.spec.columns and "knn_text_20_mean" in loaded.spec.columns
    assert "knn_text_1_median" in loaded.spec.columns  # the single nearest listing's own price
    assert not any(c.startswith("knn_") for c in model.free.feature_name())
    assert 0.05 <= loaded.free_threshold == model.free_threshold
    # the ridge learnt the word that marks expensive listings
    deluxe, basic = (
        loaded.text_price.predict(["deluxe item"])[0],
        loaded.text_price.predict(["basic item"])[0],
    )
    assert deluxe > basic


def test_neighbour_prices_are_leave_one_out_and_round_trip(tmp_path: Path) -> None:
    from scipy import sparse

    from fbmarket.price.knn import NeighbourPrices

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 6)).astype(np.float32)
    text = sparse.random(40, 50, density=0.2, random_state=3, format="csr", dtype=np.float32)
    price = rng.uniform(1, 500, 40)
    price[:4] = 0.0  # a few free listings
    catalogue = NeighbourPrices.fit({"embedding": vectors, "text": text}, price, ks=(1, 5))
    own = catalogue.features({"embedding": vectors, "text": text}, exclude=np.arange(40))
    # without the exclusion, the nearest listing of each is itself
    leaky = catalogue.features({"embedding": vectors, "text": text})
    np.testing.assert_allclose(leaky["knn_embedding_1_median"], np.log1p(price).astype(np.float32), rtol=1e-6)
    # with it, a listing's own price never enters its feature: changing it changes nothing
    changed = price.copy()
    changed[7] = 1e6
    moved = NeighbourPrices.fit({"embedding": vectors, "text": text}, changed, ks=(1, 5))
    again = moved.features({"embedding": vectors, "text": text}, exclude=np.arange(40))
    for column in catalogue.columns:
        assert again[column][7] == pytest.approx(own[column][7], nan_ok=True), column
    assert np.all(own["knn_embedding_1_median"] != np.log1p(price).astype(np.float32))
    assert own["knn_text_5_free_share"].min() >= 0 and own["knn_text_5_free_share"].max() <= 1
    # save / load: identical features for new listings (float16 storage happens at fit time)
    catalogue.save(tmp_path)
    loaded = NeighbourPrices.load(tmp_path)
    queries = {"embedding": rng.normal(size=(9, 6)), "text": text[:9]}
    before, after = catalogue.features(queries), loaded.features(queries)
    for column in catalogue.columns:
        np.testing.assert_array_equal(before[column], after[column])
