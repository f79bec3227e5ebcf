"""Buyers: loaders, cohorts, profiles (affinity, cold start, budget), persistence; simulator determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbmarket.config import RankSettings
from fbmarket.data import schema as S
from fbmarket.recommend.buyers import (
    Buyer,
    BuyerProfiles,
    age_band,
    cohort,
    load_buyers,
    load_interactions,
    normalise_gender,
    resolve_buyer,
)
from fbmarket.synthetic.buyers import simulate_buyers, simulate_interactions

ITEMS = {
    "Appliances": ["washing machine", "fridge freezer", "electric kettle", "microwave oven"],
    "Baby & Kids Stuff": ["baby pram", "wooden cot", "baby monitor", "car seat"],
    "Sports, Leisure & Travel": ["road bike", "tennis racket", "golf clubs", "camping tent"],
}
TOWNS = [
    ("Leeds, West Yorkshire", 53.7997, -1.5492),
    ("Bradford, West Yorkshire", 53.7960, -1.7594),
    ("London, London", 51.5072, -0.1276),
    ("Glasgow, Glasgow", 55.8642, -4.2518),
]


def make_products() -> pd.DataFrame:
    """24 clean listings: 3 roots x 8, spread over 4 towns and 4 price levels."""
    rows = []
    for root, names in ITEMS.items():
        for i in range(8):
            location, lat, lon = TOWNS[i % 4]
            rows.append(
                {
                    S.PRODUCT_ID: f"{root[:3].lower()}-{i}",
                    S.TITLE: f"{names[i % 4]} {'great' if i < 4 else 'old'}",
                    S.DESCRIPTION: f"a {names[i % 4]} for sale",
                    S.ROOT_CATEGORY: root,
                    S.PRICE: [5.0, 20.0, 80.0, 300.0][i // 2 % 4],
                    S.LOCATION: location,
                    S.LATITUDE: lat,
                    S.LONGITUDE: lon,
                    S.CREATED: f"2022-02-{10 + i:02d}",
                }
            )
    return pd.DataFrame(rows)


def make_users() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "age": [22, 30, 41, 70],
            "gender": ["F", "male", "female", "Male"],
            "location": [
                "Leeds, West Yorkshire",
                "Leeds, West Yorkshire",
                "London, London",
                "Glasgow, Glasgow",
            ],
            "max_travel_km": [20.0, 30.0, None, 10.0],
        }
    )


def make_interactions() -> pd.DataFrame:
    """u1 loves baby things (views, clicks, a message); u2 clicks sports; u3 views appliances."""
    rows = [
        ("u1", "bab-0", "view", "2022-03-01T10:00:00", "pram"),
        ("u1", "bab-0", "click", "2022-03-01T10:00:05", "pram"),
        ("u1", "bab-1", "view", "2022-03-01T10:01:00", "pram"),
        ("u1", "bab-1", "click", "2022-03-01T10:01:05", "pram"),
        ("u1", "bab-1", "message", "2022-03-01T10:02:00", "pram"),
        ("u1", "app-0", "view", "2022-03-01T10:03:00", "pram"),
        ("u2", "spo-2", "view", "2022-03-02T09:00:00", "bike"),
        ("u2", "spo-2", "click", "2022-03-02T09:00:05", "bike"),
        ("u2", "spo-6", "click", "2022-03-02T09:01:05", "bike"),
        ("u3", "app-1", "view", "2022-03-03T12:00:00", ""),
    ]
    return pd.DataFrame(rows, columns=["user_id", "product_id", "event", "timestamp", "query"])


@pytest.fixture(scope="module")
def profiles() -> BuyerProfiles:
    buyers = load_buyers(make_users())
    return BuyerProfiles.build(
        buyers, load_interactions(make_interactions()), make_products(), RankSettings()
    )


def test_cohort_parts() -> None:
    assert age_band(22, (18, 25, 35, 50, 65)) == "18-24"
    assert age_band(16, (18, 25, 35, 50, 65)) == "18-24"
    assert age_band(80, (18, 25, 35, 50, 65)) == "65+"
    assert age_band(None, (18, 25)) == "unknown"
    assert [normalise_gender(g) for g in ("F", " Male ", "non-binary", None, "")] == [
        "female", "male", "other", "unknown", "unknown",
    ]  # fmt: skip
    assert cohort(Buyer(age=30, gender="f", location="Delph, Manchester")) == (
        "25-34",
        "female",
        "Manchester",
    )
    assert cohort(Buyer()) == ("unknown", "unknown", "unknown")


def test_load_buyers_geocodes_and_normalises() -> None:
    users = make_users()
    users.loc[4] = [None, 50, "f", "Leeds, West Yorkshire", None]  # no id: dropped
    users.loc[5] = ["u5", "n/a", None, "Nowhere-at-all, Atlantis", None]
    buyers = load_buyers(users).set_index("user_id")
    assert list(buyers.index) == ["u1", "u2", "u3", "u4", "u5"]
    assert buyers.loc["u1", "gender"] == "female"
    assert buyers.loc["u1", "region"] == "West Yorkshire"
    assert buyers.loc["u1", "latitude"] == pytest.approx(53.8, abs=0.1)  # geocoded offline
    assert np.isnan(buyers.loc["u5", "latitude"])  # unknown place: kept, without coordinates
    assert np.isnan(buyers.loc["u5", "age"])


def test_load_interactions_counts_bad_rows() -> None:
    frame = make_interactions()
    frame.loc[len(frame)] = ["u1", "bab-2", "LIKE", "2022-03-01T11:00:00", ""]
    frame.loc[len(frame)] = ["u1", "bab-2", "view", "not a time", ""]
    frame.loc[len(frame)] = [None, "bab-2", "view", "2022-03-01T11:00:00", ""]
    clean = load_interactions(frame)
    assert len(clean) == len(make_interactions())
    assert clean.attrs["skipped"] == {"missing_id": 1, "unknown_event": 1, "bad_timestamp": 1}
    assert clean["timestamp"].is_monotonic_increasing
    assert clean["session_id"].str.startswith("u").all()  # derived: user and day


def test_affinity_follows_weighted_history(profiles: BuyerProfiles) -> None:
    shares, source = profiles.affinity(profiles.buyer("u1"))
    assert source == "user"
    assert shares.sum() == pytest.approx(1.0)
    baby = profiles.categories.index("Baby & Kids Stuff")
    assert shares.argmax() == baby
    sports, _ = profiles.affinity(profiles.buyer("u2"))
    assert sports.argmax() == profiles.categories.index("Sports, Leisure & Travel")
    # Smoothing: a category never touched keeps some mass.
    assert shares.min() > 0


def test_unknown_user_is_a_cold_start_with_cohort_tastes(profiles: BuyerProfiles) -> None:
    buyer, status, notes = resolve_buyer(profiles, "no-such-user")
    assert status == "cold_start" and not buyer.known
    assert any("not found" in n and "cold-start" in n for n in notes)
    shares, source = profiles.affinity(buyer)
    assert source == "everyone"
    assert shares.sum() == pytest.approx(1.0)
    # An inline young woman from Leeds gets her cohort's tastes (u1's), not everyone's.
    inline, status, notes = resolve_buyer(
        profiles, None, age=21, gender="female", location="Leeds, West Yorkshire"
    )
    assert status == "inline" and inline.has_location
    shares, source = profiles.affinity(inline)
    assert source.startswith("cohort:18-24|female")
    assert shares.argmax() == profiles.categories.index("Baby & Kids Stuff")
    assert any("cohort" in n for n in notes)
    with pytest.raises(ValueError, match="unknown buyer field"):
        resolve_buyer(profiles, None, shoe_size=9)


def test_budget_stated_then_history_then_cohort(profiles: BuyerProfiles) -> None:
    assert profiles.budget(Buyer(user_id="u1", budget_gbp=99.0)) == (99.0, "stated")
    value, source = profiles.budget(profiles.buyer("u1"))
    assert source == "history" and value == pytest.approx(5.0)  # engaged with bab-0 and bab-1 (5 GBP)
    value, source = profiles.budget(profiles.buyer("stranger"))
    assert source == "everyone" and value > 0
    assert profiles.max_travel(profiles.buyer("u1")) == 20.0
    assert profiles.max_travel(profiles.buyer("u3")) == RankSettings().default_travel_km


def test_profiles_json_round_trip(profiles: BuyerProfiles, tmp_path) -> None:
    path = profiles.save(tmp_path / "profiles.json")
    assert path.read_text().startswith("{")
    loaded = BuyerProfiles.load(path)
    assert loaded.to_json() == profiles.to_json()
    for uid in ("u1", "u4", "nobody"):
        a, sa = profiles.affinity(profiles.buyer(uid))
        b, sb = loaded.affinity(loaded.buyer(uid))
        assert sa == sb and np.array_equal(a, b)
    (tmp_path / "bad.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="format"):
        BuyerProfiles.load(tmp_path / "bad.json")


def test_simulator_is_deterministic() -> None:
    towns = pd.DataFrame(TOWNS, columns=[S.LOCATION, S.LATITUDE, S.LONGITUDE])
    products = make_products()
    first = simulate_buyers(12, towns, seed=3)
    again = simulate_buyers(12, towns, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(simulate_buyers(12, towns, seed=4))
    log_a = simulate_interactions(first, products, seed=5, sessions_per_buyer=3)
    log_b = simulate_interactions(again, products, seed=5, sessions_per_buyer=3)
    pd.testing.assert_frame_equal(log_a, log_b)
    assert len(log_a) > 0
    assert not log_a.equals(simulate_interactions(first, products, seed=6, sessions_per_buyer=3))
