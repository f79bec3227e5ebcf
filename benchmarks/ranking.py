"""Personalised ranking on held-out simulated interactions (docs/ranking.md).

Listings: the real dev data's clean products (../shared/data/gumtree-dev), or the embedded
synthetic marketplace when that folder is absent. Buyers and their sessions: the documented
simulator (docs/buyers.md). Retrieval: BM25 + LSA hybrid over listing text
(`fbmarket.recommend.evaluate.TextRetriever`), so the benchmark needs no trained model.
Buyers' budgets are hidden from the ranker by default (inferred from their history, as for
real Users.csv files without a budget column); their maximum travel distance is given.

Usage: .venv/bin/python benchmarks/ranking.py [--data DIR] [--buyers N] [--sessions N]
       [--seed S] [--stated-budget] [--out FILE]
Prints Recall@10 / NDCG@10 per method and the margins; writes JSON (default
benchmarks/results/ranking.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import pandas as pd
from harness import DEV_DATA, RESULTS, write_json

from fbmarket.config import Settings
from fbmarket.data.clean import CleaningReport, attach_created, attach_geo, clean_products
from fbmarket.data.sources import read_source
from fbmarket.recommend.evaluate import TextRetriever, markdown_table, run_experiment
from fbmarket.synthetic.buyers import simulate_buyers, simulate_interactions, towns_from_products

DEFAULT_DATA = DEV_DATA
DEFAULT_OUT = RESULTS / "ranking.json"


def clean_listings(data_dir: Path, settings: Settings) -> pd.DataFrame:
    """Clean, geocoded, dated listings (the photos themselves are not needed for ranking)."""
    raw = read_source(data_dir)
    products, report = clean_products(
        raw.products, settings.data.min_price, settings.data.max_price, strict=True, report=CleaningReport()
    )
    return attach_geo(attach_created(products, raw.images), report)


def load_products(data_dir: Path, settings: Settings, workdir: Path) -> tuple[pd.DataFrame, str]:
    if (data_dir / "Products.csv").is_file():
        return clean_listings(data_dir, settings), f"real: {data_dir}"
    print(f"NOTE: no Products.csv under {data_dir}: using the embedded synthetic marketplace instead")
    from fbmarket.synthetic.marketplace import write_sample

    folder = workdir / "sample"
    write_sample(folder, n_products=settings.data.sample_products, seed=settings.seed, show_progress=False)
    return clean_listings(folder, settings), "SYNTHETIC (embedded generator)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--buyers", type=int, default=None, help="simulated buyers (default: settings)")
    parser.add_argument("--sessions", type=int, default=None, help="sessions per buyer (default: settings)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--stated-budget", action="store_true", help="give the ranker the buyers' true budgets"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    settings = Settings(seed=args.seed)
    rank = settings.rank
    n_buyers = args.buyers or rank.n_buyers
    sessions = args.sessions or rank.sessions_per_buyer
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        products, source = load_products(args.data, settings, Path(workdir))
    print(f"{len(products)} listings ({source})")

    buyers = simulate_buyers(n_buyers, towns_from_products(products), seed=args.seed)
    interactions = simulate_interactions(
        buyers, products, seed=args.seed + 1, sessions_per_buyer=sessions, show_progress=True
    )
    users = buyers if args.stated_budget else buyers.drop(columns=["budget_gbp"])
    print(
        f"{len(buyers)} buyers, {len(interactions)} events: {interactions['event'].value_counts().to_dict()}"
    )

    retriever = TextRetriever(products, n_candidates=settings.search.candidates, seed=args.seed)
    experiment = run_experiment(
        products, users, interactions, retriever, rank, seed=args.seed, show_progress=True
    )
    summary = experiment.summary
    elapsed = time.perf_counter() - started

    for name in ("all", "query", "browse", "with_history", "cold_start"):
        if name in summary["metrics"]:
            print(f"\n{name} ({summary['sessions'][name]} sessions)")
            print(markdown_table(summary, name))
    print("\nmargins (all sessions), absolute [95% CI]:")
    for pair, entry in summary["margins"]["all"].items():
        cells = [
            f"{metric} {v['absolute']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
            for metric, v in entry.items()
        ]
        print(f"  {pair}: " + "; ".join(cells))

    result = {
        "benchmark": "personalised ranking, held-out simulated interactions",
        "command": "python benchmarks/ranking.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "listings": {"count": int(len(products)), "source": source},
        "buyers": int(n_buyers),
        "sessions_per_buyer": int(sessions),
        "events": int(len(interactions)),
        "budget": "stated" if args.stated_budget else "hidden (inferred from history / cohort)",
        "retrieval": "BM25 (bm25s) + TF-IDF/LSA cosine, reciprocal-rank fused; top "
        f"{settings.search.candidates} candidates",
        "seed": args.seed,
        "seconds": round(elapsed, 1),
    } | summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"\nwrote {args.out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
