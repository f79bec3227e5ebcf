"""Do the embedded (FAISS + bm25s) and Milvus backends return the same listings on one bundle?

Usage: .venv/bin/python benchmarks/backend_agreement.py --bundle B [--index-uri URI]
           [--queries 500] [--k 10] [--database URL]

Issue 11's bar: top-10 overlap >= 0.9 between the backends on the dev data's test queries.
The queries are the titles of the bundle's test-split listings (encoded by the bundle's query
encoder, as a typed search is), run through `HybridSearcher.retrieve` (hybrid: dense + BM25,
the configured fusion) on both backends, and the same listings' similar-listings queries
(`similar_scored`). Overlap@k = |top k embedded ∩ top k Milvus| / k, averaged over queries;
top-1 agreement is reported beside it. Without --index-uri a milvus-lite file in a temporary
folder is used (and filled from the bundle's database, as `fbmarket index --index-uri` does).
Results: benchmarks/results/backend_agreement.{json,md}.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import RESULTS, write_json

from fbmarket.data import schema as S
from fbmarket.search.backend import parse_index_uri
from fbmarket.service import Marketplace


def overlap(a: list[str], b: list[str], k: int) -> float:
    return len(set(a[:k]) & set(b[:k])) / k if a or b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--index-uri", help="milvus://host:port or a milvus-lite .db path (default: a temporary .db)")
    parser.add_argument("--database", help="SQLAlchemy URL (default: the bundle's SQLite file)")
    parser.add_argument("--queries", type=int, default=500, help="test-split listings used as queries (at most)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "backend_agreement.json")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="agreement_")
    uri = args.index_uri or str(Path(scratch.name) / "agreement.db")
    target = parse_index_uri(uri)
    embedded = Marketplace.open(args.bundle, args.database, lazy_models=True)
    engine = Marketplace.open(args.bundle, args.database, lazy_models=True, index_uri=uri)
    try:
        start = time.perf_counter()
        loaded = engine.load_search_index(show_progress=True)
        load_seconds = time.perf_counter() - start
        products = embedded.store.listings_frame()
        test = products[products[S.SPLIT] == "test"] if S.SPLIT in products else products
        if len(test) > args.queries:
            test = test.sample(args.queries, random_state=args.seed)
        k = args.k
        search, similar = [], []
        for pid, title in zip(test[S.PRODUCT_ID].astype(str), test[S.TITLE], strict=True):
            vector = embedded.model.encode_query(title)
            a = embedded.searcher.retrieve(vector, title, n=k).frame[S.PRODUCT_ID].tolist()
            b = engine.searcher.retrieve(vector, title, n=k).frame[S.PRODUCT_ID].tolist()
            search.append((overlap(a, b, k), bool(a[:1] == b[:1])))
            sa = embedded.searcher.similar_scored(pid, k)[S.PRODUCT_ID].tolist()
            sb = engine.searcher.similar_scored(pid, k)[S.PRODUCT_ID].tolist()
            similar.append((overlap(sa, sb, k), bool(sa[:1] == sb[:1])))
    finally:
        embedded.close()
        engine.close()
        scratch.cleanup()

    def summary(pairs: list[tuple[float, bool]]) -> dict[str, float]:
        values = np.array([o for o, _ in pairs], float)
        return {
            "queries": len(pairs),
            f"mean_overlap_at_{k}": round(float(values.mean()), 4) if len(values) else float("nan"),
            f"min_overlap_at_{k}": round(float(values.min()), 4) if len(values) else float("nan"),
            "share_at_or_above_0.9": round(float((values >= 0.9).mean()), 4) if len(values) else float("nan"),
            "top1_agreement": round(float(np.mean([t for _, t in pairs])), 4) if pairs else float("nan"),
        }

    engine_label = "milvus-lite 2.5 (embedded file)" if target.kind == "milvus-lite" else "milvus"
    result = {
        "what": f"top-{k} overlap, embedded FAISS + bm25s vs {engine_label}, same bundle",
        "bundle": str(args.bundle),
        "engine": engine_label,
        "loaded": loaded,
        "load_seconds": round(load_seconds, 1),
        "search_titles_of_test_listings": summary(search),
        "similar_listings_of_test_listings": summary(similar),
        "bar": "mean overlap@10 >= 0.9 (issue 11)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    rows = [
        f"# Backend agreement: embedded FAISS + bm25s vs {engine_label}",
        "",
        f"Bundle `{args.bundle}`, {loaded['loaded']} listings loaded in {load_seconds:.0f} s. "
        f"Queries: titles of test-split listings (hybrid retrieval) and similar listings of the same listings. "
        f"Command: `benchmarks/backend_agreement.py --bundle {args.bundle}`.",
        "",
        f"| queries | n | mean overlap@{k} | min | share >= 0.9 | top-1 agreement |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in (("search (titles)", "search_titles_of_test_listings"), ("similar listings", "similar_listings_of_test_listings")):
        s = result[key]
        rows.append(
            f"| {name} | {s['queries']} | {s[f'mean_overlap_at_{k}']} | {s[f'min_overlap_at_{k}']} | "
            f"{s['share_at_or_above_0.9']} | {s['top1_agreement']} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
