"""Where the service reads a listing's fields (price, place, category, date, title, photo count)
for ranking and results: its own in-memory catalogue, or the shared database per request.

Embedded (the default: FAISS + BM25 in the process, one server) `LocalListings` is the
`ListingCatalogue` (fbmarket/catalogue.py) the service has always held: every listing once
in memory, written by this process after each database write. That is only right while one
process writes: a second `fbmarket serve` on the same database would never see the first's
writes.

Shared (a retrieval engine several processes use: Milvus, `index_uri`) `SharedListings`
keeps no listing in memory. What a request ranks and shows is read from the database by id,
once per request (`view(ids)`: one query for the candidates, built into a small catalogue
view the ranker and result assembly read exactly as they read the embedded one), so a
write acknowledged by any process is seen by the next request on every process. A home
feed's pool is a bounded query (the newest listings of the buyer's favourite categories, the
popular ones by id) instead of a scan of a local table. The only cache is the category
names that validate a filter: `CategoryNames`, a short TTL refreshed at once on a miss (see
there), so a category created on another process is never refused.

Both answer the same questions (`ListingSource`), so the service's code is one code path.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from fbmarket.catalogue import IMAGE_COUNT, CatalogueView, ListingCatalogue
from fbmarket.data import schema as S
from fbmarket.search.filters import (
    KM_PER_DEGREE_LAT,
    Filters,
    UnknownCategoryError,
    category_key,
    filter_mask,
)

if TYPE_CHECKING:
    from fbmarket.data.store import Store


class ListingSource(Protocol):
    """The listing fields the service reads, wherever they live."""

    shared: bool  # True: other processes write the same catalogue (no local state to trust)

    def view(self, product_ids: Sequence[str] | None = None, texts: bool = False) -> CatalogueView:
        """A read-only view holding at least these listings (None: every listing; embedded only);
        `texts`: descriptions too (the embedded catalogue always has them)."""
        ...

    def contains(self, product_id: str) -> bool: ...

    def count(self) -> int: ...

    def written(self, products: pd.DataFrame, image_counts: Sequence[int] | None) -> None:
        """Listings this process has just written to the database."""
        ...

    def deleted(self, product_ids: Iterable[str]) -> None: ...


class LocalListings:
    """The embedded service's catalogue: every listing in memory, written by this process only."""

    shared = False

    def __init__(self, catalogue: ListingCatalogue):
        self.catalogue = catalogue

    def view(self, product_ids: Sequence[str] | None = None, texts: bool = False) -> CatalogueView:
        return self.catalogue.view()  # the whole table: an id lookup per row, no copy

    def contains(self, product_id: str) -> bool:
        return product_id in self.catalogue.view()

    def count(self) -> int:
        return len(self.catalogue)

    def written(self, products: pd.DataFrame, image_counts: Sequence[int] | None) -> None:
        self.catalogue.upsert(products, image_counts)

    def deleted(self, product_ids: Iterable[str]) -> None:
        self.catalogue.delete(product_ids)


class SharedListings:
    """Listings read from the shared database for each request; nothing kept between requests.

    `ranking_level` is the category column buyers have affinities for
    (`RankSettings.affinity_level`), as for the embedded catalogue.
    """

    shared = True

    def __init__(self, store: Store, ranking_level: str = S.ROOT_CATEGORY):
        self.store = store
        self.ranking_level = ranking_level

    def view(self, product_ids: Sequence[str] | None = None, texts: bool = False) -> CatalogueView:
        """The listings with these ids, read now (absent ids: not in the view). O(len(ids)):
        one database query, then `ListingCatalogue.from_frame` over its rows. `texts`: with
        descriptions (duplicate checks read them; ranking and results do not)."""
        if product_ids is None:
            raise ValueError("a shared catalogue is never read whole per request: give the ids")
        ids = list(dict.fromkeys(str(pid) for pid in product_ids))
        return self.frame_view(self.store.listing_rows(ids, texts=texts))

    def frame_view(self, rows: pd.DataFrame) -> CatalogueView:
        """A catalogue view of database rows (with their IMAGE_COUNT column)."""
        counts = dict(zip(rows[S.PRODUCT_ID].astype(str), rows[IMAGE_COUNT].astype(int), strict=True))
        return ListingCatalogue.from_frame(rows, self.ranking_level, image_counts=counts).view()

    def contains(self, product_id: str) -> bool:
        return self.store.has_listing(product_id)

    def count(self) -> int:
        return self.store.count("listings")

    def written(self, products: pd.DataFrame, image_counts: Sequence[int] | None) -> None:
        """Nothing to do: the database, already written, is what every request reads."""

    def deleted(self, product_ids: Iterable[str]) -> None:
        """Nothing to do: the database, already written, is what every request reads."""

    def feed_view(
        self,
        categories: Sequence[str],
        per_category: int,
        popular: Sequence[str],
        filters: Filters | None,
        canonical: Callable[[str], str],
    ) -> CatalogueView:
        """A home feed's bounded pool as a view: the `per_category` newest listings of each of
        the buyer's favourite `categories` (at the ranking level), the listings of `popular`
        (ids, most popular first) and as many of the newest listings overall, all under the
        filters' category, price bounds and latitude band (the exact distance is filtered by
        `filter_mask` after). At most (len(categories) + 2) * per_category listings."""
        category = canonical(filters.category) if filters is not None and filters.category else None
        bounds: dict = {}
        if filters is not None:
            bounds = {"min_price": filters.min_price, "max_price": filters.max_price}
            if filters.max_km is not None and filters.latitude is not None:
                band = filters.max_km / KM_PER_DEGREE_LAT
                bounds["latitude_band"] = (filters.latitude - band, filters.latitude + band)
        frames = []
        recent = self.store.recent_listings
        if category is None:
            for value in categories:
                frames.append(recent(self.ranking_level, value, per_category, **bounds))
            frames.append(recent(None, None, per_category, **bounds))
        else:  # the filter's category first: the buyer's favourites may have none of it
            frames.append(
                recent(S.CATEGORY, category, per_category * max(len(categories), 1), prefix=True, **bounds)
            )
        if popular:
            frames.append(self.store.listing_rows(list(popular)[:per_category], texts=False))
        rows = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        return self.frame_view(rows.drop_duplicates(S.PRODUCT_ID, keep="first"))


def excluded_by(view: CatalogueView, filters: Filters | None) -> set[str] | None:
    """Ids of the view's listings the filters exclude (None: nothing filtered)."""
    if filters is None or not filters.active:
        return None
    return set(view.ids[view.alive & ~filter_mask(view, filters)].tolist())


class CategoryNames:
    """The catalogue's category paths for validating and spelling a filter or a seller's
    category, without holding the catalogue: the database's distinct categories, cached.

    A TTL bounds how often the database is asked (`ttl_s`, ServeSettings.category_cache_s).
    Staleness cannot refuse a good category: a name the cache does not know triggers one
    refresh before it is refused, so a category created a moment ago on another process is
    accepted at once. What a stale cache can do is accept, for at most `ttl_s`, a category
    whose last listing was just deleted: that search finds nothing, which is also the answer
    once the cache refreshes. The matching (prefixes, `category_key`, the nearest spelling
    in the error) is that of `HybridSearcher.canonical_category`.
    """

    def __init__(
        self, paths: Callable[[], list[str]], ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ):
        self._paths = paths
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._prefixes: dict[str, str] = {}
        self._roots: list[str] = []
        self._loaded_at: float | None = None

    def _refresh(self) -> None:
        prefixes: dict[str, str] = {}
        roots: set[str] = set()
        for path in self._paths():
            parts = [part.strip() for part in path.split(" / ")]
            roots.add(parts[0])
            for depth in range(1, len(parts) + 1):
                written = " / ".join(parts[:depth])
                prefixes.setdefault(category_key(written), written)
        with self._lock:
            self._prefixes, self._roots, self._loaded_at = prefixes, sorted(roots), self._clock()

    def _current(self) -> dict[str, str]:
        loaded = self._loaded_at
        if loaded is None or self._clock() - loaded > self.ttl_s:
            self._refresh()
        return self._prefixes

    def canonical(self, category: str, roots: Iterable[str] = ()) -> str:
        """The catalogue's spelling of `category` (a path or a prefix of one, or one of `roots`,
        e.g. the model's classes); raises UnknownCategoryError (the roots, the nearest
        spelling) when nothing matches, after one refresh from the database."""
        key = category_key(category)
        extra = {category_key(root): root for root in roots}
        if key in extra:
            return extra[key]
        prefixes = self._current()
        if key not in prefixes:
            self._refresh()  # maybe created since the last refresh, on any process
            prefixes = self._prefixes
        if key in prefixes:
            return prefixes[key]
        known = extra | prefixes
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        all_roots = sorted(set(extra.values()) | set(self._roots))
        raise UnknownCategoryError(category, all_roots, known[close[0]] if close else None)


def popular_ids(popularity: dict[str, float], n: int) -> list[str]:
    """The n most popular listing ids (event-weighted interactions, BuyerProfiles.popularity)."""
    if not popularity or n <= 0:
        return []
    ids = np.array(list(popularity), dtype=object)
    scores = np.fromiter(popularity.values(), dtype=float, count=len(ids))
    top = np.argsort(-scores, kind="stable")[:n]
    return ids[top].tolist()
