"""Hybrid retrieval: embedding neighbours + BM25 hits, fused, under listing filters (SPEC §6).

`HybridSearcher.retrieve` is the candidate generator for the ranker (SPEC §7.1): it runs
the FAISS search (when there is a query vector) and the BM25 search (when there is query
text) under the same filters, unions the two lists and scores every candidate on both
signals, so the ranker sees a semantic and a lexical score for each one, not only for
the list that found it.

Fusion (`SearchSettings.fusion`):
* "blend" (default): w * semantic + (1 - w) * lexical after min-max scaling each score
  over the candidates, w = `semantic_weight`;
* "rrf", reciprocal-rank fusion: sum of 1 / (rrf_k + rank) over the lists a listing is
  in; it needs no score calibration but gives both lists equal say.
benchmarks/search_quality.py measured both with the trained embeddings on the dev
data (choices on the validation split, figures on the test split): for typed queries
blend at w = 0.5 beat RRF on same-leaf precision@10 (test: leaf names 0.188 vs 0.182,
title fragments 0.186 vs 0.176) and on finding the listing a query was cut from (0.957
vs 0.941), because RRF lets the weaker list push good lexical matches down. Both beat
either list alone (embedding 0.171 / BM25 0.150 on leaf names). On validation w =
0.35-0.65 are within 0.01 of each other on precision; 0.65 loses known items (0.931).

Filters (`Filters`) are applied inside both searches (FAISS IDSelector, BM25 mask), not
after them, so n results come back whenever n matching listings exist. Category filters
match a path or any prefix of it, ignoring case, spacing around " / " and "and" for "&"
("home & garden", "Home and Garden/Furniture"); `HybridSearcher.check_category` tells a
category no listing has (a typo) from one that matches, with the valid roots and the
nearest spelling, so a caller can refuse it instead of returning nothing.

Queries with no known word. The query encoder maps every word outside its vocabulary to
one out-of-vocabulary embedding, so a query made only of such words ("диван", "沙发",
"xqzvvk blorf") encodes to about the same vector whatever it says, and its neighbours
are the same unrelated listings (issue 14). `retrieve` therefore only uses the vector
of a typed query when the query has at least one word the encoder learnt
(`QueryVocabulary`: the text branch's vocabulary, stopwords aside), and runs no search
at all (mode "none", with a note) when it also has no word any listing contains (BM25
vocabulary). One known word is the threshold, not a share of the words: a single real
word ("xqzvvk sofa", "sofa 2seater") changes the vector and carries the intent, while
unknown extras are common (typos, model numbers). A photo is always a signal: a query
with a photo is never cut.

Photo queries (`retrieve(..., query_photo=...)`) add a third list: the listings whose
photos look most like the query photo (`photos`, an index of each listing's pooled,
unit-length backbone features: EfficientNet-Lite2 puts a re-encoded, 10%-cropped or
half-size copy of a dev listing's photo on its own listing first 97-98.5% of the time).
Every candidate is scored on the photo match, the embedding/BM25 blend and the
probability that it shares the photo's root and leaf category (root from the image-only
head, leaf from the query embedding through the fusion model's heads); the weights
(`SearchSettings.photo_*`) were chosen on the dev data's validation split by
benchmarks/photo_search.py.

Similar listings (`similar_scored`) use a listing's own vector and title as the query,
blended the same way, plus the probability that each candidate shares its root and leaf
category by the fusion model's heads (`categories`, search/categories.py), when given:
on the dev data that lifted precision@10 of the same leaf / root over the catalogue from
0.551 / 0.780 to 0.579 / 0.807.
"""

from __future__ import annotations

import difflib
import numbers
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from fbmarket.catalogue import CatalogueView, ListingCatalogue
from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.data.geo import haversine_km
from fbmarket.search.categories import CategorySpace
from fbmarket.search.index import IdSelection, IndexLoadError, VectorIndex, check_k
from fbmarket.search.lexical import STOPWORDS, LexicalIndex, check_query

SEMANTIC_SCORE = "semantic_score"
LEXICAL_SCORE = "lexical_score"
SEMANTIC_RANK = "semantic_rank"  # 1-based rank in the FAISS list; NaN if FAISS did not return it
LEXICAL_RANK = "lexical_rank"  # 1-based rank in the BM25 list; NaN if BM25 did not return it
FUSED_SCORE = "fused_score"
# similar listings: the score and its parts, which add up to it
SIMILARITY = "similarity"  # embedding/BM25 blend, min-max scaled over the candidates
SAME_ROOT = "same_root"  # similar_root_weight * P(same root category), from the model's head
SAME_LEAF = "same_leaf"  # similar_leaf_weight * P(same leaf category)
SIMILAR_SCORE = "score"
SIMILAR_COLUMNS = (S.PRODUCT_ID, SIMILARITY, SAME_ROOT, SAME_LEAF, SIMILAR_SCORE)
CANDIDATE_COLUMNS = (S.PRODUCT_ID, SEMANTIC_SCORE, LEXICAL_SCORE, SEMANTIC_RANK, LEXICAL_RANK, FUSED_SCORE)
PHOTO_SCORE = "photo_score"  # cosine of the query photo with the listing's pooled photo features
# True when that cosine reaches SearchSettings.photo_match_cosine: the query photo is this
# listing's own (re-encoded, cropped, resized); the ranker keeps such listings first
PHOTO_MATCH = "photo_match"
FUSIONS = ("rrf", "blend")
NOTES = "notes"  # retrieve(...).attrs[NOTES]: sentences for the buyer about what ran and why
VECTOR_FILE = "vectors.faiss"
PHOTO_FILE = "photos.faiss"
LEXICAL_FILE = "lexical.json"
KM_PER_DEGREE_LAT = 111.2
TABLE_COLUMNS = (
    S.PRODUCT_ID,
    S.TITLE,
    S.CATEGORY,
    S.ROOT_CATEGORY,
    S.LEAF_CATEGORY,
    S.PRICE,
    S.LATITUDE,
    S.LONGITUDE,
)


@dataclass(frozen=True)
class Filters:
    """Which listings may be returned. Every field is optional; given fields all apply.

    `category` is a category path or any prefix of it ("Home & Garden",
    "Home & Garden / Furniture", or a full leaf path), matched ignoring case, spacing
    around "/" and "and" for "&" (`category_key`); `root_category` and `leaf_category`
    match a whole root or leaf the same way. A price bound excludes listings without a
    price; a distance limit excludes listings whose location is unknown.
    """

    category: str | None = None
    root_category: str | None = None
    leaf_category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    max_km: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_price", "max_price", "max_km", "latitude", "longitude"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.min_price is not None and self.min_price < 0:
            raise ValueError(f"min_price must not be negative, got {self.min_price}")
        if self.max_price is not None and self.max_price < 0:
            raise ValueError(f"max_price must not be negative, got {self.max_price}")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price ({self.min_price}) is above max_price ({self.max_price})")
        geo = (self.latitude, self.longitude, self.max_km)
        if any(v is not None for v in geo) and any(v is None for v in geo):
            raise ValueError("a distance filter needs latitude, longitude and max_km together")
        if self.max_km is not None and self.max_km <= 0:
            raise ValueError(f"max_km must be positive, got {self.max_km}")
        if self.latitude is not None and not -90 <= self.latitude <= 90:
            raise ValueError(f"latitude must be within [-90, 90], got {self.latitude}")
        if self.longitude is not None and not -180 <= self.longitude <= 180:
            raise ValueError(f"longitude must be within [-180, 180], got {self.longitude}")
        for name in ("category", "root_category", "leaf_category"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be non-empty text, got {value!r}")

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


_SLASH = re.compile(r"\s*/\s*")
_AND = re.compile(r"\s+and\s+")


def category_key(path: str) -> str:
    """How category paths compare: case-folded, spaces collapsed, " / " between levels, & for and."""
    return _AND.sub(" & ", _SLASH.sub(" / ", " ".join(path.split()))).casefold().strip()


def _is_under(path_key: str, prefix_key: str) -> bool:
    return path_key == prefix_key or path_key.startswith(prefix_key + " / ")


class UnknownCategoryError(ValueError):
    """A category filter that names no category of the catalogue (a typo, another marketplace's name)."""

    def __init__(self, category: str, roots: list[str], suggestion: str | None):
        self.category = category
        self.roots = roots
        self.suggestion = suggestion
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"unknown category {category!r}.{hint} A category is a root or a path under one "
            f'("Root / Sub / Leaf", any case); the roots are: {"; ".join(roots)}'
        )


@dataclass(frozen=True)
class QueryVocabulary:
    """The words the query encoder learnt and the tokeniser it reads queries with.

    `known` is what the encoder can tell apart: the query's tokens in its vocabulary,
    stopwords aside (they are in every vocabulary and say nothing about an item).
    """

    words: frozenset[str]
    tokenize: Callable[[str], list[str]]

    def known(self, text: str) -> list[str]:
        return [t for t in self.tokenize(text) if t in self.words and t not in STOPWORDS]


# Filters over the service's listing catalogue (fbmarket/catalogue.py), read through one
# `CatalogueView` per query: whatever a write does meanwhile, a query sees one version.


def filter_mask(view: CatalogueView, filters: Filters | None) -> np.ndarray:
    """Boolean mask over the view's rows: listed, and passing every filter."""
    keep = view.alive.copy()
    if filters is None:
        return keep
    if filters.category is not None:
        keep &= _category_rows(view, S.CATEGORY, filters.category.strip(), prefix=True)
    if filters.root_category is not None:
        keep &= _category_rows(view, S.ROOT_CATEGORY, filters.root_category.strip())
    if filters.leaf_category is not None:
        keep &= _category_rows(view, S.LEAF_CATEGORY, filters.leaf_category.strip())
    with np.errstate(invalid="ignore"):
        if filters.min_price is not None:
            keep &= view.price >= filters.min_price
        if filters.max_price is not None:
            keep &= view.price <= filters.max_price
    if filters.max_km is not None:
        keep &= _within(view, filters.latitude, filters.longitude, filters.max_km, keep)
    return keep


def _category_keys(view: CatalogueView, column: str) -> list[str]:
    """`category_key` of every category the column's dictionary holds, by code (once per view)."""
    return view.derived(("category_keys", column), lambda: [category_key(v) for v in view.values(column)])


def _category_rows(view: CatalogueView, column: str, value: str, prefix: bool = False) -> np.ndarray:
    """Rows whose category in `column` is `value` (or, with `prefix`, under it), as filters match."""
    wanted = category_key(value)
    keys = _category_keys(view, column)
    codes = [i for i, key in enumerate(keys) if (_is_under(key, wanted) if prefix else key == wanted)]
    return np.isin(view.codes(column), codes)


def _live_values(view: CatalogueView, column: str) -> list[str]:
    """The values of a category column some listed row has, in code order."""

    def compute() -> list[str]:
        codes = view.codes(column)[view.alive]
        present = np.unique(codes[codes >= 0])
        values = view.values(column)
        return [values[code] for code in present.tolist()]

    return view.derived(("live_values", column), compute)


def category_prefixes(view: CatalogueView) -> dict[str, str]:
    """category_key -> as written, for every category path of a listed row and every prefix of one."""

    def compute() -> dict[str, str]:
        prefixes: dict[str, str] = {}
        for column in (S.CATEGORY, S.ROOT_CATEGORY):
            for path in _live_values(view, column):
                parts = [part.strip() for part in path.split(" / ")]
                for depth in range(1, len(parts) + 1):
                    written = " / ".join(parts[:depth])
                    prefixes.setdefault(category_key(written), written)
        return prefixes

    return view.derived("category_prefixes", compute)


def _within(view: CatalogueView, lat: float, lon: float, max_km: float, keep: np.ndarray) -> np.ndarray:
    # a cheap latitude band first, the exact great-circle distance on what is left
    with np.errstate(invalid="ignore"):
        near = keep & (np.abs(view.latitude - lat) <= max_km / KM_PER_DEGREE_LAT + 1e-9)
    rows = np.flatnonzero(near)
    within = np.zeros(view.n_rows, dtype=bool)
    if len(rows):
        km = np.asarray(haversine_km(lat, lon, view.latitude[rows], view.longitude[rows]), dtype=float)
        within[rows] = km <= max_km  # NaN (unknown location) compares False
    return within


def reciprocal_rank_fusion(ranks: Iterable[np.ndarray], k: int = 60) -> np.ndarray:
    """Sum of 1 / (k + rank) over rank lists (1-based; NaN = not in that list)."""
    total = None
    for rank in ranks:
        rank = np.asarray(rank, dtype=float)
        part = np.where(np.isnan(rank), 0.0, 1.0 / (k + np.nan_to_num(rank, nan=1.0)))
        total = part if total is None else total + part
    if total is None:
        raise ValueError("reciprocal_rank_fusion needs at least one rank list")
    return total


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the finite values; NaN (signal absent) becomes 0, a constant 1."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    out = np.zeros(len(values))
    if finite.any():
        low, high = values[finite].min(), values[finite].max()
        out[finite] = (values[finite] - low) / (high - low) if high > low else 1.0
    return out


def weighted_blend(semantic: np.ndarray, lexical: np.ndarray, semantic_weight: float = 0.5) -> np.ndarray:
    """w * semantic + (1 - w) * lexical, each min-max scaled over the candidates."""
    if not 0.0 <= semantic_weight <= 1.0:
        raise ValueError(f"semantic_weight must be within [0, 1], got {semantic_weight}")
    return semantic_weight * min_max(semantic) + (1.0 - semantic_weight) * min_max(lexical)


def empty_candidates() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in CANDIDATE_COLUMNS})
    frame[S.PRODUCT_ID] = pd.Series(dtype=object)
    return frame


class HybridSearcher:
    """FAISS + BM25 over one catalogue, with filters, fusion and live updates. Thread-safe.

    Either index may be absent (no trained embeddings yet -> lexical only); a query then
    uses what exists and `retrieve(...).attrs["mode"]` says what ran.

    Filters and titles are read from a listing catalogue (fbmarket/catalogue.py). The service
    lends its own (`catalogue=`): the searcher then only reads it, and the service, its
    owner, writes every listing change into it. Without one (tests, benchmarks, training) the
    searcher builds a private catalogue of `products` and keeps it up to date itself.
    """

    def __init__(
        self,
        products: pd.DataFrame | None,
        vectors: VectorIndex | None = None,
        lexical: LexicalIndex | None = None,
        settings: SearchSettings | None = None,
        categories: CategorySpace | None = None,
        photos: VectorIndex | None = None,
        query_vocabulary: QueryVocabulary | None = None,
        catalogue: ListingCatalogue | None = None,
    ):
        self.settings = settings or SearchSettings()
        self.categories = categories  # the model's category heads: similar() favours shared categories
        # the encoder's words: a typed query with none of them has no semantic signal (None: not judged)
        self.query_vocabulary = query_vocabulary
        if self.settings.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.settings.fusion!r}")
        self.vectors = vectors
        self.lexical = lexical
        self.photos = photos  # listing id -> pooled unit photo features (listings with photos only)
        self._owns_catalogue = catalogue is None
        if catalogue is None:
            if products is None:
                raise ValueError("give the products to search, or a catalogue of them")
            S.require_columns(products, TABLE_COLUMNS, "products")
            catalogue = ListingCatalogue.from_frame(products)
        self._catalogue = catalogue
        self._lock = threading.RLock()
        self._align_key: tuple | None = None
        self._align: tuple[np.ndarray | None, np.ndarray | None] = (None, None)

    @classmethod
    def build(
        cls,
        products: pd.DataFrame,
        product_ids: list[str] | None = None,
        embeddings: np.ndarray | None = None,
        settings: SearchSettings | None = None,
        categories: CategorySpace | None = None,
        query_vocabulary: QueryVocabulary | None = None,
    ) -> HybridSearcher:
        """Index a clean products table (BM25) and, when given, its embeddings (FAISS)."""
        settings = settings or SearchSettings()
        lexical = LexicalIndex.from_products(products, settings)
        vectors = None
        if embeddings is not None:
            ids = product_ids if product_ids is not None else products[S.PRODUCT_ID].astype(str).tolist()
            vectors = VectorIndex(int(np.shape(embeddings)[1]), settings)
            vectors.build(ids, embeddings)
        return cls(products, vectors, lexical, settings, categories, query_vocabulary=query_vocabulary)

    @property
    def table(self) -> CatalogueView:
        """The listings as of now (a read-only view; `len` is how many are listed)."""
        return self._catalogue.view()

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path | str) -> None:
        """Write the indexes (each atomically) into a directory: vectors.faiss (+ id map), lexical.json.

        The listing table is not saved: it is the clean products table (the database).
        """
        directory = Path(directory)
        with self._lock:
            if self.vectors is not None:
                self.vectors.save(directory / VECTOR_FILE)
            if self.photos is not None:
                self.photos.save(directory / PHOTO_FILE)
            if self.lexical is not None:
                self.lexical.save(directory / LEXICAL_FILE)

    @classmethod
    def load(
        cls,
        directory: Path | str,
        products: pd.DataFrame,
        settings: SearchSettings | None = None,
        categories: CategorySpace | None = None,
        query_vocabulary: QueryVocabulary | None = None,
    ) -> HybridSearcher:
        """Open saved indexes over a products table; a missing index file means that index is absent.

        A corrupt file raises `IndexLoadError` (a missing one is not an error: e.g. no
        embeddings were trained yet). A lexical index saved with an older term normalisation
        is rebuilt from `products` when they carry descriptions (`LexicalIndex.load`).
        """
        vectors, lexical = _read_indexes(Path(directory), settings or SearchSettings(), products)
        return cls(products, vectors, lexical, settings, categories, query_vocabulary=query_vocabulary)

    def reload(self, directory: Path | str) -> None:
        """Swap in indexes saved by another process; on any load error the current ones stay.

        Raises `IndexLoadError` with the reason, having changed nothing.
        """
        vectors, lexical = _read_indexes(Path(directory), self.settings)
        with self._lock:
            self.vectors, self.lexical = vectors, lexical
            self._align_key = None

    # ------------------------------------------------------------------ live listings
    def add_products(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None = None,
        photo_vectors: np.ndarray | None = None,
        has_photo: np.ndarray | None = None,
    ) -> None:
        """Add or replace listings: they are searchable when this returns.

        `photo_vectors` (n, photo dim) with `has_photo` (n,) bool update the photo index:
        a replaced listing that no longer has a photo leaves it.
        """
        S.require_columns(products, (*TABLE_COLUMNS, S.DESCRIPTION), "products")
        ids = products[S.PRODUCT_ID].astype(str).tolist()
        with self._lock:
            if embeddings is not None:
                if self.vectors is None:
                    raise ValueError("this searcher has no vector index to add embeddings to")
                self.vectors.add(ids, embeddings)
            if photo_vectors is not None and self.photos is not None:
                keep = np.ones(len(ids), bool) if has_photo is None else np.asarray(has_photo, bool)
                self.photos.remove([pid for pid, k in zip(ids, keep, strict=True) if not k])
                if keep.any():
                    self.photos.add([pid for pid, k in zip(ids, keep, strict=True) if k], photo_vectors[keep])
            if self.lexical is not None:
                self.lexical.add(ids, products[S.TITLE].tolist(), products[S.DESCRIPTION].tolist())
            if self._owns_catalogue:  # a lent catalogue is written by its owner
                self._catalogue.upsert(products)

    def remove_products(self, product_ids: Iterable[str]) -> int:
        """Remove listings from every index; returns how many the catalogue listed."""
        ids = list(dict.fromkeys(map(str, product_ids)))
        with self._lock:
            if self.vectors is not None:
                self.vectors.remove(ids)
            if self.photos is not None:
                self.photos.remove(ids)
            if self.lexical is not None:
                self.lexical.remove(ids)
            if self._owns_catalogue:
                return self._catalogue.delete(ids)
            view = self.table
            return sum(view.contains(pid) for pid in ids)

    # ------------------------------------------------------------------ queries
    def allowed_ids(self, filters: Filters | None) -> np.ndarray | None:
        """Product ids passing the filters, or None when nothing is filtered."""
        if filters is None or not filters.active:
            return None
        view = self.table
        return view.ids[filter_mask(view, filters)]

    def check_category(self, category: str, roots: Iterable[str] = ()) -> None:
        """Raise `UnknownCategoryError` unless `category` is a catalogue category or a prefix of
        one (as `Filters` match it), or names one of `roots` (e.g. the model's categories,
        which may have no listing yet). The error lists the roots and the nearest spelling."""
        self.canonical_category(category, roots)

    def canonical_category(self, category: str, roots: Iterable[str] = ()) -> str:
        """The catalogue's own spelling of `category` ("home and garden / sofas" ->
        "Home & Garden / Sofas"), matched as `check_category` matches; a seller's category is
        stored in this spelling, so filters and the leaf feature see one name per category.
        Raises `UnknownCategoryError` (roots and the nearest spelling) when nothing matches."""
        view = self.table  # one version throughout, whatever a concurrent write does
        key = category_key(category)
        extra = {category_key(root): root for root in roots}
        if key in extra:
            return extra[key]
        prefixes = category_prefixes(view)
        if key in prefixes:
            return prefixes[key]
        known = extra | prefixes
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        all_roots = sorted(set(extra.values()) | set(_live_values(view, S.ROOT_CATEGORY)))
        raise UnknownCategoryError(category, all_roots, known[close[0]] if close else None)

    def query_signal(self, query_text: str, photo: bool = False) -> tuple[list[str], bool | None]:
        """(query terms some listing contains, whether the query vector means anything).

        The vector means something with a photo, or when a word of the text is in the
        encoder's vocabulary; None when this searcher has no vocabulary to judge by.
        """
        known_terms = self.lexical.known_terms(query_text) if self.lexical is not None else []
        if photo:
            return known_terms, True
        if self.query_vocabulary is None:
            return known_terms, None
        return known_terms, bool(self.query_vocabulary.known(query_text))

    def retrieve(
        self,
        query_vector: np.ndarray | None,
        query_text: str | None,
        filters: Filters | None = None,
        n: int | None = None,
        truncate: bool = True,
        photo: bool = False,
        query_photo: np.ndarray | None = None,
        photo_root_probs: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Up to n candidates, best fused score first (columns: CANDIDATE_COLUMNS).

        Give a query vector (from the query encoder), query text, or both; `photo` says
        the vector holds a photo. Empty text is an error. A typed query without a photo
        whose words the encoder never learnt is searched by its words alone (mode
        "lexical"), and when no listing has any of them either, not at all: no candidates,
        mode "none" (see the module docstring); `attrs[NOTES]` says so in a sentence.
        Without a `query_vocabulary` the vector is always used. `truncate=False` keeps
        every listing either search found (up to 2n), so each list can be judged on its
        own, not only on what survived the fusion cut. `query_photo` (the query photo's
        backbone features) with a photo index adds the photo match (`retrieve_photo`);
        `photo_root_probs` is the image head's estimate of the photo's root category, in
        class order.
        """
        if query_photo is not None and self.photos is not None and len(self.photos):
            return self.retrieve_photo(
                query_photo, query_vector, query_text, filters, n, photo_root_probs, truncate
            )
        n = check_k(self.settings.candidates if n is None else n, self.settings.max_k)
        if query_text is not None:
            check_query(query_text)
        if query_vector is None and query_text is None:
            raise ValueError("give query text, a query vector, or both")
        use_vectors = query_vector is not None and self.vectors is not None
        use_text = query_text is not None and self.lexical is not None
        if not (use_vectors or use_text):
            missing = "vector index (no trained embeddings)" if query_vector is not None else "lexical index"
            raise ValueError(f"this searcher has no {missing} for this query")
        notes: list[str] = []
        if query_text is not None:
            known_terms, meaningful = self.query_signal(query_text, photo)
            if not known_terms and (meaningful is False or not use_vectors):
                words = " ".join(query_text.split())
                note = (
                    f"no results: no word of {words!r} is known to this marketplace (no listing "
                    "contains one and the search model never learnt one); try other words or a photo"
                )
                return _with_mode(empty_candidates(), "none", [note])
            if use_vectors and meaningful is False:
                use_vectors = False  # the out-of-vocabulary vector: the same neighbours for any query
                notes.append(
                    "matched by words only: the search model knows none of the query's words, "
                    "so it cannot judge meaning"
                )
        mode = "hybrid" if use_vectors and use_text else "semantic" if use_vectors else "lexical"

        with self._lock:
            vec_allowed = lex_allowed = None
            if filters is not None and filters.active:
                view = self.table
                mask = filter_mask(view, filters)
                if not mask.any():
                    return _with_mode(empty_candidates(), mode, notes)
                vec_allowed, lex_allowed = self._selections(view, mask)
            semantic = self.vectors.search(query_vector, n, vec_allowed) if use_vectors else []
            lexical = self.lexical.search(query_text, n, lex_allowed) if use_text else []
            frame = self._score_candidates(
                query_vector if use_vectors else None,
                query_text if use_text else None,
                semantic,
                lexical,
                n if truncate else len(semantic) + len(lexical),
            )
        return _with_mode(frame, mode, notes)

    def retrieve_photo(
        self,
        query_photo: np.ndarray,
        query_vector: np.ndarray | None,
        query_text: str | None = None,
        filters: Filters | None = None,
        n: int | None = None,
        root_probs: np.ndarray | None = None,
        truncate: bool = True,
    ) -> pd.DataFrame:
        """Candidates for a query with a photo (and maybe words), best first.

        The union of the photo index's neighbours and the usual embedding/BM25 lists, each
        scored in photo-cosine units: cos(query photo, listing's pooled photo) +
        photo_blend_weight * the usual blend (min-max scaled) + photo_root_weight * P(same
        root) + photo_leaf_weight * P(same leaf). The cosine is not rescaled: a re-encoded
        copy of a listing's photo scores ~0.95-1.0 against it and rarely above 0.85 against
        any other, and that gap is what keeps duplicates first. Columns: CANDIDATE_COLUMNS plus
        PHOTO_SCORE; FUSED_SCORE is the score, and SEMANTIC_SCORE carries it min-max scaled over
        the candidates (best 1, weakest 0) for the ranker to read as relevance: in raw cosine
        units the gap between a duplicate and the next photo (~0.15) was smaller than what
        freshness, popularity and taste move, and the ranker put other listings first.

        Args:
            query_photo: (photo dim,) backbone features of the query photo.
            query_vector: the query embedding (photo and words through the query tower).
            root_probs: (classes,) the image head's root probabilities for the photo.
        """
        n = check_k(self.settings.candidates if n is None else n, self.settings.max_k)
        if query_text is not None:
            check_query(query_text)
        if self.photos is None:
            raise ValueError("this searcher has no photo index")
        q = np.asarray(query_photo, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        with self._lock:
            photo_allowed = vec_allowed = lex_allowed = None
            if filters is not None and filters.active:
                view = self.table
                mask = filter_mask(view, filters)
                if not mask.any():
                    return _with_mode(empty_candidates(), "photo")
                vec_allowed, lex_allowed = self._selections(view, mask)
                allowed_ids = view.ids[mask]
                photo_allowed = [pid for pid in allowed_ids if pid in self.photos]
            photo_hits = self.photos.search(q, n, photo_allowed)
            use_vectors = query_vector is not None and self.vectors is not None
            use_text = query_text is not None and self.lexical is not None
            semantic = self.vectors.search(query_vector, n, vec_allowed) if use_vectors else []
            lexical = self.lexical.search(query_text, n, lex_allowed) if use_text else []
            base = self._score_candidates(
                query_vector if use_vectors else None,
                query_text if use_text else None,
                semantic,
                lexical,
                len(semantic) + len(lexical),
            )
            found = dict(photo_hits)
            ids = list(dict.fromkeys([pid for pid, _ in photo_hits] + base[S.PRODUCT_ID].tolist()))
            if not ids:
                return _with_mode(empty_candidates(), "photo")
            rest = [pid for pid in ids if pid not in found and pid in self.photos]
            if rest:
                found.update(zip(rest, (self.photos.vectors_of(rest) @ q).tolist(), strict=True))
            photo = np.array([found.get(pid, np.nan) for pid in ids], dtype=float)
            parts = base.set_index(S.PRODUCT_ID).reindex(ids)
            blend = parts[FUSED_SCORE].to_numpy(float)
            settings = self.settings
            fused = np.nan_to_num(photo, nan=0.0)
            if use_text or use_vectors:
                fused = fused + settings.photo_blend_weight * np.nan_to_num(min_max(blend), nan=0.0)
            if self.categories is not None and use_vectors and (settings.photo_root_weight or settings.photo_leaf_weight):
                in_vectors = np.array([pid in self.vectors for pid in ids])
                same_root = np.zeros(len(ids))
                same_leaf = np.zeros(len(ids))
                if in_vectors.any():
                    kept = [pid for pid, k in zip(ids, in_vectors, strict=True) if k]
                    root, leaf = self.categories.agreement(query_vector, self.vectors.vectors_of(kept), root_probs)
                    same_root[in_vectors], same_leaf[in_vectors] = root, leaf
                fused = fused + settings.photo_root_weight * same_root + settings.photo_leaf_weight * same_leaf
            cutoff = settings.photo_match_cosine
            match = np.nan_to_num(photo, nan=0.0) >= cutoff if cutoff > 0 else np.zeros(len(ids), bool)
            order = np.lexsort((np.arange(len(ids)), -fused, ~match))
            if truncate:
                order = order[:n]
            frame = pd.DataFrame(
                {
                    S.PRODUCT_ID: np.array(ids, dtype=object)[order],
                    SEMANTIC_SCORE: min_max(fused)[order],
                    LEXICAL_SCORE: parts[LEXICAL_SCORE].to_numpy(float)[order],
                    SEMANTIC_RANK: parts[SEMANTIC_RANK].to_numpy(float)[order],
                    LEXICAL_RANK: parts[LEXICAL_RANK].to_numpy(float)[order],
                    FUSED_SCORE: fused[order],
                    PHOTO_SCORE: photo[order],
                    PHOTO_MATCH: match[order],
                }
            )
        return _with_mode(frame, "photo+words" if use_text else "photo")

    def _selections(
        self, view: CatalogueView, mask: np.ndarray
    ) -> tuple[IdSelection | None, IdSelection | None]:
        """A row mask over a catalogue view -> the allowed ids inside the vector and lexical indexes."""

        def allowed(
            index: VectorIndex | LexicalIndex | None, aligned: np.ndarray | None
        ) -> IdSelection | None:
            if index is None or aligned is None:
                return None
            ids = aligned[mask]
            return IdSelection(ids[ids >= 0], index.version)

        vec_align, lex_align = self._alignment(view)
        return allowed(self.vectors, vec_align), allowed(self.lexical, lex_align)

    def _alignment(self, view: CatalogueView) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Catalogue rows -> ids inside each index, cached until the catalogue or an index changes.

        Filters produce a row mask over the table; this turns it into each index's own ids
        without a per-query hash lookup of every allowed product id.
        """
        key = (
            id(view),
            view.version,
            self.vectors.version if self.vectors is not None else None,
            self.lexical.version if self.lexical is not None else None,
        )
        if self._align_key != key:
            vec = self.vectors.internal_ids(view.ids) if self.vectors is not None else None
            lex = self.lexical.positions(view.ids) if self.lexical is not None else None
            self._align = (vec, lex)
            self._align_key = key
        return self._align

    def _score_candidates(
        self,
        query_vector: np.ndarray | None,
        query_text: str | None,
        semantic: list[tuple[str, float]],
        lexical: list[tuple[str, float]],
        n: int,
        semantic_weight: float | None = None,
    ) -> pd.DataFrame:
        sem_rank = {pid: r for r, (pid, _) in enumerate(semantic, start=1)}
        lex_rank = {pid: r for r, (pid, _) in enumerate(lexical, start=1)}
        ids = list(sem_rank) + [pid for pid in lex_rank if pid not in sem_rank]
        if not ids:
            return empty_candidates()
        sem_ranks = np.array([sem_rank.get(pid, np.nan) for pid in ids], dtype=float)
        lex_ranks = np.array([lex_rank.get(pid, np.nan) for pid in ids], dtype=float)

        sem_scores = np.full(len(ids), np.nan)
        if query_vector is not None:
            sem_scores[: len(semantic)] = [score for _, score in semantic]
            rest = [pid for pid in ids[len(semantic) :] if pid in self.vectors]
            if rest:  # lexical-only candidates still get their cosine similarity
                q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
                found = dict(zip(rest, (self.vectors.vectors_of(rest) @ q).tolist(), strict=True))
                sem_scores[len(semantic) :] = [found.get(pid, np.nan) for pid in ids[len(semantic) :]]
        lex_scores = np.full(len(ids), np.nan)
        if query_text is not None:
            lex_scores = np.asarray(self.lexical.score(query_text, ids), dtype=float)

        if self.settings.fusion == "blend":
            weight = self.settings.semantic_weight if semantic_weight is None else semantic_weight
            fused = weighted_blend(sem_scores, lex_scores, weight)
        else:
            fused = reciprocal_rank_fusion([sem_ranks, lex_ranks], self.settings.rrf_k)
        order = np.lexsort((np.arange(len(ids)), -fused))[:n]  # ties keep semantic-then-lexical order
        return pd.DataFrame(
            {
                S.PRODUCT_ID: np.array(ids, dtype=object)[order],
                SEMANTIC_SCORE: sem_scores[order],
                LEXICAL_SCORE: lex_scores[order],
                SEMANTIC_RANK: sem_ranks[order],
                LEXICAL_RANK: lex_ranks[order],
                FUSED_SCORE: fused[order],
            }
        )

    def nearest(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """The k listings whose embeddings are closest to `vector` (cosine), among those that
        pass `filters`: [(product_id, similarity)], best first (fewer when fewer pass)."""
        with self._lock:
            if self.vectors is None:
                return []
            allowed = None
            if filters is not None and filters.active:
                view = self.table
                mask = filter_mask(view, filters)
                if not mask.any():
                    return []
                allowed, _ = self._selections(view, mask)
            return self.vectors.search(vector, k, allowed)

    def similar(
        self, product_id: str, k: int = 10, filters: Filters | None = None
    ) -> list[tuple[str, float]]:
        """Listings most like a given one, itself excluded, best first with their scores."""
        frame = self.similar_scored(product_id, k, filters)
        return list(
            zip(frame[S.PRODUCT_ID].tolist(), frame[SIMILAR_SCORE].astype(float).tolist(), strict=True)
        )

    def similar_scored(self, product_id: str, k: int = 10, filters: Filters | None = None) -> pd.DataFrame:
        """Listings most like a given one (columns SIMILAR_COLUMNS), itself excluded, best first.

        The candidates are its embedding's neighbours and the BM25 matches of its own
        title; `similarity` is their blend (`similar_semantic_weight`, min-max scaled; 1.0
        is the embedding alone). With the model's category heads (`categories`), each
        candidate also gets `similar_root_weight` * P(same root) and `similar_leaf_weight`
        * P(same leaf), and the score is the sum of the three. Without category weights
        and with the embedding alone the score is the cosine similarity. A listing
        without an embedding is matched by its title alone. An unknown id raises KeyError.
        """
        k = check_k(k, self.settings.max_k)
        product_id = str(product_id)
        with self._lock:
            view = self.table
            mask = None
            if filters is not None and filters.active:
                mask = filter_mask(view, filters) & (view.ids != product_id)
                if not mask.any():
                    return _similar_frame([], [])
            title = view.title_of(product_id)
            has_title = self.lexical is not None and isinstance(title, str) and bool(title.strip())
            vec_allowed, lex_allowed = (None, None) if mask is None else self._selections(view, mask)
            n = min(k + 1, self.settings.max_k)
            if self.vectors is None or product_id not in self.vectors:
                if title is None:
                    raise KeyError(f"product {product_id!r} is not in the catalogue")
                hits = self.lexical.search(title, n, lex_allowed) if has_title else []
                return _similar_frame(*_unzip(hits), exclude=product_id, k=k)
            vector = self.vectors.reconstruct(product_id)
            weight = self.settings.similar_semantic_weight
            use_title = weight < 1.0 and has_title
            root_weight, leaf_weight = self._category_weights()
            use_heads = bool(root_weight or leaf_weight)
            if not use_title and not use_heads:
                return _similar_frame(
                    *_unzip(self.vectors.search(vector, n, vec_allowed)), exclude=product_id, k=k
                )
            pool = max(n, min(self.settings.candidates, self.settings.max_k))
            semantic = self.vectors.search(vector, pool, vec_allowed)
            lexical = self.lexical.search(title, pool, lex_allowed) if use_title else []
            scored = self._score_candidates(
                vector, title if use_title else None, semantic, lexical, len(semantic) + len(lexical), weight
            )
            scored = scored[scored[S.PRODUCT_ID] != product_id]
            ids = scored[S.PRODUCT_ID].tolist()
            same_root = same_leaf = None
            if use_heads and ids:
                same_root, same_leaf = self.categories.agreement(vector, self.vectors.vectors_of(ids))
                same_root, same_leaf = root_weight * same_root, leaf_weight * same_leaf
            return _similar_frame(ids, scored[FUSED_SCORE].to_numpy(float), same_root, same_leaf, k=k)

    def _category_weights(self) -> tuple[float, float]:
        """(root, leaf) weights of category agreement in similar(); 0 where there is no head."""
        if self.categories is None:
            return 0.0, 0.0
        leaf = self.settings.similar_leaf_weight if self.categories.leaf is not None else 0.0
        return float(self.settings.similar_root_weight), float(leaf)


def _unzip(hits: list[tuple[str, float]]) -> tuple[list[str], list[float]]:
    return [pid for pid, _ in hits], [score for _, score in hits]


def _similar_frame(
    ids: list[str],
    similarity: Iterable[float],
    same_root: np.ndarray | None = None,
    same_leaf: np.ndarray | None = None,
    exclude: str | None = None,
    k: int | None = None,
) -> pd.DataFrame:
    """Similar-listing candidates with their score parts, best first, at most k."""
    frame = pd.DataFrame(
        {S.PRODUCT_ID: pd.Series(ids, dtype=object), SIMILARITY: np.asarray(list(similarity), float)}
    )
    frame[SAME_ROOT] = 0.0 if same_root is None else np.asarray(same_root, float)
    frame[SAME_LEAF] = 0.0 if same_leaf is None else np.asarray(same_leaf, float)
    frame[SIMILAR_SCORE] = frame[SIMILARITY] + frame[SAME_ROOT] + frame[SAME_LEAF]
    if exclude is not None:
        frame = frame[frame[S.PRODUCT_ID] != exclude]
    order = np.lexsort((np.arange(len(frame)), -frame[SIMILAR_SCORE].to_numpy()))
    return frame.iloc[order[:k] if k is not None else order].reset_index(drop=True)


def _read_indexes(
    directory: Path, settings: SearchSettings, products: pd.DataFrame | None = None
) -> tuple[VectorIndex | None, LexicalIndex | None]:
    if not directory.is_dir():
        raise IndexLoadError(f"no search index directory at {directory}")
    vector_path, lexical_path = directory / VECTOR_FILE, directory / LEXICAL_FILE
    if not vector_path.exists() and not lexical_path.exists():
        raise IndexLoadError(f"{directory} holds neither {VECTOR_FILE} nor {LEXICAL_FILE}")
    vectors = VectorIndex.load(vector_path, settings) if vector_path.exists() else None
    table = None
    if products is not None and {S.PRODUCT_ID, S.TITLE, S.DESCRIPTION} <= set(products.columns):
        table = products  # lets an index saved with another normalisation be rebuilt exactly
    lexical = LexicalIndex.load(lexical_path, settings, table) if lexical_path.exists() else None
    return vectors, lexical


def _with_mode(frame: pd.DataFrame, mode: str, notes: list[str] | None = None) -> pd.DataFrame:
    frame.attrs["mode"] = mode
    frame.attrs[NOTES] = list(notes or [])
    return frame
