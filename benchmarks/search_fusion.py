"""Which fusion of semantic and lexical retrieval: reciprocal-rank fusion or a weighted blend?

Usage: .venv/bin/python benchmarks/search_fusion.py [--data DIR] [--queries 600] [--out FILE]
Skips with a message (exit 0) when the data folder is absent.

On the real Gumtree dev listings (cleaned, product-level split; queries from the
validation split only, never the test split), every listing is indexed by
`HybridSearcher` and two kinds of query are run:

* fragment: 2-3 content words of a validation listing's title ("oak table chairs"),
  relevant = listings of the same leaf category (the source listing itself excluded),
  plus known-item recall@10 (is the source listing in the top 10?);
* leaf: a leaf category's name ("Sofas"), relevant = listings of that leaf.

Semantic vectors here are a stand-in for the trained fusion embeddings: TF-IDF
(word 1-2 grams) -> TruncatedSVD(256) -> L2 norm, fitted on the training split's text.
Re-run this after the fusion model lands (the decision may move with better vectors).
Each query is retrieved once (200 candidates: union of FAISS and BM25 top 200, both
scores known for all); semantic-only, lexical-only, RRF and blends are orderings of
that same candidate set. Results go to benchmarks/results/search_fusion.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fbmarket.config import SearchSettings  # noqa: E402
from fbmarket.data import schema as S  # noqa: E402
from fbmarket.data.clean import clean_products  # noqa: E402
from fbmarket.data.sources import read_folder  # noqa: E402
from fbmarket.data.split import make_split  # noqa: E402
from fbmarket.search.hybrid import (  # noqa: E402
    LEXICAL_RANK,
    LEXICAL_SCORE,
    SEMANTIC_RANK,
    SEMANTIC_SCORE,
    HybridSearcher,
    reciprocal_rank_fusion,
    weighted_blend,
)
from fbmarket.search.lexical import tokenize  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "gumtree-dev"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "search_fusion.json"
K = 10
BLEND_WEIGHTS = (0.2, 0.35, 0.5, 0.65, 0.8)


class LsaEncoder:
    """TF-IDF -> SVD -> unit vectors: a transparent stand-in for the learned text embedding."""

    def __init__(self, texts: list[str], dim: int, seed: int):
        self.tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=60_000)
        matrix = self.tfidf.fit_transform(texts)
        self.svd = TruncatedSVD(n_components=min(dim, matrix.shape[1] - 1), random_state=seed).fit(matrix)

    def __call__(self, texts: list[str]) -> np.ndarray:
        x = self.svd.transform(self.tfidf.transform(texts)).astype(np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def orderings(frame: pd.DataFrame, rrf_k: int) -> dict[str, np.ndarray]:
    """Candidate orderings (best first) by each fusion method."""
    sem, lex = frame[SEMANTIC_SCORE].to_numpy(float), frame[LEXICAL_SCORE].to_numpy(float)
    sem_rank, lex_rank = frame[SEMANTIC_RANK].to_numpy(float), frame[LEXICAL_RANK].to_numpy(float)
    ids = frame[S.PRODUCT_ID].to_numpy(object)

    def by(score: np.ndarray) -> np.ndarray:
        return ids[np.lexsort((np.arange(len(ids)), -score))]

    out = {
        "semantic_only": ids[np.argsort(np.nan_to_num(sem_rank, nan=np.inf), kind="stable")][
            : int(np.isfinite(sem_rank).sum())
        ],
        "lexical_only": ids[np.argsort(np.nan_to_num(lex_rank, nan=np.inf), kind="stable")][
            : int(np.isfinite(lex_rank).sum())
        ],
        f"rrf_k{rrf_k}": by(reciprocal_rank_fusion([sem_rank, lex_rank], rrf_k)),
    }
    for w in BLEND_WEIGHTS:
        out[f"blend_w{w}"] = by(weighted_blend(sem, lex, w))
    return out


def ndcg(hits: np.ndarray, n_relevant: int) -> float:
    gains = hits / np.log2(np.arange(2, len(hits) + 2))
    ideal = (1 / np.log2(np.arange(2, min(n_relevant, K) + 2))).sum()
    return float(gains.sum() / ideal) if ideal > 0 else 0.0


def run(args: argparse.Namespace) -> dict | None:
    if not (args.data / "Products.csv").is_file():
        print(f"SKIP: no Products.csv under {args.data} (pass --data DIR)")
        return None
    settings = SearchSettings()
    raw = read_folder(args.data)
    products, _ = clean_products(raw.products, min_price=1.0, max_price=50_000.0)
    products = products.assign(**{S.LATITUDE: np.nan, S.LONGITUDE: np.nan})
    split = make_split(products, (0.7, 0.15, 0.15), seed=args.seed)
    products[S.SPLIT] = products[S.PRODUCT_ID].map(split)
    text = (products[S.TITLE] + " " + products[S.DESCRIPTION]).tolist()
    train = (products[S.SPLIT] == "train").to_numpy()

    start = time.perf_counter()
    encoder = LsaEncoder([t for t, keep in zip(text, train, strict=True) if keep], args.dim, args.seed)
    vectors = encoder(text)
    hybrid = HybridSearcher.build(products, embeddings=vectors, settings=settings)
    print(f"{len(products):,} listings indexed in {time.perf_counter() - start:.1f}s", flush=True)

    rng = np.random.default_rng(args.seed)
    leaf_of = products.set_index(S.PRODUCT_ID)[S.LEAF_CATEGORY]
    leaf_size = leaf_of.value_counts()
    val = products[(products[S.SPLIT] == "val") & (products[S.LEAF_CATEGORY].map(leaf_size) > 1)]
    queries = []
    for _, row in val.sample(min(args.queries, len(val)), random_state=args.seed).iterrows():
        words = list(dict.fromkeys(w for w in row[S.TITLE].split() if tokenize(w)))
        if len(words) < 2:
            continue
        take = rng.choice(len(words), min(len(words), int(rng.integers(2, 4))), replace=False)
        queries.append(
            ("fragment", " ".join(words[i] for i in sorted(take)), row[S.LEAF_CATEGORY], row[S.PRODUCT_ID])
        )
    leaves = products.drop_duplicates(S.LEAF_CATEGORY)
    leaves = leaves[leaves[S.LEAF_CATEGORY].map(leaf_size) >= K]
    for _, row in leaves.iterrows():
        queries.append(("leaf", row[S.LEAF_NAME], row[S.LEAF_CATEGORY], None))

    scores: dict[str, dict[str, list[float]]] = {}
    for kind, query, leaf, source in queries:
        frame = hybrid.retrieve(encoder([query])[0], query, None, settings.candidates)
        n_relevant = int(leaf_size[leaf]) - (1 if source else 0)
        for method, ranked in orderings(frame, settings.rrf_k).items():
            top = [pid for pid in ranked if pid != source][:K]
            hits = np.array([leaf_of[pid] == leaf for pid in top], dtype=float)
            hits = np.pad(hits, (0, K - len(hits)))
            bucket = scores.setdefault(kind, {}).setdefault(method, [])
            bucket.append(
                (hits.mean(), ndcg(hits, n_relevant), float(source in ranked[:K]) if source else np.nan)
            )

    table = {}
    for kind, methods in scores.items():
        table[kind] = {}
        for method, rows in methods.items():
            a = np.array(rows, dtype=float)
            entry = {
                "precision_at_10_same_leaf": round(float(a[:, 0].mean()), 4),
                "ndcg_at_10": round(float(a[:, 1].mean()), 4),
            }
            if kind == "fragment":
                entry["known_item_recall_at_10"] = round(float(np.nanmean(a[:, 2])), 4)
            table[kind][method] = entry
    for kind, methods in table.items():
        print(f"{kind} queries ({len(scores[kind]['semantic_only'])}):")
        for method, entry in methods.items():
            print(f"  {method:15s} " + "  ".join(f"{k} {v:.4f}" for k, v in entry.items()))
    return {
        "data": os.path.relpath(args.data, REPO),
        "listings": int(len(products)),
        "query_split": "val",
        "queries": {kind: len(scores[kind]["semantic_only"]) for kind in scores},
        "semantic_vectors": f"stand-in: TF-IDF(1-2 grams) -> TruncatedSVD({args.dim}) fitted on the train split",
        "candidates": settings.candidates,
        "results": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    result = run(args)
    if result is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"-> {args.out}")


if __name__ == "__main__":
    main()
