"""BM25 term normalisation on the real dev listings: Harman's S-stemmer (before issue 14) vs today's.

For each of N sampled listings, a 1-3-word run of its own title is searched over the
whole catalogue (BM25 over title + description, as `LexicalIndex` serves it) and we
count whether the listing itself comes back in the top 10 (known-item recall@10) and
its reciprocal rank. Two query sets:

* `fragment`: the words as they are in the title (checks that the new normalisation
  does not hurt ordinary searches);
* `number_flipped`: the same fragment with each noun's grammatical number flipped
  (plural -> singular by spaCy's POS-free lookup table, singular -> plural by the
  regular English spelling rules): what a buyer typing "boxes" for a listing titled
  "box" does. The flipping is deliberately independent of the normaliser under test.

Also measured, when PyStemmer is installed: the Snowball English stemmer alone and on top of
today's normaliser (the alternatives considered for issue 14).

Usage: .venv/bin/python benchmarks/lexical_normalisation.py [--data DIR] [--n 300] [--seeds 0 1 2]
Skips with a message (exit 0) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from harness import DEV_DATA, REPO, RESULTS, write_json

from fbmarket.config import DataSettings
from fbmarket.data import schema as S
from fbmarket.data.clean import clean_products
from fbmarket.search import lexical, terms

DEFAULT_DATA = DEV_DATA
DEFAULT_OUT = RESULTS / "lexical_normalisation.json"
K = 10


def harman_s(token: str) -> str:
    """The normaliser before issue 14 (lexical.stem then): Harman's S-stemmer."""
    if len(token) <= 3 or not token.endswith("s") or token.isdigit():
        return token
    if token.endswith("ies") and not token.endswith(("eies", "aies")):
        return token[:-3] + "y"
    if token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
        return token[:-1]
    if not token.endswith(("us", "ss")):
        return token[:-1]
    return token


NORMALISERS: dict[str, Callable[[str], str]] = {"harman_s (old)": harman_s, "new": terms.normalise}
try:  # the alternatives considered (PyStemmer is not a dependency: measured when installed)
    import Stemmer

    _snowball = Stemmer.Stemmer("english")
    NORMALISERS["snowball"] = _snowball.stemWord
    NORMALISERS["new + snowball"] = lambda word: _snowball.stemWord(terms.singular(word))
except ImportError:
    pass


class Flipper:
    """Flip a noun's grammatical number, independently of the normaliser being measured."""

    def __init__(self) -> None:
        from spacy.lookups import load_lookups

        lookups = load_lookups("en", ["lemma_lookup", "lemma_index"])
        self.lemma = lookups.get_table("lemma_lookup")
        self.nouns = set(lookups.get_table("lemma_index")["noun"])

    def flip(self, word: str) -> str:
        lemma = self.lemma.get(word, word)
        if lemma != word and word.endswith("s") and word.startswith(lemma[:2]):
            return lemma  # a plural (or third-person verb): its lookup lemma
        if word in self.nouns and word.isalpha() and len(word) > 2:
            if re.search(r"(s|x|z|ch|sh)$", word):
                return word + "es"
            if re.search(r"[^aeiou]y$", word):
                return word[:-1] + "ies"
            return word + "s"
        return word


def fragments(titles: list[str], rng: np.random.Generator) -> list[list[str] | None]:
    """A 1-3-word run of each title with at least one word that is not a stopword."""
    out: list[list[str] | None] = []
    for title in titles:
        words = terms._WORD.findall(str(title).lower())
        chosen = None
        for _ in range(20):
            if not words:
                break
            length = int(rng.integers(1, min(3, len(words)) + 1))
            start = int(rng.integers(0, len(words) - length + 1))
            run = words[start : start + length]
            if any(w not in terms.STOPWORDS for w in run):
                chosen = run
                break
        out.append(chosen)
    return out


def evaluate(products: pd.DataFrame, targets: list[str], queries: dict[str, list[str]]) -> dict:
    results = {}
    original = terms.normalise
    try:
        for name, fn in NORMALISERS.items():
            terms.normalise = fn  # tokenize() looks it up at call time
            start = time.perf_counter()
            index = lexical.LexicalIndex.from_products(products)
            built = time.perf_counter() - start
            row: dict = {"build_s": round(built, 2), "vocabulary": len(index._vocab)}
            for kind, texts in queries.items():
                hits, reciprocal, zero = [], [], 0
                for target, text in zip(targets, texts, strict=True):
                    found = [pid for pid, _ in index.search(text, K)]
                    hits.append(target in found)
                    reciprocal.append(1.0 / (found.index(target) + 1) if target in found else 0.0)
                    zero += index.score(text, [target])[0] == 0
                row[kind] = {
                    "recall_at_10": round(float(np.mean(hits)), 4),
                    "mrr_at_10": round(float(np.mean(reciprocal)), 4),
                    "own_listing_scored_zero": int(zero),
                }
            results[name] = row
    finally:
        terms.normalise = original
    return results


def run(data_dir: Path, n: int, seed: int) -> dict | None:
    if not (data_dir / "Products.csv").exists():
        print(f"SKIP: no Products.csv under {data_dir} (pass --data DIR)")
        return None
    raw = pd.read_csv(data_dir / "Products.csv", index_col=0, lineterminator="\n", dtype=str)
    settings = DataSettings()
    products, _ = clean_products(raw, settings.min_price, settings.max_price, strict=False)
    products = products.drop_duplicates(S.PRODUCT_ID).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    sample = products.iloc[rng.permutation(len(products))]
    runs = fragments(sample[S.TITLE].tolist(), rng)
    keep = [i for i, r in enumerate(runs) if r is not None][:n]
    targets = sample[S.PRODUCT_ID].astype(str).iloc[keep].tolist()
    flipper = Flipper()
    plain = [" ".join(runs[i]) for i in keep]
    flipped = [" ".join(flipper.flip(w) for w in runs[i]) for i in keep]
    changed = sum(a != b for a, b in zip(plain, flipped, strict=True))
    result = {
        "data": os.path.relpath(data_dir, REPO),
        "listings": int(len(products)),
        "queries": len(targets),
        "seed": seed,
        "number_flipped_queries_changed": changed,
        "new_normalisation": terms.normalisation(),
        "examples": [
            {"fragment": a, "number_flipped": b} for a, b in list(zip(plain, flipped, strict=True))[:8]
        ],
        "results": evaluate(products, targets, {"fragment": plain, "number_flipped": flipped}),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=300, help="listings sampled as known items")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one query sample per seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        result = run(args.data, args.n, seed)
        if result is None:
            return 0
        runs.append(result)
        print(
            f"seed {seed}: {result['queries']} queries ({result['number_flipped_queries_changed']} flipped)"
        )
        for name, row in result["results"].items():
            cells = "  ".join(
                f"{kind} R@10 {row[kind]['recall_at_10']:.4f} MRR {row[kind]['mrr_at_10']:.4f} "
                f"zero {row[kind]['own_listing_scored_zero']}"
                for kind in ("fragment", "number_flipped")
            )
            print(f"  {name:16} {cells}  (vocabulary {row['vocabulary']}, build {row['build_s']} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, {"runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
