"""Is the fusion ahead? Every category member of a bundle, and the linear anchors, on the dev test split.

Usage: .venv/bin/python benchmarks/late_fusion.py --bundle DIR [--out FILE] [--boot 2000]

DIR is a bundle trained on the dev data with the defaults (`fbmarket train --data
../shared/data/gumtree-dev --out DIR`); its database holds the clean listings and
`split.json` the product split. Skips with a message (exit 0) when it is absent.

Reported on the test split (never used for a choice):

* accuracy and macro-F1 of every member the bundle predicts with (`Bundle.predict_products`):
  "text" (Keras text branch), "image" (image head on pooled photo features),
  "fusion_network" (the fusion network's own head), "tfidf" (TF-IDF logistic regression),
  and "fusion" (the late-fusion pooling of them, what `evaluate` and the API report);
* paired bootstrap 95% intervals of fusion minus text and fusion minus the network
  (resampling test listings, `--boot` draws);
* the issue's linear anchors on the same split: TF-IDF (word 1-2 + char_wb 2-5 grams) +
  logistic regression alone (C from (10, 30) on val), and its log-probabilities plus
  0.3 x those of a logistic regression on the bundle's pooled Lite2 photo features
  (C from (1, 3) on val) — each trained on train only, and again on train + val (as the
  bundle's refit members are).
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from harness import RESULTS, bundle_parser, no_bundle, write_json
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.layout import BundleLayout
from fbmarket.text.tfidf import TfidfClassifier, product_text

DEFAULT_OUT = RESULTS / "late_fusion.json"
ANCHOR_IMAGE_WEIGHT = 0.3  # the anchor: text log-probs + 0.3 x image log-probs


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = probs.argmax(1)
    return {
        "accuracy": round(float((predicted == labels).mean()), 4),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro", zero_division=0)), 4),
    }


def paired_interval(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, draws: int, seed: int = 0
) -> dict[str, float]:
    """Accuracy of a minus b with a paired bootstrap 95% interval over listings."""
    diff = (a.argmax(1) == labels).astype(float) - (b.argmax(1) == labels).astype(float)
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(draws)]
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": round(float(diff.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-12, 1.0))


def anchors(parts: dict, photos: dict, labels: dict, n_classes: int) -> dict[str, dict]:
    """The linear anchors, trained on train (C chosen on val) and on train + val."""
    out: dict[str, dict] = {}
    texts = {name: product_text(frame) for name, frame in parts.items()}
    best_c = max(
        (10.0, 30.0),
        key=lambda c: (
            TfidfClassifier.fit(texts["train"], labels["train"], n_classes, c)
            .predict_proba(texts["val"])
            .argmax(1)
            == labels["val"]
        ).mean(),
    )

    def image_model(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=3000).fit(x, y)

    has = {name: np.linalg.norm(photos[name], axis=1) > 0 for name in parts}
    best_ci = max(
        (1.0, 3.0),
        key=lambda c: image_model(photos["train"][has["train"]], labels["train"][has["train"]], c).score(
            photos["val"][has["val"]], labels["val"][has["val"]]
        ),
    )
    for fit_on in ("train", "train+val"):
        names = fit_on.split("+")
        x_text = np.concatenate([texts[n] for n in names])
        y = np.concatenate([labels[n] for n in names])
        text_probs = TfidfClassifier.fit(x_text, y, n_classes, best_c).predict_proba(texts["test"])
        x_img = np.concatenate([photos[n][has[n]] for n in names])
        y_img = np.concatenate([labels[n][has[n]] for n in names])
        image = image_model(x_img, y_img, best_ci)
        image_log = np.zeros_like(text_probs)  # listings without photos: text alone
        full = np.full((int(has["test"].sum()), n_classes), 1e-12)
        full[:, image.classes_] = image.predict_proba(photos["test"][has["test"]])
        image_log[has["test"]] = log(full)
        combined = log(text_probs) + ANCHOR_IMAGE_WEIGHT * image_log
        out[fit_on] = {
            "tfidf_lr": scores(text_probs, labels["test"]) | {"C": best_c},
            "tfidf_lr_plus_0.3_lite2_lr": scores(combined, labels["test"]) | {"image_C": best_ci},
            "lite2_lr_on_listings_with_photos": scores(full, labels["test"][has["test"]]),
        }
    return out


def main() -> int:
    parser = bundle_parser(__doc__, DEFAULT_OUT)
    parser.add_argument("--boot", type=int, default=2000, help="paired bootstrap draws")
    args = parser.parse_args()
    if no_bundle(args.bundle):
        return 0
    from fbmarket.bundle import Bundle

    started = time.perf_counter()
    settings = Settings.load(BundleLayout(args.bundle).settings)
    settings.out_dir = args.bundle
    model = Bundle.load(args.bundle)
    store = Store(settings.db_url, root=args.bundle)
    products = store.listings_frame()
    images = store.images_frame()
    split = json.loads(BundleLayout(args.bundle).split.read_text())
    split = split.get("assignments", split) if isinstance(split, dict) else split
    products[S.SPLIT] = products[S.PRODUCT_ID].astype(str).map(split)
    products = products[products[S.ROOT_CATEGORY].isin(model.classes)]
    parts = {name: products[products[S.SPLIT] == name].reset_index(drop=True) for name in S.SPLITS}
    labels = {
        name: np.array([model.classes.index(c) for c in frame[S.ROOT_CATEGORY]])
        for name, frame in parts.items()
    }
    test = model.predict_products(parts["test"], images, show_progress=True).probabilities
    members = {name: scores(probs, labels["test"]) for name, probs in test.items()}
    report = {
        "bundle": str(args.bundle),
        "version": model.version,
        "late_fusion": model.manifest.get("late_fusion"),
        "n": {name: len(frame) for name, frame in parts.items()},
        "test": members,
        "fusion_minus_text": paired_interval(test["fusion"], test["text"], labels["test"], args.boot),
    }
    if "fusion_network" in test:
        report["fusion_minus_network"] = paired_interval(
            test["fusion"], test["fusion_network"], labels["test"], args.boot
        )
    photos = {name: model.photo_vectors(frame, images)[0] for name, frame in parts.items()}
    report["anchors"] = anchors(parts, photos, labels, len(model.classes))
    for fit_on, anchor in report["anchors"].items():
        best = anchor["tfidf_lr_plus_0.3_lite2_lr"]["accuracy"]
        report[f"fusion_minus_anchor_{fit_on}"] = round(members["fusion"]["accuracy"] - best, 4)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("test", "fusion_minus_text", "anchors")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
