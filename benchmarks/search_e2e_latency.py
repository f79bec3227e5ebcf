"""End-to-end search latency in process: the whole `Marketplace.search`, single queries.

Usage: .venv/bin/python benchmarks/search_e2e_latency.py --bundle DIR
           [--sizes 1000,10000,30000,100000] [--queries 400] [--factory auto|Flat|"PQ128x4fs,RFlat"]
           [--threads 1] [--work DIR] [--profile N] [--out FILE] [--plot FILE]

The quality bar: p99 <= 20 ms at 100k listings on 2 cores for encode + FAISS + re-rank. This
times what a caller of `fbmarket search` or the HTTP API waits for, minus the network:
query encoding (the bundle's query encoder), FAISS + BM25 + fusion (200 candidates),
the second-stage ranker over those 200 candidates for the buyer, and result assembly.

Catalogues of any size are made from a trained bundle (use one trained at default
settings: the embedding width sets FAISS's cost): its database is copied, then either
cut down to the first n listings or grown by replicas of its listings with new ids,
their photos' rows, and jittered, re-normalised embeddings (cosine ~0.96 to the
original, so neighbourhoods keep their shape). `Marketplace.open` then builds the index
from the database exactly as a server would.

Queries are 1-3 content words of a listing title, or a leaf category name. Scenarios:
a known buyer (personalised ranking, distance, budget), an anonymous one, and a known
buyer with a root-category filter; and similar listings of an original listing
(`Marketplace.similar`: its vector and title as the query, blend + category agreement). For each query, wall-clock and CPU time (this
process) are recorded; on a shared machine wall time includes waiting for a core, so
the load average is written next to the figures. A second pass times the stages apart.
Results go to benchmarks/results/search_e2e_latency.json and, as a plot, to
readme_images/latency_vs_catalogue.png.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import faiss
import numpy as np
import pandas as pd
from harness import REPO, RESULTS, latency_stats, write_json
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from fbmarket.config import SearchSettings, Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.layout import BundleLayout
from fbmarket.recommend.buyers import Buyer
from fbmarket.recommend.personalise import RankRequest
from fbmarket.search.lexical import tokenize
from fbmarket.service import (
    ListingResult,
    Marketplace,
    SearchRequest,
)

DEFAULT_OUT = RESULTS / "search_e2e_latency.json"
DEFAULT_PLOT = REPO / "readme_images" / "latency_vs_catalogue.png"
WARMUP = 20
JITTER = 0.3  # noise norm relative to the unit embedding: cosine to the original ~ 1 / sqrt(1 + 0.09)
WRITE_CHUNK = 5000
BUNDLE_FILES = ("manifest", "settings")  # BundleLayout's names of the files copied as they are
BAR_MS = 20.0


# ---------------------------------------------------------------------- catalogues
def make_catalogue(source: Path, target: Path, n: int, factory: str, seed: int) -> None:
    """A copy of the bundle whose database holds exactly n listings (cut or replicated)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    old, new = BundleLayout(source), BundleLayout(target)
    for name in BUNDLE_FILES:
        shutil.copy2(getattr(old, name), getattr(new, name))
    new.model_dir.symlink_to(old.model_dir.resolve(), target_is_directory=True)
    if old.cache_dir.is_dir():  # photo paths are stored relative to the bundle
        new.cache_dir.symlink_to(old.cache_dir.resolve(), target_is_directory=True)
    if old.ranking_dir.is_dir():
        shutil.copytree(old.ranking_dir, new.ranking_dir)
    # sqlite3's backup API copies a consistent snapshot even if the file is open elsewhere
    with sqlite3.connect(old.database) as src, sqlite3.connect(new.database) as dst:
        src.backup(dst)
    settings = Settings.load(new.settings)
    settings.out_dir = target
    settings.database_url = None
    settings.search.index_factory = factory
    settings.search.large_index_factory = ""  # this factory at every size
    settings.save(new.settings)

    store = Store(f"sqlite:///{new.database}")
    try:
        products = store.listings_frame()
        photos = store.images_frame()
        ids, vectors = store.load_embeddings()
        version = _model_version(new.database)
        products = products[products[S.PRODUCT_ID].isin(set(ids))].reset_index(drop=True)
        if n <= len(products):
            _keep_only(new.database, products[S.PRODUCT_ID].iloc[:n].tolist())
            return
        position = {pid: i for i, pid in enumerate(ids)}
        base_vectors = vectors[[position[pid] for pid in products[S.PRODUCT_ID]]]
        rng = np.random.default_rng(seed)
        m, extra = len(products), n - len(products)
        for start in tqdm(range(0, extra, WRITE_CHUNK), desc=f"replicas to {n:,}", unit="chunk"):
            rows = np.arange(start, min(extra, start + WRITE_CHUNK))
            source_rows, copy = rows % m, rows // m + 1
            frame = products.iloc[source_rows].copy()
            new_ids = [f"{pid}~{c}" for pid, c in zip(frame[S.PRODUCT_ID], copy, strict=True)]
            rename = dict(zip(zip(frame[S.PRODUCT_ID], copy, strict=True), new_ids, strict=True))
            frame[S.PRODUCT_ID] = new_ids
            pics = photos.merge(
                pd.DataFrame({"src": products[S.PRODUCT_ID].iloc[source_rows].to_numpy(), "copy": copy}),
                left_on=S.PRODUCT_ID,
                right_on="src",
            )
            pics[S.PRODUCT_ID] = [rename[(p, c)] for p, c in zip(pics["src"], pics["copy"], strict=True)]
            pics[S.IMAGE_ID] = pics[S.IMAGE_ID] + "~" + pics["copy"].astype(str)
            store.upsert_listings(frame, pics.drop(columns=["src", "copy"]))
            noise = rng.standard_normal(base_vectors[source_rows].shape).astype(np.float32)
            noise *= JITTER / np.sqrt(vectors.shape[1])
            jittered = base_vectors[source_rows] + noise
            faiss.normalize_L2(jittered)
            store.upsert_embeddings(new_ids, jittered, version)
    finally:
        store.close()


def _model_version(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("select model_version from embeddings limit 1").fetchone()[0]


def _keep_only(db: Path, keep: list[str]) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("create temp table keep (product_id text primary key)")
        connection.executemany("insert into keep values (?)", [(pid,) for pid in keep])
        for table in ("embeddings", "images", "listings"):
            connection.execute(f"delete from {table} where product_id not in (select product_id from keep)")
        connection.commit()


# ---------------------------------------------------------------------- queries
def original_listings(market: Marketplace) -> pd.DataFrame:
    """The bundle's own listings, not the replicas grown from them (ids with "~")."""
    products = market.store.listings_frame()  # the database rows: every column (leaf names too)
    return products[~products[S.PRODUCT_ID].astype(str).str.contains("~", regex=False)]


def make_queries(market: Marketplace, count: int, seed: int) -> list[str]:
    """Title fragments (1-3 content words) and leaf category names, from the original listings."""
    rng = np.random.default_rng(seed)
    originals = original_listings(market)
    leaves = sorted(originals[S.LEAF_NAME].dropna().astype(str).unique())
    queries: list[str] = []
    titles = originals[S.TITLE].astype(str).to_numpy()
    while len(queries) < count:
        if rng.random() < 0.25 and leaves:
            queries.append(leaves[int(rng.integers(len(leaves)))])
            continue
        words = list(dict.fromkeys(w for w in titles[int(rng.integers(len(titles)))].split() if tokenize(w)))
        if words:
            take = rng.choice(len(words), min(len(words), int(rng.integers(1, 4))), replace=False)
            queries.append(" ".join(words[i] for i in sorted(take)))
    return queries


def scenarios(market: Marketplace, queries: list[str], seed: int) -> dict[str, list[SearchRequest]]:
    rng = np.random.default_rng(seed)
    users = sorted(market.ranking.profiles.user_affinity) or [None]
    roots = sorted(market.catalogue.view().products[S.ROOT_CATEGORY].dropna().astype(str).unique())
    pick = [users[int(rng.integers(len(users)))] for _ in queries]
    root = [roots[int(rng.integers(len(roots)))] for _ in queries]
    return {
        "known_buyer": [
            SearchRequest(query=q, buyer=Buyer(user_id=u), k=10)
            for q, u in zip(queries, pick, strict=True)
        ],
        "anonymous": [SearchRequest(query=q, k=10) for q in queries],
        "known_buyer_root_filter": [
            SearchRequest(query=q, buyer=Buyer(user_id=u), k=10, category=c)
            for q, u, c in zip(queries, pick, root, strict=True)
        ],
    }


# ---------------------------------------------------------------------- timing
STATS = ("p50", "p90", "p99", "mean", "max")  # what every latency in this report gives


def search(market: Marketplace, request: SearchRequest) -> list[ListingResult]:
    return market.search(request).results


def similar(market: Marketplace, product_id: str) -> list[ListingResult]:
    return market.similar(product_id, 10)


def timed(
    markets: list[Marketplace],
    requests: list[Any],
    call: Callable[[Marketplace, Any], list[ListingResult]] = search,
) -> tuple[list[dict], list[list[list[str]]]]:
    """Per market: wall and CPU percentiles of whole calls (searches by default), and the ids
    each returned.

    Markets take turns query by query (the order rotating), so a burst of load from other
    jobs on a shared machine falls on all of them alike.
    """
    for market in markets:
        for request in requests[:WARMUP]:
            call(market, request)
    wall: list[list[float]] = [[] for _ in markets]
    cpu: list[list[float]] = [[] for _ in markets]
    ids: list[list[list[str]]] = [[] for _ in markets]
    for i, request in enumerate(requests):
        for j in np.roll(np.arange(len(markets)), i).tolist():
            w, c = time.perf_counter(), time.process_time()
            results = call(markets[j], request)
            cpu[j].append((time.process_time() - c) * 1000)
            wall[j].append((time.perf_counter() - w) * 1000)
            ids[j].append([r.product_id for r in results])
    stats = [{"wall_ms": latency_stats(w, STATS), "cpu_ms": latency_stats(c, STATS)} for w, c in zip(wall, cpu, strict=True)]
    return stats, ids


def overlap(a: list[list[str]], b: list[list[str]]) -> float:
    """Mean share of one list's results that the other also returned (top-k agreement)."""
    shares = [len(set(x) & set(y)) / max(len(x), 1) for x, y in zip(a, b, strict=True)]
    return round(float(np.mean(shares)), 4)


def stage_times(markets: list[Marketplace], requests: list[SearchRequest]) -> list[dict[str, dict]]:
    """CPU and wall time of each stage of `Marketplace.search`, called the way it calls them.

    Markets take turns query by query, as in `timed`.
    """
    names = ("encode", "retrieve", "rank", "assemble")
    wall = [{n: [] for n in names} for _ in markets]
    cpu = [{n: [] for n in names} for _ in markets]

    def clock(j: int, name: str, fn: Callable[[], object], record: bool) -> object:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        if record:
            cpu[j][name].append((time.process_time() - c) * 1000)
            wall[j][name].append((time.perf_counter() - w) * 1000)
        return out

    for i, request in enumerate(requests):
        record = i >= WARMUP
        for j in np.roll(np.arange(len(markets)), i).tolist():
            market = markets[j]
            buyer, _, _ = market._buyer(request.buyer)
            filters = market._filters(request, buyer)
            vector = clock(
                j, "encode", lambda m=market, r=request: m.model.encode_query(r.query, None), record
            )
            candidates = clock(
                j,
                "retrieve",
                lambda m=market, v=vector, r=request, f=filters: m.searcher.retrieve(
                    v, r.query, f, n=m.settings.search.candidates
                ).frame,
                record,
            )
            ranked = clock(
                j,
                "rank",
                lambda m=market, b=buyer, c=candidates, r=request: m.ranking.personalise(
                    RankRequest(b, m.catalogue.view(), k=r.k, candidates=c)
                ),
                record,
            )
            clock(j, "assemble", lambda m=market, x=ranked: m._results(x.results), record)
    return [
        {n: {"wall_ms": latency_stats(w[n], STATS), "cpu_ms": latency_stats(c[n], STATS)} for n in names}
        for w, c in zip(wall, cpu, strict=True)
    ]


def profile(market: Marketplace, requests: list[SearchRequest], top: int = 40) -> str:
    for request in requests[:WARMUP]:
        market.search(request)
    profiler = cProfile.Profile()
    profiler.enable()
    for request in requests:
        market.search(request)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def factory_for(size: int, choice: str) -> str:
    """'auto' is the default for the size (`SearchSettings.factory_for`)."""
    return SearchSettings().factory_for(size) if choice == "auto" else choice


def run_size(n: int, factories: list[str], args: argparse.Namespace) -> list[dict]:
    """One catalogue of n listings, opened once per FAISS factory; the factories are timed in turns."""
    first = args.work / f"catalogue_{n}_{_slug(factories[0])}"
    started = time.perf_counter()
    make_catalogue(args.bundle, first, n, factories[0], args.seed)
    build_s = time.perf_counter() - started
    folders = [first]
    for factory in factories[1:]:
        folder = args.work / f"catalogue_{n}_{_slug(factory)}"
        copy_catalogue(first, folder, factory)
        folders.append(folder)
    markets, open_s = [], []
    try:
        for folder in folders:
            started = time.perf_counter()
            markets.append(Marketplace.open(folder))
            open_s.append(time.perf_counter() - started)
        listings = len(markets[0].catalogue)
        for factory, market in zip(factories, markets, strict=True):
            built = market.searcher.vectors.factory if market.searcher.vectors is not None else None
            if built != factory:
                raise RuntimeError(f"asked for a {factory!r} index, the catalogue opened with {built!r}")
        for factory, seconds in zip(factories, open_s, strict=True):
            print(f"n={listings:,} {factory}: catalogue {build_s:.1f}s, open {seconds:.1f}s", flush=True)
        queries = make_queries(markets[0], args.queries + WARMUP, args.seed)
        plans = scenarios(markets[0], queries, args.seed)
        if args.profile and n == args.profile:
            for factory, market in zip(factories, markets, strict=True):
                path = args.out.with_name(f"search_e2e_profile_{n}_{_slug(factory)}.txt")
                path.write_text(profile(market, plans["known_buyer"]))
                print(f"  profile -> {path}")
        load_before = os.getloadavg()
        results: list[dict] = [{} for _ in markets]
        agreement: list[dict] = [{} for _ in markets]
        # similar listings of original listings (blend + the model's category agreement)
        originals = original_listings(markets[0])[S.PRODUCT_ID].astype(str).to_numpy()
        sample = np.random.default_rng(args.seed).choice(originals, args.queries + WARMUP).tolist()
        timings = [(name, requests, search) for name, requests in plans.items()]
        for name, requests, call in [*timings, ("similar_listings", sample, similar)]:
            stats, ids = timed(markets, requests, call)
            for j, (factory, r) in enumerate(zip(factories, stats, strict=True)):
                results[j][name] = r
                agreement[j][name] = overlap(ids[j], ids[0])
                print(
                    f"  {factory:16s} {name:24s} wall p50 {r['wall_ms']['p50']:6.2f} p99 {r['wall_ms']['p99']:6.2f} ms"
                    f" | CPU p50 {r['cpu_ms']['p50']:6.2f} p99 {r['cpu_ms']['p99']:6.2f} ms",
                    flush=True,
                )
        load_after = os.getloadavg()
        runs = []
        all_stages = stage_times(markets, plans["known_buyer"])
        for j, (factory, market) in enumerate(zip(factories, markets, strict=True)):
            stages = all_stages[j]
            print(
                f"  {factory} stages (CPU p50/p99 ms): "
                + ", ".join(
                    f"{k} {v['cpu_ms']['p50']:.2f}/{v['cpu_ms']['p99']:.2f}" for k, v in stages.items()
                ),
                flush=True,
            )
            runs.append(
                {
                    "n": listings,
                    "factory": factory,
                    "default_factory": factory == SearchSettings().factory_for(listings),
                    "index": market.searcher.vectors.describe()
                    if market.searcher.vectors is not None
                    else None,
                    "dim": int(market.model.embedding_dim),
                    "queries": args.queries,
                    "catalogue_build_s": round(build_s, 1),
                    "open_s": round(open_s[j], 1),
                    "search": results[j],
                    f"top10_agreement_with_{factories[0]}": agreement[j],
                    "stages_known_buyer": stages,
                    "load_average": {
                        "before": [round(v, 2) for v in load_before],
                        "after": [round(v, 2) for v in load_after],
                    },
                }
            )
        return runs
    finally:
        for market in markets:
            market.store.close()
        if not args.keep:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)


def copy_catalogue(source: Path, target: Path, factory: str) -> None:
    """The same catalogue with another FAISS factory (its own database copy and index)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("index", "fbmarket.db*"))
    with sqlite3.connect(BundleLayout(source).database) as src, sqlite3.connect(BundleLayout(target).database) as dst:
        src.backup(dst)
    settings = Settings.load(BundleLayout(target).settings)
    settings.out_dir = target
    settings.search.index_factory = factory
    settings.search.large_index_factory = ""
    settings.save(BundleLayout(target).settings)


def _slug(factory: str) -> str:
    return factory.replace(",", "_")


def plot(runs: list[dict], path: Path, scenario: str = "known_buyer") -> None:
    """p50/p99 vs catalogue size, wall clock and CPU side by side; the default index type as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    default = sorted((r for r in runs if r.get("default_factory")), key=lambda r: r["n"])
    others = [r for r in runs if not r.get("default_factory")]
    for ax, clock, title in zip(
        axes, ("wall_ms", "cpu_ms"), ("wall clock", "CPU time of the process"), strict=True
    ):
        for q, marker in (("p50", "o"), ("p99", "^")):
            ax.plot(
                [r["n"] for r in default],
                [r["search"][scenario][clock][q] for r in default],
                "-",
                marker=marker,
                label=f"{q}, default index (" + ", ".join(dict.fromkeys(r["factory"] for r in default)) + ")",
            )
            for r in others:
                ax.plot(
                    r["n"],
                    r["search"][scenario][clock][q],
                    marker=marker,
                    linestyle="",
                    color="grey",
                    label=f"{q}, {r['factory']}",
                )
        ax.axhline(
            BAR_MS, color="red", linewidth=0.8, linestyle=":", label=f"bar: p99 {BAR_MS:.0f} ms at 100k"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("listings in the catalogue")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("Marketplace.search, ms per query")
    handles, labels = axes[1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[1].legend(unique.values(), unique.keys(), fontsize=7)
    loads = [v for r in runs for v in (r["load_average"]["before"][0], r["load_average"]["after"][0])]
    fig.suptitle(
        f"Whole search (encode + FAISS + BM25 + re-rank 200 + results), {scenario.replace('_', ' ')}, "
        f"single queries, one thread\n2 shared cores, 1-min load average {min(loads):.1f}-{max(loads):.1f} "
        "during the runs (wall time includes waiting for a core)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a trained bundle (python main.py)")
    parser.add_argument("--sizes", default="1000,10000,30000,100000")
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--factory", action="append", help="FAISS factory, repeatable; 'auto' = the default")
    parser.add_argument(
        "--threads", type=int, default=1, help="FAISS OpenMP and BLAS threads (0: library default)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="where catalogues are built (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the built catalogues")
    parser.add_argument("--profile", type=int, default=0, help="cProfile the searches at this catalogue size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to draw; '' for none")
    args = parser.parse_args()
    if not BundleLayout(args.bundle).settings.is_file() or not BundleLayout(args.bundle).database.is_file():
        print(f"SKIP: {args.bundle} is not a trained bundle with a database (run python main.py)")
        return 0
    temp = None
    if args.work is None:
        temp = tempfile.TemporaryDirectory(prefix="fbm_e2e_")
        args.work = Path(temp.name)

    if args.threads > 0:
        faiss.omp_set_num_threads(args.threads)
    limits = threadpool_limits(args.threads) if args.threads > 0 else None
    runs = []
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            factories = list(dict.fromkeys(factory_for(n, choice) for choice in args.factory or ["auto"]))
            runs.extend(run_size(n, factories, args))
    finally:
        if limits is not None:
            limits.unregister()
        if temp is not None:
            temp.cleanup()
    result = {
        "what": "Marketplace.search in process, single queries: encode + FAISS + BM25 + fusion "
        "(200 candidates) + re-rank for the buyer + result assembly",
        "bundle": str(args.bundle),
        "threads": args.threads,
        "command": "benchmarks/search_e2e_latency.py " + " ".join(sys.argv[1:]),
        "bar": {"n": 100_000, "p99_ms": BAR_MS},
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "note": "shared 2-core machine with other jobs running: wall time includes waiting "
            "for a core (see load_average); CPU time is this process's",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"-> {args.out}")
    if args.plot:
        plot(runs, Path(args.plot))
        print(f"-> {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
