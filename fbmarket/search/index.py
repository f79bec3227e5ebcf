"""The FAISS vector index: string product ids, live add/remove, filtered search, atomic save.

`VectorIndex` wraps `faiss.IndexIDMap2(faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT))`.
Embeddings are L2-normalised, so inner product is cosine similarity. The factory string comes
from `SearchSettings.index_factory`: "Flat" (exact) for small catalogues; IVF, HNSW, PQ or a
refined PQ fast-scan ("PQ128x4fs,RFlat", see benchmarks/search_scale.py) for large ones.
Index types that need training are trained by `build` (or `train`).

Product ids are strings; FAISS wants int64. Each product gets the next integer from a
counter that only grows, so ids of other listings never change when one is added, removed
or replaced. The mapping lives in a JSON sidecar next to the index file.

Removal. Only flat-code indexes (Flat, PQ, SQ: `faiss.IndexFlatCodes`) are safe to shrink
through IndexIDMap2: HNSW cannot remove at all, and IVF *appears* to work but returns wrong
ids afterwards (IndexIDMap2 compacts its id map while the inverted lists keep the old
positions; measured with faiss 1.15). Every other index type therefore removes by
tombstone: the vector stays in FAISS, its id leaves the mapping, and searches exclude it
with an IDSelector (or by over-fetching where the index type has no selector support).
`compact()` rebuilds the index from the live vectors to reclaim the space, keeping ids.

Filtering. `allowed` restricts results to some product ids. The index asks FAISS for
k results among the allowed ids (IDSelectorBitmap); if an approximate index comes back
short (a selective filter misses the probed lists or the graph's neighbourhood) the
remaining results are computed exactly over the allowed vectors, so k results come back
whenever k allowed listings exist.

Saving and loading (a crash-safe pair of files) are in `search/index_files.py`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fbmarket.config import SearchSettings
from fbmarket.limits import check_k
from fbmarket.search.index_faiss import (
    configure,
    exact_search,
    filtered_params,
    first_line,
    flat_storage,
    new_idmap,
    overfetch_params,
)
from fbmarket.search.index_files import (
    IndexLoadError as IndexLoadError,  # re-exported: callers import it here
)
from fbmarket.search.index_files import read_index_files, write_index_files

ADD_CHUNK = 65_536  # vectors per faiss.add call: bounds the temporary copies, drives the progress bar
SMALL_LOOKUP = 2048  # id lists up to this long are resolved with a dict, longer ones with pandas
MAX_OVERFETCH = 4096  # filtered search without selector support asks FAISS for at most this many
EXACT_DIRECT = 4096  # ... and scores this few allowed listings exactly instead
EXACT_DIRECT_IN_PLACE = 32_768  # ... or this few when their exact vectors can be scored in place


@dataclass(frozen=True)
class IdSelection:
    """Listings already resolved to an index's own ids, so a hot path can skip the lookup.

    Made from `VectorIndex.internal_ids` / `LexicalIndex.positions` (dropping the -1s)
    and valid only while the index's `version` is unchanged; a stale one is refused.
    """

    ids: np.ndarray
    version: int


class VectorIndex:
    """A FAISS index over product embeddings, addressed by product id. Thread-safe."""

    def __init__(self, dim: int, settings: SearchSettings | None = None, factory: str | None = None):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.settings = settings or SearchSettings()
        self.dim = dim
        self.factory = factory or self.settings.index_factory
        self._lock = threading.RLock()
        self._index = self._new_index()
        self._reset_ids()

    # ------------------------------------------------------------------ construction
    def _new_index(self) -> faiss.IndexIDMap2:
        idmap = new_idmap(self.dim, self.factory, self.settings.ef_construction)
        self._configure(idmap)
        return idmap

    def _configure(self, idmap: faiss.IndexIDMap2) -> None:
        """Apply search-time knobs from the settings (they are not part of the saved file)."""
        knobs = configure(idmap, self.settings)
        self._nprobe, self._ef_search = knobs.nprobe, knobs.ef_search
        self._hard_remove, self._selector_ok = knobs.hard_remove, knobs.selector_ok
        self._can_reconstruct = knobs.can_reconstruct
        self._index = idmap

    def retune(self, settings: SearchSettings) -> None:
        """Apply new search-time knobs (nprobe, efSearch, refine k-factor) without rebuilding."""
        with self._lock:
            self.settings = settings
            self._configure(self._index)

    def _reset_ids(self) -> None:
        self._int_of: dict[str, int] = {}
        self._pid_of: dict[int, str] = {}
        self._tombstones: set[int] = set()
        self._next_id = 0
        self._invalidate()

    def _invalidate(self) -> None:
        self.version = getattr(self, "version", 0) + 1  # any write: resolved ids go stale
        self._lookup_cache: tuple[pd.Index, np.ndarray] | None = None
        self._live_bitmap_cache: np.ndarray | None = None
        self._positions_cache: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._int_of)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._int_of

    @property
    def product_ids(self) -> list[str]:
        """Live product ids in insertion order."""
        with self._lock:
            return list(self._int_of)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def tombstone_count(self) -> int:
        """Vectors still held by FAISS for removed listings (see `compact`)."""
        return len(self._tombstones)

    @property
    def uses_tombstones(self) -> bool:
        return not self._hard_remove

    def describe(self) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "dim": self.dim,
            "live": len(self),
            "tombstones": self.tombstone_count,
            "ntotal": int(self._index.ntotal),
            "trained": self.is_trained,
            "removal": "hard" if self._hard_remove else "tombstone",
            "nprobe": self._nprobe,
            "ef_search": self._ef_search,
        }

    # ------------------------------------------------------------------ building
    def train(self, vectors: np.ndarray, seed: int = 0) -> None:
        """Train an index type that needs it (IVF centroids, PQ codebooks); no-op otherwise.

        At most `max_train_vectors` rows are used (a seeded sample): beyond that training
        time grows with no gain in quality.
        """
        x = self._as_matrix(vectors)
        with self._lock:
            if self._index.is_trained:
                return
            if self._index.ntotal:
                raise ValueError("cannot train an index that already holds vectors; use build()")
            limit = self.settings.max_train_vectors
            if len(x) > limit:
                rows = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
                x = x[rows]
            try:
                self._index.train(x)
            except RuntimeError as error:
                raise ValueError(
                    f"index type {self.factory!r} could not be trained on {len(x)} vectors "
                    f"({first_line(error)}); small catalogues should use the exact 'Flat' index"
                ) from None

    def build(self, product_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the whole index with these listings (training first when the type needs it)."""
        ids = self._as_ids(product_ids)
        x = self._as_matrix(vectors)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} product ids but {len(x)} vectors")
        with self._lock:
            self._index = self._new_index()
            self._reset_ids()
            if len(x):
                self.train(x)
            self._add_unlocked(ids, x)

    def add(self, product_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add listings; a product id already in the index is replaced (an update)."""
        ids = self._as_ids(product_ids)
        x = self._as_matrix(vectors)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} product ids but {len(x)} vectors")
        with self._lock:
            if not self._index.is_trained:
                raise ValueError(
                    f"index type {self.factory!r} needs training before listings can be added: call build()"
                )
            self._add_unlocked(ids, x)

    def _add_unlocked(self, ids: list[str], x: np.ndarray) -> None:
        replaced = [pid for pid in ids if pid in self._int_of]
        if replaced:
            self._remove_unlocked(replaced)
        ints = np.arange(self._next_id, self._next_id + len(ids), dtype=np.int64)
        chunks = range(0, len(ids), ADD_CHUNK)
        for start in tqdm(chunks, desc="FAISS add", unit="chunk", disable=len(chunks) < 4, leave=False):
            stop = start + ADD_CHUNK
            self._index.add_with_ids(x[start:stop], ints[start:stop])
        self._next_id += len(ids)
        for pid, i in zip(ids, ints.tolist(), strict=True):
            self._int_of[pid] = i
            self._pid_of[i] = pid
        self._invalidate()

    def remove(self, product_ids: Iterable[str]) -> int:
        """Remove listings; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            present = [pid for pid in dict.fromkeys(map(str, product_ids)) if pid in self._int_of]
            self._remove_unlocked(present)
            return len(present)

    def _remove_unlocked(self, present: list[str]) -> None:
        if not present:
            return
        ints = np.fromiter((self._int_of[pid] for pid in present), dtype=np.int64, count=len(present))
        if self._hard_remove:
            self._index.remove_ids(ints)
        else:
            self._tombstones.update(ints.tolist())
        for pid, i in zip(present, ints.tolist(), strict=True):
            del self._int_of[pid]
            del self._pid_of[i]
        self._invalidate()

    def compact(self) -> int:
        """Drop tombstoned vectors by rebuilding from the live ones (ids kept). Returns how many.

        Costs a full re-add (minutes for HNSW at a million vectors), so it is left to the
        caller to schedule, e.g. when `tombstone_count` passes a fraction of `len(self)`.
        Trained parameters (IVF centroids, PQ codebooks) are kept.
        """
        with self._lock:
            dropped = len(self._tombstones)
            if not dropped:
                return 0
            ints = np.fromiter(self._pid_of.keys(), dtype=np.int64, count=len(self._pid_of))
            vectors = self._reconstruct_ints(ints) if len(ints) else np.empty((0, self.dim), np.float32)
            self._index.reset()
            for start in range(0, len(ints), ADD_CHUNK):
                self._index.add_with_ids(vectors[start : start + ADD_CHUNK], ints[start : start + ADD_CHUNK])
            self._tombstones.clear()
            self._invalidate()
            return dropped

    # ------------------------------------------------------------------ reading vectors
    def reconstruct(self, product_id: str) -> np.ndarray:
        """The stored vector of a listing (decoded, so approximate for PQ/SQ codes)."""
        with self._lock:
            if product_id not in self._int_of:
                raise KeyError(f"product {product_id!r} is not in the vector index")
            return self._reconstruct_ints(np.array([self._int_of[product_id]], dtype=np.int64))[0]

    def vectors_of(self, product_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of several listings, in order; unknown ids raise KeyError."""
        with self._lock:
            missing = [pid for pid in product_ids if pid not in self._int_of]
            if missing:
                raise KeyError(f"{len(missing)} product(s) not in the vector index, e.g. {missing[0]!r}")
            ints = np.fromiter((self._int_of[p] for p in product_ids), dtype=np.int64, count=len(product_ids))
            return self._reconstruct_ints(ints)

    def _reconstruct_ints(self, ints: np.ndarray) -> np.ndarray:
        if not self._can_reconstruct:
            raise ValueError(
                f"index type {self.factory!r} cannot return stored vectors "
                "(IVF fast-scan keeps no direct map); add a refinement stage, e.g. ',RFlat'"
            )
        if len(ints) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(np.ascontiguousarray(ints, dtype=np.int64))

    # ------------------------------------------------------------------ searching
    def search(
        self, vector: np.ndarray, k: int, allowed: Iterable[str] | IdSelection | None = None
    ) -> list[tuple[str, float]]:
        """The k listings most similar to one query vector: [(product_id, score)], best first.

        `allowed` restricts the results to those product ids (a filter); fewer than k come
        back only when fewer than k listings are live (and allowed).
        """
        q = self._as_matrix(vector)
        if len(q) != 1:
            raise ValueError(f"search takes one query vector, got {len(q)}; use search_batch")
        return self.search_batch(q, k, allowed)[0]

    def search_batch(
        self, vectors: np.ndarray, k: int, allowed: Iterable[str] | IdSelection | None = None
    ) -> list[list[tuple[str, float]]]:
        """`search` for several query vectors at once (FAISS parallelises over queries)."""
        k = check_k(k, self.settings.max_k)
        q = self._as_matrix(vectors)
        with self._lock:
            if allowed is None and not self._tombstones:
                allowed_ints = None
                n_allowed = len(self._int_of)
            else:
                allowed_ints = self._allowed_ints(allowed)
                n_allowed = len(allowed_ints)
            kk = min(k, n_allowed)
            if kk == 0:
                return [[] for _ in range(len(q))]
            if allowed_ints is None:
                scores, labels = self._index.search(q, kk)
            else:
                scores, labels = self._filtered_search(q, kk, allowed, allowed_ints)
            short = np.flatnonzero((labels >= 0).sum(axis=1) < kk)
            if len(short):  # an approximate index came back short: finish exactly
                if allowed_ints is None:
                    allowed_ints = self._lookup()[1]
                scores[short], labels[short] = exact_search(q[short], kk, allowed_ints, flat_storage(self._index), self._positions_of, self._reconstruct_ints)
            return self._to_results(scores, labels)

    def _filtered_search(
        self, q: np.ndarray, kk: int, allowed: object, ints: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search restricted to `ints` (internal ids); rows may come back short."""
        if allowed is None:  # only tombstones to exclude: the live set is cached
            if self._live_bitmap_cache is None:
                self._live_bitmap_cache = self._bitmap(ints)
            bitmap = self._live_bitmap_cache
        else:
            bitmap = self._bitmap(ints)
        if self._selector_ok:
            packed = np.packbits(bitmap, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(packed))
            params = filtered_params(self._index, selector, self._nprobe, self._ef_search)
            try:
                return self._index.search(q, kk, params=params)
            except RuntimeError:
                self._selector_ok = False  # this index type has no selector support: over-fetch
        exact_limit = EXACT_DIRECT_IN_PLACE if flat_storage(self._index) is not None else EXACT_DIRECT
        if len(ints) <= exact_limit:  # few allowed listings: exact is cheaper than over-fetching
            return exact_search(q, kk, ints, flat_storage(self._index), self._positions_of, self._reconstruct_ints)
        # over-fetch about twice the hits the allowed share should yield; short rows fall back
        ntotal = int(self._index.ntotal)
        fetch = max(kk, min(ntotal, MAX_OVERFETCH, int(math.ceil(2 * kk * ntotal / len(ints))) + 16))
        scores, labels = self._index.search(q, fetch, params=overfetch_params(self._index, fetch))
        keep = (labels >= 0) & bitmap[np.clip(labels, 0, len(bitmap) - 1)]
        out_scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
        out_labels = np.full((len(q), kk), -1, dtype=np.int64)
        for row in range(len(q)):
            hits = np.flatnonzero(keep[row])[:kk]
            out_scores[row, : len(hits)] = scores[row, hits]
            out_labels[row, : len(hits)] = labels[row, hits]
        return out_scores, out_labels

    def _positions_of(self, ints: np.ndarray) -> np.ndarray:
        """Positions inside FAISS of internal ids (IndexIDMap2's id map, inverted by binary search).

        The id map is normally sorted already (ids only grow; removal and `compact` keep
        the order), so the argsort below is a cheap check rather than real work.
        """
        if self._positions_cache is None:
            id_map = faiss.vector_to_array(self._index.id_map)
            order = np.argsort(id_map, kind="stable")
            self._positions_cache = (id_map[order], order.astype(np.int64))
        sorted_ids, order = self._positions_cache
        return order[np.searchsorted(sorted_ids, ints)]

    def internal_ids(self, product_ids: Iterable[str]) -> np.ndarray:
        """This index's int64 id for each product id (-1 if absent), e.g. to build an IdSelection."""
        with self._lock:
            wanted = (
                product_ids
                if isinstance(product_ids, np.ndarray | pd.Index | pd.Series)
                else list(product_ids)
            )
            if len(wanted) <= SMALL_LOOKUP:
                get = self._int_of.get
                return np.fromiter((get(p, -1) for p in wanted), dtype=np.int64, count=len(wanted))
            index, ints = self._lookup()
            pos = index.get_indexer(pd.Index(wanted, dtype=object))
            return np.where(pos >= 0, ints[np.maximum(pos, 0)], -1)

    def _allowed_ints(self, allowed: Iterable[str] | IdSelection | None) -> np.ndarray:
        if allowed is None:
            return self._lookup()[1]
        if isinstance(allowed, IdSelection):
            if allowed.version != self.version:
                raise ValueError("stale IdSelection: the vector index changed since it was made")
            return np.asarray(allowed.ids, dtype=np.int64)
        ints = self.internal_ids(allowed)
        return np.unique(ints[ints >= 0])

    def _lookup(self) -> tuple[pd.Index, np.ndarray]:
        if self._lookup_cache is None:
            pids = pd.Index(list(self._int_of), dtype=object)
            ints = np.fromiter(self._int_of.values(), dtype=np.int64, count=len(self._int_of))
            self._lookup_cache = (pids, ints)
        return self._lookup_cache

    def _bitmap(self, ints: np.ndarray) -> np.ndarray:
        bitmap = np.zeros(max(self._next_id, 1), dtype=bool)
        bitmap[ints] = True
        return bitmap

    def _to_results(self, scores: np.ndarray, labels: np.ndarray) -> list[list[tuple[str, float]]]:
        results = []
        for row_scores, row_labels in zip(scores, labels, strict=True):
            row = []
            for score, label in zip(row_scores.tolist(), row_labels.tolist(), strict=True):
                pid = self._pid_of.get(label)
                if pid is not None:
                    row.append((pid, float(score)))
            results.append(row)
        return results

    # ------------------------------------------------------------------ validation
    def _as_matrix(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {np.shape(vectors)}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinite values")
        return np.ascontiguousarray(x)

    @staticmethod
    def _as_ids(product_ids: Sequence[str]) -> list[str]:
        ids = [str(pid) for pid in product_ids]
        if len(set(ids)) != len(ids):
            dupes = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
            raise ValueError(f"duplicate product ids: {', '.join(map(str, dupes[:5]))}")
        return ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> None:
        """Write the index and its id map so that a crash at any moment leaves a loadable pair
        (`index_files.write_index_files`)."""
        with self._lock:
            write_index_files(
                Path(path),
                self._index,
                {
                    "factory": self.factory,
                    "dim": self.dim,
                    "metric": "inner_product",
                    "next_id": self._next_id,
                    "product_ids": list(self._int_of),
                    "ids": list(self._int_of.values()),
                    "tombstones": sorted(self._tombstones),
                },
            )

    @classmethod
    def load(cls, path: Path | str, settings: SearchSettings | None = None) -> VectorIndex:
        """Read a saved index; any problem raises `IndexLoadError` saying what is wrong.

        Search knobs (nprobe, efSearch, refine k-factor) come from `settings`; the index
        type and the ids come from the files.
        """
        saved = read_index_files(Path(path))
        self = cls.__new__(cls)
        self.settings = settings or SearchSettings()
        self.dim = saved.dim
        self.factory = saved.factory
        self._lock = threading.RLock()
        self._raw = saved.raw  # owns the C++ object that `idmap` points into
        self._configure(saved.idmap)
        self._int_of = dict(zip(saved.product_ids, saved.ids, strict=True))
        self._pid_of = dict(zip(saved.ids, saved.product_ids, strict=True))
        self._tombstones = saved.tombstones
        self._next_id = saved.next_id
        self._invalidate()
        return self
