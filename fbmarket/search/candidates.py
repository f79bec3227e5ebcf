"""The candidate lists retrieval hands to the ranker: their columns, the typed result of a
retrieval, and the two ways of fusing the embedding and BM25 lists (`SearchSettings.fusion`).

* "blend" (default): w * semantic + (1 - w) * lexical after min-max scaling each score over
  the candidates, w = `semantic_weight`;
* "rrf", reciprocal-rank fusion: sum of 1 / (rrf_k + rank) over the lists a listing is in;
  it needs no score calibration but gives both lists equal say.

The measurements that chose blend at w = 0.5 are in benchmarks/results/search_design_notes.md
and the README ("Search").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fbmarket.data import schema as S

SEMANTIC_SCORE = "semantic_score"
LEXICAL_SCORE = "lexical_score"
SEMANTIC_RANK = "semantic_rank"  # 1-based rank in the FAISS list; NaN if FAISS did not return it
LEXICAL_RANK = "lexical_rank"  # 1-based rank in the BM25 list; NaN if BM25 did not return it
FUSED_SCORE = "fused_score"
CANDIDATE_COLUMNS = (S.PRODUCT_ID, SEMANTIC_SCORE, LEXICAL_SCORE, SEMANTIC_RANK, LEXICAL_RANK, FUSED_SCORE)
PHOTO_SCORE = "photo_score"  # cosine of the query photo with the listing's pooled photo features
# True when that cosine reaches SearchSettings.photo_match_cosine: the query photo is this
# listing's own (re-encoded, cropped, resized); the ranker keeps such listings first
PHOTO_MATCH = "photo_match"
FUSIONS = ("rrf", "blend")


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


@dataclass
class Retrieval:
    """What `retrieve` found: the candidates, which retrieval ran and what the buyer should know.

    `frame`: up to n candidates, best first (CANDIDATE_COLUMNS; photo queries add PHOTO_SCORE
    and PHOTO_MATCH). `mode`: "hybrid" | "semantic" | "lexical" | "photo" | "photo+words", or
    "none" when the query has no word the catalogue or the model knows and nothing was searched.
    `notes`: sentences for the buyer about what ran and why.
    """

    frame: pd.DataFrame
    mode: str
    notes: list[str] = field(default_factory=list)


def empty_candidates() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in CANDIDATE_COLUMNS})
    frame[S.PRODUCT_ID] = pd.Series(dtype=object)
    return frame
