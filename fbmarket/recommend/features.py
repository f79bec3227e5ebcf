"""Ranking factors of (buyer, listing) pairs (docs/ranking.md).

Every factor is scaled to about [-1, 1] with "bigger is better", and 0 means *neutral or
unknown*, so a missing value (a buyer or listing without coordinates, a listing without a
price or date) neither helps nor hurts, and the rule ranker's weights are comparable:

| factor | value |
|---|---|
| semantic | the embedding cosine of the candidate (0 when that branch did not retrieve it) |
| lexical | BM25 score / the best BM25 score among the candidates (scores are not comparable across queries) |
| distance | 1 - km / buyer's maximum travel, clipped to [-1, 1]: beyond the travel distance it turns negative |
| price_fit | 1 at or under budget, falling with log(price / budget): 0 at e x budget, -1 at e^2 x; 0 when nothing gives the buyer's budget (stated, history or cohort) |
| affinity | log(buyer's share of the listing's category / uniform share) / 2, clipped to [-1, 1] |
| freshness | exp(-listing age / `freshness_days`); unknown date 0 |
| popularity | log(1 + event-weighted interactions) / log(1 + the most popular listing's) |
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fbmarket.catalogue import CatalogueView, ListingCatalogue
from fbmarket.data import schema as S
from fbmarket.data.geo import haversine_km
from fbmarket.recommend.buyers import GENERIC_BUDGET_SOURCES, Buyer, BuyerProfiles

FEATURES = ("semantic", "lexical", "distance", "price_fit", "affinity", "freshness", "popularity")
SEMANTIC_SCORE = "semantic_score"
LEXICAL_SCORE = "lexical_score"
DISTANCE_KM = "distance_km"  # extra, not a factor: shown to the buyer


# The listing attributes ranking reads, as arrays by row with an id -> row lookup: a read-only
# view of the service's one listing catalogue (fbmarket/catalogue.py), taken once per request.
Catalogue = CatalogueView


def catalogue_of(products: pd.DataFrame, level: str = S.ROOT_CATEGORY) -> Catalogue:
    """A catalogue of a products table, for batch code (training, evaluation, tests); `level` is
    the category column buyers have affinities for (`RankSettings.affinity_level`)."""
    return ListingCatalogue.from_frame(products, ranking_level=level).view()


def category_positions(catalogue: Catalogue, rows: np.ndarray, categories: list[str]) -> np.ndarray:
    """The ranking-level category of each row as a position in `categories` (-1: missing, not
    there, or no row); the code -> position table is cached per view and category list."""
    key = tuple(categories)

    def by_code() -> np.ndarray:
        where = {name: i for i, name in enumerate(key)}
        return np.array([where.get(name, -1) for name in catalogue.values(catalogue.level)], dtype=np.int64)

    table = catalogue.derived(("category_positions", key), by_code)
    rows = np.asarray(rows, dtype=np.int64)
    codes = np.full(len(rows), -1, dtype=np.int64)
    codes[rows >= 0] = catalogue.category_code[rows[rows >= 0]]
    if not len(table):
        return np.full(len(rows), -1, dtype=np.int64)
    return np.where(codes >= 0, table[np.maximum(codes, 0)], -1)


def _take(values: np.ndarray, rows: np.ndarray, fill: float = np.nan) -> np.ndarray:
    out = np.full(len(rows), fill, dtype=float)
    ok = rows >= 0
    out[ok] = values[rows[ok]]
    return out


def distance_feature(km: np.ndarray, max_travel_km: float) -> np.ndarray:
    return np.nan_to_num(np.clip(1.0 - km / max(max_travel_km, 0.1), -1.0, 1.0), nan=0.0)


def price_feature(price: np.ndarray, budget: float) -> np.ndarray:
    over = np.log1p(np.where(price >= 0, price, np.nan)) - np.log1p(max(budget, 0.0))
    return np.nan_to_num(1.0 - np.clip(over, 0.0, 2.0), nan=0.0)


def affinity_feature(shares: np.ndarray, n_categories: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(shares * n_categories)
    return np.nan_to_num(np.clip(ratio / 2.0, -1.0, 1.0), nan=0.0)


def freshness_feature(created: np.ndarray, now: pd.Timestamp, days: float) -> np.ndarray:
    age_days = (np.datetime64(now.to_datetime64(), "ns") - created) / np.timedelta64(1, "D")
    age_days = np.where(np.isnat(created), np.nan, np.maximum(age_days.astype(float), 0.0))
    return np.nan_to_num(np.exp(-age_days / max(days, 1e-6)), nan=0.0)


def ranking_features(
    candidates: pd.DataFrame,
    catalogue: Catalogue,
    buyer: Buyer,
    profiles: BuyerProfiles,
    now: pd.Timestamp | str | None = None,
) -> pd.DataFrame:
    """One row of FEATURES (+ distance_km) per candidate, in the candidates' order.

    `candidates` needs product_id; semantic_score and lexical_score are optional (a home
    feed has neither). Candidates unknown to the catalogue get neutral listing factors.
    `now` (default: the current time) dates the freshness factor.
    """
    S.require_columns(candidates, (S.PRODUCT_ID,), "candidates")
    n = len(candidates)
    ids = candidates[S.PRODUCT_ID].to_numpy(dtype=object)  # plain objects: cheap to iterate
    rows = catalogue.rows(ids)

    def score(column: str) -> np.ndarray:
        if column not in candidates:
            return np.zeros(n)
        return pd.to_numeric(candidates[column], errors="coerce").to_numpy(float)

    semantic = np.nan_to_num(np.clip(score(SEMANTIC_SCORE), -1.0, 1.0), nan=0.0)
    lexical = np.nan_to_num(score(LEXICAL_SCORE), nan=0.0)
    best = lexical.max() if n else 0.0
    lexical = np.clip(lexical / best, 0.0, 1.0) if best > 0 else np.zeros(n)

    if buyer.has_location:
        km = haversine_km(
            buyer.latitude, buyer.longitude, _take(catalogue.latitude, rows), _take(catalogue.longitude, rows)
        )
    else:
        km = np.full(n, np.nan)
    distance = distance_feature(np.asarray(km, dtype=float), profiles.max_travel(buyer))

    budget, source = profiles.budget(buyer)
    if source in GENERIC_BUDGET_SOURCES:
        # Nothing known of this buyer: their budget is unknown, not average. Pricing an
        # anonymous search by everyone's median budget pushed dear listings down for someone
        # who may well want one (dev data, anonymous title searches: the listing itself in
        # the top 10 0.948 -> 0.990 once neutral).
        price_fit = np.zeros(n)
    else:
        price_fit = price_feature(_take(catalogue.price, rows), budget)

    shares, _ = profiles.affinity(buyer)
    position = category_positions(catalogue, rows, profiles.categories)
    item_share = np.where(position >= 0, np.asarray(shares, dtype=float)[np.maximum(position, 0)], np.nan)
    affinity = affinity_feature(item_share, len(profiles.categories))

    now = pd.Timestamp.now() if now is None else pd.Timestamp(now)
    if now.tzinfo is not None:
        now = now.tz_convert(None)
    created = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    created[rows >= 0] = catalogue.created[rows[rows >= 0]]
    freshness = freshness_feature(created, now, profiles.settings.freshness_days)

    top = max(profiles.popularity.values(), default=0.0)
    if top > 0:
        counts = profiles.popularity
        events = np.array([counts.get(str(pid), 0.0) for pid in ids], dtype=float)
        popularity = np.log1p(np.nan_to_num(events, nan=0.0)) / np.log1p(top)
    else:
        popularity = np.zeros(n)

    columns = {
        "semantic": semantic,
        "lexical": lexical,
        "distance": distance,
        "price_fit": price_fit,
        "affinity": affinity,
        "freshness": freshness,
        "popularity": popularity,
        DISTANCE_KM: np.asarray(km, dtype=float),
    }
    # one float block: the rankers read it back as a matrix without gathering column by column
    names = (*FEATURES, DISTANCE_KM)
    values = np.column_stack([columns[name] for name in names]).reshape(n, len(names))
    return pd.DataFrame(values, columns=list(names), index=candidates.index)
