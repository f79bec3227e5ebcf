"""BM25 lexical index: tokens, ranking, live add/remove, save/load, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.search import lexical
from fbmarket.search import terms as search_terms
from fbmarket.search.index import SMALL_LOOKUP, IdSelection, IndexLoadError
from fbmarket.search.lexical import LexicalIndex, tokenize

TITLES = [
    "Oak dining table with four chairs",
    "Children's bike 16 inch",
    "Mountain bike, 21 gears",
    "Leather sofa, three seater",
    "Sofa bed in grey fabric",
    "Samsung Galaxy S10 phone",
    "iPhone 11 64GB unlocked",
    "Garden table and benches",
    "Kids toys bundle",
    "Office desk chair",
]
DESCRIPTIONS = [
    "Solid oak, seats six. Collection only.",
    "Good condition, stabilisers included.",
    "Aluminium frame, disc brakes, ridden twice.",
    "Brown leather, some wear on the arms.",
    "Pulls out into a double bed.",
    "Cracked screen but works.",
    "Battery health 90 percent, boxed.",
    "Weathered teak, needs oiling.",
    "Lego, dolls and a toy kitchen.",
    "Adjustable height, black mesh.",
]


def make_index(settings: SearchSettings | None = None) -> LexicalIndex:
    index = LexicalIndex(settings)
    index.build([f"p{i}" for i in range(len(TITLES))], TITLES, DESCRIPTIONS)
    return index


def random_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(300)]
    weights = 1 / np.arange(1, 301)
    weights /= weights.sum()
    titles = [" ".join(rng.choice(words, 4, p=weights)) for _ in range(n)]
    descriptions = [" ".join(rng.choice(words, 15, p=weights)) for _ in range(n)]
    return [f"r{i}" for i in range(n)], titles, descriptions


def test_tokenize_lowercases_stems_plurals_and_drops_stopwords():
    assert tokenize("The Chairs and TABLES of Children's bikes") == tokenize("chair table child bike")
    assert tokenize("The Chairs and TABLES of Children's bikes") == ["chair", "table", "child", "bike"]
    assert tokenize("Batteries, glasses, bus, 1990s") == ["battery", "glass", "bus", "1990"]
    assert tokenize("Café crème — ½ price!") == ["café", "crème", "1", "2", "price"]
    assert tokenize(None) == [] and tokenize(float("nan")) == []


# Issue 14, kind 5: plural and singular must meet. The examples were "boxes" -> "boxe" and
# "dresses" -> "dresse" (Harman's S-stemmer); the rest are the same kind: regular -es/-ies/-ves
# plurals, irregular ones, words whose singular ends in -s, and plurals of words no table knows.
PLURALS = [
    ("boxes", "box"),
    ("dresses", "dress"),
    ("watches", "watch"),
    ("benches", "bench"),
    ("brushes", "brush"),
    ("glasses", "glass"),
    ("buses", "bus"),
    ("lenses", "lens"),
    ("vases", "vase"),
    ("crosses", "cross"),
    ("cookies", "cookie"),
    ("potatoes", "potato"),
    ("halves", "half"),
    ("xboxes", "xbox"),
    ("batteries", "battery"),
    ("ladies", "lady"),
    ("knives", "knife"),
    ("shelves", "shelf"),
    ("wolves", "wolf"),
    ("leaves", "leaf"),
    ("children", "child"),
    ("men", "man"),
    ("women", "woman"),
    ("mens", "men's"),
    ("feet", "foot"),
    ("teeth", "tooth"),
    ("mice", "mouse"),
    ("cacti", "cactus"),
    ("comics", "comic"),
    ("ottomans", "ottoman"),
    ("chairs", "chair"),
    ("sofas", "sofa"),
    ("iphones", "iphone"),
    ("tvs", "tv"),
    ("ps4s", "ps4"),
]


@pytest.mark.parametrize(("plural", "singular"), PLURALS)
def test_plural_and_singular_normalise_to_the_same_term(plural, singular):
    assert tokenize(plural) == tokenize(singular) == tokenize(plural.upper())
    assert len(tokenize(plural)) == 1


def test_words_that_only_look_plural_keep_their_meaning():
    assert tokenize("news") == ["news"] and tokenize("series") == ["series"]
    assert tokenize("bus glass tennis cactus gas") == ["bus", "glass", "tennis", "cactus", "gas"]
    assert tokenize("heating gaming fitted") == ["heating", "gaming", "fitted"]  # no stemming beyond number
    assert tokenize("4s") == ["4s"]  # iPhone 4S, not "4"


@pytest.mark.parametrize(
    ("plural", "singular"), [("boxes", "box"), ("dresses", "dress"), ("knives", "knife")]
)
def test_a_plural_query_finds_the_singular_listing_first_and_the_reverse(plural, singular):
    """Issue 14: "boxes" ranked the listing titled "box" 57th with lexical score 0."""
    titles = [f"Storage {singular}", "Garden shed", "Wooden table", f"Vintage {singular} set"]
    descriptions = ["Good condition.", "Needs paint.", "Seats four.", "Collection only."]
    plural_titles = [t.replace(singular, plural) for t in titles]
    for index_titles, query in ((titles, plural), (plural_titles, singular)):
        index = LexicalIndex()
        index.build(["a", "b", "c", "d"], index_titles, descriptions)
        hits = index.search(query, 4)
        assert {pid for pid, _ in hits} == {"a", "d"}
        assert all(score > 0 for _, score in hits)
        assert index.score(query, ["a"])[0] > 0


def test_exact_title_ranks_first_and_plurals_match():
    index = make_index()
    assert index.search("leather sofa three seater", 3)[0][0] == "p3"
    assert index.search("Mountain bike, 21 gears", 3)[0][0] == "p2"
    assert {pid for pid, _ in index.search("bikes", 5)} == {"p1", "p2"}
    scores = [score for _, score in index.search("table", 5)]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_title_words_outweigh_description_words():
    index = LexicalIndex()
    index.build(
        ["in_title", "in_description"], ["red kettle", "blue toaster"], ["blue", "a red kettle mentioned"]
    )
    assert index.search("kettle", 2)[0][0] == "in_title"


def test_unknown_or_stopword_queries_return_nothing():
    index = make_index()
    assert index.search("xylophone zeppelin", 5) == []
    assert index.search("the and of", 5) == []
    assert index.search("!!!", 5) == []
    assert LexicalIndex().search("sofa", 5) == []


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_a_clear_error(query):
    with pytest.raises(ValueError, match="query is empty"):
        make_index().search(query, 5)


def test_bad_query_type_and_k_are_clear_errors():
    index = make_index()
    with pytest.raises(ValueError, match="query must be text"):
        index.search(None, 5)
    for k in (0, -3, 1001, 1.5):
        with pytest.raises(ValueError, match="k must be"):
            index.search("sofa", k)


def test_added_listing_is_searchable_at_once_and_removed_never_returns():
    index = make_index()
    index.add(["new"], ["Vintage record player"], ["Plays 33 and 45, with speakers."])
    assert index.pending_changes == 1
    assert index.search("record player", 3)[0][0] == "new"

    assert index.remove(["p3", "new", "missing"]) == 2
    assert "p3" not in {pid for pid, _ in index.search("leather sofa", 10)}
    assert index.search("record player", 3) == []
    assert len(index) == len(TITLES) - 1


def test_delta_scores_use_the_same_formula_as_bm25s():
    ids, titles, descriptions = random_corpus(300)
    index = LexicalIndex()
    index.build(ids, titles, descriptions)
    # a copy in the delta has the same terms and length as the original in the main segment
    index.add(["copy"], [titles[7]], [descriptions[7]])
    query = " ".join(titles[7].split()[:2])
    original, copy = index.score(query, [ids[7], "copy"])
    assert original > 0 and copy == pytest.approx(original, rel=1e-5)


def test_compacted_index_equals_a_fresh_build():
    ids, titles, descriptions = random_corpus(400)
    index = LexicalIndex()
    index.build(ids[:300], titles[:300], descriptions[:300])
    index.add(ids[300:], titles[300:], descriptions[300:])
    index.remove(ids[:40])
    index.add(["r5"], ["brand new title words"], ["word1"])  # replaces a removed id
    index.compact()
    assert index.pending_changes == 0

    fresh = LexicalIndex()
    keep = list(range(40, 400))
    fresh.build(
        [ids[i] for i in keep] + ["r5"],
        [titles[i] for i in keep] + ["brand new title words"],
        [descriptions[i] for i in keep] + ["word1"],
    )
    for query in ["word0 word3", "word17", "brand title", "word250 word1"]:
        got, expected = index.search(query, 20), fresh.search(query, 20)
        assert [p for p, _ in got] == [p for p, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)


def test_many_writes_fold_the_delta_into_bm25s():
    ids, titles, descriptions = random_corpus(lexical.REBUILD_MIN + 50)
    index = LexicalIndex()
    index.build(ids[:10], titles[:10], descriptions[:10])
    for start in range(10, len(ids), 60):
        index.add(ids[start : start + 60], titles[start : start + 60], descriptions[start : start + 60])
    assert index.pending_changes <= lexical.REBUILD_MIN
    assert len(index) == len(ids)


def test_replacing_a_listing_replaces_its_text():
    index = make_index()
    index.add(["p5"], ["Nokia 3310"], ["Indestructible."])
    assert "p5" not in {pid for pid, _ in index.search("samsung galaxy", 10)}
    assert index.search("nokia", 1)[0][0] == "p5"
    assert len(index) == len(TITLES)


def test_a_listing_replaced_again_and_again_is_one_document():
    """A main-segment listing replaced once lives in the delta; replacing it again (a second
    edit) or removing it must drop that delta entry, not mark the dead main row a second time:
    the id twice in the delta broke every position lookup (pandas InvalidIndexError) and
    with it the price evidence and the Sell page."""
    index = make_index()
    removed_before = index.pending_changes
    for version, title in enumerate(["Nokia 3310", "Nokia 3310 boxed", "Nokia 3310 boxed, charger"]):
        index.add(["p5"], [title], [f"Version {version}."])
        assert index.search("nokia", 5)[0][0] == "p5"
        assert len(index) == len(TITLES)
        assert index.pending_changes == removed_before + 2  # one dead main row, one delta entry
    many = [f"p{i}" for i in range(len(TITLES))] * (SMALL_LOOKUP // len(TITLES) + 1)  # the pandas path
    assert (index.positions(many) >= 0).all()
    assert index.score("nokia", ["p5"])[0] > 0
    index.remove(["p5"])
    assert "p5" not in index and "p5" not in {pid for pid, _ in index.search("nokia", 10)}
    assert index.pending_changes == removed_before + 1
    index.compact()
    assert len(index) == len(TITLES) - 1


def test_allowed_restricts_results():
    index = make_index()
    got = index.search("table", 10, allowed=["p7", "p9", "unknown"])
    assert [pid for pid, _ in got] == ["p7"]
    assert index.search("table", 10, allowed=[]) == []


def test_score_of_unknown_or_non_matching_listings_is_zero():
    index = make_index()
    scores = index.score("sofa", ["p3", "p0", "nope"])
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0


def test_save_load_round_trip_keeps_results_and_takes_more_writes(tmp_path):
    index = make_index()
    index.add(["new"], ["Record player"], ["Vinyl"])
    index.remove(["p0"])
    path = tmp_path / "lexical.json"
    index.save(path)
    loaded = LexicalIndex.load(path)
    assert len(loaded) == len(index)
    for query in ["sofa bed", "bike", "record", "oak table", "phone"]:
        # the loaded index is compacted: same matches; scores may differ by the stale IDF
        assert {p for p, _ in loaded.search(query, 10)} == {p for p, _ in index.search(query, 10)}
    index.compact()
    assert loaded.search("sofa bed", 10) == index.search("sofa bed", 10)
    loaded.add(["later"], ["Bread maker"], [""])
    assert loaded.search("bread", 1)[0][0] == "later"


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(IndexLoadError, match="no lexical index"):
        LexicalIndex.load(tmp_path / "missing.json")
    path = tmp_path / "lexical.json"
    make_index().save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(IndexLoadError, match="unreadable or corrupt"):
        LexicalIndex.load(path)
    make_index().save(path)
    with pytest.raises(IndexLoadError, match="title_weight"):
        LexicalIndex.load(path, SearchSettings(title_weight=3))


def legacy_file(path, titles: list[str], descriptions: list[str], weight: int = 2) -> None:
    """A lexical.json as saved before the normalisation changed (Harman's S-stemmer)."""

    def harman(token: str) -> str:
        if len(token) <= 3 or not token.endswith("s") or token.isdigit():
            return token
        if token.endswith("ies") and not token.endswith(("eies", "aies")):
            return token[:-3] + "y"
        if token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
            return token[:-1]
        return token[:-1] if not token.endswith(("us", "ss")) else token

    def terms(text: str) -> list[str]:
        words = search_terms._WORD.findall(text.lower())
        return [harman(w) for w in words if w not in lexical.STOPWORDS]

    vocab: dict[str, int] = {}
    docs = []
    for title, description in zip(titles, descriptions, strict=True):
        doc = terms(title) * weight + terms(description)
        docs.append([vocab.setdefault(t, len(vocab)) for t in doc])
    path.write_text(
        json.dumps(
            {
                "format": lexical.FORMAT,
                "version": 1,
                "title_weight": weight,
                "stemmer": "harman-s",
                "vocab": list(vocab),
                "product_ids": [f"p{i}" for i in range(len(titles))],
                "docs": docs,
            }
        )
    )


LEGACY_TITLES = ["Storage boxes", "Party dresses", "Kitchen knives", "Oak table", "Camera lens"]
LEGACY_DESCRIPTIONS = ["Set of three.", "Size 10.", "Sharp.", "Seats four.", "50 mm."]


def test_an_index_saved_with_the_old_stemmer_is_migrated_on_load(tmp_path):
    path = tmp_path / "lexical.json"
    legacy_file(path, LEGACY_TITLES, LEGACY_DESCRIPTIONS)
    assert "boxe" in json.loads(path.read_text())["vocab"]
    loaded = LexicalIndex.load(path)  # no products table: stored terms re-normalised
    assert len(loaded) == 5
    assert loaded.search("box", 2)[0][0] == "p0"
    assert loaded.search("dress", 2)[0][0] == "p1"
    assert loaded.search("knife", 2)[0][0] == "p2"
    assert loaded.search("oak tables", 2)[0][0] == "p3"
    loaded.save(path)  # saved again: today's normalisation, recorded
    assert json.loads(path.read_text())["normalisation"] == lexical.normalisation()
    assert LexicalIndex.load(path).search("boxes", 1)[0][0] == "p0"


def test_an_old_index_is_rebuilt_exactly_from_the_products_table(tmp_path):
    path = tmp_path / "lexical.json"
    legacy_file(path, LEGACY_TITLES, LEGACY_DESCRIPTIONS)
    products = pd.DataFrame(
        {
            S.PRODUCT_ID: [f"p{i}" for i in range(5)],
            S.TITLE: LEGACY_TITLES,
            S.DESCRIPTION: LEGACY_DESCRIPTIONS,
        }
    )
    # Harman cut "lens" to "len", which cannot be told from a word "len" term by term
    assert LexicalIndex.load(path).search("lens", 2) == []
    loaded = LexicalIndex.load(path, products=products)  # the table: rebuilt exactly
    assert loaded.search("lenses", 2)[0][0] == "p4"
    fresh = LexicalIndex.from_products(products)
    assert loaded.search("storage box", 4) == fresh.search("storage box", 4)
    # a different title weight is rebuilt from the table too instead of refused
    legacy_file(path, LEGACY_TITLES, LEGACY_DESCRIPTIONS, weight=3)
    assert LexicalIndex.load(path, products=products).search("box", 1)[0][0] == "p0"


def test_from_products_reads_the_clean_table():
    products = pd.DataFrame(
        {
            S.PRODUCT_ID: ["a", "b"],
            S.TITLE: ["Red kettle", "Blue toaster"],
            S.DESCRIPTION: [None, "Two slots"],
        }
    )
    index = LexicalIndex.from_products(products)
    assert index.search("toaster", 5)[0][0] == "b"
    with pytest.raises(S.SchemaError, match="description"):
        LexicalIndex.from_products(products.drop(columns=[S.DESCRIPTION]))


def test_positions_selection_matches_id_filter_and_goes_stale():
    index = make_index()
    index.add(["new"], ["Garden table"], ["Metal"])
    wanted = ["p7", "p0", "new", "gone"]
    pos = index.positions(wanted)
    assert pos[-1] == -1 and (pos[:3] >= 0).all()
    selection = IdSelection(pos[pos >= 0], index.version)
    assert index.search("table", 10, selection) == index.search("table", 10, wanted)
    index.remove(["p0"])
    with pytest.raises(ValueError, match="stale IdSelection"):
        index.search("table", 10, selection)
