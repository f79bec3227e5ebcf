"""The service with no catalogue of its own (`SharedListings`): two marketplaces over one
PostgreSQL database, as two API processes are, rank and show what the database holds now.

Retrieval is the embedded searcher here, one object lent to both (standing in for the engine
they share: tests/test_api_replicas.py runs the real thing, two processes and Milvus); what is
tested is the service's side: candidate fields read per request, the same ranking as the
in-memory catalogue gives, writes decided by the database, a feed from a bounded pool.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from api_fixtures import copy_bundle
from test_api_postgres import copy_database

from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.errors import AlreadyExistsError, NotFoundError
from fbmarket.recommend.buyers import Buyer
from fbmarket.service.listings import SharedListings
from fbmarket.service.types import ListingInput, SearchRequest


@pytest.fixture
def markets(api_bundle: Path, database_url: str, tmp_path: Path):
    """(embedded, shared A, shared B) over one PostgreSQL copy of the bundle's database."""
    from fbmarket.service import Marketplace

    bundle = copy_bundle(api_bundle, tmp_path / "bundle")
    sqlite = Settings()
    sqlite.out_dir = bundle
    assert copy_database(sqlite.db_url, database_url) > 0
    (bundle / "fbmarket.db").unlink()
    embedded = Marketplace.open(bundle, database_url)
    shared = []
    for _ in range(2):  # each with its own connections, as another process would have
        store = Store(database_url, root=bundle)
        shared.append(
            Marketplace(
                embedded.bundle_dir,
                embedded.settings,
                store,
                embedded.model,
                embedded.searcher,
                embedded.ranking,
                None,
                SharedListings(store, embedded.settings.rank.affinity_level),
            )
        )
    yield embedded, shared[0], shared[1]
    for market in shared:
        market.store.close()
    embedded.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_shared_marketplaces_over_one_database(markets) -> None:
    embedded, a, b = markets
    assert a.catalogue is None and a.listings.shared
    titles = embedded.store.listings_frame()[S.TITLE].tolist()
    users = sorted(embedded._users)[:2]

    # Ranking from rows read per request is the ranking from the in-memory catalogue.
    for query, user in zip(titles[:4], [None, users[0], None, users[-1]], strict=True):
        request = SearchRequest(query=query, k=8, buyer=None if user is None else Buyer(user_id=user))
        want, got = embedded.search(request), a.search(request)
        assert [(r.product_id, round(r.score, 9), r.price, r.image_count) for r in got.results] == [
            (r.product_id, round(r.score, 9), r.price, r.image_count) for r in want.results
        ]
    feed = a.recommend(users[0], k=10)
    assert len(feed.results) == 10 and feed.mode == "feed"
    root = feed.results[0].root_category
    filtered = a.search(SearchRequest(query=None, k=5, buyer=Buyer(user_id=users[0]), category=root.lower()))
    assert filtered.results and {r.root_category for r in filtered.results} == {root}

    # A write on one is what the other shows next (no restart, no cache in between).
    some = a.search(SearchRequest(query=titles[0], k=1)).results[0]
    a.update_listing(some.product_id, ListingInput(title=some.title, price=1234.5), None)
    assert b.search(SearchRequest(query=titles[0], k=1)).results[0].price == 1234.5
    assert embedded.search(SearchRequest(query=titles[0], k=1)).results[0].price != 1234.5, (
        "the in-memory catalogue is this process's own: it never sees another's write"
    )

    # A category another process wrote (`fbmarket index`) is a valid filter on B at once.
    assert b._canonical_category("home & garden") == "Home & Garden"  # the cache is loaded now
    row = embedded.store.listings_frame([some.product_id]).assign(
        product_id="bell-1",
        category="Nautical / Bells",
        root_category="Nautical",
        leaf_category="Nautical / Bells",
    )
    embedded.store.upsert_listings(row)
    assert b._canonical_category("nautical/bells") == "Nautical / Bells"
    embedded.store.delete_listing("bell-1")

    # The database decides a create race between the two.
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def create(market) -> None:
        barrier.wait()
        try:
            market.create_listing(ListingInput(title="Twin lamp", price=9.0, product_id="twin-1"), [])
            outcomes.append("created")
        except AlreadyExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(m,)) for m in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "refused"]

    # A delete on one: the other's edit is a 404, never a resurrection.
    b.delete_listing("twin-1")
    with pytest.raises(NotFoundError):
        a.update_listing("twin-1", ListingInput(title="Twin lamp", price=1.0), None)
    assert not a.listings.contains("twin-1")
    assert a.ready()["index"], a.readiness()["index"]
