"""Image feature extraction throughput: the streaming extractor vs bare `model.predict`.

Usage: .venv/bin/python benchmarks/feature_throughput.py [--data DIR] [--photos N]
           [--size PX] [--batch N] [--repeats N] [--out FILE]

Both sides run the same backbone (`--backbone`: the default EfficientNet-Lite2 with its
packaged ImageNet weights at its native 260 px, or ResNet50V2 from scratch) over the same
photos, cleaned as the pipeline caches them (`DataSettings.image_size`), in one process:
"bare" is `model.predict` on pixels already decoded into memory (the model alone);
"pipeline" is `fbmarket.vision.features.extract_features`, which reads and decodes
the JPEG files in a parallel, prefetching tf.data pipeline while the model runs. The
bar: pipeline >= 90% of bare throughput, i.e. the input side is not the
bottleneck. Each side runs `--repeats` times, alternating; medians are reported.
Uses the real dev photos when present (cleaned copies from prepare_data's cache),
otherwise synthetic JPEGs, and says which.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import DEV_DATA, RESULTS, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from fbmarket.config import DataSettings, VisionSettings
from fbmarket.data.images import load_pixels_batch
from fbmarket.vision.backbone import build_backbone, build_chosen_backbone, resolve_weights
from fbmarket.vision.features import extract_features

DEFAULT_DATA = DEV_DATA
DEFAULT_OUT = RESULTS / "feature_throughput.json"


def photo_paths(data: Path, n: int, workdir: Path, side: int) -> tuple[list[str], str]:
    """Cleaned copies of the dev photos (as the pipeline stores them), or synthetic ones."""
    source = data / "images"
    if source.is_dir():
        from fbmarket.data.images import letterbox, open_image

        paths = []
        for path in sorted(source.glob("*.jpg"))[:n]:
            target = workdir / path.name
            letterbox(open_image(path, 40_000_000, 10_000_000), side).save(target, quality=90)
            paths.append(str(target))
        return paths, f"real dev photos from {source} (cleaned to {side}px)"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        target = workdir / f"synthetic{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(target, quality=90)
        paths.append(str(target))
    return paths, f"synthetic random {side}px JPEGs (real data absent)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--photos", type=int, default=512)
    parser.add_argument(
        "--backbone",
        default="efficientnet_lite2",
        choices=("efficientnet_lite2", "efficientnet_lite0", "resnet50v2"),
    )
    parser.add_argument(
        "--size",
        type=int,
        default=0,
        help="backbone input size (0: the backbone's native size; 64 for resnet50v2)",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        side = DataSettings().image_size
        paths, source = photo_paths(args.data, args.photos, Path(tmp), side)
        if args.backbone == "resnet50v2":
            args.size = args.size or 64
            model = build_backbone(args.size, None)
            described = f"ResNet50V2 (include_top=False, avg pool, untrained) at {args.size}px"
        else:
            choice = resolve_weights(VisionSettings(backbone=args.backbone))
            args.size = args.size or choice.native_size
            model = build_chosen_backbone(choice, args.size)
            described = f"{choice.description} at {args.size}px"
        pixels = load_pixels_batch(paths, side, workers=2)  # decoded once, outside the timing
        import tensorflow as tf

        pixels = tf.image.resize(pixels.astype(np.float32), (args.size, args.size), antialias=True).numpy()
        model.predict(pixels[: args.batch], batch_size=args.batch, verbose=0)  # warm-up both paths
        extract_features(model, paths[: args.batch], args.size, args.batch)
        bare, pipeline = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            reference = model.predict(pixels, batch_size=args.batch, verbose=0)
            bare.append(len(paths) / (time.perf_counter() - started))
            started = time.perf_counter()
            features = extract_features(model, paths, args.size, args.batch)
            pipeline.append(len(paths) / (time.perf_counter() - started))
        agreement = float(np.max(np.abs(features - reference)))
        # the two sides decode JPEGs with different libraries (PIL vs tf.io), a pixel level
        # apart here and there: what matters is that each photo's feature direction agrees
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
        cosines = np.sum(unit(features) * unit(reference), axis=1)

    bare_rate, pipeline_rate = statistics.median(bare), statistics.median(pipeline)
    payload = {
        "command": "benchmarks/feature_throughput.py " + " ".join(sys.argv[1:]),
        "photos": len(paths),
        "source": source,
        "backbone": f"{described}, batch {args.batch}",
        "bare_predict_photos_per_s": round(bare_rate, 1),
        "pipeline_photos_per_s": round(pipeline_rate, 1),
        "ratio": round(pipeline_rate / bare_rate, 3),
        "bar": 0.90,
        "runs": {"bare": [round(r, 1) for r in bare], "pipeline": [round(r, 1) for r in pipeline]},
        "max_abs_feature_difference": agreement,
        "max_abs_feature": float(np.max(np.abs(reference))),
        "feature_cosine_min": float(cosines.min()),
        "feature_cosine_mean": float(cosines.mean()),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, payload)
    print(f"source: {source}")
    print(f"bare model.predict: {bare_rate:.1f} photos/s   pipeline: {pipeline_rate:.1f} photos/s")
    print(f"ratio: {pipeline_rate / bare_rate:.1%} (bar 90%)   max |feature difference|: {agreement:.2e}")
    print(f"feature cosine pipeline vs bare: min {cosines.min():.4f}, mean {cosines.mean():.4f}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
