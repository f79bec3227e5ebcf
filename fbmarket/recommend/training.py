"""Interactions -> sessions -> training examples -> a learned ranker.

Features must be computed the way they will be at serving time: from the past only. So
training is split in time: buyer profiles are built from the earlier part of the log and
the ranker learns to predict the later sessions' clicks from them (otherwise a session's
own clicks would leak into the affinity, budget and popularity factors and the ranker
would over-trust them). In a session, the candidates are what retrieval returns for its
query (or the home feed when there is none); positives are the candidates the buyer
clicked, saved or messaged, negatives the ones they viewed and left, plus a sample of
candidates they were never shown (weaker negatives: half weight for the pointwise loss).
The default loss is listwise (`RankSettings.ranker_loss`): see `LearnedRanker.fit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fbmarket.config import RankSettings
from fbmarket.data import schema as S
from fbmarket.recommend.buyers import (
    EVENT,
    QUERY,
    SESSION_ID,
    TIMESTAMP,
    USER_ID,
    BuyerProfiles,
    load_buyers,
    load_interactions,
)
from fbmarket.recommend.features import FEATURES, Catalogue, catalogue_of, ranking_features
from fbmarket.recommend.personalise import RankingModels, home_feed_candidates
from fbmarket.recommend.ranker import LearnedRanker, RuleRanker

log = logging.getLogger(__name__)

Retrieve = Callable[[str], pd.DataFrame]  # query -> candidate frame (product_id, semantic_score, ...)
START = "start"
POSITIVES = "positives"  # product id -> gain (event weight of the strongest positive event)
VIEWED = "viewed"


def session_table(interactions: pd.DataFrame, settings: RankSettings | None = None) -> pd.DataFrame:
    """One row per session of validated interactions (`load_interactions`): session_id, user_id,
    query, start, positives {product_id: gain}, viewed (product ids), ordered by start."""
    settings = settings or RankSettings()
    frame = interactions.copy()
    frame["gain"] = frame[EVENT].map(settings.event_weights).fillna(0.0)
    frame["positive"] = frame[EVENT].isin(settings.positive_events)
    rows = []
    for sid, group in frame.groupby(SESSION_ID, sort=False):
        hits = group[group["positive"]].groupby(S.PRODUCT_ID)["gain"].max()
        rows.append(
            (
                str(sid),
                str(group[USER_ID].iloc[0]),
                str(group[QUERY].iloc[0]) if QUERY in group else "",
                group[TIMESTAMP].min(),
                {str(p): float(g) for p, g in hits.items()},
                tuple(dict.fromkeys(group[S.PRODUCT_ID].astype(str))),
            )
        )
    table = pd.DataFrame(rows, columns=[SESSION_ID, USER_ID, QUERY, START, POSITIVES, VIEWED])
    return table.sort_values(START, kind="stable").reset_index(drop=True)


def split_by_time(interactions: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole sessions that start after the (1 - test_fraction) quantile of session starts are held out."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    starts = interactions.groupby(SESSION_ID)[TIMESTAMP].transform("min")
    cut = starts.drop_duplicates().quantile(1.0 - test_fraction)
    later = (starts > cut).to_numpy()
    return interactions[~later].reset_index(drop=True), interactions[later].reset_index(drop=True)


def session_candidates(
    query: str,
    buyer,
    catalogue: Catalogue,
    profiles: BuyerProfiles,
    retrieve: Retrieve,
    cache: dict[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Retrieval's candidates for a query, or the buyer's home-feed pool when there is none."""
    if query and query.strip():
        if cache is None:
            return retrieve(query)
        if query not in cache:
            cache[query] = retrieve(query)
        return cache[query]
    return home_feed_candidates(catalogue, buyer, profiles)


def training_examples(
    sessions: pd.DataFrame,
    catalogue: Catalogue,
    profiles: BuyerProfiles,
    retrieve: Retrieve,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, weights, groups) over the candidates of `sessions` (see the module
    docstring); `groups` numbers the session each row comes from.

    Positives weigh gain / click weight (a message counts twice a click); sessions without
    a positive among their candidates teach nothing about order and are skipped."""
    settings = profiles.settings
    rng = np.random.default_rng(seed)
    click = settings.event_weights.get("click", 1.0) or 1.0
    cache: dict[str, pd.DataFrame] = {}
    parts, labels, weights, groups = [], [], [], []
    for session in tqdm(
        sessions.itertuples(index=False),
        total=len(sessions),
        desc="ranker examples",
        disable=not show_progress,
    ):
        buyer = profiles.buyer(getattr(session, USER_ID))
        candidates = session_candidates(getattr(session, QUERY), buyer, catalogue, profiles, retrieve, cache)
        ids = candidates[S.PRODUCT_ID].astype(str).to_numpy()
        positives: dict[str, float] = getattr(session, POSITIVES)
        is_positive = np.array([p in positives for p in ids], dtype=bool)
        if not is_positive.any():
            continue
        viewed = np.isin(ids, list(getattr(session, VIEWED)))
        unseen = np.flatnonzero(~viewed)
        sampled = rng.choice(unseen, size=min(settings.sampled_negatives, len(unseen)), replace=False)
        keep = np.flatnonzero(is_positive | viewed)
        keep = np.concatenate([keep, sampled]).astype(int)
        features = ranking_features(
            candidates.iloc[keep], catalogue, buyer, profiles, getattr(session, START)
        )
        parts.append(features[list(FEATURES)])
        label = is_positive[keep]
        labels.append(label.astype(float))
        weight = np.where(
            label, [positives.get(p, 0.0) / click for p in ids[keep]], np.where(viewed[keep], 1.0, 0.5)
        )
        weights.append(weight)
        groups.append(np.full(len(keep), len(groups)))
    if not parts:
        return pd.DataFrame(columns=list(FEATURES)), np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
    return (
        pd.concat(parts, ignore_index=True),
        np.concatenate(labels),
        np.concatenate(weights),
        np.concatenate(groups),
    )


def train_learned_ranker(
    interactions: pd.DataFrame,
    buyers: pd.DataFrame | None,
    catalogue: Catalogue,
    retrieve: Retrieve,
    settings: RankSettings | None = None,
    seed: int = 0,
    label_fraction: float = 0.4,
    show_progress: bool = False,
) -> tuple[LearnedRanker, dict]:
    """Fit the learned ranker on a validated interaction log (see the module docstring).

    The last `label_fraction` of sessions (by time) provide labels; profiles built from the
    sessions before them provide the features. Returns the ranker and a training report."""
    settings = settings or RankSettings()
    past, future = split_by_time(interactions, label_fraction)
    if past.empty or future.empty:
        raise ValueError(
            "the interaction log is too short in time to train a ranker (needs several sessions)"
        )
    profiles = BuyerProfiles.build(buyers, past, catalogue.products, settings)
    sessions = session_table(future, settings)
    features, labels, weights, groups = training_examples(
        sessions, catalogue, profiles, retrieve, seed, show_progress
    )
    if labels.sum() == 0 or labels.sum() == len(labels):
        raise ValueError("training examples need both positives and negatives; the log has too few clicks")
    ranker = LearnedRanker.build(settings, seed)
    listwise = settings.ranker_loss == "listwise"
    history = ranker.fit(
        features,
        labels,
        weights,
        groups=groups,
        loss=settings.ranker_loss,
        epochs=settings.epochs,
        batch_size=settings.list_batch_size if listwise else settings.batch_size,
        seed=seed,
    )
    report = {
        "sessions": int(len(sessions)),
        "examples": int(len(labels)),
        "positives": int(labels.sum()),
        "feature_sessions": int(past[SESSION_ID].nunique()),
        "loss": history["loss"],
        "val_loss": history.get("val_loss", []),
    }
    ranker.meta["training"] = {k: v for k, v in report.items() if k not in ("loss", "val_loss")}
    log.info("learned ranker: %s", ranker.meta["training"])
    return ranker, report


def fit_ranking(
    products: pd.DataFrame,
    users: pd.DataFrame | None,
    interactions: pd.DataFrame,
    retrieve: Retrieve,
    settings: RankSettings | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> RankingModels:
    """The buyers/ranker stage: profiles from every interaction, and a learned ranker when the
    log allows one (else rule-only, with the reason in the report).

    `users` / `interactions` are raw Users.csv / Interactions.csv frames, real or simulated."""
    settings = settings or RankSettings()
    buyers = load_buyers(users) if users is not None else None
    events = load_interactions(interactions)
    catalogue = catalogue_of(products, settings.affinity_level)
    report: dict = {"events": int(len(events)), "skipped_interactions": events.attrs.get("skipped", {})}
    try:
        learned, training = train_learned_ranker(
            events, buyers, catalogue, retrieve, settings, seed=seed, show_progress=show_progress
        )
        report["learned_ranker"] = training
    except ValueError as error:
        learned = None
        report["learned_ranker"] = f"not trained: {error}; ranking falls back to the rule ranker"
        log.warning("learned ranker not trained: %s", error)
    profiles = BuyerProfiles.build(buyers, events, products, settings)
    report["buyers"] = len(profiles.buyers)
    report["buyers_with_history"] = len(profiles.user_affinity)
    return RankingModels(profiles, RuleRanker(settings.rule_weights), learned, report)
