"""Train the price model inside `fbmarket train`: fit on train, calibrate on val, refit on
train + val (`PriceSettings.refit_on_val`), score on test.

The listings are embedded by the just-trained fusion model **without their price** (the
network reads log price as an input, so a priced listing's embedding would tell the
booster its own answer), exactly as a seller's draft is embedded when a price is asked.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbmarket.config import PriceSettings
from fbmarket.data import schema as S
from fbmarket.price.features import PriceFeatureSpec
from fbmarket.price.knn import NeighbourPrices, neighbour_vectors
from fbmarket.price.metrics import suggestion_metrics
from fbmarket.price.model import PriceModel
from fbmarket.price.text_price import TextPriceRidge
from fbmarket.text.tfidf import product_text

log = logging.getLogger(__name__)


def unpriced(products: pd.DataFrame) -> pd.DataFrame:
    """The listings as a draft looks: no price column (fusion/dataset.py reads it when present)."""
    return products.drop(columns=[S.PRICE], errors="ignore")


def photo_counts(products: pd.DataFrame, images: pd.DataFrame) -> np.ndarray:
    """Photos per listing, in row order (0 for a listing without any)."""
    if images is None or images.empty:
        return np.zeros(len(products))
    counts = images[S.PRODUCT_ID].astype(str).value_counts()
    return products[S.PRODUCT_ID].astype(str).map(counts).fillna(0).to_numpy(dtype=float)


def price_free_embeddings(bundle: Any, products: pd.DataFrame, images: pd.DataFrame) -> np.ndarray:
    """The listings' fusion embeddings as drafts get them: without their price."""
    return bundle.encode_products(unpriced(products), images)


def text_price_estimates(
    products: pd.DataFrame, price: np.ndarray, train: np.ndarray, settings: PriceSettings, seed: int
) -> tuple[TextPriceRidge, np.ndarray]:
    """The stacked ridge (fit on every priced training listing) and each listing's estimate:
    out-of-fold for training rows, from the full ridge for the others."""
    texts = product_text(products)
    log_price = np.log1p(np.where(np.isfinite(price), np.clip(price, 0, None), 0.0))
    priced = train[np.isfinite(price[train]) & (price[train] > 0)]
    ridge = TextPriceRidge.fit(texts[priced], log_price[priced], settings.text_price_alpha)
    estimate = ridge.predict(texts)
    estimate[train] = TextPriceRidge.out_of_fold(
        texts[train],
        log_price[train],
        np.flatnonzero(np.isin(train, priced)),
        settings.text_price_alpha,
        settings.text_price_folds,
        seed,
    )
    return ridge, estimate


def neighbour_price_features(
    products: pd.DataFrame,
    price: np.ndarray,
    train: np.ndarray,
    sources: list[str] | tuple[str, ...],
    ks: list[int] | tuple[int, ...],
    embeddings: np.ndarray | None,
    ridge: TextPriceRidge | None,
) -> tuple[NeighbourPrices, dict[str, np.ndarray]]:
    """The catalogue (every training listing with a known price) and each listing's
    comparables' columns: leave-one-out for training rows (a listing is never its own
    neighbour), from the whole catalogue for the others."""
    vectors = neighbour_vectors(
        sources, embeddings, product_text(products) if "text" in sources else None, ridge
    )
    members = train[np.isfinite(price[train])]
    neighbours = NeighbourPrices.fit(
        {name: x[members] for name, x in vectors.items()}, price[members], tuple(ks)
    )
    exclude = np.full(len(products), -1)
    exclude[members] = np.arange(len(members))
    return neighbours, neighbours.features(vectors, exclude)


def fit_on_rows(
    products: pd.DataFrame,
    images: pd.DataFrame,
    price: np.ndarray,
    rows: np.ndarray,
    spec: PriceFeatureSpec,
    settings: PriceSettings,
    seed: int,
    embeddings: np.ndarray | None,
) -> tuple[PriceModel, pd.DataFrame]:
    """The price model fit on `rows` with `spec`'s choices: the category vocabularies, the
    stacked ridge (out-of-fold on `rows`) and the comparables' catalogue (leave-one-out on
    `rows`) come from those rows too. Returns the model (uncalibrated) and every listing's
    feature columns as it reads them."""
    spec = PriceFeatureSpec.fit(
        products.iloc[rows],
        spec.embedding_dim,
        spec.text_features,
        spec.text_price,
        spec.knn_sources,
        spec.knn_ks,
        spec.stated_prices,
    )
    ridge, estimate = None, None
    if spec.text_price:
        ridge, estimate = text_price_estimates(products, price, rows, settings, seed)
    neighbours, columns = None, None
    if spec.knn_sources:
        neighbours, columns = neighbour_price_features(
            products, price, rows, spec.knn_sources, spec.knn_ks, embeddings, ridge
        )
    features = spec.frame(products, embeddings, photo_counts(products, images), estimate, columns)
    model = PriceModel.fit(features.iloc[rows], price[rows], spec, settings, seed)
    model.text_price, model.neighbours = ridge, neighbours
    return model, features


def refit_on_train_val(
    model: PriceModel,
    products: pd.DataFrame,
    images: pd.DataFrame,
    price: np.ndarray,
    rows: np.ndarray,
    settings: PriceSettings,
    seed: int,
    embeddings: np.ndarray | None,
) -> tuple[PriceModel, pd.DataFrame]:
    """The same model fit again on `rows` (train + val) by `fit_on_rows`: a leaf seen only in
    val gets its own code, and a new listing finds its near-copies among 21% more listings on
    the dev data. The CQR offset and the free threshold are the ones val chose for the model
    fit on train (a refit model is a little better, so its range covers a little more than
    nominal: the usual price of refitting after split conformal calibration)."""
    refit, features = fit_on_rows(products, images, price, rows, model.spec, settings, seed, embeddings)
    refit.offset, refit.calibration = model.offset, {**model.calibration, "applied_to": "train + val refit"}
    refit.free_threshold, refit.free_selection = model.free_threshold, model.free_selection
    return refit, features


def train_price_model(
    bundle: Any,
    products: pd.DataFrame,
    images: pd.DataFrame,
    settings: PriceSettings,
    model_dir: Path,
    seed: int = 42,
    embeddings: np.ndarray | None = None,
) -> tuple[PriceModel, dict[str, Any]]:
    """Fit, calibrate, score and save the price model; returns it and what the bundle records.

    `products` carries the persisted `split` column; the test split is only scored.
    `embeddings` (`price_free_embeddings`, row order) may be passed when already computed.
    """
    started = time.perf_counter()
    products = products.reset_index(drop=True)
    split = products[S.SPLIT].to_numpy()
    train, val, test = (np.flatnonzero(split == name) for name in S.SPLITS)
    price = pd.to_numeric(products[S.PRICE], errors="coerce").to_numpy(dtype=float)
    priced_train = int((np.isfinite(price[train]) & (price[train] > 0)).sum())
    # the out-of-fold ridge needs a few priced listings in every fold
    stack_text = settings.text_price and priced_train >= 4 * settings.text_price_folds
    sources = [
        s
        for s in settings.knn_sources
        if (s != "text" or stack_text) and (s != "embedding" or settings.use_embedding)
    ]
    if (np.isfinite(price[train]).sum()) <= max(settings.knn_ks, default=0):
        sources = []  # too few training listings for k comparables
    spec = PriceFeatureSpec.fit(
        products.iloc[train],
        bundle.embedding_dim if settings.use_embedding else 0,
        settings.text_features,
        stack_text,
        sources,
        settings.knn_ks,
        settings.stated_prices,
    )
    if (spec.embedding_dim or "embedding" in sources) and embeddings is None:
        embeddings = price_free_embeddings(bundle, products, images)
    model, features = fit_on_rows(products, images, price, train, spec, settings, seed, embeddings)
    notes: list[str] = []
    if settings.calibrate and len(val):
        model.calibrate(features.iloc[val], price[val])
    else:
        reason = "calibration is off (price.calibrate)" if not settings.calibrate else "no validation split"
        model.calibration = {
            "calibrated": False,
            "note": f"{reason}: the range is the raw quantile boosters'",
        }
        notes.append(model.calibration["note"])
    if len(val):
        model.choose_free_threshold(features.iloc[val], price[val])
    if settings.refit_on_val and len(val):
        model, features = refit_on_train_val(
            model, products, images, price, np.concatenate([train, val]), settings, seed, embeddings
        )
        notes.append("refit on train + val with the calibration and free threshold val chose")
    files = model.save(model_dir)
    record: dict[str, Any] = {
        "model": "lightgbm-quantile",
        "files": files,
        "training": model.training,
        "calibration": model.calibration,
        "features": {
            "embedding_dim": spec.embedding_dim,
            "text_features": spec.text_features,
            "text_price": spec.text_price,
            "stated_prices": spec.stated_prices,
            "knn_sources": spec.knn_sources,
            "knn_ks": spec.knn_ks,
            "n": len(spec.columns),
        },
        "free_threshold": model.free_threshold,
        "free_selection": model.free_selection,
    }
    scored_split, scored = ("test", test) if len(test) else ("val", val)
    if len(scored):
        prediction = model.predict(features.iloc[scored])
        record["evaluated_on"] = scored_split
        record["metrics"] = suggestion_metrics(
            price[scored],
            prediction.median,
            prediction.low,
            prediction.high,
            prediction.free_probability,
            model.free_threshold,
        )
    record["notes"] = notes
    record["seconds"] = round(time.perf_counter() - started, 2)
    return model, record
