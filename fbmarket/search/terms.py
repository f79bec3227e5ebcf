"""Listing text -> BM25 index terms, the same for documents and queries.

Tokens: NFKC-normalised, lower-cased runs of letters/digits, possessive "'s" dropped,
Lucene's English stopwords removed (bm25s.stopwords.STOPWORDS_EN), then `normalise`:
each word becomes its singular, by WordNet's noun tables as spaCy ships them in
`spacy-lookups-data` (the text branch's dependency; nothing is downloaded): irregular
plurals from the exception table (knives -> knife, children -> child, men -> man),
regular ones by its suffix rules when the result is a known noun (boxes -> box,
dresses -> dress, shelves -> shelf, batteries -> battery, buses -> bus), and plurals of
words no table knows by their spelling (iphones -> iphone). The same function
normalises documents and queries, so "boxes" finds "box" and the reverse. It replaced
Harman's S-stemmer, which split -xes/-sses/-ves plurals from their singulars ("boxes"
-> "boxe", "dresses" -> "dresse"; issue 14). Measured on the dev listings
(benchmarks/lexical_normalisation.py, 300 listings x 3 samples, own listing in the top
10 for a 1-3-word fragment of its title): plain fragments 0.837/0.830/0.823 before,
0.837/0.830/0.817 now; the same fragments with their nouns' number flipped
0.813/0.793/0.790 before, 0.837/0.823/0.813 now. Snowball (PyStemmer) on top of the
singular matched plurals too but lost more on plain fragments (0.830/0.827/0.813): it
also folds "heating" into "heat", "gaming" into "game", "fitted" into "fit".
`normalisation()` names the procedure in every saved index, and an index
saved with another one is rebuilt (or migrated) on load.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

import bm25s
import numpy as np

NORMALISATION_NAME = "wordnet-noun-singular/1"  # bump when `singular` changes its output
LEGACY_NORMALISATION = "harman-s"  # what indexes saved before the normalisation was recorded used

STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)
_POSSESSIVE = re.compile(r"['’]s\b")
_WORD = re.compile(r"[^\W_]+")


_DIGIT_PLURAL = re.compile(r"^(\w*\d)s$")  # "1990s" -> "1990", "ps4s" -> "ps4" (not "4s": too short)
_NOT_PLURAL = ("ss", "us", "is")  # glass, bus, tennis: an -s that is not a plural ending
_SIBILANT_PLURALS = ("sses", "shes", "ches", "xes", "zes")


@dataclass(frozen=True)
class _NounTables:
    nouns: frozenset[str]  # WordNet's noun lemmas
    irregular: dict[str, list[str]]  # irregular form -> its lemmas (knives -> knife)
    rules: tuple[tuple[str, str], ...]  # suffix rules, least specific first ("s" -> "", "ses" -> "s", ...)
    lookup: Mapping[str, str]  # spaCy's POS-free lookup lemmas (the text branch's tokeniser uses them)


@functools.lru_cache(maxsize=1)
def _noun_tables() -> _NounTables:
    """WordNet's noun tables and spaCy's lookup lemmas, as spacy-lookups-data ships them."""
    from spacy.lookups import load_lookups

    names = ["lemma_index", "lemma_exc", "lemma_rules", "lemma_lookup"]
    lookups = load_lookups("en", names)
    irregular = {
        word: [form for form in forms if form.isalpha()]
        for word, forms in lookups.get_table("lemma_exc")["noun"].items()
        if any(form.isalpha() for form in forms)
    }
    return _NounTables(
        nouns=frozenset(lookups.get_table("lemma_index")["noun"]),
        irregular=irregular,
        rules=tuple((old, new) for old, new in lookups.get_table("lemma_rules")["noun"]),
        lookup=lookups.get_table("lemma_lookup"),  # a spaCy Table: keyed by string hashes, get() by string
    )


def _candidates(word: str, tables: _NounTables) -> list[str]:
    """Singulars the suffix rules allow that are known nouns (or irregular plurals: "mens" -> "men")."""
    forms = []
    for old, new in tables.rules:
        if word.endswith(old):
            form = word[: len(word) - len(old)] + new
            if form and (form in tables.nouns or form in tables.irregular) and form not in forms:
                forms.append(form)
    return forms


def _spelling_singular(word: str) -> str:
    """English plural spelling undone, for words no table knows ("iphones", "xboxes")."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(_SIBILANT_PLURALS):
        return word[:-2]
    if word.endswith("s") and not word.endswith(_NOT_PLURAL) and len(word) > 3:
        return word[:-1]
    return word


@functools.lru_cache(maxsize=200_000)
def singular(word: str) -> str:
    """A (lower-case) word's singular if it is a plural noun, else the word itself.

    The procedure of spaCy's rule lemmatiser for nouns, over WordNet's tables as
    spacy-lookups-data ships them, with three changes for search terms: a word that
    ends in -ss/-us/-is is not a regular plural ("bus", "glass"; spaCy gives "bu"); when
    two suffix rules give known nouns, a singular ending in -ss wins ("crosses" ->
    "cross"), then for -ses words the text branch's lookup lemma ("lenses" -> "lens",
    "vases" -> "vase"), then the least specific rule ("cookies" -> "cookie", not "cooky";
    spaCy takes the most specific); and plurals of words no table knows
    lose their plural spelling ("iphones" -> "iphone", "xboxes" -> "xbox"). Irregular
    forms come from the exception table ("knives" -> "knife", "children" -> "child");
    where it lists several, the one a suffix rule also gives ("leaves" -> "leaf").
    Known limitation: "axes" -> "ax" (WordNet lists ax and axis), so it does not meet "axe".
    """
    if len(word) < 3 or not word.isalpha():
        match = _DIGIT_PLURAL.match(word) if len(word) > 3 else None
        return match.group(1) if match else word
    tables = _noun_tables()
    forms = _candidates(word, tables)
    listed = tables.irregular.get(word)
    if listed:
        regular = [form for form in forms if form in listed]
        return regular[-1] if regular else listed[0]
    if word.endswith(_NOT_PLURAL):
        return word
    if forms:
        if len(forms) > 1:  # e.g. crosses: crosse/cross; lenses: lense/lens; cookies: cookie/cooky
            lookup = tables.lookup.get(word) if word.endswith("ses") else None
            forms.sort(key=lambda form: (not form.endswith("ss"), form != lookup))  # stable: rule order
        form = forms[0]
        return singular(form) if form in tables.irregular else form  # "mens" -> "men" -> "man"
    if word in tables.nouns:
        return word  # "news", "series": nouns that end in -s without being plurals
    form = _spelling_singular(word)
    return singular(form) if form != word else word  # "womens" -> "women" -> "woman"


def normalise(word: str) -> str:
    """One index term per word: its singular, so that a plural and its singular always meet.

    Used for documents and queries alike. No stemming beyond number: a Snowball stemmer
    on top also folded "heating" into "heat", "gaming" into "game", "fitted" into "fit",
    which cost known-item recall on the dev data (benchmarks/lexical_normalisation.py;
    module docstring).
    """
    return singular(word)


def normalisation() -> str:
    """What produced the index terms; a saved index made by anything else is re-normalised."""
    return f"{NORMALISATION_NAME}(spacy-lookups-data {metadata.version('spacy-lookups-data')})"


def tokenize(text: object) -> list[str]:
    """Text -> index terms (non-strings and NaN give no terms)."""
    if not isinstance(text, str):
        return []
    text = _POSSESSIVE.sub("", unicodedata.normalize("NFKC", text).lower())
    return [normalise(word) for word in _WORD.findall(text) if word not in STOPWORDS]


def check_query(query: object) -> str:
    """A search string must have some non-space text; the message says what is wrong."""
    if not isinstance(query, str):
        raise ValueError(f"query must be text, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: type at least one word")
    return query


def renormalise(terms: list[str], docs: list[np.ndarray], stored: str) -> tuple[list[str], list[np.ndarray]]:
    """Stored terms of another normalisation -> today's terms (merged where they now meet)."""
    vocab: dict[str, int] = {}
    convert = _from_harman if stored == LEGACY_NORMALISATION else normalise
    remap = np.fromiter(
        (vocab.setdefault(convert(term), len(vocab)) for term in terms), dtype=np.int32, count=len(terms)
    )
    return list(vocab), [remap[doc] for doc in docs]


def _from_harman(term: str) -> str:
    """A Harman S-stem -> today's term. The stem lost at most a final "s" ("boxes" -> "boxe",
    "knives" -> "knive"), so when stem + "s" is a plural today, its singular is the term."""
    if term.endswith("s"):
        return normalise(term)  # Harman kept it whole (bus, glass)
    plural = normalise(term + "s")
    return plural if plural != term + "s" else normalise(term)
