"""Comparable listings as price features: what the nearest training listings sold for.

For each listing, the k nearest *training* listings with a known price (cosine similarity)
give the median, mean and spread of their log1p(price), the share of them that were free
and the best similarity, for k in `ks`, by one or two measures of likeness:
- "embedding": the listing's price-free fusion embedding (fbmarket/price/train.py);
- "text": the TF-IDF vectors (word 1-2 + char_wb 2-5 grams) the stacked text-price ridge
  already builds (fbmarket/price/text_price.py).

Training listings are described by the other training listings only (leave-one-out: a
listing is never its own neighbour), so the boosters learn how far comparables are to be
trusted on listings whose price the catalogue does not hold, as at serving time, where the
saved catalogue (every priced training listing) is searched.

Saved without pickle in one .npz: the catalogue's unit vectors as float16 (the text
vectors as a sparse matrix: float16 values, int32 indices) and their log1p prices.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from fbmarket.files import commit, stage
from fbmarket.text.tfidf import transform

if TYPE_CHECKING:
    from fbmarket.price.text_price import TextPriceRidge

KNN_FILE = "price_knn.npz"
SOURCES = ("embedding", "text")
STATISTICS = ("median", "mean", "std", "free_share")
_BATCH = 1024


def knn_columns(sources: tuple[str, ...] | list[str], ks: tuple[int, ...] | list[int]) -> list[str]:
    columns = []
    for source in sources:
        for k in ks:
            columns += [f"knn_{source}_{k}_{stat}" for stat in STATISTICS]
        columns.append(f"knn_{source}_top_similarity")
    return columns


def _unit_dense(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _unit_sparse(x: sparse.spmatrix) -> sparse.csr_matrix:
    x = sparse.csr_matrix(x, dtype=np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32) @ x


class NeighbourPrices:
    """The training catalogue per source (unit vectors) and its log1p prices."""

    def __init__(
        self,
        catalogue: dict[str, np.ndarray | sparse.csr_matrix],
        log_price: np.ndarray,
        ks: tuple[int, ...] = (5, 20),
    ):
        self.catalogue = catalogue
        self.log_price = np.asarray(log_price, dtype=np.float32)
        self.ks = tuple(int(k) for k in ks)
        for name, vectors in catalogue.items():
            if name not in SOURCES:
                raise ValueError(f"unknown neighbour source {name!r}; one of {SOURCES}")
            if vectors.shape[0] != len(self.log_price):
                raise ValueError(f"{vectors.shape[0]} {name} vectors for {len(self.log_price)} prices")

    @property
    def sources(self) -> list[str]:
        return [s for s in SOURCES if s in self.catalogue]

    @property
    def columns(self) -> list[str]:
        return knn_columns(self.sources, self.ks)

    @classmethod
    def fit(
        cls,
        vectors: dict[str, np.ndarray | sparse.spmatrix],
        price: np.ndarray,
        ks: tuple[int, ...] = (5, 20),
    ) -> NeighbourPrices:
        """The catalogue of listings with a known price (>= 0); `vectors` in the same row order."""
        price = np.asarray(price, dtype=float)
        if not np.all(np.isfinite(price)):
            raise ValueError("the neighbour catalogue holds listings with a known price only")
        catalogue: dict[str, np.ndarray | sparse.csr_matrix] = {}
        for name, x in vectors.items():
            if sparse.issparse(x):
                unit = _unit_sparse(x)
                unit.data = unit.data.astype(np.float16).astype(np.float32)  # as saved
                catalogue[name] = unit
            else:
                catalogue[name] = _unit_dense(x).astype(np.float16)
        return cls(catalogue, np.log1p(np.clip(price, 0, None)), ks)

    def features(
        self, vectors: dict[str, np.ndarray | sparse.spmatrix], exclude: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The neighbour columns of the query listings.

        `exclude[i]` is the catalogue row of query i itself (-1 for none): a training listing
        is never its own comparable (leave-one-out)."""
        out: dict[str, np.ndarray] = {}
        free = self.log_price <= 0
        for name in self.sources:
            if name not in vectors:
                raise ValueError(f"the neighbour features need the {name} vectors of the listings")
            query = vectors[name]
            n = query.shape[0]
            k_max = min(max(self.ks), max(len(self.log_price) - (exclude is not None), 1))
            stats = {c: np.full(n, np.nan) for c in knn_columns([name], self.ks)}
            if n == 0 or len(self.log_price) == 0:
                out |= stats
                continue
            catalogue = self.catalogue[name]
            for start in range(0, n, _BATCH):
                rows = slice(start, min(n, start + _BATCH))
                if sparse.issparse(catalogue):
                    sim = np.asarray((_unit_sparse(query[rows]) @ catalogue.T).toarray(), dtype=np.float32)
                else:
                    sim = _unit_dense(query[rows]) @ catalogue.astype(np.float32).T
                if exclude is not None:
                    own = np.asarray(exclude[rows])
                    hit = np.flatnonzero(own >= 0)
                    sim[hit, own[hit]] = -np.inf
                top = np.argpartition(-sim, k_max - 1, axis=1)[:, :k_max]
                order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
                top = np.take_along_axis(top, order, axis=1)
                prices, is_free = self.log_price[top], free[top]
                for k in self.ks:
                    kk = min(k, k_max)
                    stats[f"knn_{name}_{k}_median"][rows] = np.median(prices[:, :kk], axis=1)
                    stats[f"knn_{name}_{k}_mean"][rows] = prices[:, :kk].mean(axis=1)
                    stats[f"knn_{name}_{k}_std"][rows] = prices[:, :kk].std(axis=1)
                    stats[f"knn_{name}_{k}_free_share"][rows] = is_free[:, :kk].mean(axis=1)
                stats[f"knn_{name}_top_similarity"][rows] = np.take_along_axis(sim, top[:, :1], axis=1)[:, 0]
            out |= stats
        return out

    # ---------------------------------------------------------------- files
    def save(self, model_dir: Path) -> list[str]:
        arrays: dict[str, np.ndarray] = {
            "log_price": self.log_price.astype(np.float32),
            "ks": np.asarray(self.ks, dtype=np.int32),
        }
        for name, x in self.catalogue.items():
            if sparse.issparse(x):
                arrays[f"{name}_data"] = x.data.astype(np.float16)
                arrays[f"{name}_indices"] = x.indices.astype(np.int32)
                arrays[f"{name}_indptr"] = x.indptr.astype(np.int64)
                arrays[f"{name}_shape"] = np.asarray(x.shape, dtype=np.int64)
            else:
                arrays[f"{name}_dense"] = np.asarray(x, dtype=np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        target = Path(model_dir) / KNN_FILE
        commit(stage(target, lambda tmp: tmp.write_bytes(buffer.getvalue())), target)
        return [KNN_FILE]

    @classmethod
    def load(cls, model_dir: Path) -> NeighbourPrices:
        path = Path(model_dir) / KNN_FILE
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in saved.files}
            catalogue: dict[str, np.ndarray | sparse.csr_matrix] = {}
            for name in SOURCES:
                if f"{name}_dense" in arrays:
                    catalogue[name] = arrays[f"{name}_dense"]
                elif f"{name}_data" in arrays:
                    catalogue[name] = sparse.csr_matrix(
                        (
                            arrays[f"{name}_data"].astype(np.float32),
                            arrays[f"{name}_indices"],
                            arrays[f"{name}_indptr"],
                        ),
                        shape=tuple(int(v) for v in arrays[f"{name}_shape"]),
                    )
            return cls(catalogue, arrays["log_price"], tuple(int(k) for k in arrays["ks"]))
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"the neighbour price catalogue {path} cannot be read: {error}") from error


def neighbour_vectors(
    sources: list[str] | tuple[str, ...],
    embeddings: np.ndarray | None,
    texts: np.ndarray | None,
    ridge: TextPriceRidge | None,
) -> dict:
    """The vectors the comparables are found by: the fusion embeddings, the ridge's TF-IDF."""
    vectors: dict = {}
    if "embedding" in sources:
        if embeddings is None:
            raise ValueError("embedding neighbours need the listings' price-free embeddings")
        vectors["embedding"] = embeddings
    if "text" in sources:
        if ridge is None or texts is None:
            raise ValueError("text neighbours need the text-price ridge's TF-IDF vectorisers")
        vectors["text"] = transform(ridge.vectorisers, list(texts))
    return vectors
