"""The amounts a seller names in the words become price features (fbmarket/price/stated.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_price import _NoEmbeddingBundle, synthetic_listings

from fbmarket.config import PriceSettings
from fbmarket.data import schema as S
from fbmarket.price.features import PriceFeatureSpec
from fbmarket.price.model import PRICE_FILE, STATED_FILES, PriceModel
from fbmarket.price.stated import STATED_COLUMNS, stated_amounts, stated_price_columns


@pytest.mark.parametrize(
    ("text", "amounts"),
    [
        ("Fridge freezer, works great £90Call 0778", [(90.0, False)]),
        ("£1,250.00 ovno", [(1250.0, False)]),
        ("£12.50 each", [(12.5, False)]),
        ("£1.2k or near offer", [(1200.0, False)]),
        ("£ 100", [(100.0, False)]),
        ("GBP 40 cash", [(40.0, False)]),
        ("40 quid", [(40.0, False)]),
        ("asking 150 pounds", [(150.0, False)]),
        ("RRP £450, worn once", [(450.0, True)]),
        ("paid 200 pounds for it", [(200.0, True)]),
        ("Cost £300 when new, yours for £120", [(300.0, True), (120.0, False)]),
        ("was £50 now £30", [(50.0, True), (30.0, False)]),
        ("Brand new £25", [(25.0, False)]),
        ("£3,50", [(3.0, False)]),  # a decimal comma is not a thousands group
    ],
)
def test_amounts_are_read_as_a_british_seller_writes_them(text: str, amounts: list) -> None:
    assert stated_amounts(text) == amounts


@pytest.mark.parametrize(
    "text",
    ["Call 07787555431", "size 10, 3 x 4 m", "£0", "£99999999", "20 pound note holder?", "Pounds Lane"],
)
def test_numbers_that_are_not_amounts_are_not_read(text: str) -> None:
    found = stated_amounts(text)
    assert found == [] or (text.startswith("20 pound") and found == [(20.0, False)])


def test_the_columns_are_log_prices_and_missing_where_nothing_is_named() -> None:
    columns = stated_price_columns(
        ["Bike £80", "Lamp", "Sofa"],
        ["RRP £450. Yours for £300 or £280 cash", "", "no price here"],
    )
    assert set(columns) == set(STATED_COLUMNS)
    np.testing.assert_array_equal(columns["stated_count"], [4, 0, 0])
    assert columns["stated_in_title_log"][0] == pytest.approx(np.log1p(80))
    assert columns["stated_first_log"][0] == pytest.approx(np.log1p(80))
    assert columns["stated_last_log"][0] == pytest.approx(np.log1p(280))
    assert columns["stated_min_log"][0] == pytest.approx(np.log1p(80))
    assert columns["stated_max_log"][0] == pytest.approx(np.log1p(450))
    assert columns["stated_asking_log"][0] == pytest.approx(np.log1p(80))
    assert columns["stated_reference_log"][0] == pytest.approx(np.log1p(450))
    for name in STATED_COLUMNS[1:]:
        assert np.isnan(columns[name][1:]).all(), name


def test_a_spec_without_stated_prices_reads_as_before() -> None:
    """Old bundles' price.json has no `stated_prices`: they keep their own columns."""
    products, embeddings, _ = synthetic_listings(50, seed=1)
    spec = PriceFeatureSpec.fit(products, 8, stated_prices=True)
    assert set(STATED_COLUMNS) <= set(spec.columns)
    payload = spec.to_json()
    assert PriceFeatureSpec.from_json(payload).frame(products, embeddings, np.ones(50)).shape == (
        50,
        len(spec.columns),
    )
    old = {
        key: value
        for key, value in PriceFeatureSpec.fit(products, 8).to_json().items()
        if key != "stated_prices"
    }
    assert not PriceFeatureSpec.from_json(old).stated_prices
    assert not set(STATED_COLUMNS) & set(PriceFeatureSpec.from_json(old).columns)


def test_a_price_named_in_the_description_is_learnt(tmp_path: Path) -> None:
    """Half the listings repeat their price in the description. The stated columns alone cut
    the error on those; the boosters anchored on the stated amount all but echo it, and are
    saved and read back as LightGBM text."""
    from fbmarket.price.train import train_price_model

    n = 900
    products, embeddings, price = synthetic_listings(n, seed=5, free_share=0.0)
    named = np.arange(n) % 2 == 0
    products[S.DESCRIPTION] = [
        f"Good condition, £{p:.0f} ono. Collection only." if say else "Good condition."
        for p, say in zip(price, named, strict=True)
    ]
    products[S.SPLIT] = np.where(np.arange(n) < 600, "train", np.where(np.arange(n) < 750, "val", "test"))
    images = pd.DataFrame(columns=[S.PRODUCT_ID])
    test = np.flatnonzero((products[S.SPLIT] == "test").to_numpy())
    errors, models = {}, {}
    for name, stated, anchored in (
        ("none", False, False),
        ("columns", True, False),
        ("anchored", True, True),
    ):
        settings = PriceSettings(
            num_boost_round=80,
            free_rounds=20,
            threads=1,
            stated_prices=stated,
            stated_quantiles=anchored,
            knn_sources=(),
            text_price=False,
        )
        model, record = train_price_model(
            _NoEmbeddingBundle(), products, images, settings, tmp_path / name, seed=1, embeddings=embeddings
        )
        assert model.spec.stated_prices is stated and (model.stated_quantiles is not None) is anchored
        assert (
            set(STATED_FILES) <= set(record["files"])
            if anchored
            else not set(STATED_FILES) & set(record["files"])
        )
        loaded = PriceModel.load(tmp_path / name)
        frame = loaded.features(products.iloc[test], embeddings[test], np.zeros(len(test)))
        prediction = loaded.predict(frame)
        np.testing.assert_allclose(
            prediction.median,
            model.predict(model.features(products.iloc[test], embeddings[test], np.zeros(len(test)))).median,
        )
        assert np.all(prediction.low <= prediction.median) and np.all(prediction.median <= prediction.high)
        said = named[test]
        errors[name] = float(
            np.median(np.abs(prediction.median[said] - price[test][said]) / price[test][said])
        )
        models[name] = (model, frame, prediction)
    assert errors["columns"] < 0.5 * errors["none"]
    assert errors["anchored"] < 0.02 < errors["columns"]
    # listings that name no amount are priced by the main boosters alone, as without the anchor
    unsaid = ~named[test]
    model = models["anchored"][0]
    main_only = np.expm1(model.quantiles[1].predict(models["anchored"][1].to_numpy(dtype=float)))
    np.testing.assert_allclose(models["anchored"][2].median[unsaid], np.clip(main_only[unsaid], 0, None))
    # an amount outside the main boosters' own range (a typo, an RRP) keeps their answer
    odd = products.iloc[test[unsaid][:5]].copy()
    odd[S.DESCRIPTION] = "Good condition, £15000 ono."
    odd_frame = model.features(odd, embeddings[test[unsaid][:5]], np.zeros(5))
    main_low = model.quantiles[0].predict(odd_frame.to_numpy(dtype=float))
    main_high = model.quantiles[2].predict(odd_frame.to_numpy(dtype=float))
    assert np.all(np.log1p(15000) > main_high) and np.all(main_low < main_high)
    np.testing.assert_allclose(
        np.log1p(model.predict(odd_frame, calibrated=False).median),
        np.log1p(np.clip(np.expm1(model.quantiles[1].predict(odd_frame.to_numpy(dtype=float))), 0, None)),
    )
    said_amount = named & (np.arange(n) < 750) & (np.round(price) > 0)  # "£0" names no amount
    assert record["training"]["priced_stating_an_amount"] == int(said_amount.sum())


def test_a_model_saved_without_the_anchored_boosters_leaves_none_behind(tmp_path: Path) -> None:
    """Saving a model without them over one with them removes the old files, and a price.json
    from before they existed (no "stated" entry) loads with none."""
    products, embeddings, price = synthetic_listings(400, seed=6, free_share=0.0)
    products[S.DESCRIPTION] = [f"£{p:.0f}" for p in price]
    spec = PriceFeatureSpec.fit(products, 8, stated_prices=True)
    features = spec.frame(products, embeddings, np.ones(400))
    settings = PriceSettings(num_boost_round=20, free_rounds=10, threads=1)
    PriceModel.fit(features, price, spec, settings, seed=1).save(tmp_path)
    assert all((tmp_path / name).is_file() for name in STATED_FILES)
    PriceModel.fit(
        features, price, spec, PriceSettings(num_boost_round=20, threads=1, stated_quantiles=False)
    ).save(tmp_path)
    assert not any((tmp_path / name).exists() for name in STATED_FILES)
    meta = json.loads((tmp_path / PRICE_FILE).read_text())
    del meta["files"]["stated"]
    (tmp_path / PRICE_FILE).write_text(json.dumps(meta))
    assert PriceModel.load(tmp_path).stated_quantiles is None
    few = PriceSettings(num_boost_round=20, threads=1, min_stated_listings=401)
    assert PriceModel.fit(features, price, spec, few).stated_quantiles is None
