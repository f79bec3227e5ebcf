"""The listing database: idempotent upserts, deletes, embeddings, buyers — on real SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fbmarket.data import schema as S
from fbmarket.data.store import Store, rebased_photo_path
from fbmarket.data.tables import images


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


def test_named_queries_the_service_and_page_use(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upsert_listings(listings(), photos())
        users = pd.DataFrame(
            {"user_id": ["u2", "u1"], "age": ["34", None], "gender": ["female", None], "location": ["Leeds", None]}
        )
        store.upsert_users(users)
        assert store.photo_counts() == {"a": 2}
        assert store.photo_counts(["b"]) == {}
        assert store.user_ids() == {"u1", "u2"}
        assert [b["user_id"] for b in store.buyers(limit=1)] == ["u1"]
        assert set(store.buyers(limit=5)[1]) == {"user_id", "age", "gender", "location"}
        assert store.root_categories() == ["Appliances", "Home & Garden"]
    finally:
        store.close()


def test_photo_paths_are_stored_relative_to_the_bundle_and_read_back_absolute(
    database_url: str, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    inside = bundle / "cache" / "images_64"
    outside = tmp_path / "elsewhere" / "x.jpg"
    frame = photos()
    frame[S.IMAGE_PATH] = [str(inside / "i1.jpg"), str(outside), str(inside / "o.jpg")]
    store = Store(database_url, root=bundle)
    try:
        store.upsert_listings(listings(), frame)
        with store.engine.connect() as connection:
            stored = dict(connection.execute(sa.select(images.c.image_id, images.c.path)).all())
        assert stored == {"i1": "cache/images_64/i1.jpg", "i2": str(outside)}
        read = store.images_frame(["a"]).set_index(S.IMAGE_ID)[S.IMAGE_PATH]
        assert read.to_dict() == {"i1": str(inside / "i1.jpg"), "i2": str(outside)}
        assert store.upsert_listings(listings(), frame) == 0  # the same input is the same row
    finally:
        store.close()


def test_legacy_photo_paths_are_rebased_onto_the_bundle_once(database_url: str, tmp_path: Path) -> None:
    """Paths written before they were bundle-relative: relative to the cwd training ran in, or
    absolute at a place the bundle has since left; both point into <something>/cache/images_*."""
    bundle = tmp_path / "moved"
    (bundle / "cache" / "images_64").mkdir(parents=True)
    elsewhere = tmp_path / "keep" / "photo.jpg"  # not in a photo cache: stays as it is
    still_there = tmp_path / "old" / "cache" / "images_64" / "kept.jpg"  # the bundle has no copy
    still_there.parent.mkdir(parents=True)
    still_there.write_bytes(b"x")
    (bundle / "cache" / "images_64" / "i2.jpg").write_bytes(b"x")
    legacy = {
        "i1": "artifacts/cache/images_64/i1.jpg",
        "i2": "/gone/old/place/artifacts/cache/images_64/i2.jpg",
        "i3": str(elsewhere),
        "i4": str(still_there),
        "i5": "cache/uploads_64/i5.jpg",
    }
    frame = pd.DataFrame(
        {
            S.IMAGE_ID: list(legacy),
            S.PRODUCT_ID: ["a"] * len(legacy),
            S.IMAGE_PATH: list(legacy.values()),
            S.WIDTH: 1,
            S.HEIGHT: 1,
            S.ASPECT: 1.0,
            S.ORIGINAL_MODE: "RGB",
        }
    )
    old_writer = Store(database_url)  # no root: paths stored as given
    old_writer.upsert_listings(listings(), frame)
    old_writer.close()
    store = Store(database_url, root=bundle)
    try:
        # Read correctly before any migration, and migrated in place on request.
        read = store.images_frame(["a"]).set_index(S.IMAGE_ID)[S.IMAGE_PATH].to_dict()
        assert read["i1"] == str(bundle / "cache/images_64/i1.jpg")
        assert read["i2"] == str(bundle / "cache/images_64/i2.jpg")
        assert read["i3"] == str(elsewhere)
        assert read["i4"] == str(still_there)
        assert read["i5"] == str(bundle / "cache/uploads_64/i5.jpg")
        assert store.rebase_photo_paths() == 2
        assert store.rebase_photo_paths() == 0
        with store.engine.connect() as connection:
            stored = dict(connection.execute(sa.select(images.c.image_id, images.c.path)).all())
        assert stored == legacy | {"i1": "cache/images_64/i1.jpg", "i2": "cache/images_64/i2.jpg"}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("cache/images_128/a.jpg", "cache/images_128/a.jpg"),
        ("artifacts/cache/images_128/a.jpg", "cache/images_128/a.jpg"),
        ("/srv/runs/cache/bundle/cache/uploads_64/b.jpg", "cache/uploads_64/b.jpg"),
        ("/srv/photos/c.jpg", "/srv/photos/c.jpg"),
        ("/srv/cache/images_x/c.jpg", "/srv/cache/images_x/c.jpg"),  # not a photo cache folder
    ],
)
def test_rebased_photo_path(path: str, expected: str) -> None:
    assert rebased_photo_path(path, Path("/bundle")) == expected
    assert rebased_photo_path(expected, Path("/bundle")) == expected  # idempotent
