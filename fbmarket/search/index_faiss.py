"""The FAISS-level parts of `VectorIndex`: building an index from a factory string, its
search-time knobs, walking nested index types, per-query search parameters, and the exact
fallback that guarantees k filtered results.

Kept apart from `search/index.py` (ids, live add/remove, the search entry points) because
they depend only on FAISS objects, not on the product-id mapping: each takes the
`IndexIDMap2` (or the arrays) it works on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from fbmarket.config import SearchSettings

EXACT_CHUNK = 65_536  # vectors reconstructed at a time by the exact fallback
MAX_REFINE_BASE = 8192  # approximate hits a refine stage re-ranks per over-fetching query


def walk(index: faiss.Index) -> Iterable[Any]:
    """The index and the indexes nested in it (pre-transform, refine base, IVF quantizer)."""
    index = faiss.downcast_index(index)
    yield index
    if isinstance(index, faiss.IndexPreTransform):
        yield from walk(index.index)
    elif isinstance(index, faiss.IndexRefine):
        yield from walk(index.base_index)
    elif isinstance(index, faiss.IndexIVF):
        yield from walk(index.quantizer)


def is_fast_scan(index: Any) -> bool:
    """IVF / PQ fast-scan indexes: no IDSelector support, no direct map of stored vectors."""
    return isinstance(index, faiss.IndexIVFFastScan | faiss.IndexFastScan)


def first_line(error: BaseException) -> str:
    """The line of a FAISS error worth showing (its C++ message ends with the reason)."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def new_idmap(dim: int, factory: str, ef_construction: int) -> faiss.IndexIDMap2:
    """An empty `IndexIDMap2` over `faiss.index_factory(dim, factory, inner product)`.

    A factory FAISS cannot build is the caller's ValueError, with FAISS's reason.
    """
    try:
        sub = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise ValueError(f"FAISS cannot build index type {factory!r}: {first_line(error)}") from None
    idmap = faiss.IndexIDMap2(sub)  # the wrapper keeps `sub` alive
    for part in walk(sub):
        if isinstance(part, faiss.IndexIVF) and not is_fast_scan(part):
            # sequential ids from IndexIDMap2 + no hard removal on IVF: an array map is exact
            part.set_direct_map_type(faiss.DirectMap.Array)
        if isinstance(part, faiss.IndexHNSW):
            part.hnsw.efConstruction = ef_construction
    return idmap


@dataclass(frozen=True)
class Knobs:
    """What `configure` set on an index, and what its type can do."""

    nprobe: int
    ef_search: int
    hard_remove: bool  # flat-code indexes shrink safely; every other type removes by tombstone
    selector_ok: bool  # False: IDSelectors are refused (refine, fast-scan, PQ): over-fetch instead
    can_reconstruct: bool  # stored vectors can be read back (not IVF fast-scan without a refine store)


def configure(idmap: faiss.IndexIDMap2, s: SearchSettings) -> Knobs:
    """Apply search-time knobs from the settings (they are not part of the saved file)."""
    nprobe = s.nprobe
    selector_ok = can_reconstruct = True
    refined = False
    for part in walk(idmap.index):
        if isinstance(part, faiss.IndexIVF):
            part.nprobe = min(s.nprobe, part.nlist)
            nprobe = part.nprobe
            if is_fast_scan(part):
                can_reconstruct = False  # no direct map for fast-scan lists
        if isinstance(part, faiss.IndexHNSW):
            part.hnsw.efSearch = s.ef_search
        if isinstance(part, faiss.IndexRefine):
            part.k_factor = float(s.refine_k_factor)
            selector_ok = False  # IndexRefine rejects IDSelectors
            refined = True
        if isinstance(part, faiss.IndexFastScan | faiss.IndexPQ):
            selector_ok = False
    hard_remove = isinstance(faiss.downcast_index(idmap.index), faiss.IndexFlatCodes)
    # a refinement stage serves stored vectors from its exact store
    return Knobs(nprobe, s.ef_search, hard_remove, selector_ok, can_reconstruct or refined)


def overfetch_params(idmap: faiss.IndexIDMap2, fetch: int) -> faiss.SearchParameters | None:
    """Keep a refine stage's base search bounded when fetching many (k_base = fetch x k_factor)."""
    refine = next((p for p in walk(idmap.index) if isinstance(p, faiss.IndexRefine)), None)
    if refine is None:
        return None
    k_factor = max(1.0, min(float(refine.k_factor), MAX_REFINE_BASE / fetch))
    return faiss.IndexRefineSearchParameters(k_factor=k_factor)


def filtered_params(
    idmap: faiss.IndexIDMap2, selector: faiss.IDSelector, nprobe: int, ef_search: int
) -> faiss.SearchParameters:
    """Search parameters that restrict results to `selector`, with the index type's own knobs."""
    for part in walk(idmap.index):
        if isinstance(part, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        if isinstance(part, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef_search)
    return faiss.SearchParameters(sel=selector)


def flat_storage(idmap: faiss.IndexIDMap2) -> Any | None:
    """The IndexFlat holding exact vectors in IndexIDMap2 position order, if there is one."""
    for part in walk(idmap.index):
        if isinstance(part, faiss.IndexRefine):
            store = faiss.downcast_index(part.refine_index)
            return store if isinstance(store, faiss.IndexFlat) else None
        if isinstance(part, faiss.IndexHNSW):
            store = faiss.downcast_index(part.storage)
            return store if isinstance(store, faiss.IndexFlat) else None
        if isinstance(part, faiss.IndexFlat):
            return part
        return None
    return None


def exact_search(
    q: np.ndarray,
    kk: int,
    ints: np.ndarray,
    storage: Any | None,
    positions_of: Callable[[np.ndarray], np.ndarray],
    reconstruct: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the allowed vectors: the fallback that guarantees k filtered results.

    Scores come from FAISS kernels, not numpy's BLAS: on a busy 2-core machine a
    multi-threaded OpenBLAS gemv over a few thousand rows took 20 ms instead of 0.5.
    Where the exact vectors sit in a flat store (Flat, HNSW, ",RFlat") they are scored
    in place (`storage`, from `flat_storage`; `positions_of` maps internal ids to its rows);
    otherwise they are decoded chunk by chunk (`reconstruct`).
    """
    heap = faiss.ResultHeap(len(q), kk, keep_max=True)
    for start in range(0, len(ints), EXACT_CHUNK):
        part = np.ascontiguousarray(ints[start : start + EXACT_CHUNK], dtype=np.int64)
        if storage is not None:
            positions = np.ascontiguousarray(
                np.broadcast_to(positions_of(part), (len(q), len(part)))
            )
            scores = np.empty((len(q), len(part)), dtype=np.float32)
            storage.compute_distance_subset(
                len(q), faiss.swig_ptr(q), len(part), faiss.swig_ptr(scores), faiss.swig_ptr(positions)
            )
            labels = np.broadcast_to(part, scores.shape)
        else:
            scores, local = faiss.knn(
                q, reconstruct(part), min(kk, len(part)), metric=faiss.METRIC_INNER_PRODUCT
            )
            labels = np.where(local >= 0, part[np.maximum(local, 0)], -1)
        heap.add_result(
            np.ascontiguousarray(scores, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)
        )
    heap.finalize()
    return heap.D, heap.I
