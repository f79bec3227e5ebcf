"""Time and peak memory of the data pipeline (read -> clean -> geocode -> photos -> features -> split -> DB).

Runs `prepare_data` twice on the real dev data in a fresh output folder: once with a cold
photo cache, once warm (the cache and split re-used), each in its own process so peak RSS
is per run. Prints a table and writes benchmarks/results/data_pipeline.json.

Usage: .venv/bin/python benchmarks/data_pipeline.py [--data DIR] [--out FILE]
Skips with a message (exit 0) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import DEV_DATA, RESULTS, write_json

DEFAULT_DATA = DEV_DATA
DEFAULT_OUT = RESULTS / "data_pipeline.json"


def one_run(data: Path, out_dir: Path) -> dict:
    """The measured step, in this process (called by the child)."""
    from fbmarket.config import Settings
    from fbmarket.prepare import prepare_data

    settings = Settings(data_dir=data, out_dir=out_dir)
    started = time.perf_counter()
    prepared = prepare_data(settings, show_progress=False)
    seconds = time.perf_counter() - started
    report = prepared.report.to_json()
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "listings_in": report["rows_in"],
        "listings_kept": report["rows_out"],
        "dropped": report["dropped"],
        "photos_cleaned": report["images"]["cleaned"],
        "photos_skipped": report["images"]["skipped"],
        "geocoding": {k: round(v, 4) for k, v in report["geocoding"].items()},
        "image_size": settings.data.image_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.data, args.child)))
        return 0
    if not (args.data / "Products.csv").is_file():
        print(f"SKIP: real dev data not found at {args.data} (pass --data DIR)")
        return 0
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cold_cache", "warm_cache"):
            completed = subprocess.run(
                [sys.executable, __file__, "--data", str(args.data), "--child", tmp],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    load = os.getloadavg()
    payload = {
        "benchmark": "data pipeline on the real dev data",
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, payload)
    print(
        f"{'run':12} {'seconds':>8} {'peak RSS MB':>12} {'kept/read':>12} {'photos':>7} {'geo matched':>12}"
    )
    for name, r in results.items():
        kept = f"{r['listings_kept']}/{r['listings_in']}"
        print(
            f"{name:12} {r['seconds']:8.1f} {r['peak_rss_mb']:12.0f} {kept:>12} {r['photos_cleaned']:7d}"
            f" {100 * r['geocoding']['matched']:11.1f}%"
        )
    print(f"load average during the run: {payload['load_average_1_5_15']} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
