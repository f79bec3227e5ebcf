"""Personalised results for one buyer: re-ranked search candidates, or a home feed.

`personalise(buyer, ...)` ranks the candidates of a search (from `fbmarket.search`) or, with
no candidates, builds a home feed: listings from the buyer's favourite categories
(their own history, else their cohort's), nearest and best-priced first, plus popular
listings, all ranked by the same ranker. Every result carries its factor contributions
(why it ranked where it did; see docs/ranking.md).

`RankingModels` is the serving object: the buyer profiles and rankers that
`recommend.training.fit_ranking` produced, saved to and loaded from the bundle's ranking
folder, and asked by the service for every search and home feed.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fbmarket.data import schema as S
from fbmarket.files import dumps_json
from fbmarket.recommend.buyers import Buyer, BuyerProfiles, resolve_buyer
from fbmarket.recommend.features import (
    DISTANCE_KM,
    Catalogue,
    distance_feature,
    price_feature,
    ranking_features,
)
from fbmarket.recommend.ranker import RULE_FILE, LearnedRanker, Ranker, RuleRanker, choose_ranker

SOURCE = "source"  # why a listing is a home-feed candidate: "affinity" | "popular"
PHOTO_MATCH = "photo_match"  # candidate column (search/hybrid.py): the query photo is this listing's


def home_feed_candidates(
    catalogue: Catalogue,
    buyer: Buyer,
    profiles: BuyerProfiles,
    n: int | None = None,
    exclude: set[str] | None = None,
) -> pd.DataFrame:
    """A pool of about `n` listings for a buyer without a query (columns product_id, source).

    Slots are shared among the buyer's `feed_categories` most liked categories in
    proportion to their affinity; inside a category, listings within travel distance and
    budget come first (distance + price fit), popularity breaking ties. The last
    `feed_popular_share` of the pool are the most popular listings not already in it.
    """
    settings = profiles.settings
    n = n or settings.feed_candidates
    if len(catalogue) == 0 or n <= 0:
        return pd.DataFrame({S.PRODUCT_ID: pd.Series(dtype=str), SOURCE: pd.Series(dtype=str)})
    allowed = catalogue.alive.copy()  # rows of the view: replaced and deleted listings are not listed
    if exclude:
        allowed &= ~np.isin(catalogue.ids, list(exclude))

    if buyer.has_location:
        from fbmarket.data.geo import haversine_km

        km = haversine_km(buyer.latitude, buyer.longitude, catalogue.latitude, catalogue.longitude)
    else:
        km = np.full(catalogue.n_rows, np.nan)
    budget, _ = profiles.budget(buyer)
    nearby = distance_feature(np.asarray(km, float), profiles.max_travel(buyer)) + price_feature(
        catalogue.price, budget
    )
    popularity = profiles.popularity_of(catalogue.ids)

    shares, _ = profiles.affinity(buyer)
    order = np.argsort(-shares, kind="stable")[: max(settings.feed_categories, 1)]
    top = [profiles.categories[i] for i in order]
    weights = shares[order] / shares[order].sum()
    n_popular = int(round(n * settings.feed_popular_share))
    quotas = np.floor(weights * (n - n_popular)).astype(int)
    quotas[0] += (n - n_popular) - quotas.sum()

    chosen: list[int] = []
    for category, quota in zip(top, quotas, strict=True):
        code = catalogue.category_index.get(category, -2)
        rows = np.flatnonzero((catalogue.category_code == code) & allowed)
        ranked = rows[np.lexsort((-popularity[rows], -nearby[rows]))]
        chosen.extend(ranked[:quota].tolist())
    taken = np.zeros(catalogue.n_rows, dtype=bool)
    taken[chosen] = True
    rest = np.flatnonzero(allowed & ~taken)
    popular = rest[np.lexsort((-nearby[rest], -popularity[rest]))][: n - len(chosen)]
    rows = np.concatenate([np.asarray(chosen, dtype=int), popular.astype(int)])
    sources = ["affinity"] * len(chosen) + ["popular"] * len(popular)
    return pd.DataFrame({S.PRODUCT_ID: catalogue.ids[rows], SOURCE: sources})


@dataclass
class Recommendation:
    """Ranked results for one buyer, with why each ranked where it did."""

    results: pd.DataFrame  # product_id, score, distance_km, factors (dict adding up to score), ...
    contributions: pd.DataFrame  # one column per factor + bias, rows aligned with results
    features: pd.DataFrame  # the factor values, rows aligned with results
    buyer: Buyer
    status: str  # "known" | "cold_start" | "inline" | "anonymous"
    mode: str  # "feed" | "search"
    ranker: str  # "learned" | "rule"
    notes: list[str] = field(default_factory=list)


def rank(
    candidates: pd.DataFrame,
    catalogue: Catalogue,
    buyer: Buyer,
    profiles: BuyerProfiles,
    ranker: Ranker,
    now: pd.Timestamp | str | None = None,
    top: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(candidates + score sorted best first, contributions, features), all aligned row by row.

    `top` keeps only the best rows (what a page shows), sparing the reordering of the rest.
    Candidates flagged PHOTO_MATCH (a photo search whose photo is the listing's own) come
    first, in score order among themselves.
    """
    features = ranking_features(candidates, catalogue, buyer, profiles, now)
    scores, contributions = ranker.score(features)
    order = np.argsort(-scores, kind="stable")
    if PHOTO_MATCH in candidates:  # the query photo's own listing(s) first, whatever else says
        pinned = candidates[PHOTO_MATCH].to_numpy(dtype=bool)[order]
        order = order[np.argsort(~pinned, kind="stable")]
    order = order[:top]
    ranked = candidates.iloc[order].assign(score=scores[order])
    ranked[DISTANCE_KM] = features[DISTANCE_KM].to_numpy()[order]
    return ranked, contributions.iloc[order], features.iloc[order]


@dataclass(frozen=True)
class RankRequest:
    """One ranking call: for whom, over which listings, how many. The same object goes through
    `RankingModels.personalise` to `personalise`, so neither repeats the other's parameters.

    `buyer` is a `Buyer`, a user id, or None (anonymous); `catalogue` the catalogue view the
    candidates come from; `candidates` a search's candidate frame (None: build a home feed);
    `now` the clock freshness is measured against (None: the catalogue's newest listing);
    `exclude` ids never shown (e.g. outside a feed's filters).
    """

    buyer: Buyer | str | None
    catalogue: Catalogue
    k: int = 10
    candidates: pd.DataFrame | None = None
    now: pd.Timestamp | str | None = None
    exclude: Collection[str] | None = None


def personalise(
    request: RankRequest,
    profiles: BuyerProfiles,
    rule: RuleRanker | None = None,
    learned: LearnedRanker | None = None,
    rule_reason: str | None = None,
) -> Recommendation:
    """Top-`request.k` listings for the request's buyer.

    With `candidates` (a search's candidate frame) they are re-ranked; without, a home
    feed is built. An unknown user id is a cold-start buyer: ranked with the tastes of
    their cohort (everyone's, when nothing is known about them); the notes say so, and
    which ranker ran (`choose_ranker`). `rule_reason` makes the rule ranker rank whatever
    the buyer, for candidates the learned ranker was never trained on (it goes in the notes).
    Raises ValueError for k < 1 (the service checks a client's k before it gets here).
    """
    buyer, catalogue, k = request.buyer, request.catalogue, request.k
    candidates, now, exclude = request.candidates, request.now, request.exclude
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if isinstance(buyer, Buyer):
        status = "known" if buyer.known else ("inline" if buyer.user_id is None else "cold_start")
        notes: list[str] = []
    else:
        buyer, status, notes = resolve_buyer(profiles, buyer)
    rule = rule or RuleRanker(profiles.settings.rule_weights)
    history = profiles.has_history(buyer)
    ranker = rule if rule_reason else choose_ranker(history, learned, rule, profiles.settings)
    if rule_reason:
        notes.append(f"ranked by the rule ranker: {rule_reason}")
    elif learned is not None and ranker is rule:
        notes.append("ranked by the rule ranker: the buyer has no history for the learned one")
    elif learned is None:
        notes.append("ranked by the rule ranker: no learned ranker is loaded")

    mode = "search" if candidates is not None else "feed"
    if candidates is None:
        candidates = home_feed_candidates(catalogue, buyer, profiles, exclude=exclude)
    elif exclude:
        candidates = candidates[~candidates[S.PRODUCT_ID].astype(str).isin(exclude)]
    ranked, contributions, features = rank(candidates, catalogue, buyer, profiles, ranker, now, top=k)
    ranked = ranked.reset_index(drop=True)
    contributions = contributions.reset_index(drop=True)
    features = features.reset_index(drop=True)
    names = list(contributions.columns)
    ranked["factors"] = [dict(zip(names, row, strict=True)) for row in contributions.to_numpy().tolist()]
    return Recommendation(ranked, contributions, features, buyer, status, mode, ranker.name, notes)


PROFILES_FILE = "profiles.json"
REPORT_FILE = "ranking_report.json"


@dataclass
class RankingModels:
    """Everything personalised ranking needs at serving time; saved to and loaded from a folder
    (profiles.json, rule_ranker.json, learned_ranker.keras + .json, ranking_report.json)."""

    profiles: BuyerProfiles
    rule: RuleRanker
    learned: LearnedRanker | None
    report: dict

    def personalise(self, request: RankRequest, photo_query: bool = False) -> Recommendation:
        """Top-k for a buyer; `photo_query` ranks a photo search's candidates by the rule ranker
        with `RankSettings.photo_rule_weights`.

        The learned ranker was trained on typed searches, whose semantic score is the query
        embedding's cosine; a photo query's is the photo match (HybridSearcher.retrieve_photo),
        which it never saw, and with the typed-search weights freshness, popularity and taste
        outweighed the photo match (the synthetic test bundle: a listing's own photo found
        its listing first 2 times in 6). A photo asks for this thing: relevance first, the
        buyer's factors after.
        """
        if photo_query:
            rule = RuleRanker(self.profiles.settings.photo_rule_weights)
            reason = "a photo search puts the photo match first (photo_rule_weights)"
            return personalise(request, self.profiles, rule, self.learned, rule_reason=reason)
        return personalise(request, self.profiles, self.rule, self.learned)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.profiles.save(directory / PROFILES_FILE)
        self.rule.save(directory)
        if self.learned is not None:
            self.learned.save(directory)
        (directory / REPORT_FILE).write_text(dumps_json(self.report, indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> RankingModels:
        """Profiles are required; a missing learned ranker means rule-only ranking (noted in the report)."""
        directory = Path(directory)
        if not (directory / PROFILES_FILE).is_file():
            raise FileNotFoundError(f"no {PROFILES_FILE} in {directory}: run the buyers/ranker stage first")
        profiles = BuyerProfiles.load(directory / PROFILES_FILE)
        rule = (
            RuleRanker.load(directory)
            if (directory / RULE_FILE).is_file()
            else RuleRanker(profiles.settings.rule_weights)
        )
        learned = LearnedRanker.load(directory) if LearnedRanker.exists(directory) else None
        report = (
            json.loads((directory / REPORT_FILE).read_text()) if (directory / REPORT_FILE).is_file() else {}
        )
        return cls(profiles, rule, learned, report)
