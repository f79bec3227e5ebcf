"""Ranking factors, the two rankers (contributions add up, training, persistence), the home feed
and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_buyers import make_interactions, make_products, make_users

from fbmarket.config import RankSettings
from fbmarket.data import schema as S
from fbmarket.recommend.buyers import Buyer, BuyerProfiles, load_buyers, load_interactions
from fbmarket.recommend.evaluate import TextRetriever, ndcg_at_k, recall_at_k, run_experiment
from fbmarket.recommend.features import FEATURES, Catalogue, catalogue_of, ranking_features
from fbmarket.recommend.personalise import RankingModels, RankRequest, home_feed_candidates, personalise
from fbmarket.recommend.ranker import BIAS, LearnedRanker, RuleRanker, choose_ranker
from fbmarket.recommend.training import fit_ranking
from fbmarket.synthetic.buyers import simulate_buyers, simulate_interactions

NOW = pd.Timestamp("2022-03-05")
LEEDS = (53.7997, -1.5492)


@pytest.fixture(scope="module")
def products() -> pd.DataFrame:
    return make_products()


@pytest.fixture(scope="module")
def catalogue(products: pd.DataFrame) -> Catalogue:
    return catalogue_of(products)


@pytest.fixture(scope="module")
def profiles(products: pd.DataFrame) -> BuyerProfiles:
    buyers = load_buyers(make_users())
    return BuyerProfiles.build(buyers, load_interactions(make_interactions()), products, RankSettings())


def synthetic_examples(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Factors in their natural ranges, labels from a known additive rule (distance and affinity
    matter), rows grouped into sessions of 20."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.uniform(-1, 1, size=(n, len(FEATURES))), columns=list(FEATURES))
    logit = 2.5 * x["distance"] + 1.5 * x["affinity"] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return x, y, np.arange(n) // 20


LEARNED_SETUP = {"hidden_units": 8, "seed": 3, "examples": 1500, "epochs": 5}


def train_small(seed: int = LEARNED_SETUP["seed"]) -> LearnedRanker:
    """The default (listwise) training on synthetic sessions."""
    ranker = LearnedRanker.build(RankSettings(hidden_units=LEARNED_SETUP["hidden_units"]), seed=seed)
    x, y, groups = synthetic_examples(LEARNED_SETUP["examples"], 2)
    ranker.fit(x, y, groups=groups, epochs=LEARNED_SETUP["epochs"], batch_size=8, seed=seed)
    return ranker


@pytest.fixture(scope="module")
def learned() -> LearnedRanker:
    """Trained once per module (Keras tracing dominates the cost of a fit)."""
    return train_small()


# ---- factors ----------------------------------------------------------------------------------------


def test_features_are_bounded_and_handle_missing_values(
    catalogue: Catalogue, profiles: BuyerProfiles
) -> None:
    candidates = pd.DataFrame(
        {
            S.PRODUCT_ID: ["bab-0", "spo-3", "not-listed"],
            "semantic_score": [0.9, np.nan, 0.2],
            "lexical_score": [4.0, 2.0, np.nan],
        }
    )
    features = ranking_features(candidates, catalogue, profiles.buyer("u1"), profiles, NOW)
    assert list(features.index) == list(candidates.index)
    values = features[list(FEATURES)]
    assert np.isfinite(values.to_numpy()).all() and (values.abs() <= 1.0 + 1e-9).all().all()
    assert features["lexical"].tolist() == [1.0, 0.5, 0.0]  # relative to the best candidate
    assert features.loc[1, "semantic"] == 0.0  # not retrieved by that branch
    assert (
        features.loc[2, ["distance", "price_fit", "affinity", "freshness"]].eq(0.0).all()
    )  # unknown listing
    nowhere = ranking_features(candidates, catalogue, Buyer(user_id="x"), profiles, NOW)
    assert nowhere["distance"].eq(0.0).all() and nowhere["distance_km"].isna().all()


def test_price_fit_is_neutral_only_when_nothing_gives_the_budget(
    catalogue: Catalogue, profiles: BuyerProfiles
) -> None:
    ids = catalogue.ids[:40]
    candidates = pd.DataFrame({S.PRODUCT_ID: ids})
    priced = np.isfinite(catalogue.price[:40])
    anonymous = ranking_features(candidates, catalogue, Buyer(), profiles, NOW)
    assert profiles.budget(Buyer())[1] == "everyone" and anonymous["price_fit"].eq(0.0).all()
    for buyer in (Buyer(budget_gbp=5.0), Buyer(age=30, gender="female")):  # stated; a cohort's
        fit = ranking_features(candidates, catalogue, buyer, profiles, NOW)["price_fit"]
        assert profiles.budget(buyer)[1] not in ("everyone", "default")
        assert fit[priced].ne(0.0).any() and fit[~priced].eq(0.0).all()


def test_distance_beyond_travel_lowers_the_score(
    catalogue: Catalogue, profiles: BuyerProfiles, learned: LearnedRanker
) -> None:
    buyer = Buyer(user_id="b", latitude=LEEDS[0], longitude=LEEDS[1], max_travel_km=30.0, budget_gbp=50.0)
    # app-0 is in Leeds, app-2 in London (~270 km) - same category, same price level.
    candidates = pd.DataFrame({S.PRODUCT_ID: ["app-2", "app-0"]})
    features = ranking_features(candidates, catalogue, buyer, profiles, NOW)
    assert features.loc[0, "distance"] == -1.0 and features.loc[1, "distance"] > 0.9
    for ranker in (RuleRanker(), learned):  # `learned` was taught that distance matters
        scores, contributions = ranker.score(features)
        assert scores[0] < scores[1]
        assert contributions.loc[0, "distance"] < 0 < contributions.loc[1, "distance"]


def test_favoured_category_ranks_higher(catalogue: Catalogue, profiles: BuyerProfiles) -> None:
    # bab-1 and app-1 / spo-1: same town, same price, different category; u1 likes baby things.
    candidates = pd.DataFrame({S.PRODUCT_ID: ["app-1", "spo-1", "bab-1"]})
    result = personalise(RankRequest("u1", catalogue, k=3, candidates=candidates, now=NOW), profiles)
    assert result.results[S.PRODUCT_ID].iloc[0] == "bab-1"
    assert result.status == "known" and result.mode == "search" and result.ranker == "rule"
    sports = personalise(RankRequest("u2", catalogue, k=3, candidates=candidates, now=NOW), profiles)
    assert sports.results[S.PRODUCT_ID].iloc[0] == "spo-1"


def test_a_photo_match_stays_first_whatever_the_buyer_factors_say(
    catalogue: Catalogue, profiles: BuyerProfiles
) -> None:
    """A photo search's own listing (PHOTO_MATCH) is pinned above a buyer's favourite category."""
    from fbmarket.recommend.personalise import PHOTO_MATCH

    candidates = pd.DataFrame({S.PRODUCT_ID: ["app-1", "spo-1", "bab-1"], PHOTO_MATCH: [False, True, False]})
    result = personalise(RankRequest("u1", catalogue, k=3, candidates=candidates, now=NOW), profiles)
    assert result.results[S.PRODUCT_ID].tolist()[0] == "spo-1"  # u1 prefers bab-1 (test above)
    assert result.results[S.PRODUCT_ID].tolist()[1] == "bab-1"  # the rest in score order
    top = personalise(RankRequest("u1", catalogue, k=1, candidates=candidates, now=NOW), profiles)
    assert top.results[S.PRODUCT_ID].tolist() == ["spo-1"]


# ---- rankers -----------------------------------------------------------------------------------------

factor_frames = arrays(
    np.float64, st.tuples(st.integers(1, 30), st.just(len(FEATURES))), elements=st.floats(-1, 1)
)


@settings(max_examples=25, deadline=None)
@given(values=factor_frames)
def test_rule_contributions_add_up_to_the_score(values: np.ndarray) -> None:
    features = pd.DataFrame(values, columns=list(FEATURES))
    ranker = RuleRanker()
    scores, contributions = ranker.score(features)
    assert list(contributions.columns) == [*FEATURES, BIAS]
    np.testing.assert_allclose(contributions.sum(axis=1), scores, rtol=0, atol=1e-12)
    np.testing.assert_allclose(contributions["distance"], ranker.weights["distance"] * features["distance"])


@settings(max_examples=25, deadline=None)
@given(values=factor_frames)
def test_learned_contributions_add_up_to_the_score(learned: LearnedRanker, values: np.ndarray) -> None:
    features = pd.DataFrame(values, columns=list(FEATURES))
    scores, contributions = learned.score(features)
    np.testing.assert_allclose(contributions.sum(axis=1), scores, rtol=0, atol=1e-12)
    # The model's own logit agrees with the decomposition (float32 inside Keras).
    logits = np.asarray(learned.model(features.to_numpy("float32"))).ravel()
    np.testing.assert_allclose(logits, scores, atol=1e-4)
    # Additive: a factor's contribution depends on that factor alone, and a neutral factor gives 0.
    neutral = learned.score(pd.DataFrame(0.0, index=[0], columns=list(FEATURES)))[1]
    assert neutral[list(FEATURES)].abs().max().max() < 1e-6


def test_learned_ranker_lowers_its_loss_and_learns_the_shape(learned: LearnedRanker) -> None:
    history = learned.meta["history"]
    assert learned.meta["loss"] == "listwise"
    assert len(history["loss"]) == LEARNED_SETUP["epochs"]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    curve = learned.shape("distance", np.array([-1.0, 0.0, 1.0]))
    assert curve[0] < curve[1] < curve[2]  # nearer is better, as in the labels
    flat = learned.shape("freshness", np.array([-1.0, 1.0]))  # freshness did not drive the labels
    assert abs(flat[1] - flat[0]) < abs(curve[2] - curve[0]) / 2


def test_pointwise_training_lowers_its_loss() -> None:
    ranker = LearnedRanker.build(RankSettings(hidden_units=4), seed=0)
    x, y, _ = synthetic_examples(600, 5)
    history = ranker.fit(x, y, loss="pointwise", epochs=3, batch_size=64)
    assert history["loss"][-1] < history["loss"][0]
    assert ranker.shape("distance", np.array([-1.0, 1.0])).tolist() == sorted(
        ranker.shape("distance", np.array([-1.0, 1.0])).tolist()
    )
    with pytest.raises(ValueError, match="group"):
        ranker.fit(x, y, loss="listwise")
    with pytest.raises(ValueError, match="must match"):
        ranker.fit(x, y[:-1], loss="pointwise")


def test_save_load_round_trip_gives_identical_scores(learned: LearnedRanker, tmp_path) -> None:
    x, _, _ = synthetic_examples(50, 9)
    learned.save(tmp_path)
    assert LearnedRanker.exists(tmp_path)
    loaded = LearnedRanker.load(tmp_path)
    a, ca = learned.score(x)
    b, cb = loaded.score(x)
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(ca, cb)
    rule = RuleRanker({"distance": 2.0, "affinity": 1.0})
    rule.save(tmp_path)
    np.testing.assert_array_equal(RuleRanker.load(tmp_path).score(x)[0], rule.score(x)[0])
    with pytest.raises(ValueError, match="unknown factor"):
        RuleRanker({"shoe_size": 1.0})


def test_training_is_deterministic(learned: LearnedRanker) -> None:
    x, _, _ = synthetic_examples(100, 4)
    again = train_small()
    np.testing.assert_array_equal(again.score(x)[0], learned.score(x)[0])


def test_fallback_policy(learned: LearnedRanker) -> None:
    rule = RuleRanker()
    assert choose_ranker(True, learned, rule) is learned
    assert choose_ranker(False, learned, rule) is learned  # default: measured better for cold starts
    assert choose_ranker(True, None, rule) is rule
    assert choose_ranker(False, None, rule) is rule
    transparent = RankSettings(cold_start_ranker="rule")
    assert choose_ranker(False, learned, rule, transparent) is rule
    assert choose_ranker(True, learned, rule, transparent) is learned


# ---- recommend / home feed ---------------------------------------------------------------------------


def test_home_feed_for_known_and_unknown_buyers(
    catalogue: Catalogue, profiles: BuyerProfiles, learned: LearnedRanker
) -> None:
    pool = home_feed_candidates(catalogue, profiles.buyer("u1"), profiles, n=10)
    assert len(pool) == 10 and pool[S.PRODUCT_ID].is_unique
    assert set(pool["source"]) == {"affinity", "popular"}
    assert pool.loc[pool["source"] == "affinity", S.PRODUCT_ID].str.startswith("bab").mean() > 0.5

    feed = personalise(RankRequest("u1", catalogue, k=5, now=NOW), profiles, learned=learned)
    assert feed.mode == "feed" and feed.status == "known" and feed.ranker == "learned"
    assert len(feed.results) == 5 and feed.results["score"].is_monotonic_decreasing
    for row in feed.results.itertuples():
        assert sum(row.factors.values()) == pytest.approx(row.score, abs=1e-9)

    cold = personalise(RankRequest("who-is-this", catalogue, k=5, now=NOW), profiles, learned=learned)
    assert cold.status == "cold_start" and cold.ranker == "learned"
    assert any("cold-start" in note for note in cold.notes)
    assert any("tastes from everyone" in note for note in cold.notes)
    assert len(cold.results) == 5
    profiles.settings.cold_start_ranker = "rule"
    try:
        transparent = personalise(RankRequest("who-is-this", catalogue, k=5, now=NOW), profiles, learned=learned)
    finally:
        profiles.settings.cold_start_ranker = RankSettings().cold_start_ranker
    assert transparent.ranker == "rule" and any("rule ranker" in note for note in transparent.notes)

    seen = set(feed.results[S.PRODUCT_ID])
    fresh = personalise(RankRequest("u1", catalogue, k=5, now=NOW, exclude=seen), profiles)
    assert not seen & set(fresh.results[S.PRODUCT_ID])
    with pytest.raises(ValueError, match="k must be"):
        personalise(RankRequest("u1", catalogue, k=0), profiles)


def test_no_candidates_gives_an_empty_ranking_not_an_error(
    catalogue: Catalogue, profiles: BuyerProfiles, learned: LearnedRanker
) -> None:
    """A filter that matches nothing (a £0 budget, say) leaves no candidates: empty, not a crash."""
    everything = set(catalogue.products[S.PRODUCT_ID].astype(str))
    for ranker in (learned, None):
        feed = personalise(RankRequest("u1", catalogue, k=5, now=NOW, exclude=everything), profiles, learned=ranker)
        assert feed.mode == "feed" and feed.results.empty and feed.contributions.empty
        none = home_feed_candidates(catalogue, profiles.buyer("u1"), profiles, n=10).iloc[:0]
        search = personalise(RankRequest("u1", catalogue, k=5, now=NOW, candidates=none), profiles, learned=ranker)
        assert search.mode == "search" and search.results.empty
    assert list(ranking_features(none, catalogue, profiles.buyer("u1"), profiles, NOW).columns)[
        : len(FEATURES)
    ] == list(FEATURES)


# ---- evaluation ---------------------------------------------------------------------------------------


def test_ranking_metrics() -> None:
    positives = {"a": 2.0, "b": 4.0}
    assert recall_at_k(["a", "x", "b"], positives, k=2) == 0.5
    assert recall_at_k(["x", "y"], positives, k=2) == 0.0
    assert ndcg_at_k(["b", "a"], positives, k=10) == pytest.approx(1.0)
    worse = ndcg_at_k(["a", "b"], positives, k=10)
    assert 0.0 < worse < 1.0
    assert np.isnan(recall_at_k(["a"], {}, k=10))


def test_experiment_end_to_end_on_a_tiny_simulation(products: pd.DataFrame, tmp_path) -> None:
    towns = products.groupby(S.LOCATION)[[S.LATITUDE, S.LONGITUDE]].first().reset_index()
    buyers = simulate_buyers(30, towns, seed=0)
    interactions = simulate_interactions(buyers, products, seed=1, sessions_per_buyer=4)
    settings = RankSettings(epochs=2, hidden_units=4, feed_candidates=12)
    experiment = run_experiment(
        products, buyers, interactions, TextRetriever(products, n_candidates=12), settings, seed=0
    )
    summary = experiment.summary
    assert summary["sessions"]["all"] > 0
    methods = summary["metrics"]["all"]
    assert {"popularity", "search", "rule", "learned", "served"} <= set(methods)
    for scores in methods.values():
        assert 0.0 <= scores["recall@10"] <= 1.0 and 0.0 <= scores["ndcg@10"] <= 1.0
    assert "learned_vs_search" in summary["margins"]["all"]
    assert summary["protocol"]["learned_ranker_training"]["examples"] > 0

    # The fitted pieces persist as a folder (JSON + .keras) and serve identical results.
    models = RankingModels(experiment.profiles, experiment.rule, experiment.learned, {"note": "test"})
    loaded = RankingModels.load(models.save(tmp_path / "ranking"))
    catalogue = catalogue_of(products)
    user = str(buyers["user_id"].iloc[0])
    before = models.personalise(RankRequest(user, catalogue, k=5, now=NOW))
    after = loaded.personalise(RankRequest(user, catalogue, k=5, now=NOW))
    pd.testing.assert_frame_equal(before.results, after.results)
    assert loaded.report == {"note": "test"}


def test_fit_ranking_without_enough_history_falls_back_to_rules(products: pd.DataFrame, tmp_path) -> None:
    models = fit_ranking(
        products, make_users(), make_interactions(), TextRetriever(products, n_candidates=12)
    )
    assert models.learned is None and "not trained" in models.report["learned_ranker"]
    loaded = RankingModels.load(models.save(tmp_path))
    assert loaded.learned is None
    result = loaded.personalise(RankRequest("u1", catalogue_of(products), k=3, now=NOW))
    assert result.ranker == "rule" and any("no learned ranker" in n for n in result.notes)
    with pytest.raises(FileNotFoundError, match="profiles.json"):
        RankingModels.load(tmp_path / "empty")
