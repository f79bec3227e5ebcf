"""Retrieval quality with the trained embeddings on the real dev data: embedding vs BM25 vs hybrid.

Usage: .venv/bin/python benchmarks/search_quality.py --bundle DIR [--out FILE]

DIR is a bundle trained by `python main.py --data ../shared/data/gumtree-dev --out DIR`:
its database holds the clean listings with the product-level split the pipeline
persisted, and its model was trained on the train split (val for early stopping) only.
Listings are encoded with `Bundle.encode_products`, queries with `Bundle.encode_query`.
Skips with a message (exit 0) when the bundle is absent.

Three pools ("worlds"), each indexed by `HybridSearcher` (FAISS + BM25):

* val: the validation listings; every choice (fusion method, blend weight) is made here;
* test: the test listings, never seen in training or in a choice; the headline figures;
* catalogue: every listing, with the test listings as queries (how search is used: a new
  listing's neighbours among everything on sale), for comparison with the TF-IDF baseline
  (benchmarks/results/baselines.json: 0.400 leaf / 0.632 root; test-only 0.200 / 0.425).

Three query kinds, relevant = listings of the query's leaf category:

* similar: each listing of the pool (in the catalogue world: each test listing) asks for
  its 10 nearest other listings; precision@10 of the same leaf and of the same root.
  Embedding-only is the listing's own vector; BM25-only is its title as the query; hybrid
  blends both; "+root a+leaf b" adds a * P(same root) + b * P(same leaf) by the fusion
  model's category heads, as `HybridSearcher.similar_scored` serves it (a grid of weights,
  chosen on val by the mean of same-leaf and same-root P@10); in the catalogue world also
  `served_defaults+served_category`: SearchSettings' weights with the query listing's root
  read from the bundle's served (late-fusion) probabilities, as `Marketplace.similar` serves
  it (SearchSettings.similar_served_category), next to the same weights with the head's;
* leaf: the leaf category's name as typed text ("Sofas, Armchairs & Suites"), for every
  leaf with a listing in the pool;
* fragment: 1-3 content words of a pool listing's title, the listing itself excluded from
  the results; precision@10 same leaf and known-item recall@10 (is the listing found?).

Each query is retrieved once (FAISS top 200 + BM25 top 200, both scores for every
candidate, as `HybridSearcher.retrieve` scores them, but without its cut to the 200 best
by the default fusion, which would judge the embedding and BM25 lists by what survived
another method's ordering); embedding-only, BM25-only, RRF and blends are orderings of
that set. P@10 is capped when a pool holds fewer than 10
other listings of a leaf (the test pool has 795 listings over ~300 leaves), so each
table also gives the ceiling: the P@10 a perfect ranker would reach.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from harness import RESULTS, write_json
from tqdm.auto import tqdm

from fbmarket.config import SearchSettings, Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.layout import BundleLayout
from fbmarket.search.categories import CategorySpace
from fbmarket.search.hybrid import (
    LEXICAL_RANK,
    LEXICAL_SCORE,
    SEMANTIC_RANK,
    SEMANTIC_SCORE,
    HybridSearcher,
    reciprocal_rank_fusion,
    weighted_blend,
)
from fbmarket.search.lexical import tokenize

DEFAULT_OUT = RESULTS / "search_quality.json"
BASELINES = RESULTS / "baselines.json"
K = 10
BLEND_WEIGHTS = (0.2, 0.35, 0.5, 0.65, 0.8)
# similar listings: the blend (w 0.65 / 0.8 / 1.0) plus these weights times P(same root) and
# P(same leaf) by the model's category heads, as HybridSearcher.similar_scored adds them
SIMILAR_BLENDS = (0.65, 0.8, 1.0)
CATEGORY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
BARS = {"similar_leaf": 0.55, "similar_root": 0.80}
SERVED = "served_defaults+served_category"  # SearchSettings' weights, the served root estimate
TIE = 0.005  # P@10 differences below this are noise at ~800 queries (standard error ~0.01)


def served_roots(model, queries: pd.DataFrame, images: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each query listing's served root probabilities (the bundle's late fusion, or its network
    head without one), by id: what Marketplace.similar reads the listing's category by."""
    probabilities = model.predict_products(queries, images, show_progress=True).probabilities["fusion"]
    return dict(zip(queries[S.PRODUCT_ID].astype(str), probabilities, strict=True))


def category_method(blend: float, root: float, leaf: float) -> str:
    return f"blend_w{blend}+root{root}+leaf{leaf}"


def category_weights(method: str) -> tuple[float, float, float]:
    """(blend weight, root weight, leaf weight) of a category_method name."""
    blend, root, leaf = method.removeprefix("blend_w").split("+")
    return float(blend), float(root.removeprefix("root")), float(leaf.removeprefix("leaf"))


def orderings(
    frame: pd.DataFrame, rrf_k: int, agreement: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Candidate ids best first, by each method (and with category agreement, when given)."""
    sem, lex = frame[SEMANTIC_SCORE].to_numpy(float), frame[LEXICAL_SCORE].to_numpy(float)
    sem_rank, lex_rank = frame[SEMANTIC_RANK].to_numpy(float), frame[LEXICAL_RANK].to_numpy(float)
    ids = frame[S.PRODUCT_ID].to_numpy(object)

    def by(score: np.ndarray) -> np.ndarray:
        return ids[np.lexsort((np.arange(len(ids)), -score))]

    def listed(rank: np.ndarray) -> np.ndarray:
        return ids[np.argsort(np.nan_to_num(rank, nan=np.inf), kind="stable")][: int(np.isfinite(rank).sum())]

    out = {
        "embedding": listed(sem_rank),
        "bm25": listed(lex_rank),
        f"rrf_k{rrf_k}": by(reciprocal_rank_fusion([sem_rank, lex_rank], rrf_k)),
    }
    for w in BLEND_WEIGHTS:
        out[f"blend_w{w}"] = by(weighted_blend(sem, lex, w))
    if agreement is not None:
        same_root, same_leaf = agreement
        for w in SIMILAR_BLENDS:
            blend = weighted_blend(sem, lex, w)
            for a in CATEGORY_WEIGHTS:
                for b in CATEGORY_WEIGHTS:
                    if a or b:
                        out[category_method(w, a, b)] = by(blend + a * same_root + b * same_leaf)
    return out


class World:
    """One pool of listings, indexed, with the labels to judge results by."""

    def __init__(
        self,
        name: str,
        pool: pd.DataFrame,
        vectors: np.ndarray,
        settings: SearchSettings,
        categories: CategorySpace | None = None,
        served_roots: dict[str, np.ndarray] | None = None,
    ):
        self.name = name
        # query id -> the bundle's served (late-fusion) root probabilities, as
        # Marketplace.similar passes them (SearchSettings.similar_served_category)
        self.served_roots = served_roots or {}
        self.pool = pool.reset_index(drop=True)
        ids = self.pool[S.PRODUCT_ID].astype(str).tolist()
        self.searcher = HybridSearcher.build(self.pool, ids, vectors, settings)
        self.vectors = dict(zip(ids, vectors, strict=True))
        self.categories = categories
        self.leaf = dict(zip(ids, self.pool[S.LEAF_CATEGORY], strict=True))
        self.root = dict(zip(ids, self.pool[S.ROOT_CATEGORY], strict=True))
        self.leaf_size = self.pool[S.LEAF_CATEGORY].value_counts()
        self.settings = settings


def judge(
    world: World,
    vector: np.ndarray,
    text: str,
    leaf: str,
    root: str | None,
    exclude: str | None,
) -> dict[str, tuple[float, float, float]]:
    """method -> (P@10 same leaf, P@10 same root or NaN, known-item hit or NaN)."""
    frame = world.searcher.retrieve(vector, text, None, world.settings.candidates, truncate=False).frame
    agreement = None
    if world.categories is not None and root is not None:  # similar listings
        candidates = np.stack([world.vectors[pid] for pid in frame[S.PRODUCT_ID]])
        agreement = world.categories.agreement(vector, candidates)
    ranked_by = orderings(frame, world.settings.rrf_k, agreement)
    if agreement is not None and exclude in world.served_roots:  # the served defaults, both ways
        candidates = np.stack([world.vectors[pid] for pid in frame[S.PRODUCT_ID]])
        same_root, same_leaf = world.categories.agreement(vector, candidates, world.served_roots[exclude])
        s = world.settings
        blend = weighted_blend(frame[SEMANTIC_SCORE].to_numpy(float), frame[LEXICAL_SCORE].to_numpy(float),
                               s.similar_semantic_weight)  # fmt: skip
        score = blend + s.similar_root_weight * same_root + s.similar_leaf_weight * same_leaf
        ids = frame[S.PRODUCT_ID].to_numpy(object)
        ranked_by[SERVED] = ids[np.lexsort((np.arange(len(ids)), -score))]
    out = {}
    for method, ranked in ranked_by.items():
        top = [pid for pid in ranked if pid != exclude][:K]
        leaf_hits = sum(world.leaf[pid] == leaf for pid in top) / K
        root_hits = sum(world.root[pid] == root for pid in top) / K if root is not None else np.nan
        known = float(exclude in ranked[:K]) if exclude is not None else np.nan
        out[method] = (leaf_hits, root_hits, known)
    return out


def evaluate(world: World, queries: pd.DataFrame, model, kind: str, rng: np.random.Generator) -> dict:
    """Mean figures per method for one query kind, plus the ceiling P@10."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    ceilings = []
    if kind == "leaf":
        leaves = queries.drop_duplicates(S.LEAF_CATEGORY)
        items = [(None, r[S.LEAF_NAME], r[S.LEAF_CATEGORY], None, None) for _, r in leaves.iterrows()]
    else:
        items = []
        for _, r in queries.iterrows():
            pid = str(r[S.PRODUCT_ID])
            if kind == "similar":
                items.append((world.vectors[pid], r[S.TITLE], r[S.LEAF_CATEGORY], r[S.ROOT_CATEGORY], pid))
                continue
            words = list(dict.fromkeys(w for w in str(r[S.TITLE]).split() if tokenize(w)))
            if not words:
                continue
            take = rng.choice(len(words), min(len(words), int(rng.integers(1, 4))), replace=False)
            items.append((None, " ".join(words[i] for i in sorted(take)), r[S.LEAF_CATEGORY], None, pid))
    for vector, text, leaf, root, exclude in tqdm(items, desc=f"{world.name}/{kind}", leave=False):
        if not tokenize(text):
            continue
        if vector is None:
            vector = model.encode_query(text, None)
        in_pool = int(world.leaf_size.get(leaf, 0)) - (1 if exclude is not None else 0)
        ceilings.append(min(K, in_pool) / K)
        for method, value in judge(world, vector, text, leaf, root, exclude).items():
            rows.setdefault(method, []).append(value)
    table = {}
    for method, values in rows.items():
        a = np.array(values, dtype=float)
        entry = {"p_at_10_leaf": round(float(a[:, 0].mean()), 4)}
        if kind == "similar":
            entry["p_at_10_root"] = round(float(a[:, 1].mean()), 4)
        if kind == "fragment":
            entry["known_item_recall_at_10"] = round(float(np.nanmean(a[:, 2])), 4)
        table[method] = entry
    return {
        "queries": len(ceilings),
        "ceiling_p_at_10_leaf": round(float(np.mean(ceilings)), 4),
        "methods": table,
    }


def choose(val: dict) -> dict[str, str]:
    """The fused method to use per query kind, chosen on the validation world only.

    Similar listings are judged on the same leaf and the same root alike (their mean
    P@10); among the methods within `TIE` of the best, the one that moves least from the
    embedding alone (smallest category weights, then least BM25). Text search (leaf + fragment queries)
    gets one choice, since one setting serves both: among the methods whose mean P@10 is
    within `TIE` of the best (closer than the noise between 800 queries), the one that
    finds the listing a fragment was cut from most often (known-item recall@10).
    """
    fused = [m for m in val["leaf"]["methods"] if m not in ("embedding", "bm25", SERVED)]

    def p10(kind: str, method: str) -> float:
        return val[kind]["methods"][method]["p_at_10_leaf"]

    text = {m: (p10("leaf", m) + p10("fragment", m)) / 2 for m in fused}
    near = [m for m in fused if text[m] >= max(text.values()) - TIE]
    best_text = max(near, key=lambda m: val["fragment"]["methods"][m]["known_item_recall_at_10"])
    similar = {
        m: (entry["p_at_10_leaf"] + entry["p_at_10_root"]) / 2
        for m, entry in val["similar"]["methods"].items()
        if m not in ("embedding", "bm25", SERVED) and not m.startswith("rrf")
    }

    def least_moved(methods: list[str]) -> str:
        near = [m for m in methods if similar[m] >= max(similar[m] for m in methods) - TIE]
        return min(near, key=_extra_weight)

    return {
        "similar": least_moved(list(similar)),
        "similar_without_categories": least_moved([m for m in similar if "+root" not in m]),
        "leaf": best_text,
        "fragment": best_text,
    }


def _extra_weight(method: str) -> tuple[float, float]:
    """How far a similar-listing method moves from the embedding alone: category weight, then BM25."""
    if "+root" in method:
        blend, root, leaf = category_weights(method)
        return root + leaf, 1.0 - blend
    return 0.0, 1.0 - float(method.removeprefix("blend_w"))


def print_table(results: dict, chosen: dict[str, str]) -> None:
    for world, kinds in results.items():
        print(f"\n{world} world")
        for kind, block in kinds.items():
            print(
                f"  {kind} ({block['queries']} queries, ceiling P@10 leaf {block['ceiling_p_at_10_leaf']:.3f})"
            )
            for method, entry in block["methods"].items():
                if "+root" in method and method != chosen.get(kind):
                    continue  # the category-weight grid: in the JSON, too long to print
                mark = " <- chosen on val" if chosen.get(kind) == method else ""
                figures = "  ".join(f"{k} {v:.3f}" for k, v in entry.items())
                print(f"    {method:12s} {figures}{mark}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not BundleLayout(args.bundle).manifest.is_file() or not BundleLayout(args.bundle).settings.is_file():
        print(f"SKIP: {args.bundle} is not a trained bundle (python main.py --data DIR --out {args.bundle})")
        return 0
    from fbmarket.bundle import Bundle

    started = time.perf_counter()
    settings = Settings.load(BundleLayout(args.bundle).settings)
    settings.out_dir = args.bundle
    if settings.data_dir is None:
        print("note: this bundle was trained on the synthetic marketplace, not the real dev data")
    store = Store(settings.db_url, root=args.bundle)
    try:
        products = store.listings_frame()
        images = store.images_frame()
    finally:
        store.close()
    products = products[products[S.SPLIT].isin(S.SPLITS)].reset_index(drop=True)
    model = Bundle.load(args.bundle)
    vectors = model.encode_products(products, images, show_progress=True)
    search = SearchSettings()  # the code's defaults; the bundle's own are not what is being chosen
    heads = model.category_space()
    part = {name: (products[S.SPLIT] == name).to_numpy() for name in S.SPLITS}
    worlds = {
        "val": World("val", products[part["val"]], vectors[part["val"]], search, heads),
        "test": World("test", products[part["test"]], vectors[part["test"]], search, heads),
        "catalogue": World("catalogue", products, vectors, search, heads, served_roots(model, products[part["test"]], images)),
    }
    queries = {
        "val": products[part["val"]],
        "test": products[part["test"]],
        "catalogue": products[part["test"]],
    }

    results: dict[str, dict] = {}
    for name, world in worlds.items():
        results[name] = {}
        for kind in ("similar", "leaf", "fragment"):
            rng = np.random.default_rng(args.seed)
            results[name][kind] = evaluate(world, queries[name], model, kind, rng)
    chosen = choose(results["val"])
    print_table(results, chosen)

    baseline = {}
    if BASELINES.is_file():
        similar = json.loads(BASELINES.read_text()).get("similar_listings", {})
        baseline = {
            pool: {
                "p_at_10_leaf": similar[pool]["precision_at_k_leaf"],
                "p_at_10_root": similar[pool]["precision_at_k_root"],
            }
            for pool in ("test_only", "catalogue")
            if pool in similar
        }
    defaults = category_method(search.similar_semantic_weight, search.similar_root_weight, search.similar_leaf_weight)
    headline = {
        world: {
            "similar_embedding": results[world]["similar"]["methods"]["embedding"],
            "similar_bm25": results[world]["similar"]["methods"]["bm25"],
            f"similar_hybrid ({chosen['similar']})": results[world]["similar"]["methods"][chosen["similar"]],
            f"similar_hybrid_without_categories ({chosen['similar_without_categories']})": results[world][
                "similar"
            ]["methods"][chosen["similar_without_categories"]],
            "leaf_embedding": results[world]["leaf"]["methods"]["embedding"],
            "leaf_bm25": results[world]["leaf"]["methods"]["bm25"],
            f"leaf_hybrid ({chosen['leaf']})": results[world]["leaf"]["methods"][chosen["leaf"]],
            **(
                {
                    f"similar_served_defaults_head ({defaults})": results[world]["similar"]["methods"][defaults],
                    f"similar_served_defaults_served_category ({defaults})": results[world]["similar"]["methods"][SERVED],
                }
                if SERVED in results[world]["similar"]["methods"] and defaults in results[world]["similar"]["methods"]
                else {}
            ),
            "similar_ceiling_leaf": results[world]["similar"]["ceiling_p_at_10_leaf"],
            "leaf_ceiling": results[world]["leaf"]["ceiling_p_at_10_leaf"],
        }
        for world in ("test", "catalogue")
    }
    payload = {
        "bundle": str(args.bundle),
        "model_version": model.version,
        "data_dir": str(settings.data_dir),
        "listings": {name: int(mask.sum()) for name, mask in part.items()},
        "k": K,
        "candidates": search.candidates,
        "chosen_on_val": chosen,
        "headline": headline,
        "bars": BARS,
        "tfidf_baseline_similar": baseline,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
        "command": "benchmarks/search_quality.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, payload)
    print_headline(results, chosen, baseline)
    print(f"-> {args.out}")
    return 0


def print_headline(results: dict, chosen: dict[str, str], baseline: dict) -> None:
    """One table: similar listings (leaf, root) and leaf-name queries, per method and pool."""
    print("\nP@10 (same leaf / same root for similar listings; same leaf for leaf-name queries)")
    print(f"{'pool':10s} {'method':30s} {'similar leaf':>12s} {'similar root':>12s} {'leaf-name':>10s}")
    for world, pool in (("test", "test_only"), ("catalogue", "catalogue")):
        rows = [
            ("embedding", "embedding", "embedding"),
            ("BM25", "bm25", "bm25"),
            (
                f"hybrid {chosen['similar_without_categories']}/{chosen['leaf']}",
                chosen["similar_without_categories"],
                chosen["leaf"],
            ),
            (
                chosen["similar"],
                chosen["similar"],
                chosen["leaf"],
            ),
            ("hybrid rrf_k60", "rrf_k60", "rrf_k60"),
        ]
        for label, similar_method, leaf_method in rows:
            sim = results[world]["similar"]["methods"][similar_method]
            leaf = results[world]["leaf"]["methods"][leaf_method]["p_at_10_leaf"]
            print(
                f"{world:10s} {label:30s} {sim['p_at_10_leaf']:12.3f} {sim['p_at_10_root']:12.3f} {leaf:10.3f}"
            )
        served = results[world]["similar"]["methods"].get(SERVED)
        if served is not None:  # the served defaults with the served (late-fusion) root estimate
            print(f"{world:10s} {'served similar listings':30s} {served['p_at_10_leaf']:12.3f} "
                  f"{served['p_at_10_root']:12.3f} {'':>10s}")  # fmt: skip
        if pool in baseline:
            b = baseline[pool]
            print(
                f"{world:10s} {'TF-IDF cosine':30s} {b['p_at_10_leaf']:12.3f} {b['p_at_10_root']:12.3f} {'':>10s}"
            )
        ceiling_sim = results[world]["similar"]["ceiling_p_at_10_leaf"]
        ceiling_leaf = results[world]["leaf"]["ceiling_p_at_10_leaf"]
        print(f"{world:10s} {'ceiling (perfect)':30s} {ceiling_sim:12.3f} {1.0:12.3f} {ceiling_leaf:10.3f}")
    print(f"bars: similar leaf >= {BARS['similar_leaf']}, root >= {BARS['similar_root']}")


if __name__ == "__main__":
    sys.exit(main())
