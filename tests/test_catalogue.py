"""The one listing catalogue (fbmarket/catalogue.py): versions, read-only views, flat write cost."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fbmarket import catalogue as C
from fbmarket.catalogue import ListingCatalogue
from fbmarket.data import schema as S


def listings(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """Synthetic clean listings: three roots, two leaves each, prices and places."""
    rng = np.random.default_rng(seed)
    roots = np.array(["Home & Garden", "Electronics", "Sports & Leisure"])
    root = roots[rng.integers(0, 3, n)]
    leaf = np.where(rng.random(n) < 0.5, "Sofas", "Lamps")
    return pd.DataFrame(
        {
            S.PRODUCT_ID: [f"p{i}" for i in range(start, start + n)],
            S.TITLE: [f"title {i}" for i in range(start, start + n)],
            S.DESCRIPTION: "words",
            S.CATEGORY: [f"{r} / {lf}" for r, lf in zip(root, leaf, strict=True)],
            S.ROOT_CATEGORY: root,
            S.LEAF_CATEGORY: [f"{r} / {lf}" for r, lf in zip(root, leaf, strict=True)],
            S.PRICE: rng.uniform(0, 500, n).round(2),
            S.LOCATION: "Leeds, West Yorkshire",
            S.LATITUDE: rng.uniform(50, 55, n),
            S.LONGITUDE: rng.uniform(-3, 0, n),
            S.CREATED: "2024-05-01",
        }
    )


def test_writes_bump_the_version_and_old_views_keep_their_version() -> None:
    catalogue = ListingCatalogue.from_frame(listings(5), image_counts={"p1": 3})
    before = catalogue.view()
    assert before.version == 0 and len(before) == 5 and before.image_count[before.row("p1")] == 3

    catalogue.upsert(listings(1, start=1).assign(**{S.TITLE: "new title", S.PRICE: 9.0}))  # update
    catalogue.upsert(listings(1, start=7))  # create
    assert catalogue.delete(["p2", "missing"]) == 1
    after = catalogue.view()
    assert after.version == 3 and catalogue.version == 3 and len(after) == len(catalogue) == 5

    # the old view answers as of version 0: old title and price, no p7, p2 still listed
    assert before.title_of("p1") == "title 1" and before.price[before.row("p1")] != 9.0
    assert "p7" not in before and "p2" in before and len(before) == 5
    assert set(before.live_ids) == {"p0", "p1", "p2", "p3", "p4"}
    # the new one sees every write whole; a replaced listing keeps its photo count
    assert after.title_of("p1") == "new title" and after.price[after.row("p1")] == 9.0
    assert after.image_count[after.row("p1")] == 3
    assert "p7" in after and "p2" not in after
    assert set(after.live_ids) == {"p0", "p1", "p3", "p4", "p7"}
    assert after.rows(["p2", "p7", "nope"])[[0, 2]].tolist() == [-1, -1]
    assert catalogue.view() is after  # one view per version, shared by readers


def test_views_are_read_only() -> None:
    view = ListingCatalogue.from_frame(listings(4)).view()
    for array in (
        view.ids,
        view.price,
        view.latitude,
        view.title,
        view.alive,
        view.created,
        view.image_count,
    ):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = array[1]
    with pytest.raises(ValueError, match="read-only"):
        view.codes(S.ROOT_CATEGORY)[0] = 0


def test_growth_and_compaction_keep_every_view_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "MIN_CAPACITY", 16)
    monkeypatch.setattr(C, "COMPACT_MIN_DEAD", 16)
    catalogue = ListingCatalogue.from_frame(listings(10))
    first = catalogue.view()
    rows = listings(10)
    views = []
    for i in range(200):  # grows its buffers, and compacts the tombstones away, several times
        catalogue.upsert(rows.iloc[[i % 10]].assign(**{S.TITLE: f"v{i}"}))
        views.append(catalogue.view())
    last = catalogue.view()
    assert len(last) == 10 and last.n_rows < 200  # compacted
    assert last.title_of("p9") == "v199" and last.title_of("p0") == "v190"
    assert first.title_of("p9") == "title 9" and len(first) == 10 and first.alive.all()
    for i, view in enumerate(views):  # every version still reads as it was written
        assert view.title_of(f"p{i % 10}") == f"v{i}" and len(view) == 10
    frame = last.products
    assert sorted(frame[S.PRODUCT_ID]) == sorted(f"p{i}" for i in range(10))
    assert frame[S.ROOT_CATEGORY].notna().all()


def test_a_batch_is_one_version_and_its_last_copy_of_an_id_wins() -> None:
    catalogue = ListingCatalogue.from_frame(listings(3))
    batch = pd.concat([listings(2, start=5), listings(1, start=5).assign(**{S.TITLE: "last"})])
    catalogue.upsert(batch, image_counts=[1, 2, 4])
    view = catalogue.view()
    assert view.version == 1 and len(view) == 5
    assert view.title_of("p5") == "last" and view.image_count[view.row("p5")] == 4


def test_a_write_costs_the_same_at_100k_listings_as_at_1k() -> None:
    """The catalogue part of a live create/update/delete does not grow with the catalogue
    (it rebuilt whole frames before; benchmarks/catalogue_writes.py has the figures)."""

    def median_write(n: int) -> float:
        catalogue = ListingCatalogue.from_frame(listings(n))
        rows = [listings(1, start=n + i, seed=i) for i in range(60)]
        times = []
        for i, row in enumerate(rows):
            started = time.perf_counter()
            catalogue.upsert(row, [0])  # create
            catalogue.upsert(listings(1, start=i, seed=i), [1])  # update
            catalogue.delete([f"p{n + i}"])  # delete
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    small, large = median_write(1_000), median_write(100_000)
    assert large < 5 * small, (
        f"a write at 100k listings took {large * 1e3:.2f} ms, at 1k {small * 1e3:.2f} ms"
    )


def test_readers_never_see_half_a_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader taking views while a writer updates, creates and deletes (growing and compacting
    the table) always finds each listed row whole: its title and price from the same write."""
    import threading

    monkeypatch.setattr(C, "MIN_CAPACITY", 16)
    monkeypatch.setattr(C, "COMPACT_MIN_DEAD", 16)
    base = listings(20)
    catalogue = ListingCatalogue.from_frame(base.assign(**{S.TITLE: "0.0", S.PRICE: 0.0}))
    done = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not done.is_set():
            view = catalogue.view()
            rows = view.rows(base[S.PRODUCT_ID])
            for row in rows[rows >= 0].tolist():
                if view.title[row] != str(view.price[row]):
                    problems.append(f"v{view.version}: {view.title[row]} != {view.price[row]}")
            if len(view) != int(view.alive.sum()):
                problems.append(f"v{view.version}: {len(view)} listed, {int(view.alive.sum())} alive")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 400):
            row = base.iloc[[i % 20]].assign(**{S.TITLE: str(float(i)), S.PRICE: float(i)})
            catalogue.upsert(row)
            if i % 7 == 0:
                catalogue.delete([f"p{(i + 3) % 20}"])
    finally:
        done.set()
        reader.join()
    assert not problems, problems[:5]
