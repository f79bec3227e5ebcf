"""Similar listings: a listing's own embedding and title as the query, blended as in search,
plus the probability, by the fusion model's category heads (search/categories.py), that each
candidate shares its root and leaf category. The measurements that chose the weights are in
the README ("Search") and benchmarks/results/search_design_notes.md.

A part of `HybridSearcher` (search/hybrid.py), mixed in: it reads the searcher's backend,
table, settings and category heads, under its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.limits import check_k
from fbmarket.search.candidates import FUSED_SCORE
from fbmarket.search.categories import CategorySpace
from fbmarket.search.filters import Filters

if TYPE_CHECKING:
    from fbmarket.catalogue import CatalogueView
    from fbmarket.search.backend import RetrievalBackend

# similar listings: the score and its parts, which add up to it
SIMILARITY = "similarity"  # embedding/BM25 blend, min-max scaled over the candidates
SAME_ROOT = "same_root"  # similar_root_weight * P(same root category), from the model's head
SAME_LEAF = "same_leaf"  # similar_leaf_weight * P(same leaf category)
SIMILAR_SCORE = "score"
SIMILAR_COLUMNS = (S.PRODUCT_ID, SIMILARITY, SAME_ROOT, SAME_LEAF, SIMILAR_SCORE)


class SimilarListings:
    """Mixed into `HybridSearcher`; uses its backend and `_score_candidates`."""

    settings: SearchSettings
    backend: RetrievalBackend
    categories: CategorySpace | None
    table: CatalogueView  # a property of the searcher: the catalogue as of now
    title_of: Callable[[str], str | None]  # a listing's title, wherever the listings live
    _lock: threading.RLock

    def similar(
        self, product_id: str, k: int = 10, filters: Filters | None = None, root_probs: np.ndarray | None = None
    ) -> list[tuple[str, float]]:
        """Listings most like a given one, itself excluded, best first with their scores."""
        frame = self.similar_scored(product_id, k, filters, root_probs)
        return list(
            zip(frame[S.PRODUCT_ID].tolist(), frame[SIMILAR_SCORE].astype(float).tolist(), strict=True)
        )

    def similar_scored(
        self, product_id: str, k: int = 10, filters: Filters | None = None, root_probs: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Listings most like a given one (columns SIMILAR_COLUMNS), itself excluded, best first.

        The candidates are its embedding's neighbours and the BM25 matches of its own
        title; `similarity` is their blend (`similar_semantic_weight`, min-max scaled; 1.0
        is the embedding alone). With the model's category heads (`categories`), each
        candidate also gets `similar_root_weight` * P(same root) and `similar_leaf_weight`
        * P(same leaf), and the score is the sum of the three. Without category weights
        and with the embedding alone the score is the cosine similarity. A listing
        without an embedding is matched by its title alone. An unknown id raises KeyError.

        `root_probs` (classes,), in the model's class order, replaces the head's estimate of
        the listing's own root category when a better one is at hand: the service passes the
        bundle's served (late-fusion) probabilities, which name the root more often than the
        fusion network's head reads it off the embedding (dev test split: 0.850 vs 0.804;
        same-root P@10 over the catalogue 0.811 -> 0.834, README "Similar listings").
        """
        k = check_k(k, self.settings.max_k)
        product_id = str(product_id)
        with self._lock:
            backend = self.backend
            selection = backend.select(filters, exclude=product_id)
            if selection is not None and selection.empty:
                return _similar_frame([], [])
            title = self.title_of(product_id)
            has_title = backend.has_lexical and isinstance(title, str) and bool(title.strip())
            n = min(k + 1, self.settings.max_k)
            if not backend.has_vector(product_id):
                if title is None:
                    raise KeyError(f"product {product_id!r} is not in the catalogue")
                hits = backend.lexical_search(title, n, selection) if has_title else []
                return _similar_frame(*_unzip(hits), exclude=product_id, k=k)
            vector = backend.vector_of(product_id)
            weight = self.settings.similar_semantic_weight
            use_title = weight < 1.0 and has_title
            root_weight, leaf_weight = self._category_weights()
            use_heads = bool(root_weight or leaf_weight)
            if not use_title and not use_heads:
                return _similar_frame(*_unzip(backend.dense_search(vector, n, selection)), exclude=product_id, k=k)
            pool = max(n, min(self.settings.candidates, self.settings.max_k))
            semantic = backend.dense_search(vector, pool, selection)
            lexical = backend.lexical_search(title, pool, selection) if use_title else []
            scored = self._score_candidates(
                vector, title if use_title else None, semantic, lexical, len(semantic) + len(lexical), weight
            )
            scored = scored[scored[S.PRODUCT_ID] != product_id]
            ids = scored[S.PRODUCT_ID].tolist()
            same_root = same_leaf = None
            if use_heads and ids:
                same_root, same_leaf = self.categories.agreement(vector, backend.vectors_of(ids), root_probs)
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
