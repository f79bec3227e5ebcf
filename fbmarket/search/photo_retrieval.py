"""Photo queries: the listings whose photos look most like the query photo, with the usual
embedding/BM25 lists, scored in photo-cosine units (see `retrieve_photo`). The weights were
chosen on the dev data's validation split by benchmarks/photo_search.py (README, "Search by
photo").

A part of `HybridSearcher` (search/hybrid.py), mixed in: it reads the searcher's backend,
table, settings and category heads, under its lock.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.limits import check_k
from fbmarket.search.candidates import (
    FUSED_SCORE,
    LEXICAL_RANK,
    LEXICAL_SCORE,
    PHOTO_MATCH,
    PHOTO_SCORE,
    SEMANTIC_RANK,
    SEMANTIC_SCORE,
    Retrieval,
    empty_candidates,
    min_max,
)
from fbmarket.search.categories import CategorySpace
from fbmarket.search.filters import Filters
from fbmarket.search.lexical import check_query

if TYPE_CHECKING:
    from fbmarket.catalogue import CatalogueView
    from fbmarket.search.backend import RetrievalBackend


class PhotoRetrieval:
    """Mixed into `HybridSearcher`; uses its backend and `_score_candidates`."""

    settings: SearchSettings
    backend: RetrievalBackend
    categories: CategorySpace | None
    table: CatalogueView  # a property of the searcher: the catalogue as of now
    _lock: threading.RLock

    def retrieve_photo(
        self,
        query_photo: np.ndarray,
        query_vector: np.ndarray | None,
        query_text: str | None = None,
        filters: Filters | None = None,
        n: int | None = None,
        root_probs: np.ndarray | None = None,
        truncate: bool = True,
    ) -> Retrieval:
        """Candidates for a query with a photo (and maybe words), best first.

        The union of the photo index's neighbours and the usual embedding/BM25 lists, each
        scored in photo-cosine units: cos(query photo, listing's pooled photo) +
        blend weight * the usual blend (min-max scaled: photo_blend_weight for a photo alone,
        photo_words_blend_weight when words come with it) + photo_root_weight * P(same
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
        backend = self.backend
        if not backend.has_photos:
            raise ValueError("this searcher has no photo index")
        q = np.asarray(query_photo, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        with self._lock:
            selection = backend.select(filters)
            if selection is not None and selection.empty:
                return Retrieval(empty_candidates(), "photo")
            photo_hits = backend.photo_search(q, n, selection)
            use_vectors = query_vector is not None and backend.has_vectors
            use_text = query_text is not None and backend.has_lexical
            semantic = backend.dense_search(query_vector, n, selection) if use_vectors else []
            lexical = backend.lexical_search(query_text, n, selection) if use_text else []
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
                return Retrieval(empty_candidates(), "photo")
            rest = [pid for pid in ids if pid not in found]
            if rest:  # NaN: no photo
                found.update(zip(rest, backend.photo_scores(q, rest).tolist(), strict=True))
            photo = np.array([found.get(pid, np.nan) for pid in ids], dtype=float)
            parts = base.set_index(S.PRODUCT_ID).reindex(ids)
            blend = parts[FUSED_SCORE].to_numpy(float)
            settings = self.settings
            fused = np.nan_to_num(photo, nan=0.0)
            if use_text or use_vectors:
                weight = settings.photo_words_blend_weight if query_text is not None else settings.photo_blend_weight
                fused = fused + weight * np.nan_to_num(min_max(blend), nan=0.0)
            if self.categories is not None and use_vectors and (settings.photo_root_weight or settings.photo_leaf_weight):
                in_vectors = backend.has_vectors_for(ids)
                same_root = np.zeros(len(ids))
                same_leaf = np.zeros(len(ids))
                if in_vectors.any():
                    kept = [pid for pid, k in zip(ids, in_vectors, strict=True) if k]
                    root, leaf = self.categories.agreement(query_vector, backend.vectors_of(kept), root_probs)
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
        return Retrieval(frame, "photo+words" if use_text else "photo")
