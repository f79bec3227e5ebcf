"""Batch embedding throughput: `fbmarket embed --engine local` against `--engine ray` with 1, 2 ... actors.

Usage: .venv/bin/python benchmarks/embed_ray.py --bundle B [--limit N] [--workers 1 2] [--batch-size N]

The first `--limit` listings of the bundle's database (and their photos) are exported to a
temporary Parquet folder (the `--source` format), then embedded by each engine into a
temporary output (`--no-database`: the bundle is only read, never written). Every photo is
computed (the bundle's feature cache is not used). Reported per run: wall seconds of the
embed phase (for Ray this includes starting Ray's local mode and each actor loading the
bundle: the fixed cost of a job), listings/s and photos/s over it, and both per worker over
the time the workers spent embedding (`encode_seconds`, start-up excluded). With
`--index-uri` (a milvus-lite .db path or milvus://host:port) each run also loads its Parquet
into that Milvus collection (`fbmarket embed --index-uri`), and the load's seconds and rows/s
are reported (the first run inserts; later runs upsert the same ids). Results:
benchmarks/results/embed_ray.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from harness import RESULTS, write_result

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fbmarket.batch import run_embed  # noqa: E402
from fbmarket.bundle import load_bundle_settings  # noqa: E402
from fbmarket.config import mask_url_password  # noqa: E402
from fbmarket.data.store import Store  # noqa: E402


def export(bundle: Path, limit: int, folder: Path) -> tuple[int, int]:
    """The first `limit` listings (by id) and their photos as a Parquet export; (listings, photos)."""
    settings = load_bundle_settings(bundle).with_environment()
    store = Store(settings.db_url, root=bundle)
    try:
        listings = store.listings_frame()
        listings = listings.iloc[:limit] if limit else listings
        photos = store.images_frame(listings["product_id"].astype(str).tolist())
    finally:
        store.close()
    listings.to_parquet(folder / "listings.parquet")
    photos.to_parquet(folder / "images.parquet")
    return len(listings), len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=3000, help="listings to embed (0: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actor counts to run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-local", action="store_true", help="skip the in-process run")
    parser.add_argument("--index-uri", help="also load each run's Parquet into this Milvus (milvus-lite .db or milvus://)")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as work:
        source = Path(work) / "export"
        source.mkdir()
        n_listings, n_photos = export(args.bundle, args.limit, source)
        print(f"{n_listings} listings, {n_photos} photos exported")
        plan = ([] if args.no_local else [("local", 1)]) + [("ray", w) for w in args.workers]
        for engine, workers in plan:
            tick = time.perf_counter()
            report = run_embed(
                args.bundle,
                engine=engine,
                source=source,
                out=Path(work) / f"out-{engine}-{workers}",
                workers=workers,
                batch_size=args.batch_size,
                store_in_database=False,
                index_uri=args.index_uri,
                show_progress=False,
            )
            total = time.perf_counter() - tick
            seconds = report.seconds["embed"]
            row = {
                "engine": engine,
                "workers": workers,
                "listings": report.listings,
                "photos": report.photos,
                "photos_undecodable": report.photos_undecodable,
                "photos_missing": report.photos_missing,
                "embed_s": seconds,
                "total_s": round(total, 2),
                "listings_per_s": round(report.listings / seconds, 2),
                "photos_per_s": round(report.photos / seconds, 2),
                "encode_s_all_workers": report.encode_seconds,
                # per worker: over the time the workers spent embedding (start-up excluded)
                "listings_per_s_per_worker": round(report.listings / report.encode_seconds, 2),
                "photos_per_s_per_worker": round(report.photos / report.encode_seconds, 2),
            }
            if args.index_uri:
                index_s = report.seconds["index"]
                row |= {"indexed": report.indexed, "index_s": index_s, "indexed_per_s": round(report.indexed / max(index_s, 1e-9), 1)}
            print(row)
            runs.append(row)
    payload = {
        "bundle": str(args.bundle),
        "batch_size": args.batch_size,
        "listings": n_listings,
        "photos_exported": n_photos,
        "note": "listings/s and photos/s are over embed_s, the wall time of the embed phase, which "
        "includes Ray's start-up and each actor loading the bundle; the per-worker figures are over the "
        "time the workers spent inside BatchEncoder.encode (encode_s, summed over workers), start-up "
        "excluded; every photo computed (no feature cache)",
        "runs": runs,
        "index": mask_url_password(args.index_uri) if args.index_uri else None,  # password masked
    }
    write_result("embed_ray", payload)
    write_markdown(payload)


def write_markdown(payload: dict) -> None:
    lines = [
        "# Batch embedding: local vs Ray Data (benchmarks/embed_ray.py)",
        "",
        f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}; "
        f"{payload['listings']:,} listings with {payload['photos_exported']:,} photos from the bundle's "
        f"database, batch size {payload['batch_size']}. {payload['note']}.",
        "",
        "| engine | workers | listings | photos | embed s (wall) | listings/s | photos/s | encode s (all workers) "
        "| listings/s per worker | photos/s per worker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["runs"]:
        lines.append(
            f"| {r['engine']} | {r['workers']} | {r['listings']:,} | {r['photos']:,} | {r['embed_s']} | "
            f"{r['listings_per_s']} | {r['photos_per_s']} | {r['encode_s_all_workers']} | "
            f"{r['listings_per_s_per_worker']} | "
            f"{r['photos_per_s_per_worker']} |"
        )
    if any("index_s" in r for r in payload["runs"]):
        lines += ["", "Loading each run's Parquet into Milvus (`--index-uri`; milvus-lite is not a Milvus server):", ""]
        lines += ["| engine | workers | rows loaded | load s | rows/s |", "|---|---:|---:|---:|---:|"]
        lines += [
            f"| {r['engine']} | {r['workers']} | {r['indexed']:,} | {r['index_s']} | {r['indexed_per_s']} |"
            for r in payload["runs"]
            if "index_s" in r
        ]
    path = RESULTS / "embed_ray.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
