"""The retrieval backend seam: the primitives hybrid retrieval needs of a search engine.

`HybridSearcher` (search/hybrid.py) owns the one fusion code path (blend or RRF over the
semantic and lexical lists, the per-candidate scores the ranker reads, photo queries,
similar listings). What it needs of an engine is small and lives here as a protocol:

* `select(filters)` turns listing filters into the engine's own form, once per query;
* dense, BM25 and photo searches under a selection, k results best first;
* the dense, BM25 and photo scores of given ids (the ranker reads both the semantic and the
  lexical score of every candidate, not only of the list that found it);
* stored vectors of ids (similar listings, category agreement);
* `upsert` and `remove` by product id, counts, and candidate rows by id (`rows`: what a
  stateless server needs of a candidate without an in-memory catalogue).

Two implementations. `EmbeddedBackend` (here) is what every installation gets by default and
what existed before the seam: FAISS (search/index.py) + bm25s (search/lexical.py) in
process, filters evaluated over the service's in-memory catalogue and handed to both as
id selections. `MilvusBackend` (search/milvus.py) runs the same primitives in Milvus (a
server, or a milvus-lite file). Which one runs is chosen by one setting, `index_uri`
(`parse_index_uri`; CLI `--index-uri`, env FBMARKET_INDEX_URI).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from fbmarket.catalogue import CatalogueView
from fbmarket.config import mask_url_password
from fbmarket.data import schema as S
from fbmarket.errors import DataError
from fbmarket.search.filters import Filters, filter_mask
from fbmarket.search.index import IdSelection, VectorIndex
from fbmarket.search.lexical import LexicalIndex

INDEX_URI_SETTING = "--index-uri / FBMARKET_INDEX_URI"
LITE_FILE_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")  # what milvus-lite accepts as a database file name
MILVUS_DEFAULT_PORT = 19530

Hits = list[tuple[str, float]]


@runtime_checkable
class RetrievalBackend(Protocol):
    """What hybrid retrieval needs of a search engine. Scores: inner product of unit vectors
    (cosine) for dense and photo, Lucene BM25 without the (k1 + 1) factor for lexical (bm25s's
    "lucene" variant; search/lexical.py). Ids are product ids (str)."""

    name: str

    @property
    def has_vectors(self) -> bool: ...  # a dense index exists (trained embeddings)
    @property
    def has_lexical(self) -> bool: ...
    @property
    def has_photos(self) -> bool: ...  # photo vectors exist for at least one listing

    def vector_count(self) -> int: ...  # listings with an embedding
    def has_vector(self, product_id: str) -> bool: ...
    def has_vectors_for(self, product_ids: Sequence[str]) -> np.ndarray: ...  # (n,) bool
    def select(self, filters: Filters | None, exclude: str | None = None) -> Selection | None: ...
    def dense_search(self, vector: np.ndarray, k: int, selection: Selection | None) -> Hits: ...
    def lexical_search(self, text: str, k: int, selection: Selection | None) -> Hits: ...
    def photo_search(self, vector: np.ndarray, k: int, selection: Selection | None) -> Hits: ...
    def dense_scores(self, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray: ...
    def lexical_scores(self, text: str, product_ids: Sequence[str]) -> np.ndarray: ...
    def photo_scores(self, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray: ...
    def vector_of(self, product_id: str) -> np.ndarray: ...
    def vectors_of(self, product_ids: Sequence[str]) -> np.ndarray: ...
    def known_terms(self, text: str) -> list[str]: ...
    def upsert(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None = None,
        photo_vectors: np.ndarray | None = None,
        has_photo: np.ndarray | None = None,
        image_counts: Sequence[int] | None = None,
    ) -> None: ...
    def remove(self, product_ids: Iterable[str]) -> int: ...
    def rows(self, product_ids: Sequence[str]) -> pd.DataFrame: ...
    def close(self) -> None: ...


class Selection:
    """Filters in a backend's own form (made by `select`, read only by that backend).
    `empty`: no listing passes, so a search can return at once."""

    empty: bool = False


# ---------------------------------------------------------------------- the embedded backend
class EmbeddedSelection(Selection):
    """A catalogue row mask and the ids it allows inside each in-process index."""

    def __init__(
        self,
        view: CatalogueView,
        mask: np.ndarray,
        vectors: IdSelection | None = None,
        lexical: IdSelection | None = None,
    ):
        self.view, self.mask, self.vectors, self.lexical = view, mask, vectors, lexical
        self.empty = not bool(mask.any())


class EmbeddedBackend:
    """FAISS + bm25s in process, filters over the in-memory catalogue: the default backend.

    The indexes are attributes (`vectors`, `lexical`, `photos`; any may be None) so the
    searcher can swap them (reload) and training can assemble one from parts. Not locked:
    the searcher calls it under its own lock (each index is also thread-safe on its own).
    """

    name = "embedded"

    def __init__(
        self,
        view: Callable[[], CatalogueView],
        vectors: VectorIndex | None = None,
        lexical: LexicalIndex | None = None,
        photos: VectorIndex | None = None,
    ):
        self._view = view
        self.vectors = vectors
        self.lexical = lexical
        self.photos = photos  # listing id -> pooled unit photo features (listings with photos only)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the catalogue -> index id alignment (after an index was swapped)."""
        self._align_key: tuple | None = None
        self._align: tuple[np.ndarray | None, np.ndarray | None] = (None, None)

    @property
    def has_vectors(self) -> bool:
        return self.vectors is not None

    @property
    def has_lexical(self) -> bool:
        return self.lexical is not None

    @property
    def has_photos(self) -> bool:
        return self.photos is not None and len(self.photos) > 0

    def vector_count(self) -> int:
        return len(self.vectors) if self.vectors is not None else 0

    def has_vector(self, product_id: str) -> bool:
        return self.vectors is not None and product_id in self.vectors

    def has_vectors_for(self, product_ids: Sequence[str]) -> np.ndarray:
        vectors = self.vectors
        return np.array([vectors is not None and pid in vectors for pid in product_ids], dtype=bool)

    # ------------------------------------------------------------------ filters
    def select(self, filters: Filters | None, exclude: str | None = None) -> EmbeddedSelection | None:
        """The catalogue rows passing `filters` (and not `exclude`), resolved to index ids; None
        when nothing is filtered."""
        if filters is None or not filters.active:
            return None
        view = self._view()
        mask = filter_mask(view, filters)
        if exclude is not None:
            mask &= view.ids != exclude
        if not mask.any():
            return EmbeddedSelection(view, mask)
        vec_align, lex_align = self._alignment(view)
        return EmbeddedSelection(view, mask, _allowed(self.vectors, vec_align, mask), _allowed(self.lexical, lex_align, mask))

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

    # ------------------------------------------------------------------ searches
    def dense_search(self, vector: np.ndarray, k: int, selection: Selection | None) -> Hits:
        if self.vectors is None or (selection is not None and selection.empty):
            return []
        return self.vectors.search(vector, k, selection.vectors if selection is not None else None)

    def lexical_search(self, text: str, k: int, selection: Selection | None) -> Hits:
        if self.lexical is None or (selection is not None and selection.empty):
            return []
        return self.lexical.search(text, k, selection.lexical if selection is not None else None)

    def photo_search(self, vector: np.ndarray, k: int, selection: Selection | None) -> Hits:
        if self.photos is None or (selection is not None and selection.empty):
            return []
        allowed = None
        if selection is not None:
            allowed = [pid for pid in selection.view.ids[selection.mask] if pid in self.photos]
        return self.photos.search(vector, k, allowed)

    # ------------------------------------------------------------------ scores of given ids
    def dense_scores(self, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray:
        """Cosine of `vector` with each listing's embedding; NaN where a listing has none."""
        return _cosines(self.vectors, vector, product_ids)

    def lexical_scores(self, text: str, product_ids: Sequence[str]) -> np.ndarray:
        """BM25 scores (0 for no match or an unknown id)."""
        if self.lexical is None:
            return np.zeros(len(product_ids))
        return np.asarray(self.lexical.score(text, product_ids), dtype=float)

    def photo_scores(self, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray:
        """Cosine of a unit query photo vector with each listing's pooled photo; NaN without one."""
        return _cosines(self.photos, vector, product_ids)

    def vector_of(self, product_id: str) -> np.ndarray:
        if self.vectors is None:
            raise KeyError(f"product {product_id!r} is not in the vector index")
        return self.vectors.reconstruct(product_id)

    def vectors_of(self, product_ids: Sequence[str]) -> np.ndarray:
        if self.vectors is None:
            raise KeyError("there is no vector index")
        return self.vectors.vectors_of(product_ids)

    def known_terms(self, text: str) -> list[str]:
        return self.lexical.known_terms(text) if self.lexical is not None else []

    # ------------------------------------------------------------------ writes
    def upsert(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None = None,
        photo_vectors: np.ndarray | None = None,
        has_photo: np.ndarray | None = None,
        image_counts: Sequence[int] | None = None,
    ) -> None:
        """Add or replace listings in every index (the catalogue is written by its owner)."""
        ids = products[S.PRODUCT_ID].astype(str).tolist()
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

    def remove(self, product_ids: Iterable[str]) -> int:
        """Remove listings from every index; returns how many the vector or lexical index held."""
        ids = list(dict.fromkeys(map(str, product_ids)))
        removed = 0
        if self.vectors is not None:
            removed = max(removed, self.vectors.remove(ids))
        if self.photos is not None:
            self.photos.remove(ids)
        if self.lexical is not None:
            removed = max(removed, self.lexical.remove(ids))
        return removed

    def rows(self, product_ids: Sequence[str]) -> pd.DataFrame:
        """The catalogue's rows of these listings (unknown ids left out), in the given order."""
        view = self._view()
        rows = view.rows(list(product_ids))
        return view.frame(rows[rows >= 0])

    def close(self) -> None:
        """Nothing to release: the indexes live and die with the process."""


def _allowed(index: VectorIndex | LexicalIndex | None, aligned: np.ndarray | None, mask: np.ndarray) -> IdSelection | None:
    if index is None or aligned is None:
        return None
    ids = aligned[mask]
    return IdSelection(ids[ids >= 0], index.version)


def _cosines(index: VectorIndex | None, vector: np.ndarray, product_ids: Sequence[str]) -> np.ndarray:
    out = np.full(len(product_ids), np.nan)
    if index is None or not len(product_ids):
        return out
    known = np.array([pid in index for pid in product_ids], dtype=bool)
    if known.any():
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        out[known] = index.vectors_of([pid for pid, k in zip(product_ids, known, strict=True) if k]) @ q
    return out


# ---------------------------------------------------------------------- choosing a backend
@dataclass(frozen=True)
class IndexTarget:
    """Where `index_uri` points. `kind`: "embedded" (FAISS + bm25s in process, the default),
    "milvus" (a server: `address` is its http://host:port) or "milvus-lite" (`address` is an
    absolute path to a .db file, opened by one process at a time). `collection`: a fixed
    collection name, or None for the one named after the bundle's model (`collection_name`)."""

    kind: str
    address: str | None = None
    collection: str | None = None
    shown: str = ""  # the URI as given, password masked: for messages and logs

    @property
    def embedded(self) -> bool:
        return self.kind == "embedded"


COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")  # Milvus's rule for collection names


def parse_index_uri(uri: str | None) -> IndexTarget:
    """`index_uri` -> where retrieval runs.

    * unset or empty: the embedded FAISS + bm25s default;
    * `milvus://host[:port]` (port 19530 by default; `milvus://user:password@host:port` for a
      server with authentication): a Milvus server, reached as http://host:port;
    * `milvus-lite:///abs/path.db`, or a path ending in `.db`: an embedded milvus-lite file;
    * `?collection=NAME` on either: that collection instead of the bundle's own name.

    Raises DataError naming --index-uri / FBMARKET_INDEX_URI (password masked) for anything else.
    """
    if uri is None or not str(uri).strip():
        return IndexTarget("embedded")
    uri = str(uri).strip()
    shown = mask_url_password(uri)

    def bad(why: str) -> DataError:
        return DataError(f"{INDEX_URI_SETTING}: {why}: {shown!r}", field="index_uri")

    parts = urlsplit(uri)
    query = parse_qs(parts.query) if parts.scheme in ("milvus", "milvus-lite") else {}
    unknown = set(query) - {"collection"}
    if unknown:
        raise bad(f"unknown option(s) {', '.join(sorted(unknown))} (only ?collection=NAME)")
    collection = query.get("collection", [None])[-1]
    if collection is not None and not COLLECTION_NAME.match(collection):
        raise bad("a collection name is letters, digits and _, starting with a letter or _")
    if parts.scheme == "milvus":
        if not parts.hostname:
            raise bad("a Milvus URI is milvus://host:port")
        try:
            port = parts.port or MILVUS_DEFAULT_PORT
        except ValueError:
            raise bad("the port is not a number in 1-65535") from None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        auth = ""
        if parts.username:
            auth = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
        return IndexTarget("milvus", f"http://{auth}{host}:{port}", collection, shown)
    if parts.scheme == "milvus-lite":
        path = parts.path
        if parts.netloc or not path.startswith("/"):
            raise bad("a milvus-lite URI is milvus-lite:///absolute/path/name.db")
        return _lite_target(Path(path), collection, shown, bad)
    if "://" in uri or not uri.endswith(".db"):
        raise bad("expected milvus://host:port, milvus-lite:///path.db or a path ending in .db")
    return _lite_target(Path(uri).expanduser().absolute(), None, shown, bad)


def _lite_target(path: Path, collection: str | None, shown: str, bad: Callable[[str], DataError]) -> IndexTarget:
    if path.suffix != ".db":
        raise bad("a milvus-lite file name ends in .db")
    if not LITE_FILE_NAME.match(path.name):
        raise bad("a milvus-lite file name may only hold letters, digits, '.', '-' and '_'")
    return IndexTarget("milvus-lite", str(path), collection, shown)

