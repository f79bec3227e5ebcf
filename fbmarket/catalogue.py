"""The one in-memory listing table: owned by the service, lent read-only to retrieval and ranking.

A listing used to live in four shapes (the database row, the service's frame of shown
fields and photo counts, the searcher's filter table and the ranker's feature table), and
a live create or update rebuilt the last three whole (`pd.concat`), so one write cost time
in proportion to the catalogue. Here it lives once, column by column, beside the database:

* numpy columns (price, coordinates, creation date, photo count, category codes) and object
  columns (id, title, description, location), with an id -> row dict;
* appends go into spare capacity, doubled when full (amortised O(1));
* an update appends the new version of the row and tombstones the old one, a delete
  tombstones it; tombstones are dropped by a compaction once there are as many of them as
  live rows (O(live) work after at least as many writes: amortised O(1));
* `version` goes up by one per write (a batch is one write).

Readers never see half a write. `ListingCatalogue.view()` is a `CatalogueView`: the table as
of one version, with read-only arrays. A write never changes a row a published view can
see (it appends, and only ever marks rows dead at a later version), so a view taken before
a write keeps answering as of its version while the write goes on, and one taken after
sees the whole write. That is why an update is "append + tombstone" rather than an
overwrite in place: several columns cannot be overwritten atomically under readers that
take no lock, and the append costs the same O(1).

Writers are serialised by the owner's lock (the service's write lock) and by this table's
own; readers take no lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from fbmarket.data import schema as S

IMAGE_COUNT = "image_count"  # photos of the listing (results show it)
FLOAT_COLUMNS = (S.PRICE, S.LATITUDE, S.LONGITUDE)
TEXT_COLUMNS = (S.TITLE, S.DESCRIPTION, S.LOCATION)
CODED_COLUMNS = (S.CATEGORY, S.ROOT_CATEGORY, S.LEAF_CATEGORY)  # categories: codes into a dictionary
NEVER = np.iinfo(np.int64).max  # `died` of a row that is current
MIN_CAPACITY = 1024
COMPACT_MIN_DEAD = 1024  # tombstones tolerated before a compaction is considered

T = TypeVar("T")


class _Dictionary:
    """Category values <-> integer codes, append-only (a code never changes meaning), so a view
    reads it safely while a writer adds a new category."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.code_of: dict[str, int] = {}

    def encode(self, column: np.ndarray) -> np.ndarray:
        """Codes of a batch's values, -1 for a missing one (None); new values get new codes."""
        if len(column) <= 64:  # a live write: a dict lookup per value beats factorising
            return np.array([-1 if v is None else self._code(str(v)) for v in column], dtype=np.int64)
        codes, uniques = pd.factorize(pd.Series(column, dtype=object), use_na_sentinel=True)
        mapping = np.empty(len(uniques), dtype=np.int64)
        for i, value in enumerate(uniques):
            mapping[i] = self._code(str(value))
        return np.where(codes >= 0, mapping[np.maximum(codes, 0)] if len(mapping) else -1, -1)

    def _code(self, value: str) -> int:
        code = self.code_of.get(value)
        if code is None:
            code = len(self.values)
            self.values.append(value)  # before the lookup entry: a reader never sees a code without a value
            self.code_of[value] = code
        return code

    def copy(self) -> _Dictionary:
        other = _Dictionary()
        other.values = list(self.values)
        other.code_of = dict(self.code_of)
        return other


class _Storage:
    """The column buffers of one generation of the table (a compaction starts a new one).

    `columns` maps a key ("ids", "died", "prev", "created", IMAGE_COUNT, "f:<float column>",
    "t:<text column>", "c:<category column>") to its buffer. Rows [0, n) are written; a row
    below a published view's n is never overwritten, except `died`, which only goes from
    NEVER to a version later than any published one.
    """

    def __init__(self, capacity: int, coded: tuple[str, ...], dictionaries: dict[str, _Dictionary]):
        self.capacity = capacity
        self.n = 0
        self.row_of: dict[str, int] = {}  # id -> its newest row (dead once deleted, until compaction)
        keys = ["ids", "died", "prev", "created", IMAGE_COUNT]
        keys += (
            [f"f:{c}" for c in FLOAT_COLUMNS] + [f"t:{c}" for c in TEXT_COLUMNS] + [f"c:{c}" for c in coded]
        )
        self.columns = {key: _blank(key, capacity) for key in keys}
        self.dictionaries = dictionaries

    def grow(self, capacity: int) -> None:
        """Copy every column into buffers of `capacity` rows. Each new buffer is filled before it
        replaces the old one, so a reader sees one or the other, both right for its rows."""
        for key, old in list(self.columns.items()):
            new = _blank(key, capacity)
            new[: self.n] = old[: self.n]
            self.columns[key] = new
        self.capacity = capacity


def _blank(key: str, capacity: int) -> np.ndarray:
    """An empty buffer for a column: missing values (NaN, None, NaT, -1 codes), live rows, no photos."""
    if key == "died":
        return np.full(capacity, NEVER, dtype=np.int64)
    if key in ("prev",) or key.startswith("c:"):
        return np.full(capacity, -1, dtype=np.int64)
    if key == IMAGE_COUNT:
        return np.zeros(capacity, dtype=np.int64)
    if key == "created":
        return np.full(capacity, np.datetime64("NaT"), dtype="datetime64[ns]")
    if key.startswith("f:"):
        return np.full(capacity, np.nan)
    return np.full(capacity, None, dtype=object)  # ids and texts


def _batch_columns(products: pd.DataFrame, coded: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The catalogue's columns of a products frame, as arrays (absent columns: missing values).

    Plain numpy on the frame's arrays: a live write is one row, where pandas' per-call
    overhead (Series, alignment) would cost more than the write itself.
    """
    S.require_columns(products, (S.PRODUCT_ID,), "products")
    n = len(products)

    def raw(name: str) -> np.ndarray:
        return products[name].to_numpy() if name in products else np.full(n, None, dtype=object)

    def objects(name: str) -> np.ndarray:
        values = np.array(raw(name), dtype=object)  # a copy: missing values become None below
        values[pd.isna(values)] = None
        return values

    out: dict[str, np.ndarray] = {"ids": np.array([str(pid) for pid in raw(S.PRODUCT_ID)], dtype=object)}
    for name in FLOAT_COLUMNS:
        values = raw(name)
        if values.dtype.kind not in "fiub":  # text or mixed: what does not parse is missing
            values = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy()
        out[f"f:{name}"] = values.astype(float)
    for name in TEXT_COLUMNS:
        out[f"t:{name}"] = objects(name)
    for name in coded:
        out[f"c:{name}"] = objects(name)  # encoded on append
    created = raw(S.CREATED)
    if created.dtype.kind != "M":  # text, or aware date-times (UTC wall time, as pandas gives it)
        parsed = pd.to_datetime(pd.Series(created, dtype=object), errors="coerce", format="mixed", utc=True)
        created = parsed.dt.tz_localize(None).to_numpy("datetime64[ns]")
    out["created"] = created.astype("datetime64[ns]")
    return out


class ListingCatalogue:
    """The service's listings as one versioned column table (see the module docstring).

    Only the owner writes (`upsert`, `delete`); everyone else reads `view()`. `ranking_level`
    is the category column buyers have affinities for (`RankSettings.affinity_level`).
    """

    def __init__(self, ranking_level: str = S.ROOT_CATEGORY) -> None:
        self.ranking_level = ranking_level
        self.coded = tuple(dict.fromkeys((*CODED_COLUMNS, ranking_level)))
        self._lock = threading.Lock()
        self._storage = _Storage(MIN_CAPACITY, self.coded, {c: _Dictionary() for c in self.coded})
        self._live = 0
        self._version = 0
        self._view: CatalogueView | None = None

    @classmethod
    def from_frame(
        cls,
        products: pd.DataFrame,
        ranking_level: str = S.ROOT_CATEGORY,
        image_counts: dict[str, int] | None = None,
    ) -> ListingCatalogue:
        """A catalogue of a clean products table (the last row of a repeated id wins), at version 0.
        `image_counts`: photos per listing id (absent ids: 0)."""
        catalogue = cls(ranking_level)
        table = products.drop_duplicates(S.PRODUCT_ID, keep="last") if S.PRODUCT_ID in products else products
        catalogue._storage.grow(max(MIN_CAPACITY, len(table) + len(table) // 2))
        counts = None
        if image_counts is not None:
            ids = table[S.PRODUCT_ID].astype(str)
            counts = np.array([image_counts.get(pid, 0) for pid in ids], dtype=np.int64)
        catalogue._append(_batch_columns(table, catalogue.coded), counts)
        return catalogue

    # ------------------------------------------------------------------ reading
    @property
    def version(self) -> int:
        return self._version

    def __len__(self) -> int:
        return self._live

    def view(self) -> CatalogueView:
        """The table as of the latest write, read-only; the same object until the next write."""
        view = self._view
        if view is None:
            with self._lock:
                if self._view is None:
                    self._view = CatalogueView(
                        self._storage, self._storage.n, self._version, self._live, self
                    )
                view = self._view
        return view

    # ------------------------------------------------------------------ writing
    def upsert(self, products: pd.DataFrame, image_counts: Sequence[int] | None = None) -> None:
        """Add or replace listings (one write: one new version). `image_counts` (one per row):
        their photos; without it a replaced listing keeps its count and a new one has 0."""
        if products.empty:
            return
        if image_counts is not None and len(image_counts) != len(products):
            raise ValueError(f"image_counts has {len(image_counts)} values for {len(products)} listings")
        columns = _batch_columns(products, self.coded)
        counts = None if image_counts is None else np.asarray(image_counts, dtype=np.int64)
        with self._lock:
            self._append(columns, counts)
            self._publish()

    def delete(self, product_ids: Iterable[str]) -> int:
        """Remove listings (one write); returns how many were listed."""
        with self._lock:
            storage, died = self._storage, self._version + 1
            removed = 0
            for pid in dict.fromkeys(map(str, product_ids)):
                row = storage.row_of.get(pid)
                if row is not None and storage.columns["died"][row] == NEVER:
                    storage.columns["died"][row] = died
                    removed += 1
            self._live -= removed
            if removed:
                self._publish()
            return removed

    def _append(self, columns: dict[str, np.ndarray], counts: np.ndarray | None) -> None:
        """Append a batch (a repeated id in it: the last wins); tombstone the rows it replaces.
        Called with the lock held (or before the table is shared)."""
        storage = self._storage
        ids = columns["ids"]
        m = len(ids)
        if storage.n + m > storage.capacity:
            storage.grow(max(2 * storage.capacity, storage.n + m))
        buffers = storage.columns
        start, end, died = storage.n, storage.n + m, self._version + 1
        for key, values in columns.items():
            if key.startswith("c:"):
                values = storage.dictionaries[key[2:]].encode(values)
            buffers[key][start:end] = values
        row_of, alive_until, photos = storage.row_of, buffers["died"], buffers[IMAGE_COUNT]
        id_list = ids.tolist()
        # First each new row's predecessor (and photo count), written before any id points at
        # the new row: a reader of an older view walks `prev` back from wherever `row_of` says.
        prev = np.full(m, -1, dtype=np.int64)
        kept = np.zeros(m, dtype=np.int64) if counts is None else counts
        latest: dict[str, int] = {}  # an id repeated in the batch: its previous copy there
        for i, pid in enumerate(id_list):
            j = latest.get(pid)
            old = start + j if j is not None else row_of.get(pid, -1)
            prev[i] = old
            if counts is None and old >= 0:
                kept[i] = kept[j] if j is not None else photos[old] if alive_until[old] == NEVER else 0
            latest[pid] = i
        buffers["prev"][start:end] = prev
        photos[start:end] = kept
        for i, pid in enumerate(id_list):
            old = int(prev[i])
            if old >= 0 and alive_until[old] == NEVER:  # replaced: the old version dies with this write
                alive_until[old] = died
                self._live -= 1
            row_of[pid] = start + i
            self._live += 1
        storage.n = end

    def _publish(self) -> None:
        """Make the write visible: a new version, and a compaction when tombstones outnumber rows."""
        self._version += 1
        storage = self._storage
        if storage.n - self._live >= max(COMPACT_MIN_DEAD, self._live):
            self._compact()
        self._view = None

    def _compact(self) -> None:
        """Copy the live rows into a new generation. Views of the old one keep reading it."""
        old = self._storage
        rows = np.flatnonzero(old.columns["died"][: old.n] == NEVER)
        dictionaries = {name: d.copy() for name, d in old.dictionaries.items()}
        new = _Storage(max(MIN_CAPACITY, 2 * len(rows)), self.coded, dictionaries)
        m = len(rows)
        for key, buffer in new.columns.items():
            if key not in ("died", "prev"):
                buffer[:m] = old.columns[key][rows]
        new.row_of = dict(zip(new.columns["ids"][:m].tolist(), range(m), strict=True))
        new.n = m
        self._storage = new


class CatalogueView:
    """The catalogue as of one version: read-only arrays over its rows, and lookups by id.

    Arrays cover every row the table had at this version, dead ones included (row numbers
    are stable for the view's life); `alive` says which rows are listed, and `rows` /
    `contains` only ever find listed ones. Views are cheap and shared: take one per
    request and read everything from it, so the request sees one version throughout.
    """

    def __init__(self, storage: _Storage, n: int, version: int, live: int, owner: ListingCatalogue):
        self._storage = storage
        self._n = n
        self.version = version
        self._live = live
        self.level = owner.ranking_level
        self._derived: dict[Any, Any] = {}
        columns = {key: _frozen(buffer[:n]) for key, buffer in storage.columns.items()}
        self._died = columns["died"]
        self.ids = columns["ids"]
        self.price = columns[f"f:{S.PRICE}"]
        self.latitude = columns[f"f:{S.LATITUDE}"]
        self.longitude = columns[f"f:{S.LONGITUDE}"]
        self.title = columns[f"t:{S.TITLE}"]
        self.description = columns[f"t:{S.DESCRIPTION}"]
        self.location = columns[f"t:{S.LOCATION}"]
        self.created = columns["created"]
        self.image_count = columns[IMAGE_COUNT]
        self._codes = {key[2:]: buffer for key, buffer in columns.items() if key.startswith("c:")}
        # dictionaries are append-only: the values a code of this view can name are the first ones
        self._values = {name: tuple(d.values) for name, d in storage.dictionaries.items()}

    def __len__(self) -> int:
        """Listed rows (what the catalogue holds), not `n_rows`."""
        return self._live

    @property
    def n_rows(self) -> int:
        """Rows of the arrays, dead ones included."""
        return self._n

    @property
    def alive(self) -> np.ndarray:
        """Which rows are listed as of this version (a row dies at the write that replaces or
        deletes it, always a later version than any view of it)."""
        return self.derived("alive", lambda: _frozen(self._died > self.version))

    @property
    def live_ids(self) -> np.ndarray:
        return self.derived("live_ids", lambda: _frozen(self.ids[self.alive]))

    def codes(self, column: str) -> np.ndarray:
        """Integer codes of a category column by row (-1: missing); `values(column)[code]` names them."""
        return self._codes[column]

    def values(self, column: str) -> tuple[str, ...]:
        return self._values[column]

    def value(self, column: str, row: int) -> str | None:
        """A category column's value at a row (None: missing)."""
        code = int(self._codes[column][row])
        return self._values[column][code] if code >= 0 else None

    @property
    def category_code(self) -> np.ndarray:
        """Codes of the ranking level's category (`ListingCatalogue.ranking_level`) by row."""
        return self._codes[self.level]

    @property
    def category_index(self) -> dict[str, int]:
        """Ranking-level category name -> its code."""
        return self.derived(
            "category_index", lambda: {name: i for i, name in enumerate(self._values[self.level])}
        )

    def row(self, product_id: str) -> int:
        """The listed row of an id as of this version, -1 when not listed."""
        storage = self._storage
        row = storage.row_of.get(product_id, -1)
        if row >= self._n:  # replaced after this view: walk back to the version it knew
            prev = storage.columns["prev"]  # the current buffer (growth copies rows below n unchanged)
            while row >= self._n:
                row = int(prev[row])
        if row < 0 or self._died[row] <= self.version:
            return -1
        return row

    def rows(self, product_ids: Iterable[Any]) -> np.ndarray:
        """Row of each id (-1: not listed as of this version); `row` for many ids at once."""
        get = self._storage.row_of.get
        rows = np.fromiter((get(str(pid), -1) for pid in product_ids), dtype=np.int64)
        late = np.flatnonzero(rows >= self._n)
        if len(late):  # replaced after this view: walk back to the versions it knew
            prev = self._storage.columns["prev"]
            for i in late.tolist():
                row = int(rows[i])
                while row >= self._n:
                    row = int(prev[row])
                rows[i] = row
        listed = rows >= 0
        listed[listed] = self._died[rows[listed]] > self.version
        return np.where(listed, rows, -1)

    def contains(self, product_id: str) -> bool:
        return self.row(str(product_id)) >= 0

    __contains__ = contains

    def title_of(self, product_id: str) -> str | None:
        row = self.row(str(product_id))
        return None if row < 0 else self.title[row]

    def frame(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """Listed rows (or the given ones) as a products frame, for batch code; O(rows)."""
        rows = np.flatnonzero(self.alive) if rows is None else np.asarray(rows, dtype=np.int64)
        data: dict[str, Any] = {S.PRODUCT_ID: self.ids[rows]}
        data.update({name: getattr(self, attr)[rows] for name, attr in _FRAME_ATTRS.items()})
        for name, codes in self._codes.items():
            names = np.array(self._values[name] + (None,), dtype=object)
            data[name] = names[codes[rows]]  # -1 -> the trailing None
        data[S.CREATED] = self.created[rows]
        data[IMAGE_COUNT] = self.image_count[rows]
        return pd.DataFrame(data)

    @property
    def products(self) -> pd.DataFrame:
        """The listed rows as a products frame (cached per view): for training and evaluation."""
        return self.derived("products", self.frame)

    def derived(self, key: Any, compute: Callable[[], T]) -> T:
        """A value computed once per view (e.g. a search-side index of its categories): readers
        cache what they derive from the table here, and a write starts a fresh cache."""
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = compute()
            return value


_FRAME_ATTRS = {
    S.TITLE: "title",
    S.DESCRIPTION: "description",
    S.LOCATION: "location",
    S.PRICE: "price",
    S.LATITUDE: "latitude",
    S.LONGITUDE: "longitude",
}


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view: no reader can write the owner's buffers through it."""
    view = array.view()
    view.flags.writeable = False
    return view
