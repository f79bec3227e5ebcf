"""Price-suggestion quality on the dev split: LightGBM quantile vs HistGradientBoosting vs ridge.

Usage: .venv/bin/python benchmarks/price_suggestion.py --bundle DIR [--out FILE] [--cache FILE]

DIR is a bundle trained on the dev data (`fbmarket train --data ../shared/data/gumtree-dev
--out DIR`); its database holds the clean listings and `split.json` the product split.
Skips with a message (exit 0) when it is absent. Everything is fit on `train`, the 80%
range calibrated on `val` (CQR, fbmarket/price/conformal.py), and scored on `test`, which
no fit or choice sees.

Listings are embedded by the bundle's fusion model *without their price*, as a seller's
draft is (the fusion network reads log price as an input). The embeddings are cached in
--cache (keyed by the bundle version) so a rerun takes seconds.

Variants (each booster is called free, £0, when its own P(free) >= its threshold, chosen
on val as the best F1 of the free class, floor 0.05; HGB uses the first LightGBM's):
* ridge baseline (fbmarket/baselines.py::price_regression: TF-IDF + one-hot categories,
  regressing every listing, £0 included);
* LightGBM quantile (alpha 0.1/0.5/0.9) on embedding + category + location + text
  features + the stacked text-price ridge (fbmarket/price/text_price.py, out-of-fold on
  train) + the comparables' prices (fbmarket/price/knn.py: k = `PriceSettings.knn_ks` nearest
  training listings by embedding and by TF-IDF text, leave-one-out on train), with and without the
  conformal calibration; without the comparables (the previous default); with comparables
  by one measure only; without the embedding; without the text features;
* scikit-learn HistGradientBoostingRegressor(loss="quantile") on the same features
  (root as categorical; leaf as its integer code, since HGB caps categories at 255 and the
  dev data has ~400 leaves), calibrated.
* the served model as `fbmarket train` fits it (`price.train.train_price_model`, the
  defaults: refit on train + val after the calibration and free threshold are chosen on
  val), the same without the refit, and the same without the k = 1 comparable.
Every variant is also scored on val (raw quantiles): the choices are made there.
Figures: median absolute error and MAE in £, RMSE and R² on log1p(price), 80% range
coverage and mean width, over every test listing (£0 included: comparable with the ridge
baseline) and over those priced > 0; P(free) precision and recall.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from harness import REPO, RESULTS, write_json

from fbmarket.bundle import Bundle
from fbmarket.config import PriceSettings, Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.layout import BundleLayout
from fbmarket.price.conformal import conformal_offset
from fbmarket.price.features import ROOT, PriceFeatureSpec
from fbmarket.price.metrics import suggestion_metrics
from fbmarket.price.model import PriceModel
from fbmarket.price.stated import stated_price_columns
from fbmarket.price.train import (
    neighbour_price_features,
    photo_counts,
    text_price_estimates,
    train_price_model,
    unpriced,
)

DEFAULT_OUT = RESULTS / "price_suggestion.json"


def load_listings(bundle_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    settings = Settings.load(BundleLayout(bundle_dir).settings)
    settings.out_dir = bundle_dir
    store = Store(settings.db_url, root=bundle_dir)
    try:
        products, images = store.listings_frame(), store.images_frame()
    finally:
        store.close()
    split = json.loads(BundleLayout(bundle_dir).split.read_text())
    split = split.get("assignments", split) if isinstance(split, dict) else split
    products[S.SPLIT] = products[S.PRODUCT_ID].astype(str).map(split)
    products = products[products[S.SPLIT].isin(S.SPLITS)].reset_index(drop=True)
    return products, images


def price_free_embeddings(model: Bundle, products: pd.DataFrame, images: pd.DataFrame, cache: Path) -> np.ndarray:
    ids = (
        products[S.PRODUCT_ID].astype(str).to_numpy().astype("U")
    )  # no object arrays: the cache loads without pickle
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if str(saved["version"]) == model.version and np.array_equal(saved["ids"], ids):
            return saved["embeddings"]
    embeddings = model.encode_products(unpriced(products), images, show_progress=True)
    np.savez(cache, embeddings=embeddings, ids=ids, version=np.array(model.version))
    return embeddings


def ridge_baseline(products: pd.DataFrame) -> dict:
    from fbmarket.baselines import price_regression, text_vectoriser
    from fbmarket.text.tfidf import product_text

    parts = {name: products[products[S.SPLIT] == name].reset_index(drop=True) for name in S.SPLITS}
    vectoriser = text_vectoriser(len(parts["train"]))
    x = {"train": vectoriser.fit_transform(product_text(parts["train"]))}
    for name in ("val", "test"):
        x[name] = vectoriser.transform(product_text(parts[name]))
    return price_regression(x, parts)


def hist_gradient_boosting(
    features: pd.DataFrame, price: np.ndarray, rows: dict[str, np.ndarray], settings: PriceSettings, seed: int
) -> tuple[np.ndarray, ...]:
    """(low, median, high) on log1p(price) for the test rows, and the CQR offset from val."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    train = rows["train"][price[rows["train"]] > 0]
    root_column = list(features.columns).index(ROOT)
    x = features.to_numpy(dtype=float, copy=True)
    x[:, root_column] = np.where(x[:, root_column] < 0, np.nan, x[:, root_column])
    predictions = {"val": [], "test": []}
    for alpha in settings.alphas:
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=alpha,
            max_iter=settings.num_boost_round,
            learning_rate=settings.learning_rate,
            max_leaf_nodes=settings.num_leaves,
            min_samples_leaf=settings.min_data_in_leaf,
            l2_regularization=settings.lambda_l2,
            max_features=settings.feature_fraction,
            categorical_features=[root_column],
            early_stopping=False,
            random_state=seed,
        ).fit(x[train], np.log1p(price[train]))
        for name in predictions:
            predictions[name].append(model.predict(x[rows[name]]))
    val_priced = price[rows["val"]] > 0
    low, _, high = (np.asarray(p)[val_priced] for p in predictions["val"])
    offset = conformal_offset(np.log1p(price[rows["val"]][val_priced]), low, high, settings.interval)
    low, median, high = np.sort(np.stack(predictions["test"]), axis=0)
    return low, median, high, offset


def scored(
    price: np.ndarray,
    low: np.ndarray,
    median: np.ndarray,
    high: np.ndarray,
    free: np.ndarray,
    threshold: float,
) -> dict:
    """Figures in pounds from log1p-scale predictions (ordered, clipped at £0); £0 where
    P(free) >= `threshold` (the model's, chosen on val)."""
    low, median, high = (
        np.clip(np.expm1(v), 0, None) for v in np.sort(np.stack([low, median, high]), axis=0)
    )
    return suggestion_metrics(price, median, low, high, free, threshold)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--cache", type=Path, help="embedding cache (.npz); default /tmp/fbmarket-price-<bundle>.npz"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not BundleLayout(args.bundle).manifest.is_file():
        print(f"skipped: no trained bundle at {args.bundle} (train one on the dev data first)")
        return 0
    started = time.perf_counter()
    products, images = load_listings(args.bundle)
    cache = args.cache or Path("/tmp") / f"fbmarket-price-{args.bundle.resolve().name}.npz"
    t = time.perf_counter()
    bundle = Bundle.load(args.bundle, lazy=True)  # its parts load on first use (only on a cache miss)
    embeddings = price_free_embeddings(bundle, products, images, cache)
    embed_seconds = time.perf_counter() - t
    split = products[S.SPLIT].to_numpy()
    rows = {name: np.flatnonzero(split == name) for name in S.SPLITS}
    price = pd.to_numeric(products[S.PRICE], errors="coerce").to_numpy(dtype=float)
    test_price = price[rows["test"]]
    settings = PriceSettings()
    counts = photo_counts(products, images)
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    ridge_model, text_estimate = text_price_estimates(products, price, rows["train"], settings, args.seed)
    seconds["text price ridge (out-of-fold on train)"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    _, neighbour_columns = neighbour_price_features(
        products, price, rows["train"], ["embedding", "text"], settings.knn_ks, embeddings, ridge_model
    )
    seconds["comparables' prices (leave-one-out on train)"] = round(time.perf_counter() - t, 2)

    def fit_lightgbm(
        embedding: bool, text: bool, stacked: bool, knn: tuple[str, ...], stated: bool
    ) -> tuple[PriceModel, pd.DataFrame]:
        spec = PriceFeatureSpec.fit(
            products.iloc[rows["train"]],
            embeddings.shape[1] if embedding else 0,
            text,
            stacked,
            knn,
            settings.knn_ks,
            stated,
        )
        features = spec.frame(
            products,
            embeddings if embedding else None,
            counts,
            text_estimate if stacked else None,
            neighbour_columns if knn else None,
        )
        model = PriceModel.fit(features.iloc[rows["train"]], price[rows["train"]], spec, settings, args.seed)
        model.calibrate(features.iloc[rows["val"]], price[rows["val"]])
        model.choose_free_threshold(features.iloc[rows["val"]], price[rows["val"]])
        return model, features

    both = ("embedding", "text")
    full = (
        "embedding + category + location + text features + text-price ridge + comparables (embedding, text)"
        " + stated amounts"
    )
    variants = {
        f"lightgbm quantile: {full}": (True, True, True, both, True),
        "lightgbm quantile: all but the stated amounts": (True, True, True, both, False),
        "lightgbm quantile: all but the comparables": (True, True, True, (), True),
        "lightgbm quantile: ... comparables by embedding only": (True, True, True, ("embedding",), True),
        "lightgbm quantile: ... comparables by TF-IDF text only": (True, True, True, ("text",), True),
        "lightgbm quantile: all but the embedding": (False, True, True, both, True),
        "lightgbm quantile: all but the text features": (True, False, True, both, True),
    }
    full_features = None
    free_probability = None
    full_threshold = None
    validation: dict[str, dict] = {}
    for name, (embedding, text, stacked, knn, stated) in variants.items():
        t = time.perf_counter()
        model, features = fit_lightgbm(embedding, text, stacked, knn, stated)
        seconds[name] = round(time.perf_counter() - t, 2)
        test = features.iloc[rows["test"]]
        own_free = model.free_probability(test)
        if free_probability is None:
            full_features, free_probability, full_threshold = features, own_free, model.free_threshold
        val_low, val_median, val_high = model.predict_log(features.iloc[rows["val"]], calibrated=False)
        val_free = model.free_probability(features.iloc[rows["val"]])
        val_scores = scored(price[rows["val"]], val_low, val_median, val_high, val_free, model.free_threshold)
        validation[name] = {
            "median_abs_error_gbp": val_scores["all"]["median_abs_error_gbp"],
            "r2_log": val_scores["priced"]["r2_log"],
            "rmse_log": val_scores["priced"]["rmse_log"],
            "free_average_precision": val_scores["free"]["average_precision"],
            "free_selection": model.free_selection,
        }
        for calibrated in (True, False) if knn == both and embedding and text and stacked and stated else (True,):
            log_low, log_median, log_high = model.predict_log(test, calibrated=calibrated)
            label = f"{name}, {'calibrated (CQR on val)' if calibrated else 'raw quantiles'}"
            results[label] = scored(
                test_price, log_low, log_median, log_high, own_free, model.free_threshold
            ) | {
                "conformal_offset_log": model.offset if calibrated else 0.0,
                "uncalibrated_val_coverage": model.calibration.get("uncalibrated_val_coverage"),
            }
    assert full_features is not None and free_probability is not None and full_threshold is not None
    served = {  # what `fbmarket train` fits, and the same without one of its choices
        "served (fbmarket train's price model, refit on train + val)": settings,
        "served (fbmarket train's price model, fit on train only)": replace(settings, refit_on_val=False),
        "served, without the boosters anchored on a stated amount": replace(settings, stated_quantiles=False),
        "served, without the stated amounts": replace(settings, stated_prices=False),
        "served, without the k = 1 comparable (knn_ks 5, 20)": replace(settings, knn_ks=(5, 20)),
    }
    test_products = products.iloc[rows["test"]]
    stating = stated_price_columns(
        test_products[S.TITLE].fillna("").tolist(), test_products[S.DESCRIPTION].fillna("").tolist()
    )["stated_count"] > 0
    by_stated: dict[str, dict] = {}
    for name, variant in served.items():
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fbmarket-price-") as folder:
            model, record = train_price_model(bundle, products, images, variant, Path(folder), args.seed, embeddings)
        seconds[name] = round(time.perf_counter() - t, 2)
        results[name] = record["metrics"] | {"conformal_offset_log": record["calibration"].get("offset_log")}
        prediction = model.predict(
            model.features(test_products, embeddings[rows["test"]], counts[rows["test"]])
        )
        median = np.where(prediction.free, 0.0, prediction.median)
        by_stated[name] = {
            group: {
                "listings": int((chosen & np.isfinite(test_price)).sum()),
                "median_abs_error_gbp": float(np.nanmedian(np.abs(median - test_price)[chosen])),
            }
            for group, chosen in (("names an amount", stating), ("names none", ~stating))
        }
    t = time.perf_counter()
    low, median, high, offset = hist_gradient_boosting(full_features, price, rows, settings, args.seed)
    seconds["hist gradient boosting"] = round(time.perf_counter() - t, 2)
    name = f"hist gradient boosting quantile: {full}"
    results[f"{name}, calibrated (CQR on val)"] = scored(
        test_price, low - offset, median, high + offset, free_probability, full_threshold
    ) | {"conformal_offset_log": offset}
    t = time.perf_counter()
    ridge = ridge_baseline(products)
    seconds["ridge"] = round(time.perf_counter() - t, 2)

    report = {
        "bundle": str(args.bundle),
        "data": {
            "listings": len(products),
            **{name: int(len(index)) for name, index in rows.items()},
            "free_listings": {name: int((price[index] == 0).sum()) for name, index in rows.items()},
            "missing_price": int(np.isnan(price).sum()),
        },
        "settings": json.loads(json.dumps(settings.__dict__, default=list)),
        "ridge_baseline": {
            key: ridge.get(key)
            for key in ("median_abs_error_gbp", "mae_gbp", "rmse_log", "r2_log", "rmse_gbp", "n_test")
        },
        "variants": results,
        "validation": validation,
        "served_by_stated_amount": by_stated,
        "free_class": next(iter(results.values()))["free"],
        "seconds": {"embed_listings_without_price": round(embed_seconds, 1), **seconds},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {os.path.relpath(args.out, REPO)} and {os.path.relpath(args.out.with_suffix('.md'), REPO)}")
    return 0


def markdown(report: dict) -> str:
    def f(value: object, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"Test split of {report['bundle']}: {report['data']['test']} listings ({report['data']['free_listings']['test']} free); "
        "fit on train, range calibrated on val.",
        "",
        "| model | median abs err £ | MAE £ | RMSE log | R² log | 80% coverage | mean width £ | coverage (priced > 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ridge = report["ridge_baseline"]
    lines.append(
        f"| ridge baseline (TF-IDF + categories) | {f(ridge['median_abs_error_gbp'], 1)} | {f(ridge['mae_gbp'], 1)} "
        f"| {f(ridge['rmse_log'])} | {f(ridge['r2_log'])} | - | - | - |"
    )
    for name, result in report["variants"].items():
        every, priced = result["all"], result["priced"]
        lines.append(
            f"| {name} | {f(every['median_abs_error_gbp'], 1)} | {f(every['mae_gbp'], 1)} | {f(every['rmse_log'])} "
            f"| {f(every['r2_log'])} | {f(every['coverage'])} | {f(every['mean_width_gbp'], 0)} "
            f"| {f(priced['coverage'])} |"
        )
    lines += [
        "",
        "Validation split (every choice is made here; raw quantiles, £0 where P(free) >= the val-chosen threshold):",
        "",
        "| model | val median abs err £ | val R² log (priced) | val P(free) AP | free threshold (val F1) |",
        "|---|---|---|---|---|",
    ]
    for name, result in report["validation"].items():
        chosen = result["free_selection"]
        lines.append(
            f"| {name} | {f(result['median_abs_error_gbp'], 2)} | {f(result['r2_log'])} "
            f"| {f(result['free_average_precision'])} | {f(chosen.get('threshold'))} (F1 {f(chosen.get('val_f1'), 2)}) |"
        )
    lines += [
        "",
        "Test, served models, by whether the listing's title or description names an amount (price/stated.py):",
        "",
        "| model | names an amount: listings | median abs err £ | names none: listings | median abs err £ |",
        "|---|---|---|---|---|",
    ]
    for name, groups in report["served_by_stated_amount"].items():
        named, unnamed = groups["names an amount"], groups["names none"]
        lines.append(
            f"| {name} | {named['listings']} | {f(named['median_abs_error_gbp'], 2)} "
            f"| {unnamed['listings']} | {f(unnamed['median_abs_error_gbp'], 2)} |"
        )
    free = report["free_class"]
    lines += [
        "",
        f"Test, served model: P(free) >= {free['threshold']:.3f} (chosen on val): precision {f(free['precision'])}, recall {f(free['recall'])} "
        f"({free['free_listings']} free test listings, {free['predicted_free']} predicted free); "
        f"average precision {f(free['average_precision'])} (base rate {f(free['base_rate'])}), "
        f"ROC AUC {f(free['roc_auc'])}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
