"""Offline evaluation of personalised ranking on held-out sessions (Recall@10, NDCG@10 against popularity and plain search).

Protocol: the interaction log is split in time (`split_by_time`); profiles and the
learned ranker see only the earlier sessions; for every later session with at least one
positive (click, save, message), each method orders the same candidates (retrieval's for
the session's query, or the catalogue / home feed for a browsing session) and we score its
top k against what the buyer engaged with: Recall@k and NDCG@k (gain = weight of the
strongest event on the listing). Methods:

* `popularity`: candidates by event-weighted popularity (browsing: the whole catalogue);
* `search`: the retrieval's own fused order, not personalised (browsing: = popularity);
* `rule`, `learned`: the two rankers for every buyer (browsing: over the home-feed pool);
* `served`: what `recommend` does: learned for buyers with history, the fallback otherwise;
* `rule_unknown_id`, `learned_unknown_id` (buyers without history only): the same buyer
  arriving as an unknown user id, i.e. without demographics or location.

Margins come with a paired bootstrap 95% interval over sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fbmarket.config import RankSettings
from fbmarket.data import schema as S
from fbmarket.recommend.buyers import (
    QUERY,
    SESSION_ID,
    USER_ID,
    Buyer,
    BuyerProfiles,
    load_buyers,
    load_interactions,
)
from fbmarket.recommend.features import LEXICAL_SCORE, SEMANTIC_SCORE, Catalogue, catalogue_of
from fbmarket.recommend.personalise import home_feed_candidates, rank
from fbmarket.recommend.ranker import LearnedRanker, RuleRanker, choose_ranker
from fbmarket.recommend.training import (
    POSITIVES,
    START,
    Retrieve,
    session_candidates,
    session_table,
    split_by_time,
    train_learned_ranker,
)

FUSED_SCORE = "fused_score"
METHODS = ("popularity", "search", "rule", "learned", "served", "rule_unknown_id", "learned_unknown_id")
MARGINS = (  # (method, baseline) pairs whose differences are reported
    ("rule", "popularity"),
    ("rule", "search"),
    ("learned", "popularity"),
    ("learned", "search"),
    ("learned", "rule"),
    ("served", "popularity"),
    ("served", "search"),
)


class TextRetriever:
    """Hybrid retrieval over listing text without a trained model: BM25 (bm25s) as the lexical
    branch and TF-IDF + truncated SVD (latent semantic analysis) cosine as the semantic one,
    fused by reciprocal rank. A stand-in for `fbmarket.search` in ranking experiments, with
    the same candidate columns (product_id, semantic_score, lexical_score, semantic_rank,
    lexical_rank, fused_score)."""

    def __init__(
        self, products: pd.DataFrame, n_candidates: int = 200, dim: int = 128, rrf_k: int = 60, seed: int = 0
    ) -> None:
        import bm25s
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import normalize

        S.require_columns(products, (S.PRODUCT_ID, S.TITLE), "products")
        self.ids = products[S.PRODUCT_ID].astype(str).to_numpy()
        description = products[S.DESCRIPTION].fillna("").astype(str) if S.DESCRIPTION in products else ""
        # The title counts twice: it is what buyers scan and what listings are named by.
        texts = (products[S.TITLE].fillna("").astype(str) + " ") * 2 + description
        self._bm25s = bm25s
        self.bm25 = bm25s.BM25()
        self.bm25.index(
            bm25s.tokenize(texts.tolist(), stopwords="en", show_progress=False), show_progress=False
        )
        self.tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english")
        matrix = self.tfidf.fit_transform(texts)
        dim = max(1, min(dim, matrix.shape[1] - 1, len(texts) - 1))
        self.svd = TruncatedSVD(dim, random_state=seed)
        self.vectors = normalize(self.svd.fit_transform(matrix)).astype(np.float32)
        self._normalize = normalize
        self.n_candidates = n_candidates
        self.rrf_k = rrf_k

    def __call__(self, query: str) -> pd.DataFrame:
        tokens = self._bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        lexical = self.bm25.get_scores(tokens) if tokens else np.zeros(len(self.ids))
        encoded = self.svd.transform(self.tfidf.transform([query]))
        norm = np.linalg.norm(encoded)
        semantic = (self.vectors @ (encoded[0] / norm)) if norm > 0 else np.zeros(len(self.ids))
        n = min(self.n_candidates, len(self.ids))
        sem_order = np.argsort(-semantic, kind="stable")
        lex_order = np.argsort(-lexical, kind="stable")
        sem_rank = np.empty(len(self.ids), dtype=int)
        lex_rank = np.empty(len(self.ids), dtype=int)
        sem_rank[sem_order] = np.arange(1, len(self.ids) + 1)
        lex_rank[lex_order] = np.arange(1, len(self.ids) + 1)
        hits_lexical = lexical > 0
        fused = 1.0 / (self.rrf_k + sem_rank) + np.where(hits_lexical, 1.0 / (self.rrf_k + lex_rank), 0.0)
        pool = np.union1d(sem_order[:n], lex_order[:n][hits_lexical[lex_order[:n]]])
        top = pool[np.argsort(-fused[pool], kind="stable")][:n]
        return pd.DataFrame(
            {
                S.PRODUCT_ID: self.ids[top],
                SEMANTIC_SCORE: semantic[top].astype(float),
                LEXICAL_SCORE: lexical[top].astype(float),
                "semantic_rank": sem_rank[top],
                "lexical_rank": np.where(hits_lexical[top], lex_rank[top], 0),
                FUSED_SCORE: fused[top],
            }
        )


# ---- metrics --------------------------------------------------------------------------------------


def recall_at_k(ranked: Iterable[str], positives: Mapping[str, float], k: int = 10) -> float:
    """Share of the positives found in the top k."""
    if not positives:
        return float("nan")
    top = list(ranked)[:k]
    return sum(1 for p in top if p in positives) / len(positives)


def ndcg_at_k(ranked: Iterable[str], positives: Mapping[str, float], k: int = 10) -> float:
    """Normalised discounted cumulative gain of the top k with graded gains."""
    if not positives:
        return float("nan")
    top = list(ranked)[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = sum(positives.get(p, 0.0) * discounts[i] for i, p in enumerate(top))
    ideal = sorted(positives.values(), reverse=True)[:k]
    idcg = sum(g * discounts[i] for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


# ---- evaluation -----------------------------------------------------------------------------------


def evaluate_sessions(
    sessions: pd.DataFrame,
    catalogue: Catalogue,
    profiles: BuyerProfiles,
    retrieve: Retrieve,
    rule: RuleRanker,
    learned: LearnedRanker | None,
    k: int = 10,
    show_progress: bool = False,
) -> pd.DataFrame:
    """Per-session Recall@k / NDCG@k of every method (long format: one row per session x method)."""
    popularity = profiles.popularity_of(catalogue.ids)
    global_top = catalogue.ids[np.argsort(-popularity, kind="stable")[:k]]
    cache: dict[str, pd.DataFrame] = {}
    rows = []
    iterator = tqdm(
        sessions.itertuples(index=False), total=len(sessions), desc="evaluate", disable=not show_progress
    )
    for session in iterator:
        positives: dict[str, float] = getattr(session, POSITIVES)
        if not positives:
            continue
        buyer = profiles.buyer(getattr(session, USER_ID))
        query = getattr(session, QUERY)
        browsing = not (query and query.strip())
        history = profiles.has_history(buyer)
        now = getattr(session, START)
        candidates = session_candidates(query, buyer, catalogue, profiles, retrieve, cache)
        ids = candidates[S.PRODUCT_ID].astype(str).to_numpy()
        orders: dict[str, Iterable[str]] = {}
        if browsing:
            orders["popularity"] = orders["search"] = global_top
        else:
            pop = profiles.popularity_of(ids)
            orders["popularity"] = ids[np.argsort(-pop, kind="stable")]
            fused = (
                candidates[FUSED_SCORE].to_numpy(float) if FUSED_SCORE in candidates else -np.arange(len(ids))
            )
            orders["search"] = ids[np.argsort(-fused, kind="stable")]
        rankers = {"rule": rule} | ({"learned": learned} if learned is not None else {})
        for name, ranker in rankers.items():
            ranked, _, _ = rank(candidates, catalogue, buyer, profiles, ranker, now)
            orders[name] = ranked[S.PRODUCT_ID].astype(str).tolist()
        served = choose_ranker(history, learned, rule, profiles.settings)
        orders["served"] = orders[served.name]
        if not history:  # the same buyer arriving as an unknown id: no demographics, no location
            stranger = Buyer(user_id=None)
            for name, ranker in rankers.items():
                pool = candidates if not browsing else home_feed_candidates(catalogue, stranger, profiles)
                ranked, _, _ = rank(pool, catalogue, stranger, profiles, ranker, now)
                orders[f"{name}_unknown_id"] = ranked[S.PRODUCT_ID].astype(str).tolist()
        for method, order in orders.items():
            rows.append(
                (
                    getattr(session, SESSION_ID),
                    "browse" if browsing else "query",
                    history,
                    method,
                    recall_at_k(order, positives, k),
                    ndcg_at_k(order, positives, k),
                )
            )
    return pd.DataFrame(rows, columns=["session_id", "kind", "history", "method", "recall", "ndcg"])


def _bootstrap(diff: np.ndarray, seed: int, rounds: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(per_session: pd.DataFrame, k: int = 10, seed: int = 0) -> dict:
    """Means per method (overall, by session kind, by buyer history) and margins of the
    personalised methods over the best baseline, with paired bootstrap 95% intervals."""
    summary: dict = {"k": k, "sessions": {}, "metrics": {}, "margins": {}}
    slices = {
        "all": per_session,
        "query": per_session[per_session["kind"] == "query"],
        "browse": per_session[per_session["kind"] == "browse"],
        "with_history": per_session[per_session["history"]],
        "cold_start": per_session[~per_session["history"]],
    }
    for name, part in slices.items():
        if name != "cold_start":  # the unknown-id variants exist for buyers without history only
            part = part[~part["method"].str.endswith("_unknown_id")]
        if part.empty:
            continue
        summary["sessions"][name] = int(part["session_id"].nunique())
        means = part.groupby("method")[["recall", "ndcg"]].mean()
        summary["metrics"][name] = {
            method: {f"recall@{k}": float(row["recall"]), f"ndcg@{k}": float(row["ndcg"])}
            for method, row in means.iterrows()
        }
        wide = {
            metric: part.pivot(index="session_id", columns="method", values=metric)
            for metric in ("recall", "ndcg")
        }
        margins = {}
        for method, baseline in MARGINS:
            if method in wide["recall"] and baseline in wide["recall"]:
                entry = {}
                for metric, table in wide.items():
                    diff = (table[method] - table[baseline]).to_numpy(float)
                    low, high = _bootstrap(diff, seed)
                    base = float(table[baseline].mean())
                    entry[f"{metric}@{k}"] = {
                        "absolute": float(diff.mean()),
                        "relative": float(diff.mean() / base) if base > 0 else None,
                        "ci95": [low, high],
                    }
                margins[f"{method}_vs_{baseline}"] = entry
        summary["margins"][name] = margins
    return summary


def markdown_table(summary: dict, slice_name: str = "all") -> str:
    """The headline table: Recall@k and NDCG@k per method for one slice."""
    k = summary["k"]
    lines = [f"| method | Recall@{k} | NDCG@{k} |", "|---|---|---|"]
    for method in METHODS:
        row = summary["metrics"].get(slice_name, {}).get(method)
        if row:
            lines.append(f"| {method} | {row[f'recall@{k}']:.3f} | {row[f'ndcg@{k}']:.3f} |")
    return "\n".join(lines)


def hold_out_users(
    train: pd.DataFrame, test: pd.DataFrame, fraction: float, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """Drop the earlier sessions of a random `fraction` of the test buyers, so the test set has
    buyers without history (they keep their demographics: the cohort cold start)."""
    users = np.sort(test[USER_ID].astype(str).unique())
    n = int(round(fraction * len(users)))
    chosen = np.random.default_rng(seed).choice(users, size=n, replace=False).tolist() if n else []
    return train[~train[USER_ID].astype(str).isin(chosen)].reset_index(drop=True), sorted(chosen)


@dataclass
class RankingExperiment:
    """What `run_experiment` produced: the summary plus the fitted pieces (to save or inspect)."""

    summary: dict
    per_session: pd.DataFrame
    profiles: BuyerProfiles
    rule: RuleRanker
    learned: LearnedRanker | None


def run_experiment(
    products: pd.DataFrame,
    users: pd.DataFrame | None,
    interactions: pd.DataFrame,
    retrieve: Retrieve,
    settings: RankSettings | None = None,
    seed: int = 0,
    cold_user_fraction: float = 0.15,
    k: int = 10,
    show_progress: bool = False,
) -> RankingExperiment:
    """Split in time, hold out some buyers' history, train on the past, evaluate on the rest.

    `users` and `interactions` are raw frames (Users.csv / Interactions.csv shaped, real or
    simulated); `products` the clean table. The summary records the sizes and the protocol."""
    settings = settings or RankSettings()
    buyers = load_buyers(users) if users is not None else None
    log_ = load_interactions(interactions)
    train, test = split_by_time(log_, settings.test_fraction)
    train, cold_users = hold_out_users(train, test, cold_user_fraction, seed)
    catalogue = catalogue_of(products, settings.affinity_level)
    learned, training = train_learned_ranker(
        train, buyers, catalogue, retrieve, settings, seed=seed, show_progress=show_progress
    )
    profiles = BuyerProfiles.build(buyers, train, products, settings)
    rule = RuleRanker(settings.rule_weights)
    sessions = session_table(test, settings)
    per_session = evaluate_sessions(sessions, catalogue, profiles, retrieve, rule, learned, k, show_progress)
    summary = summarise(per_session, k, seed)
    summary["protocol"] = {
        "split": f"by time: sessions starting after the {1 - settings.test_fraction:.0%} quantile are held out",
        "cold_start": f"{len(cold_users)} test buyers ({cold_user_fraction:.0%}) had their earlier sessions removed",
        "train_events": int(len(train)),
        "test_events": int(len(test)),
        "skipped_interactions": log_.attrs.get("skipped", {}),
        "candidates": "retrieval's top candidates for the session query; browsing: home-feed pool",
        "positives": list(settings.positive_events),
        "learned_ranker_training": {k_: v for k_, v in training.items() if k_ not in ("loss", "val_loss")}
        | {"final_loss": training["loss"][-1], "final_val_loss": (training["val_loss"] or [None])[-1]},
    }
    return RankingExperiment(summary, per_session, profiles, rule, learned)
