"""The retrieval backends agree: the embedded FAISS + bm25s path and Milvus (a real milvus-lite
file in tmp_path) give the same results through the one HybridSearcher, under every filter,
after upserts and removals; index_uri parsing and its errors."""

from __future__ import annotations

import threading
import zlib

import numpy as np
import pandas as pd
import pytest

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.data.geo import haversine_km
from fbmarket.errors import DataError
from fbmarket.search.backend import EmbeddedBackend, RetrievalBackend, parse_index_uri
from fbmarket.search.candidates import FUSED_SCORE, LEXICAL_SCORE, SEMANTIC_SCORE
from fbmarket.search.filters import Filters
from fbmarket.search.hybrid import HybridSearcher
from fbmarket.search.index import VectorIndex
from fbmarket.search.lexical import tokenize
from fbmarket.search.milvus import MilvusBackend, filter_expression
from fbmarket.search.similar import SIMILAR_SCORE

pytest.importorskip("milvus_lite")

DIM, PHOTO_DIM = 32, 8
QUIRKY = 'Odd "Quotes" / 100% _Pure_'  # a category with a quote, a % and _ : escaped, not wildcards
LEAVES = [
    ("Home & Garden", "Home & Garden / Sofas", ["sofa", "couch", "settee"]),
    ("Home & Garden", "Home & Garden / Tables", ["table", "desk", "dining table"]),
    ("Sports", "Sports / Bikes", ["bike", "bicycle", "mountain bike"]),
    ("Electronics", "Electronics / Phones", ["iphone", "samsung phone", "pixel phone"]),
    ("Odd \"Quotes\"", QUIRKY, ["wool", "cotton", "linen"]),
    ("Odd \"Quotes\"", 'Odd "Quotes" / 100x Pure', ["silk", "wool", "hemp"]),
]
ADJECTIVES = ["red", "large", "vintage", "small", "modern", "grey", "oak", "used"]


def embed(texts: list[str], dim: int = DIM) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for token in tokenize(text):
            out[row, zlib.crc32(token.encode()) % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def catalogue(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        root, path, nouns = LEAVES[i % len(LEAVES)]
        title = f"{rng.choice(ADJECTIVES)} {rng.choice(nouns)} {rng.choice(ADJECTIVES)} item{i}"
        unknown_place = i % 17 == 0
        rows.append(
            {
                S.PRODUCT_ID: f"p{i}",
                S.TITLE: title,
                S.DESCRIPTION: f"{title}. Collection only, cash on pickup.",
                S.CATEGORY: path,
                S.ROOT_CATEGORY: root,
                S.LEAF_CATEGORY: path,
                S.PRICE: float(rng.integers(5, 500)) if i % 13 else np.nan,
                S.LATITUDE: np.nan if unknown_place else float(rng.uniform(50.0, 58.0)),
                S.LONGITUDE: np.nan if unknown_place else float(rng.uniform(-5.5, 1.5)),
                S.LOCATION: "Leeds, West Yorkshire",
                S.CREATED: "2024-05-01",
            }
        )
    return pd.DataFrame(rows)


def vectors_of(products: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, photo vectors, has_photo): every third listing has no photo."""
    text = (products[S.TITLE] + " " + products[S.DESCRIPTION]).tolist()
    photos = embed(products[S.TITLE].tolist(), PHOTO_DIM)
    has_photo = np.array([int(pid[1:]) % 3 != 0 for pid in products[S.PRODUCT_ID]])
    return embed(text), photos, has_photo


def embedded_searcher(products: pd.DataFrame) -> HybridSearcher:
    embeddings, photos, has_photo = vectors_of(products)
    searcher = HybridSearcher.build(products, embeddings=embeddings, settings=SearchSettings())
    index = VectorIndex(PHOTO_DIM, SearchSettings(), factory="Flat")
    ids = products[S.PRODUCT_ID].tolist()
    index.build([pid for pid, h in zip(ids, has_photo, strict=True) if h], photos[has_photo])
    searcher.photos = index
    return searcher


def milvus_searcher(products: pd.DataFrame, path, collection: str = "t") -> HybridSearcher:
    target = parse_index_uri(f"milvus-lite://{path}?collection={collection}")
    backend = MilvusBackend.open(target, DIM, PHOTO_DIM, "test", SearchSettings())
    embeddings, photos, has_photo = vectors_of(products)
    backend.upsert(products, embeddings, photos, has_photo)
    return HybridSearcher(products, settings=SearchSettings(), backend=backend)


@pytest.fixture(scope="module")
def products() -> pd.DataFrame:
    return catalogue()


@pytest.fixture(scope="module")
def pair(products, tmp_path_factory):
    """(embedded, milvus) searchers over the same listings; the milvus-lite file is closed after."""
    path = tmp_path_factory.mktemp("milvus") / "backends.db"
    milvus = milvus_searcher(products, path)
    yield embedded_searcher(products), milvus
    milvus.backend.close()


def top(frame: pd.DataFrame, k: int = 10) -> list[str]:
    return frame[S.PRODUCT_ID].head(k).tolist()


def overlap(a: list[str], b: list[str]) -> float:
    return len(set(a) & set(b)) / max(len(a), 1)


def tie_overlap(a: pd.DataFrame, b: pd.DataFrame, k: int = 10, tolerance: float = 0.02) -> float:
    """Share of b's top k that are in a's top k, a listing tied (within `tolerance` of the fused
    score) with a's k-th counting as in it: tiny synthetic titles tie often, and ties may
    break either way."""
    scores = a[FUSED_SCORE].to_numpy(float)
    cutoff = scores[min(k, len(scores)) - 1] - tolerance if len(scores) else np.inf
    within = set(a.loc[scores >= cutoff, S.PRODUCT_ID])
    return len(set(top(b, k)) & within) / max(len(top(b, k)), 1)


QUERIES = ["grey sofa", "oak dining table", "mountain bike", "pixel phone", "wool item7", "vintage"]


def test_both_backends_implement_the_protocol(pair):
    embedded, milvus = pair
    assert isinstance(embedded.backend, EmbeddedBackend)
    assert isinstance(embedded.backend, RetrievalBackend) and isinstance(milvus.backend, RetrievalBackend)
    assert milvus.vectors is None and milvus.backend.vector_count() == 120


@pytest.mark.parametrize("query", QUERIES)
def test_dense_lexical_and_hybrid_agree(pair, query):
    embedded, milvus = pair
    vector = embed([query])[0]
    for q_vec, q_text in ((vector, None), (None, query), (vector, query)):
        a = embedded.retrieve(q_vec, q_text, n=40).frame
        b = milvus.retrieve(q_vec, q_text, n=40).frame
        assert tie_overlap(a, b) >= 0.9, (query, q_vec is not None, q_text)
        if q_text is None:  # exact inner product on both: the same order and scores
            assert top(a) == top(b)
            np.testing.assert_allclose(a[SEMANTIC_SCORE], b[SEMANTIC_SCORE], atol=1e-5)


def test_lexical_scores_are_ours(pair):
    """BM25 over our terms, k1/b ours, the (k1 + 1) factor removed: the same scores as bm25s
    (one segment, so Milvus's IDF is over the same documents)."""
    embedded, milvus = pair
    a = embedded.retrieve(None, "grey sofa", n=20).frame.set_index(S.PRODUCT_ID)[LEXICAL_SCORE]
    b = milvus.retrieve(None, "grey sofa", n=20).frame.set_index(S.PRODUCT_ID)[LEXICAL_SCORE]
    shared = a.index.intersection(b.index)
    assert len(shared) >= 15
    np.testing.assert_allclose(a[shared], b[shared], rtol=0.02)


def test_exact_title_is_top_one_on_both(pair, products):
    embedded, milvus = pair
    for row in (4, 33, 71):
        title = products.at[row, S.TITLE]
        vector = embed([title])[0]
        assert top(embedded.retrieve(vector, title, n=5).frame, 1) == [f"p{row}"]
        assert top(milvus.retrieve(vector, title, n=5).frame, 1) == [f"p{row}"]


def test_photo_and_similar_agree(pair, products):
    embedded, milvus = pair
    photos = embed(products[S.TITLE].tolist(), PHOTO_DIM)
    for row in (1, 20, 50):  # listings with a photo: their own photo finds them first
        vector = embed([products.at[row, S.TITLE]])[0]
        a = embedded.retrieve(vector, None, query_photo=photos[row], n=40)
        b = milvus.retrieve(vector, None, query_photo=photos[row], n=40)
        assert a.mode == b.mode == "photo"
        assert top(a.frame, 1) == top(b.frame, 1) == [f"p{row}"]
        assert tie_overlap(a.frame, b.frame) >= 0.9
        sa, sb = embedded.similar_scored(f"p{row}", 40), milvus.similar_scored(f"p{row}", 40)
        assert tie_overlap(sa.rename(columns={SIMILAR_SCORE: FUSED_SCORE}), sb) >= 0.9
        assert f"p{row}" not in top(sb)


FILTERS = [
    Filters(category="home and garden"),
    Filters(category="HOME & GARDEN / sofas"),
    Filters(category=QUIRKY.lower()),
    Filters(category='Odd "Quotes"'),
    Filters(root_category='odd "quotes"'),
    Filters(leaf_category="sports / bikes"),
    Filters(min_price=100.0),
    Filters(max_price=50.0),
    Filters(min_price=20.0, max_price=200.0, category="Sports"),
    Filters(latitude=53.8, longitude=-1.55, max_km=150.0),
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: repr({k: v for k, v in vars(f).items() if v is not None}))
def test_every_filter_returns_the_same_listings(pair, products, filters):
    embedded, milvus = pair
    allowed = set(embedded.allowed_ids(filters))
    assert allowed, "a filter that keeps nothing tests nothing"
    vector = embed(["vintage wool sofa bike"])[0]
    for q_vec, q_text in ((vector, None), (None, "vintage wool sofa bike"), (vector, "vintage")):
        a = top(embedded.retrieve(q_vec, q_text, filters, n=len(products)).frame, 200)
        b = top(milvus.retrieve(q_vec, q_text, filters, n=len(products)).frame, 200)
        assert set(b) <= allowed
        assert set(a) == set(b)
        if q_text is None:
            assert len(b) == len(allowed)  # every listing that passes: none lost by over-fetching


def test_quirky_category_is_matched_literally(products):
    """The quote, % and _ of a category are literal: "100% _Pure_" does not match "100x Pure"."""
    selection = filter_expression(Filters(category=QUIRKY))
    assert '\\"quotes\\"' in selection.expression and "array_contains" in selection.expression
    assert set(products.loc[products[S.CATEGORY] == QUIRKY, S.PRODUCT_ID])  # the data has both


def test_distance_filter_is_exact(pair, products):
    _, milvus = pair
    filters = Filters(latitude=53.8, longitude=-1.55, max_km=120.0)
    found = top(milvus.retrieve(embed(["sofa"])[0], None, filters, n=120).frame, 120)
    row = products.set_index(S.PRODUCT_ID).loc[found]
    km = haversine_km(53.8, -1.55, row[S.LATITUDE].to_numpy(), row[S.LONGITUDE].to_numpy())
    assert len(found) and (np.asarray(km) <= 120.0).all()


def test_upsert_remove_and_unknown_ids(products, tmp_path):
    searcher = milvus_searcher(products.head(30), tmp_path / "writes.db")
    backend = searcher.backend
    try:
        changed = products.head(30).iloc[[5]].copy()
        changed[S.TITLE] = "zebra lamp"
        changed[S.DESCRIPTION] = "a zebra lamp"
        vec = embed(["zebra lamp"])
        searcher.add_products(changed, vec)
        assert top(searcher.retrieve(None, "zebra", n=5).frame) == ["p5"]
        assert top(searcher.retrieve(vec[0], None, n=1).frame) == ["p5"]
        assert backend.rows(["p5", "nope"])[S.TITLE].tolist() == ["zebra lamp"]
        assert searcher.remove_products(["p5", "nope"]) == 1
        assert backend.remove(["p5"]) == 0
        assert searcher.retrieve(None, "zebra", n=5).frame.empty
        assert "p5" not in top(searcher.retrieve(vec[0], None, n=30).frame, 30)
        assert backend.count() == 29 and not backend.contains("p5") and backend.contains("p6")
        assert np.isnan(backend.dense_scores(vec[0], ["nope"])).all()
        assert backend.lexical_scores("zebra", ["nope", "p6"]).tolist() == [0.0, 0.0]
        with pytest.raises(KeyError):
            backend.vectors_of(["nope"])
        assert sorted(backend.product_ids()) == sorted(f"p{i}" for i in range(30) if i != 5)
    finally:
        backend.close()


def fresh_scores(backend, vector, text, ids):
    """Cosines and BM25 scores of `ids` asked one call each on a thread of their own (no
    query kept from an earlier search there): the engine's answer without any shortcut."""
    out = {}
    worker = threading.Thread(
        target=lambda: out.update(dense=backend.dense_scores(vector, ids), lexical=backend.lexical_scores(text, ids))
    )
    worker.start()
    worker.join()
    return out["dense"], out["lexical"]


@pytest.mark.parametrize("n", [8, 200])  # some candidates scored by searches sent ahead; every one kept
@pytest.mark.parametrize("filters", [None, Filters(category="home and garden"), FILTERS[-1]], ids=["none", "category", "distance"])
def test_a_hybrid_querys_scores_are_the_engines_own(products, tmp_path_factory, n, filters):
    """The scores a hybrid query's candidates carry (kept from its searches, sent ahead, or
    judged absent because a search returned everything) equal the engine's, asked afresh; a
    listing without an embedding found by its words has no cosine (NaN), and then one is
    upserted with an embedding and the next query sees it."""
    path = tmp_path_factory.mktemp("scores") / "scores.db"
    searcher = milvus_searcher(products, path)
    backend = searcher.backend
    try:
        extra = products.iloc[[3]].assign(**{S.PRODUCT_ID: "bare", S.TITLE: "grey sofa without embedding"})
        backend.upsert(extra, None)
        query = "grey sofa"
        vector = embed([query])[0]
        for has_embedding in (False, True):
            if has_embedding:  # now with one: seen by the next query
                backend.upsert(extra, embed([extra[S.TITLE].iloc[0]]))
            frame = searcher.retrieve(vector, query, filters, n=n).frame
            assert len(frame)
            ids = frame[S.PRODUCT_ID].tolist()
            dense, lexical = fresh_scores(backend, vector, query, ids)
            np.testing.assert_allclose(frame[SEMANTIC_SCORE].to_numpy(float), dense, atol=1e-5)
            np.testing.assert_allclose(frame[LEXICAL_SCORE].to_numpy(float), lexical, rtol=1e-5)
            if filters is None and n == 200:
                cosine = frame.set_index(S.PRODUCT_ID).at["bare", SEMANTIC_SCORE]
                assert np.isnan(cosine) != has_embedding
    finally:
        backend.close()


def test_a_word_written_by_another_client_is_known_at_once(products, tmp_path):
    """Known terms are cached only when found: a word no listing had is asked again, so a
    listing another client (another process in production) writes is found by the next query."""
    path = tmp_path / "terms.db"
    searcher = milvus_searcher(products.head(20), path)
    try:
        assert searcher.retrieve(None, "zanzibarite", n=5).mode == "none"
        searcher.backend.upsert(products.iloc[[2]].assign(**{S.TITLE: "zanzibarite ring"}), embed(["zanzibarite ring"]))
        found = searcher.retrieve(None, "zanzibarite", n=5)
        assert found.mode == "lexical" and top(found.frame) == ["p2"]
    finally:
        searcher.backend.close()


def test_new_ids_are_inserted_and_a_twice_written_id_is_one_hit(products, tmp_path):
    """A new id is inserted (no delete first), an old one upserted; should two processes insert
    the same new id at once, searches still show it once and its next upsert leaves one row."""
    searcher = milvus_searcher(products.head(20), tmp_path / "twice.db")
    backend = searcher.backend
    try:
        row = products.iloc[[3]].assign(**{S.TITLE: "quokka lamp", S.DESCRIPTION: "quokka"})
        backend.client.insert(backend.collection, backend.entities(row, embed(["quokka lamp"])))  # the other process
        vector = embed(["quokka lamp"])[0]
        for _ in range(2):
            assert top(searcher.retrieve(vector, "quokka lamp", n=5).frame, 5).count("p3") == 1
            assert backend.lexical_search("quokka", 5, None) == backend.lexical_search("quokka", 5, None)[:1]
            backend.upsert(row, embed(["quokka lamp"]))
        held = backend.client.query(backend.collection, filter='product_id == "p3"', output_fields=["count(*)"])
        assert held[0]["count(*)"] == 1 and backend.count() == 20
        backend.upsert(products.iloc[[25]], embed(["new one"]))  # a new id: inserted
        assert backend.count() == 21 and backend.contains("p25")
    finally:
        backend.close()


def test_rows_carry_what_results_need(pair):
    _, milvus = pair
    rows = milvus.backend.rows(["p13", "p17", "p1"])
    assert rows[S.PRODUCT_ID].tolist() == ["p13", "p17", "p1"]
    assert np.isnan(rows[S.PRICE].iloc[0]) and np.isnan(rows[S.LATITUDE].iloc[1])  # none stored as none
    assert rows[S.CATEGORY].iloc[2] == LEAVES[1][1] and rows[S.CREATED].iloc[2] == pd.Timestamp("2024-05-01")


def test_a_collection_of_other_dims_is_refused(products, tmp_path):
    path = tmp_path / "dims.db"
    target = parse_index_uri(f"milvus-lite://{path}?collection=shared")
    MilvusBackend.open(target, DIM, PHOTO_DIM, "a", SearchSettings()).close()
    with pytest.raises(DataError, match=r"--index-uri.*embedding vectors are 32-d, this bundle.s 16-d"):
        MilvusBackend.open(target, 16, PHOTO_DIM, "a", SearchSettings())


@pytest.mark.parametrize(
    ("uri", "kind", "address", "collection"),
    [
        (None, "embedded", None, None),
        ("  ", "embedded", None, None),
        ("milvus://localhost", "milvus", "http://localhost:19530", None),
        ("milvus://10.0.0.5:19531?collection=prod", "milvus", "http://10.0.0.5:19531", "prod"),
        ("milvus://root:s3cret@db:19530", "milvus", "http://root:s3cret@db:19530", None),
        ("milvus-lite:///tmp/x/a.db", "milvus-lite", "/tmp/x/a.db", None),
        ("/tmp/x/index.db", "milvus-lite", "/tmp/x/index.db", None),
    ],
)
def test_index_uri_parsing(uri, kind, address, collection):
    target = parse_index_uri(uri)
    assert (target.kind, target.address, target.collection) == (kind, address, collection)
    assert "s3cret" not in target.shown


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("faiss://x", "expected milvus://host:port"),
        ("milvus://", "milvus://host:port"),
        ("milvus://h:99999", "port"),
        ("milvus://u:hunter2@h:1?x=1", "unknown option"),
        ("milvus://h?collection=1bad", "collection name"),
        ("/tmp/bad name.db", "file name"),
        ("milvus-lite://rel/a.db", "absolute"),
        ("index.sqlite", "expected"),
    ],
)
def test_bad_index_uris_are_one_line_errors(uri, says):
    with pytest.raises(DataError, match=says) as error:
        parse_index_uri(uri)
    message = str(error.value)
    assert "--index-uri / FBMARKET_INDEX_URI" in message and "\n" not in message
    assert "hunter2" not in message


def test_unreachable_server_names_the_setting():
    target = parse_index_uri("milvus://127.0.0.1:9?collection=x")  # nothing listens on port 9
    with pytest.raises(DataError, match=r"--index-uri / FBMARKET_INDEX_URI: cannot open the search engine"):
        MilvusBackend.open(target, DIM, PHOTO_DIM, "v", SearchSettings())


def test_index_uri_comes_from_the_environment_and_is_saved_masked(monkeypatch):
    from fbmarket.config import Settings

    monkeypatch.setenv("FBMARKET_INDEX_URI", "milvus://root:hunter2@db:19530")
    settings = Settings().with_environment()
    assert settings.index_uri == "milvus://root:hunter2@db:19530"
    assert "hunter2" not in str(settings.to_json()) and "hunter2" in settings.secrets()
