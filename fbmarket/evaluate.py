"""Evaluation of the text-only, image-only and fusion classifiers on the persisted test split.

For each branch: accuracy, macro-F1, a per-class report and a confusion-matrix PNG,
written as JSON. `evaluate_bundle` scores a saved bundle on any clean dataset (the
persisted test split, or another folder in the input format) without retraining.
Listings whose category the bundle never saw cannot be scored: they are counted and
named in the report, never silently mapped to a wrong label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are files; no display needed (or available) here
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score  # noqa: E402

from fbmarket.data import schema as S  # noqa: E402
from fbmarket.data.split import load_split  # noqa: E402
from fbmarket.errors import DataError  # noqa: E402
from fbmarket.files import dumps_json
from fbmarket.layout import BundleLayout  # noqa: E402

log = logging.getLogger(__name__)

BRANCHES = ("text", "image", "fusion")
EVALUATION_COLUMNS = (S.PRODUCT_ID, S.TITLE, S.DESCRIPTION, S.ROOT_CATEGORY)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Macro-F1 averages over the categories that occur among the true or predicted labels
    (scikit-learn's own default): a category absent from both has no F1, and counting it
    as 0 scored one correctly classified listing at 1/13.
    """
    predicted = probs.argmax(axis=1)
    present = list(range(len(classes)))
    occurring = sorted(set(np.asarray(labels).tolist()) | set(predicted.tolist()))
    report = classification_report(
        labels, predicted, labels=present, target_names=list(classes), output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=occurring, average="macro", zero_division=0))
        if occurring
        else 0.0,
        "n_products": int(len(labels)),
        "per_class": {name: report[name] for name in classes},
        "confusion_matrix": confusion_matrix(labels, predicted, labels=present).tolist(),
    }


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts, readable with 13 long category names."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.55 * len(classes) + 3)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), [c[:28] for c in classes], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), [c[:28] for c in classes], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j]:
                ax.text(
                    j, i, int(counts[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if rates[i, j] > 0.5 else "black",
                )  # fmt: skip
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def branch_reports(
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    classes: Sequence[str],
    out_dir: Path | None,
    prefix: str,
    title: str,
) -> dict[str, dict[str, Any]]:
    """Metrics per branch, plus its confusion-matrix PNG when `out_dir` is given."""
    results = {}
    for branch, probs in probabilities.items():
        metrics = classification_metrics(labels, probs, classes)
        if out_dir is not None:
            png = confusion_png(
                metrics["confusion_matrix"],
                classes,
                out_dir / f"{prefix}{branch}_confusion.png",
                f"{title}: {branch} (accuracy {metrics['accuracy']:.1%})",
            )
            metrics["confusion_png"] = str(png)
        results[branch] = metrics
    return results


def known_category_rows(products: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Boolean mask of listings whose root category the model knows, and the unseen ones by name."""
    known = products[S.ROOT_CATEGORY].astype(str).isin(set(classes)).to_numpy()
    unseen = products.loc[~known, S.ROOT_CATEGORY].astype(str).value_counts().to_dict()
    return known, {str(k): int(v) for k, v in unseen.items()}


def seen_in_training(bundle_dir: Path | str, products: pd.DataFrame) -> dict[str, int]:
    """How many of `products` the bundle trained on or chose its settings on, by split.

    Read from the bundle's `split.json` (product id -> train / val / test): scores on those
    listings flatter the model (on the dev data, 0.97 over the whole folder against 0.84 on
    its test split). {} when the bundle has no split file or none of the listings is in it.
    """
    path = BundleLayout(Path(bundle_dir)).split
    if not path.is_file():
        return {}
    try:
        split = load_split(path)
    except (OSError, ValueError):  # a damaged split file is not this report's business
        return {}
    assigned = products[S.PRODUCT_ID].astype(str).map(split)
    counts = assigned[assigned.isin(("train", "val"))].value_counts()
    return {str(name): int(n) for name, n in counts.items()}


def summary_line(result: dict[str, Any]) -> str:
    parts = [
        f"{b}: acc {result[b]['accuracy']:.3f} F1 {result[b]['macro_f1']:.3f}"
        for b in BRANCHES
        if b in result
    ]
    return " | ".join(parts)


def evaluate_bundle(
    bundle_dir: Path | str,
    products: pd.DataFrame,
    images: pd.DataFrame,
    report_path: Path | str | None = None,
    show_progress: bool = False,
    bundle: Any = None,
) -> dict[str, Any]:
    """Score a trained bundle on clean listings; writes `report_path` (JSON) and confusion PNGs.

    The JSON holds accuracy, macro_f1 and n_products (of the fusion model, the headline),
    the same figures per branch, the weights the image branch used, and the listings
    that could not be scored (unseen categories).
    """
    from fbmarket.bundle import Bundle

    S.require_columns(products, EVALUATION_COLUMNS, "products")
    S.require_columns(images, (S.IMAGE_ID, S.PRODUCT_ID, S.IMAGE_PATH), "images")
    model = bundle if bundle is not None else Bundle.load(Path(bundle_dir))
    known, unseen = known_category_rows(products, model.classes)
    if unseen:
        log.warning(
            "%d listing(s) in categories the model was not trained on are not scored: %s",
            int((~known).sum()),
            ", ".join(f"{k} ({v})" for k, v in unseen.items()),
        )
    scored = products[known].reset_index(drop=True)
    if scored.empty:
        raise DataError(
            "nothing to evaluate: none of the listings is in a category the model knows "
            f"(model: {', '.join(model.classes)}; data: {', '.join(unseen)})"
        )
    seen = seen_in_training(bundle_dir, scored)
    if seen:
        log.warning(
            "%d of the %d listings scored are ones this bundle trained or tuned on (%s): "
            "the figures flatter the model; score listings it never saw (e.g. its test split)",
            sum(seen.values()),
            len(scored),
            ", ".join(f"{name} {n}" for name, n in sorted(seen.items())),
        )
    labels = np.array([model.classes.index(c) for c in scored[S.ROOT_CATEGORY].astype(str)])
    predictions = model.predict_products(scored, images, show_progress=show_progress)
    report_path = Path(report_path) if report_path is not None else None
    out_dir = report_path.parent if report_path is not None else None
    prefix = f"{report_path.stem}_" if report_path is not None else ""
    branches = branch_reports(labels, predictions.probabilities, model.classes, out_dir, prefix, "evaluation")
    fusion = branches["fusion"]
    result: dict[str, Any] = {
        "accuracy": fusion["accuracy"],
        "macro_f1": fusion["macro_f1"],
        "n_products": int(len(scored)),
        "n_listings_given": int(len(products)),
        "unseen_categories": unseen,
        "n_unscored": int((~known).sum()),
        "seen_in_training": seen,  # scored listings from the bundle's train / val split
        "products_without_photo": int(predictions.without_photo),
        "photos_missing": int(predictions.missing_photos),
        "empty_descriptions": int(predictions.empty_descriptions),
        "weights": model.weights_info,
        "bundle": str(bundle_dir),
        "bundle_version": model.version,
        "branches": branches,
    }
    for branch in BRANCHES:
        result[f"{branch}_accuracy"] = branches[branch]["accuracy"]
        result[f"{branch}_macro_f1"] = branches[branch]["macro_f1"]
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        table = prediction_table(scored, images, labels, predictions.probabilities, model.classes)
        predictions_csv = report_path.with_name(f"{report_path.stem}_predictions.csv")
        embeddings_npy = report_path.with_name(f"{report_path.stem}_embeddings.npy")
        table.to_csv(predictions_csv, index=False)
        np.save(embeddings_npy, predictions.embeddings)
        result["files"] = {"predictions_csv": str(predictions_csv), "embeddings_npy": str(embeddings_npy)}
        report_path.write_text(dumps_json(result, indent=2, default=str))
    return result


def prediction_table(
    products: pd.DataFrame,
    images: pd.DataFrame,
    labels: np.ndarray,
    probabilities: dict[str, np.ndarray],
    classes: Sequence[str],
) -> pd.DataFrame:
    """One row per scored listing: truth, each branch's guess and confidence, its first photo.

    What a reviewer needs to look at mistakes (the review notebook reads it); rows follow
    the embeddings file saved beside it.
    """
    first_photo = images.drop_duplicates(S.PRODUCT_ID).set_index(S.PRODUCT_ID)[S.IMAGE_PATH]
    table = pd.DataFrame(
        {
            S.PRODUCT_ID: products[S.PRODUCT_ID].astype(str).to_numpy(),
            S.TITLE: products[S.TITLE].astype(str).to_numpy(),
            "true": [classes[i] for i in labels],
        }
    )
    for branch, probs in probabilities.items():
        table[f"{branch}_predicted"] = [classes[i] for i in probs.argmax(axis=1)]
        table[f"{branch}_confidence"] = probs.max(axis=1).round(4)
    table["photo"] = table[S.PRODUCT_ID].map(first_photo).fillna("")
    return table
