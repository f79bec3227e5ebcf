"""Cleaning hand-made messy rows: prices, text, titles, categories, duplicates, the report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fbmarket.data import schema as S
from fbmarket.data.categories import CategoryEncoder
from fbmarket.data.clean import attach_created, clean_products, clean_text, parse_price, split_title


@given(st.decimals(min_value=0, max_value=10_000_000, places=2, allow_nan=False, allow_infinity=False))
def test_price_round_trips_through_gumtree_formatting(amount) -> None:
    text = f"£{amount:,.2f}"
    assert parse_price(text) == pytest.approx(float(amount))


@given(st.text())
def test_price_parser_never_raises_and_is_non_negative(text: str) -> None:
    value = parse_price(text)
    assert value is None or (value >= 0 and math.isfinite(value))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("£1,250.00", 1250.0),
        (" £ 20 ", 20.0),
        ("450", 450.0),
        ("£0.00", 0.0),
        ("free", None),
        ("£ono", None),
        ("1.250,00", None),
        ("-£5.00", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_price_examples(raw, expected) -> None:
    assert parse_price(raw) == expected


def test_clean_text_strips_emoji_controls_and_folds_space() -> None:
    assert (
        clean_text("New\u00a0sofa 👉 Factory\x00 price 🚚\r\nDelivery  ") == "New sofa Factory price Delivery"
    )
    assert clean_text("🙂🙂🙂") == ""
    assert clean_text(None) == ""
    assert clean_text("ｆｕｌｌ width") == "full width"  # NFKC


def test_split_title_takes_text_before_first_bar() -> None:
    assert split_title("Sun loungers | in Skegness, Lincolnshire | Gumtree") == "Sun loungers"
    assert split_title("No bars at all") == "No bars at all"
    assert split_title(float("nan")) == ""


def raw_rows(rows: list[dict]) -> pd.DataFrame:
    base = {
        "id": "x",
        "product_name": "Kettle | in Leeds, West Yorkshire | Gumtree",
        "category": "Appliances / Small Appliances / Kettles",
        "product_description": "Works 👍",
        "price": "£5.00",
        "location": "Leeds, West Yorkshire",
    }
    return pd.DataFrame([base | row for row in rows]).astype("str")


def test_clean_products_drops_with_reasons_and_keeps_the_rest() -> None:
    raw = raw_rows(
        [
            {"id": "ok"},
            {"id": "nocat", "category": np.nan},
            {"id": "notitle", "product_name": " | in Leeds, West Yorkshire | Gumtree"},
            {"id": "noprice", "price": np.nan},
            {"id": "badprice", "price": "swap"},
            {"id": "huge", "price": "£1,233,333.00"},
            {"id": "ok", "product_description": "same id again"},
            {"id": "dupe"},  # same listing as "ok" under another id
            {
                "id": "other",
                "product_name": "Toaster | in Leeds, West Yorkshire | Gumtree",
                "location": np.nan,
            },
        ]
    )
    clean, report = clean_products(raw, min_price=0, max_price=20_000)
    assert list(clean[S.PRODUCT_ID]) == ["ok", "other"]
    assert dict(report.dropped) == {
        "missing_category": 1,
        "missing_title": 1,
        "missing_price": 1,
        "unparseable_price": 1,
        "price_outlier": 1,
        "duplicate_id": 1,
        "duplicate_listing": 1,
    }
    assert report.rows_in == 9 and report.rows_out == 2
    row = clean.set_index(S.PRODUCT_ID).loc["ok"]
    assert row[S.TITLE] == "Kettle" and row[S.DESCRIPTION] == "Works"
    assert row[S.ROOT_CATEGORY] == "Appliances" and row[S.LEAF_NAME] == "Kettles"
    assert row[S.LEAF_CATEGORY] == "Appliances / Small Appliances / Kettles"
    assert row[S.PRICE] == 5.0
    # a missing location column value is recovered from the title
    assert clean.set_index(S.PRODUCT_ID).loc["other", S.LOCATION] == "Leeds, West Yorkshire"
    assert report.to_json()["dropped_total"] == 7


def test_lenient_mode_keeps_listings_with_bad_prices() -> None:
    raw = raw_rows([{"id": "a", "price": "swap"}, {"id": "b", "price": "£99,999.00"}, {"id": "c"}])
    clean, report = clean_products(raw, min_price=0, max_price=20_000, strict=False)
    assert list(clean[S.PRODUCT_ID]) == ["a", "b", "c"]
    assert clean[S.PRICE].isna().tolist() == [True, True, False]
    assert report.notes["unparseable_price_kept_as_nan"] == 1
    assert report.notes["price_outlier_kept_as_nan"] == 1


def test_category_normalisation() -> None:
    raw = raw_rows([{"id": "a", "category": "Home & Garden/  Sofas /"}])
    clean, _ = clean_products(raw, 0, 20_000)
    assert clean.loc[0, S.CATEGORY] == "Home & Garden / Sofas"


def test_missing_column_is_named() -> None:
    with pytest.raises(S.SchemaError, match="price"):
        clean_products(raw_rows([{}]).drop(columns=["price"]), 0, 1)


def test_created_date_is_earliest_photo() -> None:
    products = pd.DataFrame({S.PRODUCT_ID: ["a", "b"]})
    images = pd.DataFrame({"product_id": ["a", "a"], "create_time": ["26/02/2022", "24/02/2022"]})
    assert attach_created(products, images)[S.CREATED].tolist() == ["2022-02-24", None]


def test_category_encoder_round_trip_and_unseen(tmp_path) -> None:
    encoder = CategoryEncoder.fit(pd.Series(["b", "a", "b", None]))
    assert encoder.classes == ["a", "b"]
    encoder.save(tmp_path / "c.json")
    loaded = CategoryEncoder.load(tmp_path / "c.json")
    assert loaded.transform(["b", "a"]).tolist() == [1, 0]
    assert loaded.inverse_transform([1]) == ["b"]
    with pytest.raises(ValueError, match="unseen category: zzz"):
        loaded.transform(["zzz"])
    assert loaded.transform(["zzz"], unknown="mark").tolist() == [-1]
