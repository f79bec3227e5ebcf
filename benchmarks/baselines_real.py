"""Classical baselines (and the README's EDA plots) on the real Gumtree dev listings.

Usage: .venv/bin/python benchmarks/baselines_real.py [--data DIR] [--work DIR] [--out FILE]
                                                      [--plots DIR | --no-plots] [--seed N]
Runs prepare_data (clean, geocode, photos, split) into --work, then the scikit-learn
baselines on that split, prints a table and writes --out. Skips with a message (exit 0)
when the data folder is absent.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from harness import DEV_DATA, REPO, RESULTS, write_json

from fbmarket.baselines import run_baselines
from fbmarket.config import Settings
from fbmarket.eda import make_eda_plots
from fbmarket.prepare import prepare_data

DEFAULT_DATA = DEV_DATA
DEFAULT_WORK = REPO / "artifacts-real"  # git-ignored; its split.json and photo cache are reused
DEFAULT_OUT = RESULTS / "baselines.json"
DEFAULT_PLOTS = REPO / "readme_images"


def table(metrics: dict) -> list[tuple[str, str]]:
    price, text, pixels = metrics["price_regression"], metrics["category_text"], metrics["category_pixels"]
    similar = metrics["similar_listings"]
    rows = [
        ("split train/val/test", "/".join(str(metrics["data"][s]) for s in ("train", "val", "test"))),
        (
            "price RMSE (GBP, test)",
            f"{price['rmse_gbp']:.1f}  (original project: {price['original_project_rmse_gbp']})",
        ),
        ("price R2 (test)", f"{price['r2']:.3f}"),
        ("price R2 on log price", f"{price['r2_log']:.3f}"),
        ("price median abs error (GBP)", f"{price['median_abs_error_gbp']:.1f}"),
        (
            "price RMSE / R2 below train p99",
            f"{price['below_train_p99']['rmse_gbp']:.1f} / {price['below_train_p99']['r2']:.3f}",
        ),
        ("price: predict train median RMSE", f"{price['train_median_baseline']['rmse_gbp']:.1f}"),
        ("root from TF-IDF: accuracy", f"{text['accuracy']:.3f}  (C={text['C']})"),
        ("root from TF-IDF: macro-F1", f"{text['macro_f1']:.3f}"),
        (
            "root from pixels: accuracy",
            f"{pixels.get('accuracy', float('nan')):.3f}  (majority {pixels['majority_accuracy']:.3f})",
        ),
        ("root from pixels: macro-F1", f"{pixels.get('macro_f1', float('nan')):.3f}"),
        ("pixels: excluded without photo", str(pixels["excluded_without_photo"])),
    ]
    for pool in ("catalogue", "test_only"):
        result = similar[pool]
        rows.append(
            (
                f"TF-IDF P@{result['k']} leaf / root ({pool})",
                f"{result['precision_at_k_leaf']:.3f} / {result['precision_at_k_root']:.3f}",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--plots", type=Path, default=DEFAULT_PLOTS)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not (args.data / "Products.csv").is_file():
        print(f"SKIP: no Products.csv under {args.data} (pass --data DIR)")
        return 0

    settings = Settings(data_dir=args.data, out_dir=args.work, seed=args.seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    prepared = prepare_data(settings, show_progress=True, store=False)
    timings["prepare_data"] = time.perf_counter() - start
    if not args.no_plots:
        start = time.perf_counter()
        plots = make_eda_plots(
            prepared.products, prepared.images, args.plots, synthetic=prepared.synthetic, seed=args.seed
        )
        timings["eda_plots"] = time.perf_counter() - start
        for name, path in plots.items():
            print(f"plot {name}: {os.path.relpath(path, REPO)} ({path.stat().st_size // 1024} KB)")
    start = time.perf_counter()
    metrics = run_baselines(prepared.products, prepared.images, args.out, seed=args.seed)
    timings["baselines"] = time.perf_counter() - start

    metrics = {"data_dir": os.path.relpath(args.data, REPO), "synthetic": prepared.synthetic} | metrics
    metrics["wall_seconds"] = {name: round(value, 1) for name, value in timings.items()}
    metrics["cpu_count"] = os.cpu_count()
    write_json(args.out, metrics)

    rows = table(metrics) + [(f"time: {name}", f"{value:.1f} s") for name, value in timings.items()]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    print(f"\nwrote {os.path.relpath(args.out, REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
