"""The database as the one truth of several API processes: the primary key decides a create race,
a row lock orders an edit and a delete, and what a request ranks is read back by id — on real
SQLite and PostgreSQL (service/listings.py, data/store.py)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from test_store import listings, photos

from fbmarket.catalogue import IMAGE_COUNT
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.errors import AlreadyExistsError, NotFoundError
from fbmarket.search.filters import Filters, UnknownCategoryError
from fbmarket.service.listings import CategoryNames, SharedListings, excluded_by, popular_ids


def one(
    product_id: str, title: str = "Oak shelf", price: float = 12.0, category: str = "Home & Garden / Shelves"
):
    frame = listings().iloc[[0]].copy()
    frame[S.PRODUCT_ID] = product_id
    frame[S.TITLE] = title
    frame[S.PRICE] = price
    frame[S.CATEGORY] = category
    frame[S.ROOT_CATEGORY] = category.split(" / ")[0]
    frame[S.LEAF_CATEGORY] = category
    return frame.reset_index(drop=True)


def test_a_second_create_of_one_id_is_refused_by_the_primary_key(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.save_listing(one("x1"), None, np.ones((1, 4), np.float32), "v1", expect="new")
        with pytest.raises(AlreadyExistsError) as refused:
            store.save_listing(
                one("x1", title="Other"), None, np.zeros((1, 4), np.float32), "v1", expect="new"
            )
        assert refused.value.field == "product_id"
        assert store.get_listing("x1")["title"] == "Oak shelf", "the first create is never overwritten"
        ids, vectors = store.load_embeddings("v1")
        assert ids == ["x1"] and vectors[0, 0] == 1.0, "nor its embedding: the transaction rolled back"
    finally:
        store.close()


def test_concurrent_creates_of_one_id_give_exactly_one_winner(database_url: str) -> None:
    """Each thread has its own connection (as two processes would): one insert wins, the rest
    are refused, whatever the interleaving."""
    store = Store(database_url)
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def create(n: int) -> None:
        barrier.wait()
        try:
            store.save_listing(one("race", title=f"Racer {n}"), None, None, "v1", expect="new")
            outcome = "created"
        except AlreadyExistsError:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    try:
        threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["created", "refused", "refused", "refused"]
        assert store.count("listings") == 1
    finally:
        store.close()


def test_an_edit_never_brings_back_a_deleted_listing(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.save_listing(one("e1"), None, None, "v1", expect="new")
        store.save_listing(one("e1", price=3.0), None, None, "v1", expect="existing")
        assert store.get_listing("e1")["price"] == 3.0
        assert store.delete_listing("e1")
        with pytest.raises(NotFoundError):
            store.save_listing(one("e1", price=4.0), None, None, "v1", expect="existing")
        assert store.get_listing("e1") is None
    finally:
        store.close()


def test_rows_by_id_carry_photo_counts_and_build_the_ranking_view(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upsert_listings(listings(), photos())
        rows = store.listing_rows(["b", "a", "missing"])
        assert sorted(rows[S.PRODUCT_ID]) == ["a", "b"]
        assert dict(zip(rows[S.PRODUCT_ID], rows[IMAGE_COUNT], strict=True)) == {"a": 2, "b": 0}
        view = SharedListings(store).view(["a", "b", "missing"])
        assert len(view) == 2 and "missing" not in view
        row = view.row("a")
        assert view.price[row] == 5.0 and view.image_count[row] == 2
        assert view.value(S.CATEGORY, row) == "Appliances / Kettles"
        assert str(view.created[row])[:10] == "2022-02-24"
        assert SharedListings(store).contains("a") and not SharedListings(store).contains("zzz")
    finally:
        store.close()


def test_recent_listings_are_bounded_newest_first_and_filtered(database_url: str) -> None:
    store = Store(database_url)
    try:
        frames = []
        for n in range(6):
            frame = one(f"r{n}", price=float(10 * n), category="Home & Garden / Sofas" if n % 2 else "Toys")
            frame[S.CREATED] = f"2022-03-0{n + 1}"
            frames.append(frame)
        store.upsert_listings(pd.concat(frames, ignore_index=True))
        newest = store.recent_listings(S.ROOT_CATEGORY, "Home & Garden", limit=2)
        assert newest[S.PRODUCT_ID].tolist() == ["r5", "r3"]
        under = store.recent_listings(S.CATEGORY, "Home & Garden", limit=10, prefix=True, max_price=30)
        assert under[S.PRODUCT_ID].tolist() == ["r3", "r1"]
        assert len(store.recent_listings(None, None, limit=4)) == 4
    finally:
        store.close()


@pytest.mark.parametrize(
    "spelling", ["Home And Garden", "HOME AND GARDEN", "Home&Garden", "home and garden", "HOME & GARDEN"]
)
def test_category_names_ignore_case_spacing_and_and(spelling: str) -> None:
    """The shared service's category check (POST /listings, /predict/*, the category filter)."""
    names = CategoryNames(lambda: ["Home & Garden / Sofas", "Baby & Kids Stuff / Prams"], ttl_s=3600)
    assert names.canonical(spelling) == "Home & Garden"
    assert names.canonical(spelling + "/sofas") == "Home & Garden / Sofas"
    assert names.canonical("Baby&Kids Stuff") == "Baby & Kids Stuff"
    with pytest.raises(UnknownCategoryError):
        names.canonical("Home Garden")


def test_category_names_refresh_on_a_miss_so_a_new_category_is_never_refused(database_url: str) -> None:
    store = Store(database_url)
    asked: list[int] = []
    try:
        store.upsert_listings(listings())

        def paths() -> list[str]:
            asked.append(1)
            return store.category_paths()

        names = CategoryNames(paths, ttl_s=3600)
        assert names.canonical("appliances/kettles") == "Appliances / Kettles"
        assert names.canonical("home and garden") == "Home & Garden"
        assert len(asked) == 1, "answered from the cache"
        store.upsert_listings(one("n1", category="Garden Tools / Spades"))  # another process's write
        assert names.canonical("garden tools / spades") == "Garden Tools / Spades"
        assert len(asked) == 2, "one refresh, for the name the cache did not know"
        with pytest.raises(UnknownCategoryError) as unknown:
            names.canonical("Applainces")
        assert unknown.value.suggestion == "Appliances"
        assert names.canonical("Vehicles", roots=["Vehicles"]) == "Vehicles", "the model's classes count"
    finally:
        store.close()


def test_feed_pool_and_its_filters(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.upsert_listings(listings(), photos())
        store.upsert_listings(one("s1", price=300.0, category="Home & Garden / Sofas"))
        shared = SharedListings(store)
        names = CategoryNames(store.category_paths)
        view = shared.feed_view(["Home & Garden"], 10, ["a"], None, names.canonical)
        assert set(view.live_ids) == {"a", "b", "s1"}
        # the filter's category and price bound go to the database: "b" has no price, "a" is elsewhere
        filters = Filters(category="home & garden", max_price=400)
        view = shared.feed_view(["Appliances"], 10, [], filters, names.canonical)
        assert set(view.live_ids) == {"s1"}
        assert excluded_by(view, filters) == set()
        # what the database does not filter (an exact distance) is excluded from the pool after
        view = shared.feed_view(["Appliances"], 10, ["a"], None, names.canonical)
        near_york = Filters(latitude=53.96, longitude=-1.08, max_km=10)
        assert "a" in view and "a" in excluded_by(view, near_york), "Leeds is 30 km from York"
        assert popular_ids({"p": 1.0, "q": 5.0, "r": 3.0}, 2) == ["q", "r"]
    finally:
        store.close()
