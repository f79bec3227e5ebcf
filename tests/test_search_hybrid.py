"""Hybrid retrieval: fusion, filters (category, price, distance), similar listings, live updates."""

from __future__ import annotations

import json
import zlib

import faiss
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.data.geo import haversine_km
from fbmarket.errors import BadRequestError
from fbmarket.search.candidates import (
    CANDIDATE_COLUMNS,
    FUSED_SCORE,
    LEXICAL_RANK,
    PHOTO_SCORE,
    SEMANTIC_RANK,
    SEMANTIC_SCORE,
    reciprocal_rank_fusion,
    weighted_blend,
)
from fbmarket.search.categories import CategoryHead, CategorySpace
from fbmarket.search.filters import Filters, UnknownCategoryError, category_key
from fbmarket.search.hybrid import HybridSearcher, QueryVocabulary
from fbmarket.search.index import IndexLoadError
from fbmarket.search.lexical import tokenize
from fbmarket.search.searcher_files import VECTOR_FILE
from fbmarket.search.similar import SAME_LEAF, SAME_ROOT, SIMILAR_COLUMNS, SIMILAR_SCORE, SIMILARITY

DIM = 64
ROOTS = {
    "Home & Garden": ["Furniture / Sofas", "Furniture / Tables", "Garden / Sheds"],
    "Sports & Leisure": ["Cycling / Bikes", "Fitness / Weights"],
    "Electronics": ["Phones / Smartphones", "Audio / Speakers"],
}
NOUNS = {
    "Sofas": ["sofa", "couch", "settee"],
    "Tables": ["table", "dining table", "desk"],
    "Sheds": ["shed", "summer house", "log store"],
    "Bikes": ["bike", "bicycle", "mountain bike"],
    "Weights": ["dumbbells", "kettlebell", "weight bench"],
    "Smartphones": ["iphone", "samsung phone", "pixel phone"],
    "Speakers": ["speaker", "soundbar", "bluetooth speaker"],
}
ADJECTIVES = ["red", "large", "vintage", "small", "modern", "grey", "oak", "used"]


def embed(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words hashing embedder: the stand-in for the trained text encoder."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in tokenize(text):
            out[row, zlib.crc32(token.encode()) % DIM] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def catalogue(n: int = 160, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    leaves = [(root, f"{root} / {sub}") for root, subs in ROOTS.items() for sub in subs]
    rows = []
    for i in range(n):
        root, path = leaves[i % len(leaves)]
        leaf = path.rsplit(" / ", 1)[1]
        title = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS[leaf])} {rng.choice(ADJECTIVES)}"
        unknown_place = i % 17 == 0
        rows.append(
            {
                S.PRODUCT_ID: f"p{i}",
                S.TITLE: title,
                S.DESCRIPTION: f"{title}. Collection only, cash on pickup. Item {i}.",
                S.CATEGORY: path,
                S.ROOT_CATEGORY: root,
                S.LEAF_CATEGORY: path,
                S.PRICE: float(rng.integers(5, 500)) if i % 13 else np.nan,
                S.LATITUDE: np.nan if unknown_place else float(rng.uniform(50.0, 58.0)),
                S.LONGITUDE: np.nan if unknown_place else float(rng.uniform(-5.5, 1.5)),
            }
        )
    return pd.DataFrame(rows)


def embeddings_of(products: pd.DataFrame) -> np.ndarray:
    return embed((products[S.TITLE] + " " + products[S.DESCRIPTION]).tolist())


def searcher(products: pd.DataFrame | None = None, **overrides) -> HybridSearcher:
    products = catalogue() if products is None else products
    return HybridSearcher.build(
        products, embeddings=embeddings_of(products), settings=SearchSettings(**overrides)
    )


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """OpenMP spin-waiting makes tiny searches slow on a shared machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("fusion", ["rrf", "blend"])
def test_exact_title_listing_comes_first(fusion):
    products = catalogue()
    hybrid = searcher(products, fusion=fusion)
    for row in (3, 40, 77, 121):
        title = products.at[row, S.TITLE]
        # near-duplicates share words with it; the exact title must still win
        found = hybrid.retrieve(embed([title])[0], title, n=10)
        assert found.mode == "hybrid"
        assert found.frame[S.PRODUCT_ID].iloc[0] in set(products.loc[products[S.TITLE] == title, S.PRODUCT_ID])


def test_candidates_carry_both_scores_and_ranks():
    products = catalogue()
    hybrid = searcher(products, fusion="rrf")
    result = hybrid.retrieve(embed(["oak table"])[0], "oak table", n=30).frame
    assert tuple(result.columns) == CANDIDATE_COLUMNS
    assert len(result) == 30 and result[S.PRODUCT_ID].is_unique
    assert result[FUSED_SCORE].is_monotonic_decreasing
    # every candidate has a cosine similarity, even those only BM25 found
    assert result[SEMANTIC_SCORE].notna().all()
    only_lexical = result[result[SEMANTIC_RANK].isna()]
    assert only_lexical[LEXICAL_RANK].notna().all()
    expected = reciprocal_rank_fusion([result[SEMANTIC_RANK], result[LEXICAL_RANK]], 60)
    np.testing.assert_allclose(result[FUSED_SCORE], expected)


def test_untruncated_candidates_keep_both_lists_whole():
    products = catalogue()
    hybrid = searcher(products, semantic_weight=0.2)
    vector, text = embed(["oak table"])[0], "oak table"
    cut = hybrid.retrieve(vector, text, n=10).frame
    whole = hybrid.retrieve(vector, text, n=10, truncate=False).frame
    assert len(cut) == 10 and 10 < len(whole) <= 20
    assert cut[S.PRODUCT_ID].tolist() == whole[S.PRODUCT_ID].head(10).tolist()  # same scores, same order
    for rank in (SEMANTIC_RANK, LEXICAL_RANK):  # each search's own top 10, all present
        assert sorted(whole[rank].dropna().astype(int)) == list(range(1, 11))


def test_rrf_and_blend_arithmetic():
    np.testing.assert_allclose(
        reciprocal_rank_fusion([np.array([1, np.nan, 2]), np.array([np.nan, 1, 1])], k=60),
        [1 / 61, 1 / 61, 1 / 62 + 1 / 61],
    )
    np.testing.assert_allclose(
        weighted_blend(np.array([0.2, 0.6, np.nan]), np.array([10.0, 0.0, 5.0]), 0.75),
        [0.25, 0.75, 0.125],
    )
    with pytest.raises(ValueError, match="semantic_weight"):
        weighted_blend(np.zeros(2), np.zeros(2), 1.5)


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        (Filters(category="Home & Garden"), lambda r: r[S.ROOT_CATEGORY] == "Home & Garden"),
        (Filters(category="Home & Garden / Furniture"), lambda r: r[S.CATEGORY].startswith("Home & Garden / Furniture /")),
        (Filters(root_category="Electronics"), lambda r: r[S.ROOT_CATEGORY] == "Electronics"),
        (Filters(leaf_category="Sports & Leisure / Cycling / Bikes"), lambda r: r[S.LEAF_CATEGORY].endswith("Bikes")),
        (Filters(min_price=100, max_price=300), lambda r: 100 <= r[S.PRICE] <= 300),
    ],
)  # fmt: skip
def test_filters_hold_and_still_fill_n(filters, check):
    products = catalogue()
    hybrid = searcher(products)
    allowed = hybrid.allowed_ids(filters)
    assert len(allowed) >= 15
    table = products.set_index(S.PRODUCT_ID)
    for vector, text in [(embed(["red sofa"])[0], "red sofa"), (None, "used"), (embed(["bike"])[0], None)]:
        result = hybrid.retrieve(vector, text, filters, n=15).frame
        assert len(result) == 15 or text == "used" and vector is None  # BM25 alone: only matches
        assert all(check(table.loc[pid]) for pid in result[S.PRODUCT_ID])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lat=st.floats(49.0, 59.0),
    lon=st.floats(-7.0, 2.5),
    max_km=st.floats(1.0, 400.0),
    n=st.integers(1, 40),
    use_text=st.booleans(),
)
def test_distance_filter_never_exceeds_the_limit(lat, lon, max_km, n, use_text):
    products, hybrid = DISTANCE_CASE
    filters = Filters(latitude=lat, longitude=lon, max_km=max_km)
    result = hybrid.retrieve(
        embed(["modern speaker"])[0], "modern speaker" if use_text else None, filters, n=n
    ).frame
    rows = products.set_index(S.PRODUCT_ID).loc[result[S.PRODUCT_ID]]
    km = haversine_km(lat, lon, rows[S.LATITUDE].to_numpy(), rows[S.LONGITUDE].to_numpy())
    assert np.all(km <= max_km)  # NaN (unknown location) would fail this too
    within = (
        haversine_km(lat, lon, products[S.LATITUDE].to_numpy(), products[S.LONGITUDE].to_numpy()) <= max_km
    )
    assert len(result) == min(n, int(within.sum()))  # the vector side always fills n when it can


DISTANCE_CASE = (catalogue(), searcher(catalogue()))


def test_bad_queries_and_filters_are_clear_errors():
    hybrid = searcher()
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="query is empty"):
            hybrid.retrieve(None, blank)
    with pytest.raises(ValueError, match="query text, a query vector, or both"):
        hybrid.retrieve(None, None)
    with pytest.raises(ValueError, match="k must be between 1 and 1000"):
        hybrid.retrieve(None, "sofa", n=0)
    with pytest.raises(ValueError, match="k must be"):
        hybrid.similar("p1", k=5000)
    with pytest.raises(ValueError, match="dimension 64"):
        hybrid.retrieve(np.ones(3), "sofa")
    with pytest.raises(BadRequestError, match="min_price"):
        Filters(min_price=50, max_price=10)
    with pytest.raises(BadRequestError, match="latitude, longitude and max_km together"):
        Filters(latitude=51.5, max_km=10)
    with pytest.raises(BadRequestError, match="latitude must be within"):
        Filters(latitude=123.0, longitude=0.0, max_km=10)
    with pytest.raises(BadRequestError, match="max_km must be a finite number"):
        Filters(latitude=1.0, longitude=0.0, max_km=float("nan"))


def test_unknown_words_never_crash():
    hybrid = searcher()
    lexical_only = hybrid.retrieve(None, "qwertyuiop zxcvb")
    assert lexical_only.frame.empty and lexical_only.mode == "none"  # nothing could match
    assert "no word of 'qwertyuiop zxcvb' is known" in lexical_only.notes[0]
    # without the encoder's vocabulary the vector cannot be judged, so it is used
    mixed = hybrid.retrieve(embed(["grey couch"])[0], "qwertyuiop", n=5).frame
    assert len(mixed) == 5 and mixed[LEXICAL_RANK].isna().all()
    assert (mixed["lexical_score"] == 0).all()


def test_filter_matching_nothing_returns_empty():
    result = searcher().retrieve(embed(["sofa"])[0], "sofa", Filters(category="Vehicles")).frame
    assert result.empty and tuple(result.columns) == CANDIDATE_COLUMNS


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_similar_excludes_itself_and_respects_filters(weight: float):
    products = catalogue()
    hybrid = searcher(products, similar_semantic_weight=weight)
    similar = hybrid.similar("p5", k=8)
    assert len(similar) == 8 and "p5" not in {pid for pid, _ in similar}
    scores = [score for _, score in similar]
    assert scores == sorted(scores, reverse=True)
    own = embeddings_of(products.iloc[[5]])[0]
    if weight == 1.0:  # the embedding alone: scores are cosine similarities
        assert similar[0][1] == pytest.approx(
            float(embeddings_of(products.iloc[[int(similar[0][0][1:])]])[0] @ own), abs=1e-5
        )
    cheap = hybrid.similar("p5", k=8, filters=Filters(max_price=100))
    prices = products.set_index(S.PRODUCT_ID).loc[[pid for pid, _ in cheap], S.PRICE]
    assert len(cheap) == 8 and (prices <= 100).all() and "p5" not in {pid for pid, _ in cheap}
    with pytest.raises(KeyError, match="nope"):
        hybrid.similar("nope")


def test_similar_blend_lifts_a_same_title_listing():
    """A listing with the same title but other words in its description: the embedding
    alone ranks it low, the blend with BM25 on the title lifts it to the top few."""
    products = catalogue()
    twin = products.iloc[[5]].assign(
        **{S.PRODUCT_ID: "twin", S.DESCRIPTION: "completely different words here"}
    )
    products = pd.concat([products, twin], ignore_index=True)
    embedding_only = searcher(products, similar_semantic_weight=1.0).similar("p5", k=4)
    blended = searcher(products, similar_semantic_weight=0.5).similar("p5", k=3)
    assert "twin" not in {pid for pid, _ in embedding_only} and "twin" in {pid for pid, _ in blended}


def category_space(products: pd.DataFrame, scale: float = 20.0) -> CategorySpace:
    """Cosine heads whose prototypes are each category's mean embedding: a stand-in for trained heads."""
    vectors = embeddings_of(products)

    def head(column: str) -> CategoryHead:
        names = sorted(products[column].unique())
        prototypes = np.stack([vectors[(products[column] == name).to_numpy()].mean(axis=0) for name in names])
        return CategoryHead(prototypes.T, scale=scale)

    return CategorySpace(head(S.ROOT_CATEGORY), head(S.LEAF_CATEGORY))


def test_category_heads_give_probabilities_and_agreement():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(5, 3)), rng.normal(size=3)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    dense = CategoryHead(kernel, bias)
    logits = x @ kernel + bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dense.probabilities(x), expected, rtol=1e-5)
    cosine = CategoryHead(kernel * np.array([1.0, 9.0, 0.2]), scale=10.0)  # prototype lengths ignored
    probs = cosine.probabilities(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cosine.probabilities(3.0 * x), probs, rtol=1e-5)  # so is the vector's
    unit = kernel / np.linalg.norm(kernel, axis=0)
    assert (probs.argmax(axis=1) == (x @ unit).argmax(axis=1)).all()

    space = CategorySpace(cosine, dense)
    same_root, same_leaf = space.agreement(x[0], x)
    np.testing.assert_allclose(same_root, probs @ probs[0], rtol=1e-5)
    np.testing.assert_allclose(same_leaf, expected @ expected[0], rtol=1e-5)
    no_leaf = CategorySpace(cosine).agreement(x[0], x)[1]
    assert no_leaf.shape == (4,) and not no_leaf.any()


def test_similar_with_category_heads_keeps_the_predicted_category_and_explains_the_score():
    products = catalogue()
    space = category_space(products)
    predicted_root = space.root.probabilities(embeddings_of(products)).argmax(axis=1)
    root_of = dict(zip(products[S.PRODUCT_ID], predicted_root, strict=True))
    plain = searcher(products, similar_semantic_weight=1.0)
    guided = searcher(products, similar_semantic_weight=1.0, similar_root_weight=5.0, similar_leaf_weight=0.0)
    guided.categories = space
    shares = {"plain": [], "guided": []}
    for i in range(0, 160, 7):
        pid = f"p{i}"
        before = [p for p, _ in plain.similar(pid, k=10)]
        after = guided.similar_scored(pid, k=10)
        assert (
            tuple(after.columns) == SIMILAR_COLUMNS
            and len(after) == 10
            and pid not in set(after[S.PRODUCT_ID])
        )
        assert after[SIMILAR_SCORE].is_monotonic_decreasing
        np.testing.assert_allclose(
            after[SIMILAR_SCORE], after[SIMILARITY] + after[SAME_ROOT] + after[SAME_LEAF]
        )
        assert (after[SAME_LEAF] == 0).all() and after[SAME_ROOT].between(0, 5.0).all()
        shares["plain"].append(np.mean([root_of[p] == root_of[pid] for p in before]))
        shares["guided"].append(np.mean([root_of[p] == root_of[pid] for p in after[S.PRODUCT_ID]]))
    # neighbours of the listing's predicted root come first: a large weight all but decides it
    assert np.mean(shares["guided"]) >= 0.95 > np.mean(shares["plain"])

    # zero weights, or no heads at all: the plain path, cosine scores
    off = searcher(products, similar_semantic_weight=1.0, similar_root_weight=0.0, similar_leaf_weight=0.0)
    off.categories = space
    assert off.similar("p3", k=6) == plain.similar("p3", k=6)
    assert (
        plain.categories is None
        and (plain.similar_scored("p3", k=6)[[SAME_ROOT, SAME_LEAF]] == 0).all().all()
    )


def test_lexical_only_searcher_and_similar_by_title():
    products = catalogue()
    hybrid = HybridSearcher.build(products)
    found = hybrid.retrieve(None, products.at[10, S.TITLE], n=5)
    assert found.mode == "lexical" and found.frame[SEMANTIC_SCORE].isna().all()
    similar = hybrid.similar("p10", k=5)
    assert similar and "p10" not in {pid for pid, _ in similar}
    with pytest.raises(ValueError, match="no vector index"):
        hybrid.retrieve(embed(["sofa"])[0], None)


def test_live_add_and_remove():
    products = catalogue()
    hybrid = searcher(products)
    new = catalogue(1, seed=5).assign(
        **{S.PRODUCT_ID: "fresh", S.TITLE: "Penny farthing bicycle", S.DESCRIPTION: "Victorian, rideable."}
    )
    hybrid.add_products(new, embeddings_of(new))
    result = hybrid.retrieve(embed(["penny farthing"])[0], "penny farthing", n=5).frame
    assert result[S.PRODUCT_ID].iloc[0] == "fresh"
    cat = new.at[0, S.CATEGORY]
    assert "fresh" in set(hybrid.retrieve(None, "penny farthing", Filters(category=cat)).frame[S.PRODUCT_ID])

    assert hybrid.remove_products(["fresh", "p1"]) == 2
    for vector, text in [
        (embed(["penny farthing"])[0], "penny farthing"),
        (embeddings_of(products.iloc[[1]])[0], None),
    ]:
        ids = set(hybrid.retrieve(vector, text, n=50).frame[S.PRODUCT_ID])
        assert not ids & {"fresh", "p1"}
    assert "p1" not in {pid for pid, _ in hybrid.similar("p2", k=50)}


def test_save_load_and_a_failed_reload_keeps_the_served_indexes(tmp_path):
    products = catalogue()
    hybrid = searcher(products)
    query = (embed(["vintage sofa"])[0], "vintage sofa")
    expected = hybrid.retrieve(*query, n=20).frame
    hybrid.save(tmp_path)
    loaded = HybridSearcher.load(tmp_path, products)
    pd.testing.assert_frame_equal(loaded.retrieve(*query, n=20).frame, expected)

    # another process writes a broken index: reload refuses it and keeps serving
    (tmp_path / VECTOR_FILE).write_bytes(b"\x00" * 100)
    with pytest.raises(IndexLoadError, match="corrupt"):
        loaded.reload(tmp_path)
    pd.testing.assert_frame_equal(loaded.retrieve(*query, n=20).frame, expected)
    with pytest.raises(IndexLoadError, match="no search index directory"):
        HybridSearcher.load(tmp_path / "missing", products)

    # a good rewrite is picked up
    smaller = products.iloc[:80]
    searcher(smaller).save(tmp_path)
    loaded.reload(tmp_path)
    assert len(loaded.vectors) == 80 and len(loaded.lexical) == 80


def photo_searcher(products: pd.DataFrame, **overrides) -> tuple[HybridSearcher, np.ndarray]:
    """A searcher whose listings (all but every 10th) have random 32-d photo vectors."""
    from fbmarket.search.index import VectorIndex

    rng = np.random.default_rng(5)
    photos = rng.normal(size=(len(products), 32)).astype(np.float32)
    photos /= np.linalg.norm(photos, axis=1, keepdims=True)
    has = np.arange(len(products)) % 10 != 0
    index = VectorIndex(32, factory="Flat")
    ids = products[S.PRODUCT_ID].astype(str).to_numpy(object)
    index.build(ids[has].tolist(), photos[has])
    built = searcher(products, **overrides)
    built.photos = index
    return built, photos


def test_photo_query_finds_the_listing_whose_photo_it_is_and_obeys_filters() -> None:
    products = catalogue()
    built, photos = photo_searcher(
        products, photo_blend_weight=0.0, photo_root_weight=0.0, photo_leaf_weight=0.0
    )
    for row in (1, 7, 42):
        noisy = photos[row] + 0.05 * np.random.default_rng(row).normal(size=32)
        vector = embeddings_of(products.iloc[[row]])[0]
        found = built.retrieve(vector, None, n=10, query_photo=noisy)
        frame = found.frame
        assert found.mode == "photo" and PHOTO_SCORE in frame
        assert frame[S.PRODUCT_ID].iloc[0] == f"p{row}"
        assert frame[SEMANTIC_SCORE].between(0, 1).all()  # the ranker reads the fused photo score
    root = products[S.ROOT_CATEGORY].iloc[0]
    filtered = built.retrieve(None, None, Filters(category=root), n=15, query_photo=photos[3]).frame
    assert len(filtered) == 15
    assert set(products.set_index(S.PRODUCT_ID).loc[filtered[S.PRODUCT_ID], S.ROOT_CATEGORY]) == {root}
    words = built.retrieve(embed(["sofa"])[0], "sofa", n=5, query_photo=photos[3])
    assert words.mode == "photo+words"


def test_a_photo_match_is_flagged_first_even_against_strong_category_agreement() -> None:
    """photo_match_cosine pins the photo's own listing above higher fused scores, and only it."""
    from fbmarket.recommend.personalise import PHOTO_MATCH as RANKER_COLUMN
    from fbmarket.search.candidates import PHOTO_MATCH

    assert RANKER_COLUMN == PHOTO_MATCH  # the two modules agree on the column
    products = catalogue()
    # a blend weight so large that the embedding, not the photo, decides the order
    loose, photos = photo_searcher(products, photo_blend_weight=5.0, photo_match_cosine=0.0)
    pinned, _ = photo_searcher(products, photo_blend_weight=5.0, photo_match_cosine=0.9)
    other = embeddings_of(products.iloc[[60]])[0]  # the query's words/embedding point elsewhere
    query = photos[7] + 0.02 * np.random.default_rng(0).normal(size=32)
    assert loose.retrieve(other, None, n=10, query_photo=query).frame[S.PRODUCT_ID].iloc[0] != "p7"
    frame = pinned.retrieve(other, None, n=10, query_photo=query).frame
    assert frame[S.PRODUCT_ID].iloc[0] == "p7"
    assert frame[PHOTO_MATCH].tolist() == [True] + [False] * 9  # random photos of others: no match


def test_words_with_a_photo_weigh_as_photo_words_blend_weight() -> None:
    """A photo alone is ordered by its look (photo_blend_weight 0.1); the same photo with
    words gives the words' blend photo_words_blend_weight, so they can decide. Before, words
    weighed 0.1 too and a photo + "pram" returned the photo's look-alikes in other categories."""
    products = catalogue()
    settings = dict(photo_root_weight=0.0, photo_leaf_weight=0.0, photo_match_cosine=0.0)
    deaf, photos = photo_searcher(products, photo_words_blend_weight=0.0, **settings)
    heard, _ = photo_searcher(products, photo_words_blend_weight=5.0, **settings)
    title = str(products[S.TITLE].iloc[60])
    words = embeddings_of(products.iloc[[60]])[0]  # the words describe listing 60
    query = photos[7] + 0.02 * np.random.default_rng(0).normal(size=32)
    assert deaf.retrieve(words, title, n=10, query_photo=query).frame[S.PRODUCT_ID].iloc[0] == "p7"
    assert heard.retrieve(words, None, n=10, query_photo=query).frame[S.PRODUCT_ID].iloc[0] == "p7"
    assert heard.retrieve(words, title, n=10, query_photo=query).frame[S.PRODUCT_ID].iloc[0] != "p7"


def test_photo_index_follows_live_adds_and_removals() -> None:
    products = catalogue()
    built, photos = photo_searcher(products)
    assert "p5" in built.photos
    built.remove_products(["p5"])
    assert "p5" not in built.photos and "p5" not in built.vectors
    row = products.iloc[[5]]
    built.add_products(row, embeddings_of(row), photos[[5]], np.array([True]))
    assert "p5" in built.photos
    built.add_products(row, embeddings_of(row), np.zeros((1, 32), np.float32), np.array([False]))
    assert "p5" not in built.photos  # replaced without photos: no photo match any more


# ---------------------------------------------------------------- issue 14: unknown words, categories


def vocabulary_searcher(products: pd.DataFrame) -> tuple[HybridSearcher, QueryVocabulary, np.ndarray]:
    """A searcher that knows its encoder's words; `encode` maps unknown words to one OOV vector,
    as the trained encoder does."""
    known = {"sofa", "couch", "table", "bike", "speaker", "red", "grey", "the", "and"}
    vocabulary = QueryVocabulary(frozenset(known), lambda text: tokenize(text))
    hybrid = HybridSearcher.build(products, embeddings=embeddings_of(products), query_vocabulary=vocabulary)
    oov = embed(["collection cash pickup"])[0]  # some fixed direction: the same for every unknown query
    return hybrid, vocabulary, oov


def encode(vocabulary: QueryVocabulary, oov: np.ndarray, text: str) -> np.ndarray:
    words = [t for t in tokenize(text) if t in vocabulary.words]
    return embed([" ".join(words)])[0] if words else oov


@pytest.mark.parametrize("query", ["диван", "沙发", "xqzvvk blorf", "the and", "Xqzvvk, BLORF!!"])
def test_a_query_with_no_known_word_finds_nothing_and_says_why(query):
    products = catalogue()
    hybrid, vocabulary, oov = vocabulary_searcher(products)
    assert vocabulary.known(query) == [] and hybrid.lexical.known_terms(query) == []
    found = hybrid.retrieve(encode(vocabulary, oov, query), query, n=5)
    assert found.frame.empty and found.mode == "none"
    if query == "the and":  # stopwords: in nearly every listing, and the note says so
        assert "only words too common" in found.notes[0] and "no word of" not in found.notes[0]
    else:
        assert "no word of" in found.notes[0] and "try other words or a photo" in found.notes[0]
    # before issue 14 every such query got the OOV vector's neighbours: the same five listings
    unguarded = HybridSearcher.build(products, embeddings=embeddings_of(products))
    assert len(unguarded.retrieve(oov, query, n=5).frame) == 5


def test_a_photo_is_a_signal_whatever_the_words():
    products = catalogue()
    hybrid, vocabulary, oov = vocabulary_searcher(products)
    photo_vector = embeddings_of(products.iloc[[7]])[0]
    found = hybrid.retrieve(photo_vector, "диван", n=5, photo=True)
    assert found.mode == "hybrid" and len(found.frame) == 5
    assert found.frame[S.PRODUCT_ID].iloc[0] == "p7"


def test_one_known_word_is_enough_and_unknown_to_the_encoder_means_words_only():
    products = catalogue()
    hybrid, vocabulary, oov = vocabulary_searcher(products)
    query = "xqzvvk sofa"
    found = hybrid.retrieve(encode(vocabulary, oov, query), query, n=10)
    assert found.mode == "hybrid" and found.notes == []
    titles = products.set_index(S.PRODUCT_ID).loc[found.frame[S.PRODUCT_ID], S.TITLE]
    assert titles.str.contains("sofa").head(5).all()
    # "settee": listings have it, the encoder does not know it: BM25 alone, said so
    words_only = hybrid.retrieve(encode(vocabulary, oov, "settee"), "settee", n=10)
    assert words_only.mode == "lexical" and "matched by words only" in words_only.notes[0]
    assert len(words_only.frame) and words_only.frame[SEMANTIC_SCORE].isna().all()
    titles = products.set_index(S.PRODUCT_ID).loc[words_only.frame[S.PRODUCT_ID], S.TITLE]
    assert titles.str.contains("settee").all()


@pytest.mark.parametrize(
    "spelling",
    ["home & garden", "HOME & GARDEN", "Home and Garden", "  home &  garden ", "home & garden / furniture",
     "Home & Garden/Furniture", "home & garden / furniture / sofas", "Home And Garden", "HOME AND GARDEN",
     "Home&Garden", "home&garden/furniture", "HOME& GARDEN / FURNITURE", "Home &Garden", "hOmE aNd GaRdEn"],
)  # fmt: skip
def test_category_filter_ignores_case_spacing_and_and(spelling):
    products = catalogue()
    hybrid = searcher(products)
    canonical = next(
        path for path in ("Home & Garden / Furniture / Sofas", "Home & Garden / Furniture", "Home & Garden")
        if category_key(path) == category_key(spelling)
    )  # fmt: skip
    hybrid.check_category(spelling)  # no error
    assert set(hybrid.allowed_ids(Filters(category=spelling))) == set(
        hybrid.allowed_ids(Filters(category=canonical))
    )
    assert len(hybrid.allowed_ids(Filters(category=spelling))) > 0
    result = hybrid.retrieve(embed(["red sofa"])[0], "red sofa", Filters(category=spelling), n=10).frame
    assert len(result) == 10
    assert (
        products.set_index(S.PRODUCT_ID).loc[result[S.PRODUCT_ID], S.CATEGORY].str.startswith(canonical).all()
    )
    root = Filters(root_category="electronics")
    assert set(hybrid.allowed_ids(root)) == set(hybrid.allowed_ids(Filters(root_category="Electronics")))


@pytest.mark.parametrize(
    ("a", "b"),
    [("Home And Garden", "Home & Garden"), ("HOME AND GARDEN", "home & garden"), ("Home&Garden", "Home & Garden"),
     ("Baby&Kids Stuff", "Baby & Kids Stuff"), ("baby and kids stuff", "BABY & KIDS STUFF"),
     ("Sports, Leisure AND Travel / Bicycles", "Sports, Leisure & Travel/Bicycles"),
     ("Sports,Leisure & Travel", "Sports, Leisure & Travel"), ("sports,leisure&travel", "Sports, Leisure & Travel"),
     ("Music,Films,Books & Games", "Music, Films, Books & Games"), ("Clothes , Footwear and Accessories",
     "Clothes, Footwear & Accessories")],
)  # fmt: skip
def test_category_key_treats_and_and_ampersand_alike_in_any_case_and_spacing(a, b):
    assert category_key(a) == category_key(b)
    assert category_key("Handbags") == "handbags" and category_key("Sand and Gravel") != category_key("Sandgravel")


def test_an_unknown_category_is_an_error_that_lists_the_roots_and_the_nearest_spelling():
    hybrid = searcher()
    with pytest.raises(UnknownCategoryError) as caught:
        hybrid.check_category("Home & Gardn")
    error = caught.value
    assert error.suggestion == "Home & Garden"
    assert error.roots == ["Electronics", "Home & Garden", "Sports & Leisure"]
    assert "Did you mean 'Home & Garden'?" in str(error) and "Sports & Leisure" in str(error)
    with pytest.raises(UnknownCategoryError, match="Home & Garden / Furniture"):
        hybrid.check_category("home & garden / furnitur")
    with pytest.raises(UnknownCategoryError, match="the roots are"):
        hybrid.check_category("Home & Garden / Sofas")  # a level skipped: no such path
    # a root the model knows is valid even when no listing has it yet (0 results, not an error)
    hybrid.check_category("vehicles", roots=["Vehicles"])
    with pytest.raises(UnknownCategoryError) as caught:
        hybrid.check_category("vehicle", roots=["Vehicles"])
    assert caught.value.suggestion == "Vehicles" and "Vehicles" in caught.value.roots


def test_an_old_lexical_index_in_a_saved_searcher_is_rebuilt_from_the_products(tmp_path):
    products = catalogue(40)
    products.loc[0, [S.TITLE, S.DESCRIPTION]] = ["Storage box", "Plastic, with lid."]
    products.loc[1, [S.TITLE, S.DESCRIPTION]] = ["Party dress", "Size 10."]
    hybrid = searcher(products)
    hybrid.save(tmp_path)
    path = tmp_path / "lexical.json"
    saved = json.loads(path.read_text())
    del saved["normalisation"]  # as files were before the normalisation was recorded ...
    saved["stemmer"] = "harman-s"
    saved["vocab"] = ["junk" + str(i) for i in range(len(saved["vocab"]))]  # ... with other terms
    path.write_text(json.dumps(saved))
    loaded = HybridSearcher.load(tmp_path, products)
    for query, pid in (("boxes", "p0"), ("dresses", "p1")):
        result = loaded.retrieve(None, query, n=3).frame
        assert result[S.PRODUCT_ID].iloc[0] == pid and result["lexical_score"].iloc[0] > 0
