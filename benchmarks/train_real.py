"""Train and evaluate the text-only, image-only and fusion models on the real Gumtree dev data.

Usage: .venv/bin/python benchmarks/train_real.py [--data DIR] [--work DIR] [--out FILE]
           [--backbone NAME] [--image-weights none|imagenet|PATH.h5] [--image-size PX]
           [--image-epochs N] [--time-budget MIN] [--seed N] [--serving-bundle] [--quiet]

Runs prepare_data (clean, geocode, photos, product-level split persisted in --work),
then `train_bundle` into --work, and reports the persisted test split's accuracy and
macro-F1 per branch, the image weights used, the wall time and the peak memory, as a
table and as JSON (--out), with the settings `fbmarket train` would use (the tier chosen
for the data's size and the time budget). Long (~30 min on 2 cores): run it in the
background. Skips with a
message (exit 0) when the data folder is absent.

--serving-bundle also writes the listings to the bundle's database and runs the index
and ranking stages of `python main.py`, so the bundle can be searched
(benchmarks/search_quality.py, `fbmarket search`) and served (`fbmarket serve`).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

from harness import DEV_DATA, REPO, RESULTS, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fbmarket.config import Settings
from fbmarket.prepare import prepare_data
from fbmarket.training import train_bundle
from fbmarket.workflow import RunState, stage_index, stage_ranking

DEFAULT_DATA = DEV_DATA
DEFAULT_WORK = REPO / "artifacts-real"  # git-ignored; shares its split and photo cache with the baselines
DEFAULT_OUT = RESULTS / "train_real.json"

def real_settings(args: argparse.Namespace) -> Settings:
    """The defaults `fbmarket train` uses (the tier fbmarket/plan.py picks for the data's size
    and the time budget), with only the flags given here changed."""
    settings = Settings()
    settings.data_dir = args.data
    settings.out_dir = args.work
    settings.seed = args.seed
    if args.time_budget is not None:
        settings.time_budget_min = args.time_budget
    if args.backbone:
        settings.vision.backbone = args.backbone
    if args.image_weights:
        settings.vision.weights = args.image_weights
    if args.image_size:
        settings.vision.train_size = args.image_size
    if args.image_epochs is not None:
        settings.vision.epochs = args.image_epochs
    settings.fusion.log_dir = str(REPO / "logs")
    return settings


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--backbone", help="auto (default) | efficientnet_lite2 | efficientnet_lite0 | resnet50v2")
    parser.add_argument("--image-weights", help="ResNet50V2 only: none | imagenet | PATH.h5")
    parser.add_argument("--image-size", type=int, help="ResNet50V2 from scratch: training resolution")
    parser.add_argument("--image-epochs", type=int, help="ResNet50V2 from scratch: epochs")
    parser.add_argument("--time-budget", type=float, help="minutes (default 30, as fbmarket train)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--serving-bundle", action="store_true", help="also database, index and ranker")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if not (args.data / "Products.csv").is_file():
        print(f"skipped: real dev data not found at {args.data}")
        return 0

    settings = real_settings(args)
    started = time.perf_counter()
    prepared = prepare_data(settings, show_progress=not args.quiet, store=args.serving_bundle)
    prepared_s = time.perf_counter() - started
    result = train_bundle(prepared, settings, settings.out_dir, show_progress=not args.quiet)
    wall = time.perf_counter() - started
    if args.serving_bundle:
        state = RunState(settings, show_progress=not args.quiet, prepared=prepared, bundle=result.bundle)
        for stage in (stage_index, stage_ranking):
            stage(state)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    summary = result.summary
    payload = {
        "command": "benchmarks/train_real.py " + " ".join(sys.argv[1:]),
        "data": str(args.data),
        "split": prepared.products["split"].value_counts().to_dict(),
        "test": {b: summary[b] for b in ("text", "image", "fusion")},
        "image_weights": summary["image_weights"],
        "wall_time_s": round(wall, 1),
        "data_preparation_s": round(prepared_s, 1),
        "training_timings_s": result.timings,
        "peak_memory_mb": round(peak_mb, 1),
        "bundle": str(settings.out_dir),
        "tensorboard": str(result.log_dir),
        "settings": {
            "text": settings.to_json()["text"],
            "vision": settings.to_json()["vision"],
            "fusion": settings.to_json()["fusion"],
        },
        "best_validation_accuracy": {
            name: history.get("best_val_accuracy", [None])[0]
            for name, history in result.history.items()
            if isinstance(history, dict)
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "bars": {"fusion_accuracy": 0.85, "text_accuracy": 0.80},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, payload)
    rows = [
        ("split train/val/test", "/".join(str(payload["split"].get(s, 0)) for s in ("train", "val", "test"))),
        *[
            (
                f"{branch} accuracy / macro-F1 (test)",
                f"{summary[branch]['accuracy']:.3f} / {summary[branch]['macro_f1']:.3f}",
            )
            for branch in ("text", "image", "fusion")
        ],
        ("image weights", summary["image_weights"]),
        ("wall time (prepare + train + evaluate)", f"{wall / 60:.1f} min"),
        ("peak memory (RSS)", f"{peak_mb / 1024:.2f} GiB"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
