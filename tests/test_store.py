"""The listing database: idempotent upserts, deletes, embeddings, buyers — on real SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fbmarket.data import schema as S
from fbmarket.data.store import Store


def listings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            S.PRODUCT_ID: ["a", "b"],
            S.TITLE: ["Kettle", "Sofa"],
            S.DESCRIPTION: ["Works", ""],
            S.CATEGORY: ["Appliances / Kettles", "Home & Garden"],
            S.ROOT_CATEGORY: ["Appliances", "Home & Garden"],
            S.LEAF_CATEGORY: ["Appliances / Kettles", "Home & Garden"],
            S.LEAF_NAME: ["Kettles", "Home & Garden"],
            S.PRICE: [5.0, np.nan],
            S.LOCATION: ["Leeds, West Yorkshire", "Nowhere"],
            S.TOWN: ["Leeds", None],
            S.COUNTY: ["West Yorkshire", None],
            S.LATITUDE: [53.8, np.nan],
            S.LONGITUDE: [-1.55, np.nan],
            S.GEO_MATCH: ["town", "unknown"],
            S.CREATED: ["2022-02-24", None],
            S.SPLIT: ["train", "test"],
        }
    )


def photos() -> pd.DataFrame:
    return pd.DataFrame(
        {
            S.IMAGE_ID: ["i1", "i2", "orphan"],
            S.PRODUCT_ID: ["a", "a", "zzz"],
            S.IMAGE_PATH: ["/c/i1.jpg", "/c/i2.jpg", "/c/o.jpg"],
            S.WIDTH: [640, 100, 1],
            S.HEIGHT: [480, 100, 1],
            S.ASPECT: [1.33, 1.0, 1.0],
            S.ORIGINAL_MODE: ["RGB", "P", "L"],
        }
    )


def test_ingesting_twice_changes_nothing(database_url: str) -> None:
    store = Store(database_url)
    try:
        assert (
            store.upsert_listings(listings(), photos()) == 4
        )  # 2 listings + 2 photos; the orphan is not stored
        before = store.listings_frame()
        assert store.upsert_listings(listings(), photos()) == 0
        after = store.listings_frame()
        assert before.equals(after)  # not even updated_at moved
        assert store.count("images") == 2
    finally:
        store.close()


def test_changed_listing_is_updated_and_reported(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upsert_listings(listings(), photos())
        changed = listings()
        changed.loc[0, S.PRICE] = 6.5
        assert store.upsert_listings(changed) == 1
        assert store.get_listing("a")[S.PRICE] == 6.5
        assert store.get_listing("b")[S.PRICE] is None  # NaN is stored as NULL
        assert store.get_listing("missing") is None
    finally:
        store.close()


def test_photo_order_and_delete_cascade(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upsert_listings(listings(), photos())
        store.upsert_embeddings(["a", "b"], np.eye(2, 4, dtype=np.float32), "v1")
        assert store.images_frame(["a"])["position"].tolist() == [0, 1]
        assert store.delete_listing("a") is True
        assert store.delete_listing("a") is False
        assert store.count("images") == 0
        ids, vectors = store.load_embeddings("v1")
        assert ids == ["b"] and vectors.shape == (1, 4)
    finally:
        store.close()


def test_embeddings_round_trip_exactly(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upsert_listings(listings())
        vectors = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
        store.upsert_embeddings(["a", "b"], vectors, "v1")
        ids, loaded = store.load_embeddings()
        assert ids == ["a", "b"] and np.array_equal(loaded, vectors)
        assert store.upsert_embeddings(["a", "b"], vectors, "v1") == 0
    finally:
        store.close()


def test_users_and_interactions_are_idempotent(database_url: str) -> None:
    store = Store(database_url)
    try:
        users = pd.DataFrame(
            {
                "user_id": ["u1"],
                "age": ["34"],
                "gender": ["female"],
                "location": ["Leeds, West Yorkshire"],
                "budget_gbp": ["120"],
            }
        )
        events = pd.DataFrame(
            {"user_id": ["u1", "u1"], "product_id": ["a", "b"], "event": ["view", "save"],
             "timestamp": ["2022-02-25T10:00:00", "2022-02-25T10:01:00"], "query": ["kettle", None]}
        )  # fmt: skip
        assert store.upsert_users(users) == 1
        assert store.upsert_users(users) == 0
        assert store.add_interactions(events) == 2
        assert store.add_interactions(events) == 0
        assert store.count("interactions") == 2
    finally:
        store.close()
