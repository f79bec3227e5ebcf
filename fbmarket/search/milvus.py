"""Milvus as the retrieval engine: the `RetrievalBackend` primitives over `pymilvus.MilvusClient`.

Why Milvus (issue 11): a catalogue of hundreds of millions of listings outgrows one process;
Milvus keeps FAISS-derived indexes (IVF, HNSW, PQ, DiskANN) sharded over query nodes, filters
on scalar fields inside the search, and has a built-in BM25, so dense and lexical retrieval
both run in the engine. The same client speaks to a server (`milvus://host:port`) and to
milvus-lite (a .db file, or `milvus_lite.server.Server` for several processes), which is
what the tests and a laptop use. The fusion, photo and similar-listing logic and the ranker
stay in fbmarket (search/hybrid.py): this module only retrieves and scores.

One collection per bundle (`collection_name`: model version and dims), one row per listing:

* `product_id` VARCHAR primary key (no int64 side map, unlike FAISS);
* `embedding` FLOAT_VECTOR, inner product on unit vectors = cosine, as FAISS (`has_embedding`
  false and zeros for a listing without one); `photo` FLOAT_VECTOR, the pooled unit photo
  features (`has_photo` false and zeros without a photo: milvus-lite has no nullable fields);
* `text`: the listing's terms as our own tokeniser and normaliser make them (search/terms.py;
  the title `title_weight` times, then the description) joined by spaces, analysed by
  Milvus's whitespace tokenizer, so Milvus's BM25 function sees exactly our terms, and `bm25`
  the SPARSE_FLOAT_VECTOR it writes; index SPARSE_INVERTED_INDEX, metric BM25, with
  bm25_k1/bm25_b = ours (search/lexical.py K1, B). Milvus scores idf * tf * (k1 + 1) / (tf +
  norm); bm25s's Lucene variant has no (k1 + 1), so scores are divided by it to agree. IDF is
  Milvus's (per segment, over the whole collection), so scores differ slightly from ours;
* scalar fields for filters and for what the ranker and results read of a candidate
  (`rows`): title, description, category / root / leaf (as written), `category_keys` (the
  `category_key` of the path and of every prefix of it, so the case-insensitive path-prefix
  filter is one `array_contains`: `like` patterns cannot escape `_` or `%` in milvus-lite
  2.5.1, measured), `root_key`, `leaf_key`, price + `has_price`, latitude/longitude +
  `has_location`, location text, created_at (epoch seconds) + `has_created`, image_count.

Filters become one boolean expression (`filter_expression`); a distance limit is a lat/lon
bounding box there plus the exact haversine check here, over-fetching until k pass (the
engine's geo functions differ between milvus-lite and the server).

Index types (`SearchSettings.milvus_index_type`): FLAT, IVF_FLAT and AUTOINDEX on milvus-lite
2.5; a server also builds HNSW, IVF_PQ, IVF_SQ8, DISKANN (not exercised by the tests).
Every search and read uses consistency_level "Strong", so a write acknowledged by one
process is seen by the next search of another.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.data.geo import haversine_km
from fbmarket.errors import DataError
from fbmarket.search.backend import INDEX_URI_SETTING, Hits, IndexTarget, Selection
from fbmarket.search.filters import KM_PER_DEGREE_LAT, Filters, category_key
from fbmarket.search.lexical import K1, B
from fbmarket.search.terms import tokenize

log = logging.getLogger(__name__)


class _QuietEmptyResults(logging.Filter):
    """pymilvus logs an ERROR for milvus-lite's empty-result answer (EMPTY_RESULT_ERROR), which
    this module treats as "nothing found": drop those records, keep every other."""

    def filter(self, record: logging.LogRecord) -> bool:
        return EMPTY_RESULT_ERROR not in record.getMessage() and "Failed to get collection" not in record.getMessage()


for _name in ("pymilvus.decorators", "pymilvus.milvus_client.milvus_client"):
    logging.getLogger(_name).addFilter(_QuietEmptyResults())

STRONG = "Strong"
MAX_VARCHAR = 65_535  # bytes, Milvus's limit for one VARCHAR value
TEXT_BYTES = 60_000  # the BM25 text field: long descriptions are cut (whole words) to fit
MAX_CATEGORY_DEPTH = 16
MAX_LIMIT = 16_384  # Milvus's largest topk
NO_PHOTO_DIM = 2  # the photo field of a bundle without photo features (Milvus vectors are 2-d at least)
UPSERT_BATCH = 512
FIELDS = (
    "product_id", "title", "description", "category", "root_category", "leaf_category",
    "category_keys", "root_key", "leaf_key", "price", "has_price", "latitude", "longitude",
    "has_location", "location", "created_at", "has_created", "image_count", "has_embedding",
    "has_photo", "embedding", "photo", "text", "bm25",
)  # fmt: skip
ROW_FIELDS = (
    "title", "description", "category", "root_category", "leaf_category", "price", "has_price",
    "latitude", "longitude", "has_location", "location", "created_at", "has_created", "image_count",
)  # fmt: skip
# milvus-lite 2.5.1's answer to a query whose result is empty (measured): not a failure
EMPTY_RESULT_ERROR = "Unsupported data type: 0"
BM25_PARAMS = {"metric_type": "BM25", "params": {"drop_ratio_search": 0.0}}  # every term counts
KNOWN_TERM_SECONDS = 30.0  # how long a term seen in some listing is taken as known without asking
KNOWN_TERMS_KEPT = 100_000  # the known-term cache's bound (cleared whole when over it)
MEMO_SECONDS = 5.0  # a query's kept searches answer its own score calls only (see "Round trips")
SEND_AHEAD_THREADS = 8  # the pool the searches sent ahead run on (two per query at once)
INDEX_TYPES = ("FLAT", "IVF_FLAT", "AUTOINDEX", "HNSW", "IVF_PQ", "IVF_SQ8", "DISKANN")


def collection_name(model_version: str, dim: int, photo_dim: int | None) -> str:
    """The bundle's collection: its model version and dims, so a retrained bundle (another
    version) or another embedding width never reads another's vectors."""
    version = re.sub(r"[^A-Za-z0-9_]", "_", str(model_version))[:180]
    return f"fbmarket_{version}_e{dim}_p{photo_dim or 0}"


def literal(value: str) -> str:
    """A Milvus expression string literal: double-quoted, with backslash, quote and control
    characters escaped (the grammar's EscapeSequence)."""
    escaped = (
        str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def category_keys(path: object) -> list[str]:
    """`category_key` of a category path and of each prefix of it ("a / b / c" -> a, a / b, a / b / c)."""
    if not isinstance(path, str) or not path.strip():
        return []
    parts = category_key(path).split(" / ")
    return [" / ".join(parts[: depth + 1]) for depth in range(min(len(parts), MAX_CATEGORY_DEPTH))]


class MilvusSelection(Selection):
    """A filter expression, plus the circle the exact distance check keeps (or None)."""

    def __init__(self, expression: str, circle: tuple[float, float, float] | None):
        self.expression = expression
        self.circle = circle


@dataclass
class _Found:
    """One search's answer, kept for the scores of given ids asked right after it.

    `query`: the vector's bytes or the BM25 terms; `expression`: the filter it ran under;
    `scores`: every hit the engine returned (product id -> score as the engine gave it);
    `complete`: the engine returned fewer than asked, so every listing under `expression`
    that the query can score is in `scores` (a listing under it and absent has no score)."""

    field: str
    query: bytes | str
    data: list[Any]
    expression: str
    scores: dict[str, float]
    complete: bool
    at: float
    scope: object | None


def filter_expression(filters: Filters | None, exclude: str | None = None) -> MilvusSelection | None:
    """`Filters` as a Milvus boolean expression with the semantics of search/filters.py.

    Category: `array_contains(category_keys, key)` (a path or any prefix of it, as
    `category_key` compares); root and leaf: their key equal. A price bound excludes
    listings without a price; a distance limit excludes listings without a location and is a
    bounding box here (latitude always; longitude unless the box crosses a pole or the
    antimeridian), the exact great-circle check being done on the results (`circle`).
    """
    if (filters is None or not filters.active) and exclude is None:
        return None
    parts: list[str] = []
    circle = None
    if filters is not None:
        if filters.category is not None:
            parts.append(f"array_contains(category_keys, {literal(category_key(filters.category))})")
        if filters.root_category is not None:
            parts.append(f"root_key == {literal(category_key(filters.root_category))}")
        if filters.leaf_category is not None:
            parts.append(f"leaf_key == {literal(category_key(filters.leaf_category))}")
        if filters.min_price is not None or filters.max_price is not None:
            parts.append("has_price == true")
        if filters.min_price is not None:
            parts.append(f"price >= {float(filters.min_price)!r}")
        if filters.max_price is not None:
            parts.append(f"price <= {float(filters.max_price)!r}")
        if filters.max_km is not None:
            lat, lon, km = float(filters.latitude), float(filters.longitude), float(filters.max_km)
            dlat = km / KM_PER_DEGREE_LAT + 1e-9
            parts += ["has_location == true", f"latitude >= {lat - dlat!r}", f"latitude <= {lat + dlat!r}"]
            if abs(lat) + dlat < 89.0:
                dlon = dlat / math.cos(math.radians(abs(lat) + dlat))
                if lon - dlon >= -180.0 and lon + dlon <= 180.0:
                    parts += [f"longitude >= {lon - dlon!r}", f"longitude <= {lon + dlon!r}"]
            circle = (lat, lon, km)
    if exclude is not None:
        parts.append(f"product_id != {literal(exclude)}")
    return MilvusSelection(" and ".join(parts), circle)


class MilvusBackend:
    """`RetrievalBackend` over one Milvus collection (see the module docstring). Thread-safe
    (MilvusClient is; writes are serialised by a lock so a batch is one upsert)."""

    name = "milvus"

    def __init__(
        self,
        client: Any,
        collection: str,
        dim: int,
        photo_dim: int | None,
        settings: SearchSettings | None = None,
        shown: str = "",
    ):
        self.client = client
        self.collection = collection
        self.dim = int(dim)
        self.photo_dim = int(photo_dim) if photo_dim else None
        self.settings = settings or SearchSettings()
        self.shown = shown
        self._lock = threading.RLock()
        self._recent = threading.local()  # this thread's last searches in one query (`_Found`)
        self._known: dict[str, float] = {}  # term -> when a listing was last seen to hold it (`known_terms`)
        self._pool: ThreadPoolExecutor | None = None  # the score requests sent ahead (`_send_ahead`)
        self._ensure_collection()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        target: IndexTarget,
        dim: int,
        photo_dim: int | None,
        model_version: str,
        settings: SearchSettings | None = None,
    ) -> MilvusBackend:
        """Connect to the target's engine and open (or create) the bundle's collection.

        Raises DataError naming --index-uri / FBMARKET_INDEX_URI when the engine cannot be
        reached or the collection's schema or dims are not this bundle's.
        """
        from pymilvus import MilvusClient

        name = target.collection or collection_name(model_version, dim, photo_dim)
        try:
            if target.kind == "milvus-lite":
                Path(target.address).parent.mkdir(parents=True, exist_ok=True)
            client = MilvusClient(target.address, timeout=10)
        except Exception as error:  # pymilvus raises its own types, and OSError, per failure
            reason = " ".join(str(error).split())[:300]
            raise DataError(
                f"{INDEX_URI_SETTING}: cannot open the search engine at {target.shown}: "
                f"{type(error).__name__}: {reason}",
                field="index_uri",
            ) from None
        return cls(client, name, dim, photo_dim, settings, target.shown)

    def _ensure_collection(self) -> None:
        client = self.client
        if client.has_collection(self.collection):
            self._check_schema()
            client.load_collection(self.collection)
            return
        from pymilvus import DataType, Function, FunctionType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("product_id", DataType.VARCHAR, max_length=512, is_primary=True)
        for name in ("title", "description", "category", "root_category", "leaf_category", "root_key", "leaf_key", "location"):
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field(
            "category_keys", DataType.ARRAY, element_type=DataType.VARCHAR,
            max_capacity=MAX_CATEGORY_DEPTH, max_length=4096,
        )  # fmt: skip
        for name in ("price", "latitude", "longitude"):
            schema.add_field(name, DataType.DOUBLE)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("image_count", DataType.INT64)
        for name in ("has_price", "has_location", "has_created", "has_embedding", "has_photo"):
            schema.add_field(name, DataType.BOOL)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("photo", DataType.FLOAT_VECTOR, dim=self.photo_dim or NO_PHOTO_DIM)
        schema.add_field(
            "text", DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
            analyzer_params={"tokenizer": "whitespace"},
        )  # fmt: skip
        schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(name="text_bm25", function_type=FunctionType.BM25, input_field_names=["text"], output_field_names=["bm25"])
        )
        index = client.prepare_index_params()
        kind, params = self._dense_index()
        index.add_index("embedding", index_type=kind, metric_type="IP", params=params)
        index.add_index("photo", index_type=kind, metric_type="IP", params=params)
        index.add_index(
            "bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params={"bm25_k1": K1, "bm25_b": B}
        )
        client.create_collection(self.collection, schema=schema, index_params=index, consistency_level=STRONG)
        log.info("created Milvus collection %s (%s, %d-d)", self.collection, kind, self.dim)

    def _dense_index(self) -> tuple[str, dict[str, Any]]:
        kind = self.settings.milvus_index_type.upper()
        if kind not in INDEX_TYPES:
            raise DataError(f"milvus_index_type must be one of {', '.join(INDEX_TYPES)}, got {kind!r}")
        params: dict[str, Any] = {}
        if kind.startswith("IVF"):
            params["nlist"] = self.settings.milvus_nlist
        if kind == "HNSW":
            params |= {"M": 32, "efConstruction": self.settings.ef_construction}
        return kind, params

    def _check_schema(self) -> None:
        """Refuse a collection that is not this bundle's shape (other dims, other fields)."""
        described = self.client.describe_collection(self.collection)
        fields = {f["name"]: f for f in described.get("fields", [])}
        problems = []
        missing = [name for name in FIELDS if name not in fields]
        if missing:
            problems.append(f"it lacks the field(s) {', '.join(missing)}")
        for name, want in (("embedding", self.dim), ("photo", self.photo_dim or NO_PHOTO_DIM)):
            if name in fields:
                have = int(fields[name].get("params", {}).get("dim", -1))
                if have != want:
                    problems.append(f"its {name} vectors are {have}-d, this bundle's {want}-d")
        if problems:
            raise DataError(
                f"{INDEX_URI_SETTING}: the collection {self.collection!r} at {self.shown} is not this "
                f"bundle's: {'; '.join(problems)}. Drop it, or name another with ?collection=NAME",
                field="index_uri",
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        try:
            self.client.close()
        except Exception:  # closing a connection that already went away is not an error
            log.debug("closing the Milvus client failed", exc_info=True)

    def drop(self) -> None:
        """Delete the whole collection (tests, a rebuild from scratch)."""
        self.client.drop_collection(self.collection)

    # ------------------------------------------------------------------ counts
    @property
    def has_vectors(self) -> bool:
        return True

    @property
    def has_lexical(self) -> bool:
        return True

    @property
    def has_photos(self) -> bool:
        return self.photo_dim is not None

    def _count(self, expression: str = "") -> int:
        rows = self.client.query(self.collection, filter=expression, output_fields=["count(*)"], consistency_level=STRONG)
        return int(rows[0]["count(*)"]) if rows else 0

    def count(self) -> int:
        """Listings in the collection."""
        return self._count()

    def vector_count(self) -> int:
        return self._count("has_embedding == true")

    def _get(self, product_ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(map(str, product_ids)))
        if not ids:
            return {}
        from pymilvus import MilvusException

        try:
            found = self.client.get(self.collection, ids=ids, output_fields=list(fields), consistency_level=STRONG)
        except MilvusException as error:
            if EMPTY_RESULT_ERROR not in str(error):
                raise
            return {}  # milvus-lite 2.5.1 answers a get that finds no id with this error
        return {str(row["product_id"]): row for row in found}

    def contains(self, product_id: str) -> bool:
        return bool(self._get([product_id], ["product_id"]))

    def has_vector(self, product_id: str) -> bool:
        return bool(self._get([product_id], ["has_embedding"]).get(str(product_id), {}).get("has_embedding"))

    def has_vectors_for(self, product_ids: Sequence[str]) -> np.ndarray:
        found = self._get(product_ids, ["has_embedding"])
        return np.array([bool(found.get(pid, {}).get("has_embedding")) for pid in product_ids], dtype=bool)

    # ------------------------------------------------------------------ searches
    # Round trips. A hybrid query (search/hybrid.py `retrieve`) asks, one call after another:
    # the query's known terms, a dense and a BM25 search under the filters, the cosines of the
    # BM25-only candidates and the BM25 scores of every candidate. Each is a request to the
    # engine (~3-10 ms on milvus-lite, most of it fixed cost); asked one by one (5-7 requests)
    # a retrieve took ~5x its two searches (milvus-lite, 10k listings: 109 ms p50 against 11 +
    # 9 ms; now 40 against 9.4 + 6.0, and 60 against 28 + 6.5 at 100k: benchmarks/results/
    # search_latency_milvus.json). So, per
    # thread and for the query in hand only (`select` opens a query and forgets the last; so
    # does any write, and nothing is used after MEMO_SECONDS):
    # * the hits (and scores) of its dense and BM25 searches are kept (`_Found`), and the
    #   scores of given ids come from them: a candidate either search found has its score; one
    #   that a search did not find although it returned everything it could (fewer hits than
    #   asked) has none (no embedding; BM25 0); only the rest are asked, in one search
    #   restricted to their ids (`_restricted`);
    # * the text `known_terms` was just given is the query's text: when its dense search
    #   starts, the BM25 search of that text under the same filters is sent at the same time
    #   on a pool thread (`lexical_search` collects it if the call matches, else runs its own);
    # * once both lists are in, the two restricted searches are sent at once (`_send_ahead`),
    #   and `dense_scores` / `lexical_scores` collect them.
    # Whatever is sent ahead and not asked for is dropped; every answer is the engine's own.
    def select(self, filters: Filters | None, exclude: str | None = None) -> MilvusSelection | None:
        recent = self._recent
        hint = getattr(recent, "hint", None)
        self._forget()
        recent.scope = object()
        if hint is not None and time.monotonic() - hint[1] <= MEMO_SECONDS:
            recent.text = hint[0]
        return filter_expression(filters, exclude)

    def _forget(self) -> None:
        recent = self._recent
        recent.dense = recent.lexical = recent.scope = recent.text = recent.hint = recent.early = None
        recent.ahead = {}

    def _recalled(self, kind: str) -> _Found | None:
        found = getattr(self._recent, kind, None)
        if found is None or time.monotonic() - found.at > MEMO_SECONDS:
            return None
        return found

    def _submit(self, fn: Any, *args: Any) -> Future:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=SEND_AHEAD_THREADS, thread_name_prefix="milvus")
        return self._pool.submit(fn, *args)

    def _lookup(
        self,
        data: list[Any],
        field: str,
        k: int,
        selection: Selection | None,
        required: str | None,
        params: dict[str, Any],
    ) -> tuple[Hits, bool]:
        """(hits, complete): at least k hits of one query when there are (all the engine
        returned that pass the exact distance check), best first, under the selection (plus
        `required`), fetching more while the distance check drops hits and the engine has more.
        `complete`: the engine returned fewer than asked, so no other listing under the
        expression has a score. Touches no per-thread state (runs on pool threads too)."""
        if k <= 0 or (selection is not None and selection.empty):
            return [], True
        expression = self._expression(selection, required)
        circle = selection.circle if isinstance(selection, MilvusSelection) else None
        fetch = min(k if circle is None else max(2 * k, k + 16), MAX_LIMIT)
        while True:
            found = self.client.search(
                self.collection,
                data=data,
                anns_field=field,
                limit=fetch,
                filter=expression,
                output_fields=["latitude", "longitude"] if circle else [],
                search_params=params,
                consistency_level=STRONG,
            )[0]
            hits = [(str(hit["id"]), float(hit["distance"])) for hit in found]
            complete = len(found) < fetch
            if circle is None:
                return _first_per_id(hits), complete
            lat, lon, km = circle
            coords = np.array([[hit["entity"]["latitude"], hit["entity"]["longitude"]] for hit in found], float)
            keep = (
                np.asarray(haversine_km(lat, lon, coords[:, 0], coords[:, 1]), float) <= km
                if len(coords)
                else np.zeros(0, bool)
            )
            hits = _first_per_id([hit for hit, k_ in zip(hits, keep.tolist(), strict=True) if k_])
            if len(hits) >= k or complete or fetch >= MAX_LIMIT:
                return hits, complete
            fetch = min(fetch * 4, MAX_LIMIT)

    def _search(
        self,
        data: list[Any],
        field: str,
        k: int,
        selection: Selection | None,
        required: str | None,
        params: dict[str, Any],
        answer: Future | None = None,
    ) -> Hits:
        """k hits, best first (`_lookup`, or the `answer` already sent), remembered for the
        query's score calls."""
        hits, complete = answer.result() if answer is not None else self._lookup(data, field, k, selection, required, params)
        if field == "embedding" and self.settings.milvus_index_type.upper() != "FLAT":
            complete = False  # an approximate index (IVF, HNSW) may return fewer than exist
        if field in ("embedding", "bm25") and k > 0 and not (selection is not None and selection.empty):
            query = data[0] if isinstance(data[0], str) else np.asarray(data[0], np.float32).tobytes()
            found = _Found(
                field, query, data, self._expression(selection, required), dict(hits), complete,
                time.monotonic(), getattr(self._recent, "scope", None),
            )  # fmt: skip
            setattr(self._recent, "dense" if field == "embedding" else "lexical", found)
        return hits[:k]

    @staticmethod
    def _expression(selection: Selection | None, required: str | None) -> str:
        parts = [p for p in (required, selection.expression if isinstance(selection, MilvusSelection) else "") if p]
        return " and ".join(f"({p})" for p in parts)

    def _dense_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        kind = self.settings.milvus_index_type.upper()
        if kind.startswith("IVF"):
            params["nprobe"] = self.settings.nprobe
        elif kind == "HNSW":
            params["ef"] = self.settings.ef_search
        return {"metric_type": "IP", "params": params}

    def dense_search(self, vector: np.ndarray, k: int, selection: Selection | None) -> Hits:
        recent = self._recent
        text = getattr(recent, "text", None)
        if text and getattr(recent, "scope", None) is not None and k > 0:
            recent.text = None  # the query's BM25 search, sent now (see "Round trips")
            future = self._submit(self._lookup, [text], "bm25", k, selection, None, BM25_PARAMS)
            recent.early = ((text, k, self._expression(selection, None), recent.scope), future)
        q = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        return self._search([q], "embedding", k, selection, "has_embedding == true", self._dense_params())

    def photo_search(self, vector: np.ndarray, k: int, selection: Selection | None) -> Hits:
        if self.photo_dim is None:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        return self._search([q], "photo", k, selection, "has_photo == true", self._dense_params())

    def lexical_search(self, text: str, k: int, selection: Selection | None) -> Hits:
        """BM25 over our own terms of `text`; only listings sharing a term come back."""
        terms = " ".join(tokenize(text))
        if not terms:
            return []
        recent = self._recent
        early, recent.early = getattr(recent, "early", None), None
        answer = None
        if early is not None and early[0] == (terms, k, self._expression(selection, None), getattr(recent, "scope", None)):
            answer = early[1]
        hits = self._search([terms], "bm25", k, selection, None, BM25_PARAMS, answer)
        self._send_ahead()
        return [(pid, score / (K1 + 1.0)) for pid, score in hits]

    def _send_ahead(self) -> None:
        """After a query's BM25 search that followed its dense search under the same filters:
        send the restricted searches for the BM25 scores of the dense-only hits and the cosines
        of the BM25-only hits (what `lexical_scores` / `dense_scores` will ask), both at once."""
        dense, lexical = self._recalled("dense"), self._recalled("lexical")
        if dense is None or lexical is None or dense.scope is None or dense.scope is not lexical.scope:
            return
        if self._filters_of(dense) != self._filters_of(lexical):
            return
        ahead: dict[tuple[str, bytes | str], tuple[set[str], Future]] = {}
        for mine, other, required, params in (
            (dense, lexical, "has_embedding == true", self._dense_params()),
            (lexical, dense, None, BM25_PARAMS),
        ):
            ids = [] if mine.complete else [pid for pid in other.scores if pid not in mine.scores]
            if ids:
                future = self._submit(self._restricted, mine.data, mine.field, ids, required, params)
                ahead[(mine.field, mine.query)] = (set(ids), future)
        self._recent.ahead = ahead

    # ------------------------------------------------------------------ scores of given ids
    def dense_scores(self, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray:
        """Cosine of `vector` with each listing's embedding (NaN: none, or an unknown id)."""
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        scores = self._scores_of("embedding", q.tobytes(), [q.tolist()], product_ids, "has_embedding == true", self._dense_params())
        return np.array([scores.get(str(pid), np.nan) for pid in product_ids], dtype=float)

    def photo_scores(self, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray:
        """Cosine of a unit query photo vector with each listing's pooled photo (NaN: none)."""
        if self.photo_dim is None:
            return np.full(len(product_ids), np.nan)
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        scores = self._scores_of("photo", q.tobytes(), [q.tolist()], product_ids, "has_photo == true", self._dense_params())
        return np.array([scores.get(str(pid), np.nan) for pid in product_ids], dtype=float)

    def lexical_scores(self, text: str, product_ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of given listings (0 for no match or an unknown id)."""
        terms = " ".join(tokenize(text))
        if not terms or not len(product_ids):
            return np.zeros(len(product_ids))
        scores = self._scores_of("bm25", terms, [terms], product_ids, None, BM25_PARAMS)
        return np.array([scores.get(str(pid), 0.0) / (K1 + 1.0) for pid in product_ids], dtype=float)

    def _scores_of(
        self,
        field: str,
        query: bytes | str,
        data: list[Any],
        product_ids: Sequence[str],
        required: str | None,
        params: dict[str, Any],
    ) -> dict[str, float]:
        """The engine's scores of `query` for the given ids that have one (absent: none): from
        this query's kept searches and the searches sent ahead where they answer (see "Round
        trips"), else one search restricted to the remaining ids."""
        ids = list(dict.fromkeys(map(str, product_ids)))
        scores: dict[str, float] = {}
        kind = {"embedding": "dense", "bm25": "lexical"}.get(field)
        mine = self._recalled(kind) if kind else None
        if mine is not None and mine.query == query:
            other = self._recalled("lexical" if kind == "dense" else "dense")
            passing = set(other.scores) if other is not None and self._filters_of(mine) == self._filters_of(other) else set()
            rest = []
            for pid in ids:
                if pid in mine.scores:
                    scores[pid] = mine.scores[pid]
                elif not (mine.complete and pid in passing):
                    rest.append(pid)
            ids = rest
            sent = getattr(self._recent, "ahead", {}).pop((field, query), None)
            if sent is not None and ids:
                asked, future = sent
                answered = future.result()
                scores.update((pid, answered[pid]) for pid in ids if pid in answered)
                ids = [pid for pid in ids if pid not in asked]
        scores.update(self._restricted(data, field, ids, required, params))
        return scores

    def _restricted(
        self, data: list[Any], field: str, ids: list[str], required: str | None, params: dict[str, Any]
    ) -> dict[str, float]:
        """Scores of one query for the given ids only (a search filtered to `product_id in
        [...]`, in chunks of MAX_LIMIT, Milvus's largest topk); ids without one are absent."""
        scores: dict[str, float] = {}
        for start in range(0, len(ids), MAX_LIMIT):
            chunk = ids[start : start + MAX_LIMIT]
            selection = MilvusSelection(f"product_id in [{', '.join(literal(pid) for pid in chunk)}]", None)
            scores.update(self._lookup(data, field, len(chunk), selection, required, params)[0])
        return scores

    @staticmethod
    def _filters_of(found: _Found) -> str:
        """The listing filters a kept search ran under, without its own flag (has_embedding)."""
        flag = "(has_embedding == true)" if found.field == "embedding" else ""
        expression = found.expression
        if flag and expression.startswith(flag):
            expression = expression[len(flag) :].removeprefix(" and ")
        return expression

    def vector_of(self, product_id: str) -> np.ndarray:
        return self.vectors_of([product_id])[0]

    def vectors_of(self, product_ids: Sequence[str]) -> np.ndarray:
        """Stored embeddings in order; an id without one raises KeyError."""
        found = self._get(product_ids, ["embedding", "has_embedding"])
        missing = [pid for pid in product_ids if not found.get(pid, {}).get("has_embedding")]
        if missing:
            raise KeyError(f"{len(missing)} product(s) not in the vector index, e.g. {missing[0]!r}")
        if not len(product_ids):
            return np.zeros((0, self.dim), np.float32)
        return np.array([found[pid]["embedding"] for pid in product_ids], dtype=np.float32)

    def known_terms(self, text: str) -> list[str]:
        """The query's terms some listing contains: one BM25 request, a query per distinct term
        not seen known in the last KNOWN_TERM_SECONDS (a bounded cache of terms found in some
        listing: an unknown term is always asked again, so a listing just written by any
        process makes its words known at once; a term whose last listing went away reads as
        known for up to that long, and its BM25 search then finds nothing)."""
        terms = list(dict.fromkeys(tokenize(text)))
        now = time.monotonic()
        ask = [term for term in terms if now - self._known.get(term, -math.inf) > KNOWN_TERM_SECONDS]
        if ask:
            found = self.client.search(
                self.collection,
                data=ask,
                anns_field="bm25",
                limit=1,
                output_fields=[],
                search_params=BM25_PARAMS,
                consistency_level=STRONG,
            )
            with self._lock:
                if len(self._known) > KNOWN_TERMS_KEPT:
                    self._known.clear()
                for term, hits in zip(ask, found, strict=True):
                    if len(hits):
                        self._known[term] = now
                    else:
                        self._known.pop(term, None)
        self._recent.hint = (" ".join(tokenize(text)), time.monotonic())  # the query's text (see "Round trips")
        return [term for term in terms if now - self._known.get(term, -math.inf) <= KNOWN_TERM_SECONDS]

    def rows(self, product_ids: Sequence[str]) -> pd.DataFrame:
        """The stored fields of these listings (unknown ids left out), in the given order:
        product_id, title, description, category, root/leaf category, price (NaN: none),
        latitude/longitude (NaN: unknown), location, created (NaT: unknown), image_count."""
        found = self._get(product_ids, ROW_FIELDS)
        records = []
        for pid in product_ids:
            row = found.get(str(pid))
            if row is None:
                continue
            records.append(
                {
                    S.PRODUCT_ID: str(pid),
                    S.TITLE: row["title"],
                    S.DESCRIPTION: row["description"],
                    S.CATEGORY: row["category"],
                    S.ROOT_CATEGORY: row["root_category"],
                    S.LEAF_CATEGORY: row["leaf_category"],
                    S.PRICE: row["price"] if row["has_price"] else np.nan,
                    S.LATITUDE: row["latitude"] if row["has_location"] else np.nan,
                    S.LONGITUDE: row["longitude"] if row["has_location"] else np.nan,
                    S.LOCATION: row["location"],
                    S.CREATED: pd.Timestamp(row["created_at"], unit="s") if row["has_created"] else pd.NaT,
                    "image_count": int(row["image_count"]),
                }
            )
        return pd.DataFrame.from_records(
            records,
            columns=[S.PRODUCT_ID, S.TITLE, S.DESCRIPTION, S.CATEGORY, S.ROOT_CATEGORY, S.LEAF_CATEGORY,
                     S.PRICE, S.LATITUDE, S.LONGITUDE, S.LOCATION, S.CREATED, "image_count"],
        )  # fmt: skip

    # ------------------------------------------------------------------ writes
    def upsert(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None = None,
        photo_vectors: np.ndarray | None = None,
        has_photo: np.ndarray | None = None,
        image_counts: Sequence[int] | None = None,
    ) -> None:
        """Add or replace listings by product id, in batches of UPSERT_BATCH.

        `embeddings` (n, dim) unit rows (None: the listings have none); `photo_vectors`
        (n, photo dim) with `has_photo` (n,) bool; `image_counts` (n,) photos per listing
        (default: the products' image_count column, else 0).

        Ids the collection does not hold (one `get` per batch) are inserted, the others
        upserted: a Milvus upsert is a delete plus an insert, and the delete is what costs
        (milvus-lite 2.5.1 at 10k listings, one listing: upsert ~108 ms, delete ~97 ms, insert
        ~21 ms, measured). No flush: every read is Strong, so the next search sees the write.
        Within a process writes are serialised (a lock); two processes writing the same new id
        within one write's time could both insert it: searches keep one hit per id
        (`_lookup`), and the next upsert or remove of the id replaces or removes every copy.
        """
        rows = self.entities(products, embeddings, photo_vectors, has_photo, image_counts)
        self._forget()
        with self._lock:
            for start in range(0, len(rows), UPSERT_BATCH):
                batch = rows[start : start + UPSERT_BATCH]
                held = self._get([row["product_id"] for row in batch], ["product_id"])
                new = [row for row in batch if row["product_id"] not in held]
                old = [row for row in batch if row["product_id"] in held]
                if new and len({row["product_id"] for row in new}) == len(new):
                    self.client.insert(self.collection, new)
                elif new:  # the same id twice in one batch: the engine's upsert keeps the last
                    old = batch
                if old:
                    self.client.upsert(self.collection, old)

    def entities(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None = None,
        photo_vectors: np.ndarray | None = None,
        has_photo: np.ndarray | None = None,
        image_counts: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The collection rows of a products table (see `upsert` for the arguments)."""
        n = len(products)
        S.require_columns(products, (S.PRODUCT_ID, S.TITLE, S.CATEGORY, S.ROOT_CATEGORY, S.LEAF_CATEGORY), "products")
        if embeddings is not None and len(embeddings) != n:
            raise ValueError(f"{n} products but {len(embeddings)} embeddings")

        def column(name: str, default: Any = None) -> list[Any]:
            return products[name].tolist() if name in products else [default] * n

        price = pd.to_numeric(pd.Series(column(S.PRICE), dtype=object), errors="coerce").to_numpy(float)
        lat = pd.to_numeric(pd.Series(column(S.LATITUDE), dtype=object), errors="coerce").to_numpy(float)
        lon = pd.to_numeric(pd.Series(column(S.LONGITUDE), dtype=object), errors="coerce").to_numpy(float)
        created = pd.to_datetime(pd.Series(column(S.CREATED), dtype=object), errors="coerce", format="mixed", utc=True)
        if image_counts is None:
            image_counts = [int(c) if pd.notna(c) else 0 for c in column("image_count", 0)]
        photo_flags = np.zeros(n, bool) if has_photo is None else np.asarray(has_photo, bool)
        if photo_vectors is not None and has_photo is None:
            photo_flags = np.ones(n, bool)
        zeros_photo = [0.0] * (self.photo_dim or NO_PHOTO_DIM)
        weight = max(int(self.settings.title_weight), 1)
        rows = []
        categories, roots, leaves = column(S.CATEGORY), column(S.ROOT_CATEGORY), column(S.LEAF_CATEGORY)
        locations = column(S.LOCATION, "")
        stamps = [int(when.timestamp()) if pd.notna(when) else None for when in created]
        vectors = np.asarray(embeddings, np.float32).tolist() if embeddings is not None else None
        photos = np.asarray(photo_vectors, np.float32).tolist() if photo_vectors is not None else None
        for i, (pid, title, description) in enumerate(
            zip(column(S.PRODUCT_ID), column(S.TITLE, ""), column(S.DESCRIPTION, ""), strict=True)
        ):  # columns read once above: reading one per row made a 512-row batch quadratic
            title, description = _text(title), _text(description)
            has_emb = vectors is not None
            has_ph = bool(photo_flags[i]) and photos is not None and self.photo_dim is not None
            category, root, leaf = _text(categories[i]), _text(roots[i]), _text(leaves[i])
            rows.append(
                {
                    "product_id": str(pid),
                    "title": _fit(title, MAX_VARCHAR),
                    "description": _fit(description, MAX_VARCHAR),
                    "category": _fit(category, MAX_VARCHAR),
                    "root_category": _fit(root, MAX_VARCHAR),
                    "leaf_category": _fit(leaf, MAX_VARCHAR),
                    "category_keys": category_keys(category),
                    "root_key": _fit(category_key(root), MAX_VARCHAR),
                    "leaf_key": _fit(category_key(leaf), MAX_VARCHAR),
                    "price": float(price[i]) if np.isfinite(price[i]) else 0.0,
                    "has_price": bool(np.isfinite(price[i])),
                    "latitude": float(lat[i]) if np.isfinite(lat[i]) else 0.0,
                    "longitude": float(lon[i]) if np.isfinite(lon[i]) else 0.0,
                    "has_location": bool(np.isfinite(lat[i]) and np.isfinite(lon[i])),
                    "location": _fit(_text(locations[i]), MAX_VARCHAR),
                    "created_at": stamps[i] if stamps[i] is not None else 0,
                    "has_created": stamps[i] is not None,
                    "image_count": int(image_counts[i]),
                    "has_embedding": has_emb,
                    "embedding": vectors[i] if vectors is not None else [0.0] * self.dim,
                    "has_photo": has_ph,
                    "photo": photos[i] if has_ph and photos is not None else zeros_photo,
                    "text": _fit(" ".join(tokenize(title) * weight + tokenize(description)), TEXT_BYTES),
                }
            )
        return rows

    def remove(self, product_ids: Iterable[str]) -> int:
        """Delete listings by product id; returns how many the collection held."""
        ids = list(dict.fromkeys(map(str, product_ids)))
        if not ids:
            return 0
        self._forget()
        with self._lock:
            held = len(self._get(ids, ["product_id"]))
            if held:
                self.client.delete(self.collection, ids=ids)
        return held

    def product_ids(self, batch: int = 4096) -> list[str]:
        """Every product id in the collection (a query iterator: bounded memory per batch)."""
        iterator = self.client.query_iterator(
            self.collection, batch_size=batch, filter="", output_fields=["product_id"], consistency_level=STRONG
        )
        from pymilvus import MilvusException

        out: list[str] = []
        try:
            while page := iterator.next():
                out.extend(str(row["product_id"]) for row in page)
        except MilvusException as error:  # milvus-lite: the page after the last is this error
            if EMPTY_RESULT_ERROR not in str(error):
                raise
        finally:
            iterator.close()
        return out


def _first_per_id(hits: Hits) -> Hits:
    """One hit per id, the first (best): see `MilvusBackend.upsert` on a new id written twice at once."""
    if len({pid for pid, _ in hits}) == len(hits):
        return hits
    seen: dict[str, float] = {}
    for pid, score in hits:
        seen.setdefault(pid, score)
    return list(seen.items())


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, at a whole character (and word, when cut)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    cut = data[:limit].decode("utf-8", errors="ignore")
    return cut.rsplit(" ", 1)[0] if " " in cut else cut
