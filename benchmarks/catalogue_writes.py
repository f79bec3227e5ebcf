"""What a live write costs the in-memory listing catalogue, at 1k, 10k and 100k listings.

Usage: .venv/bin/python benchmarks/catalogue_writes.py [--sizes 1000,10000,100000] [--writes 200]
           [--legacy /path/to/a/checkout/of/4537d6f] [--legacy-writes 20]

On POST/PUT/DELETE /listings the service writes the database, the indexes and its one
listing catalogue (fbmarket/catalogue.py): `ListingCatalogue.upsert` of the cleaned row with
its photo count, or `delete`. This script times that catalogue part alone, with a view
taken after each write as the next request takes one; the database, the encoder and the
indexes are measured elsewhere (api_load, search_latency). Listings are synthetic (no
TensorFlow, no bundle): 13 roots x 8 leaves, prices, UK-ish coordinates, dates.

Each write is timed alone (wall clock): median, p99 and max over `--writes` creates (new
ids), updates (existing ids) and deletes. The catalogue's flat cost is its design: appends
into spare capacity, tombstones, an id -> row dict. Growth and compaction copy the table,
O(n), but only after as many writes as the table has rows; `max` shows one if it fell in
the sample. "live-row mask after a write" is the catalogue's one O(n) step on the read side:
a view's mask of listed rows, built once per version by the first filtered query after a
write (the searcher's row -> index-id alignment is rebuilt then too, as it was before).

`--legacy` also times what one write cost before the one catalogue (up to commit 4537d6f),
run in a subprocess on that checkout's own classes: the searcher's `pd.concat` + `ListingTable`
rebuild and the service's `_products` concat + `Catalogue` + `_ShownColumns` rebuild.

Results: benchmarks/results/catalogue_writes.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from harness import REPO, RESULTS, write_json

sys.path.insert(0, os.environ.get("FBMARKET_TREE", str(REPO)))  # --legacy: the old checkout first

PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY = "product_id", "title", "description", "category"
ROOT, LEAF, PRICE, LOCATION, LAT, LON, CREATED = (
    "root_category",
    "leaf_category",
    "price",
    "location",
    "latitude",
    "longitude",
    "created",
)
DEFAULT_OUT = RESULTS / "catalogue_writes.json"
KINDS = ("create", "update", "delete")


def synthetic(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """n clean listings with ids p<start>..., every column the catalogue holds."""
    rng = np.random.default_rng(seed)
    root = np.array([f"Root {i}" for i in range(13)], dtype=object)[rng.integers(0, 13, n)]
    leaf = np.array(
        [f"{r} / Leaf {j}" for r, j in zip(root, rng.integers(0, 8, n), strict=True)], dtype=object
    )
    ids = np.arange(start, start + n)
    return pd.DataFrame(
        {
            PRODUCT_ID: [f"p{i}" for i in ids],
            TITLE: [f"listing {i}" for i in ids],
            DESCRIPTION: "a few words about it",
            CATEGORY: leaf,
            ROOT: root,
            LEAF: leaf,
            PRICE: rng.uniform(0, 2000, n).round(2),
            LOCATION: "Leeds, West Yorkshire",
            LAT: rng.uniform(50.0, 57.0, n),
            LON: rng.uniform(-5.0, 1.5, n),
            CREATED: pd.Timestamp("2024-05-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D"),
        }
    )


def timed(write: Callable[[int], None], count: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each of `count` calls write(0..count-1). On a shared machine the
    wall clock also counts waiting for a core; the thread's CPU time does not."""
    out = []
    for i in range(count):
        wall, cpu = time.perf_counter(), time.thread_time()
        write(i)
        out.append((time.perf_counter() - wall, time.thread_time() - cpu))
    return out


def summary(times: list[tuple[float, float]]) -> dict[str, float]:
    wall, cpu = (np.asarray(column) * 1e3 for column in zip(*times, strict=True))
    return {
        "median_ms": round(float(np.median(wall)), 4),
        "p99_ms": round(float(np.percentile(wall, 99)), 4),
        "max_ms": round(float(wall.max()), 4),
        "cpu_median_ms": round(float(np.median(cpu)), 4),
        "cpu_p99_ms": round(float(np.percentile(cpu, 99)), 4),
        "writes": len(wall),
    }


def measure_catalogue(n: int, writes: int, seed: int) -> dict[str, Any]:
    """Creates, updates and deletes on a catalogue of n listings (each with a view after it)."""
    from fbmarket.catalogue import ListingCatalogue

    catalogue = ListingCatalogue.from_frame(synthetic(n, seed=seed), image_counts={})
    new = [synthetic(1, start=n + i, seed=seed + i) for i in range(writes)]
    changed = [synthetic(1, start=i * (n // writes), seed=seed + i) for i in range(writes)]

    def create(i: int) -> None:
        catalogue.upsert(new[i], [2])
        catalogue.view()

    def update(i: int) -> None:
        catalogue.upsert(changed[i], [1])
        catalogue.view()

    def delete(i: int) -> None:
        catalogue.delete([f"p{n + i}"])
        catalogue.view()

    result = {
        kind: summary(timed(write, writes))
        for kind, write in zip(KINDS, (create, update, delete), strict=True)
    }

    def first_read(i: int) -> None:
        catalogue.upsert(changed[i], [1])
        view = catalogue.view()
        wall, cpu = time.perf_counter(), time.thread_time()
        view.alive  # noqa: B018 - what the first filtered query after a write builds
        reads.append((time.perf_counter() - wall, time.thread_time() - cpu))

    reads: list[tuple[float, float]] = []
    timed(first_read, min(writes, 50))
    result["live_row_mask_after_a_write"] = summary(reads)
    return result


def measure_legacy(n: int, writes: int, seed: int) -> dict[str, Any]:
    """The same writes through the code before the one catalogue (run on that checkout): the
    searcher's table and the service's three shapes rebuilt whole, as `_save` did."""
    from fbmarket.recommend.features import Catalogue
    from fbmarket.search.hybrid import TABLE_COLUMNS, ListingTable
    from fbmarket.service import _ShownColumns

    products = synthetic(n, seed=seed)
    state = {"table": ListingTable(products), "frame": products.set_index(PRODUCT_ID, drop=False)}

    def rebuild(frame: pd.DataFrame) -> None:
        state["frame"] = frame
        Catalogue(frame.reset_index(drop=True), ROOT)
        _ShownColumns(frame)

    def save(row: pd.DataFrame) -> None:
        merged = pd.concat([state["table"].frame, row.loc[:, list(TABLE_COLUMNS)]], ignore_index=True)
        state["table"] = ListingTable(merged)
        kept = state["frame"].drop(index=row[PRODUCT_ID].iloc[0], errors="ignore")
        rebuild(pd.concat([kept, row.set_index(PRODUCT_ID, drop=False)]))

    def delete(i: int) -> None:
        frame = state["table"].frame
        state["table"] = ListingTable(frame.loc[~frame[PRODUCT_ID].isin([f"p{n + i}"])])
        rebuild(state["frame"].drop(index=f"p{n + i}", errors="ignore"))

    new = [synthetic(1, start=n + i, seed=seed + i) for i in range(writes)]
    changed = [synthetic(1, start=i * (n // writes), seed=seed + i) for i in range(writes)]
    return {
        "create": summary(timed(lambda i: save(new[i]), writes)),
        "update": summary(timed(lambda i: save(changed[i]), writes)),
        "delete": summary(timed(delete, writes)),
    }


def legacy_figures(tree: Path, sizes: list[int], writes: int, seed: int) -> dict[str, Any]:
    """Run measure_legacy in a subprocess whose `fbmarket` is the old checkout at `tree`."""
    command = [sys.executable, __file__, "--legacy-child", "--sizes", ",".join(map(str, sizes))]
    command += ["--legacy-writes", str(writes), "--seed", str(seed)]
    env = os.environ | {"FBMARKET_TREE": str(tree), "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Catalogue part of a live write (benchmarks/catalogue_writes.py)",
        "",
        f"{report['machine']}; {report['writes']} writes of each kind per size, synthetic listings. "
        "Milliseconds per write: `ListingCatalogue.upsert`/`delete` plus the view the next request takes.",
        "",
        "| listings | create median | create p99 | update median | update p99 | delete median | delete p99 "
        "| live-row mask after a write (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clock, prefix in (("wall clock", ""), ("CPU time of the writing thread", "cpu_")):
        if prefix:
            lines += ["", f"The same writes, {clock} (what the write costs, without waiting for a core):", ""]
            lines += [lines[4], lines[5]]
        for n, row in report["catalogue"].items():
            cells = [f"{row[k][prefix + 'median_ms']:.3f} | {row[k][prefix + 'p99_ms']:.3f}" for k in KINDS]
            read = row["live_row_mask_after_a_write"][prefix + "median_ms"]
            lines.append(f"| {int(n):,} | " + " | ".join(cells) + f" | {read:.3f} |")
    legacy = report.get("legacy")
    if legacy:
        lines += [
            "",
            f"Before the one catalogue ({report['legacy_tree_commit']}: three shapes rebuilt whole per write), "
            f"{report['legacy_writes']} writes of each kind:",
            "",
            "| listings | create median | update median | delete median "
            "| create median, CPU | update median, CPU | delete median, CPU |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, row in legacy.items():
            cells = [f"{row[k]['median_ms']:.2f}" for k in KINDS] + [
                f"{row[k]['cpu_median_ms']:.2f}" for k in KINDS
            ]
            lines.append(f"| {int(n):,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--legacy", type=Path, help="a checkout of the code before the one catalogue")
    parser.add_argument("--legacy-writes", type=int, default=20)
    parser.add_argument("--legacy-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.legacy_child:
        print(json.dumps({n: measure_legacy(n, args.legacy_writes, args.seed) for n in sizes}))
        return
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"Python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}",
        "writes": args.writes,
        "catalogue": {},
    }
    for n in sizes:
        report["catalogue"][n] = measure_catalogue(n, args.writes, args.seed)
        print(n, json.dumps(report["catalogue"][n]), flush=True)
    if args.legacy is not None:
        commit = subprocess.run(
            ["git", "-C", str(args.legacy), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        report["legacy_tree_commit"] = commit or args.legacy.resolve().name
        report["legacy_writes"] = args.legacy_writes
        report["legacy"] = legacy_figures(args.legacy, sizes, args.legacy_writes, args.seed)
        print("legacy", json.dumps(report["legacy"]), flush=True)
    write_json(args.out, report)
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
