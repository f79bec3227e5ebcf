"""A Milvus collection's dense or photo field seen as the part of `VectorIndex` that duplicate
detection reads (search/duplicates.py): length, membership, stored vectors, batch search.

Why: `DuplicateDetector` looks for re-posts among a listing's photo and embedding neighbours
in the catalogue's indexes. Embedded, those are the in-process FAISS indexes; under Milvus
(shared serving) no process holds one, so the same questions go to the engine by id and by
vector search, and `possible_duplicates` / `GET /listings/{id}/duplicates` find what the
embedded service finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fbmarket.search.milvus import MilvusBackend

Field = Literal["embedding", "photo"]


class EngineIndex:
    """One vector field of a `MilvusBackend` collection, read like a `VectorIndex`.

    `field`: "embedding" (the listing embedding, `has_embedding`) or "photo" (the pooled unit
    photo features, `has_photo`). Similarities are inner products of unit vectors (cosine),
    as FAISS's. Every call is a request to the engine (consistency Strong): nothing is cached.
    """

    def __init__(self, backend: MilvusBackend, field: Field):
        self.backend = backend
        self.field: Field = field
        self._flag = "has_embedding" if field == "embedding" else "has_photo"

    @property
    def dim(self) -> int:
        return self.backend.dim if self.field == "embedding" else int(self.backend.photo_dim or 0)

    def __len__(self) -> int:
        """Listings with a vector in this field."""
        if self.field == "photo" and not self.backend.has_photos:
            return 0
        return self.backend._count(f"{self._flag} == true")

    def __contains__(self, product_id: object) -> bool:
        return bool(self._has([str(product_id)])[0])

    def _has(self, product_ids: Sequence[str]) -> np.ndarray:
        found = self.backend._get(product_ids, [self._flag])
        return np.array([bool(found.get(pid, {}).get(self._flag)) for pid in product_ids], dtype=bool)

    def vectors_of(self, product_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors (len(ids), dim) float32, in order; an id without one raises KeyError."""
        ids = [str(pid) for pid in product_ids]
        found = self.backend._get(ids, [self.field, self._flag])
        missing = [pid for pid in ids if not found.get(pid, {}).get(self._flag)]
        if missing:
            raise KeyError(f"{len(missing)} product(s) have no {self.field} vector, e.g. {missing[0]!r}")
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        return np.array([found[pid][self.field] for pid in ids], dtype=np.float32)

    def search_batch(self, vectors: np.ndarray, k: int, allowed: object = None) -> list[list[tuple[str, float]]]:
        """The k nearest listings (product id, cosine) of each query row, best first; only
        listings that have a vector in this field (the engine's flag filter). `allowed` must be
        None: duplicate detection searches the whole catalogue."""
        if allowed is not None:
            raise ValueError("an engine index searches the whole catalogue here (allowed=None)")
        search = self.backend.dense_search if self.field == "embedding" else self.backend.photo_search
        return [search(np.asarray(row, np.float32), int(k), None) for row in np.atleast_2d(vectors)]
