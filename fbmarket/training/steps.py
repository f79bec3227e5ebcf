"""The steps of `train_bundle` that work on the bundle in memory, and the loggers they share.

Each `fit_*` takes the `Bundle` trained so far, fits one more part of it, puts that part
into the bundle and returns what bundle.json records about it. Nothing here writes a
bundle file: `Bundle.save` does, once, at the end of training.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fbmarket.bundle import Bundle
from fbmarket.bundle.inputs import unit_pooled
from fbmarket.config import FusionSettings, Settings
from fbmarket.data import schema as S
from fbmarket.fusion import late
from fbmarket.fusion.dataset import FusionArrays
from fbmarket.fusion.neighbours import PHOTO as PHOTO_NEIGHBOURS
from fbmarket.fusion.neighbours import TEXT as TEXT_NEIGHBOURS
from fbmarket.fusion.neighbours import NeighbourVote
from fbmarket.text.tfidf import TfidfClassifier, product_titles
from fbmarket.text.train import metric_mode
from fbmarket.vision.train import train_feature_head

log = logging.getLogger(__name__)


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the optimiser's current learning rate into the epoch logs (TensorBoard plots it)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


def loggers(log_dir: Path, checkpoint: Path, monitor: str = "val_accuracy") -> list[keras.callbacks.Callback]:
    """The learning rate and TensorBoard logs of one model, and its best-epoch checkpoint."""
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    return [
        LearningRateLogger(),
        keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=0, write_graph=False),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor=monitor,
            mode=metric_mode(monitor),
            save_best_only=True,
            save_weights_only=True,
        ),
    ]


def log_hparams(log_dir: Path, run: str, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
    """One TensorBoard HParams record for the run: its settings and its test figures."""
    from tensorboard.plugins.hparams import api as hp

    flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    with tf.summary.create_file_writer(str(log_dir / "hparams")).as_default():
        hp.hparams(flat, trial_id=run)
        for name, value in metrics.items():
            tf.summary.scalar(name, value, step=0)


def weights_hash(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy of a trained model, through Keras's own format (as loading a bundle
    would give it): the fusion network fine-tunes its copy of the text encoder while the
    text-only model stays as trained."""
    with tempfile.TemporaryDirectory(prefix="fbmarket-model-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return keras.models.load_model(path, compile=False)


def leaf_encoding(products: pd.DataFrame, train_idx: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Leaf categories seen in training (sorted) and every product's leaf label (-1: unseen)."""
    if S.LEAF_CATEGORY not in products:
        return [], np.full(len(products), -1)
    leaf = products[S.LEAF_CATEGORY].astype(str)
    leaves = sorted(set(leaf.iloc[train_idx]))
    index = {name: i for i, name in enumerate(leaves)}
    return leaves, leaf.map(lambda name: index.get(name, -1)).to_numpy(dtype=np.int64)


def cap(mask: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` True entries, chosen at random (limit <= 0: all)."""
    chosen = np.flatnonzero(mask)
    if limit <= 0 or len(chosen) <= limit:
        return mask
    keep = np.zeros_like(mask)
    keep[np.random.default_rng(seed).choice(chosen, size=limit, replace=False)] = True
    return keep


def positions(frame: pd.DataFrame, split: str) -> np.ndarray:
    return np.flatnonzero(frame[S.SPLIT].to_numpy() == split)


def fit_late_fusion_head(
    bundle: Bundle,
    products: pd.DataFrame,
    images: pd.DataFrame,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: Settings,
    pooled_photos: tuple[np.ndarray, np.ndarray] | None,
    history: dict[str, Any],
    texts: np.ndarray,
    photo_vectors: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Fit the late-fusion head on the validation split, then refit the cheap members.

    Sets `bundle.late_fusion` (and, with `fusion.neighbour_votes`, `bundle.neighbours`, whose
    references are the training listings) and, with `fusion.refit_on_val`, replaces the
    TF-IDF model and the image head by ones trained on train + val (the image head for the
    number of epochs that was best on val; only for frozen pretrained features,
    `pooled_photos`) and adds the validation listings to the neighbours' references.
    `texts` are `product_text(products)`, already made for the first fit; `photo_vectors`
    every listing's (n, feature_dim) unit pooled photo features and (n,) has-photo. Returns
    what bundle.json records: the member weights and what was refit.
    """
    fs = settings.fusion
    titles = product_titles(products)
    if fs.neighbour_votes and bundle.tfidf is not None:
        bundle.neighbours = neighbour_votes(bundle.tfidf, texts, titles, photo_vectors, labels, train_idx, fs)
    predictions = bundle.member_predictions(products.iloc[val_idx], images)
    names = [name for name in late.MEMBERS if name in predictions.probabilities]
    has_photo = np.array([bool(rows) for rows in predictions.photo_rows], np.float32)
    log_probs, mask = late.stack(*late.member_inputs(predictions.probabilities, has_photo), names)
    bundle.late_fusion = late.fit_late_fusion(log_probs, mask, labels[val_idx], names, seed=settings.seed)
    record: dict[str, Any] = {
        "members": late.member_weights(bundle.late_fusion),
        "fit_on": {"split": "val", "listings": len(val_idx)},
        "refit_on_train_val": [],
    }
    if not fs.refit_on_val:
        return record
    both = np.concatenate([train_idx, val_idx])
    bundle.tfidf = TfidfClassifier.fit(
        texts[both], labels[both], log_probs.shape[2], fs.tfidf_c, settings.seed, titles[both]
    )
    record["refit_on_train_val"].append("tfidf")
    if bundle.neighbours:
        bundle.neighbours = neighbour_votes(bundle.tfidf, texts, titles, photo_vectors, labels, both, fs)
        record["refit_on_train_val"].append("neighbour votes (references)")
    if pooled_photos is not None:
        pooled, with_photo = pooled_photos
        rows = np.intersect1d(both, np.flatnonzero(with_photo))
        fit = history.get("image_head", {})
        if settings.vision.head_solver == "adam":  # the epoch count that was best on val
            accuracy = fit.get("val_accuracy") or []
            epochs = int(np.argmax(accuracy)) + 1 if accuracy else settings.vision.head_epochs
            head_settings, done = replace(settings.vision, head_epochs=epochs), f"{epochs} epochs"
        else:  # the C that was best on val
            c = (fit.get("best_c") or settings.vision.head_c[:1])[0]
            head_settings, done = replace(settings.vision, head_c=(c,)), f"logistic regression, C={c:g}"
        image_head, _ = train_feature_head(
            pooled[rows], labels[rows], pooled[:0], labels[:0], head_settings, log_probs.shape[2],
            settings.seed,
        )  # fmt: skip
        bundle.set_part("image_head", image_head)
        record["refit_on_train_val"].append(f"image head ({done})")
    return record


def neighbour_votes(
    tfidf: TfidfClassifier,
    texts: np.ndarray,
    titles: np.ndarray,
    photo_vectors: tuple[np.ndarray, np.ndarray],
    labels: np.ndarray,
    rows: np.ndarray,
    fs: FusionSettings,
) -> dict[str, NeighbourVote]:
    """The text and photo neighbour votes with `rows` as their references (listings without
    photos are left out of the photo references)."""
    vectors, has_photo = photo_vectors
    with_photo = rows[has_photo[rows]]
    n_classes, k, tau = tfidf.n_classes, fs.neighbour_k, fs.neighbour_temperature
    text_rows = tfidf.features(texts[rows], titles[rows])
    votes = {TEXT_NEIGHBOURS: NeighbourVote(text_rows, labels[rows], n_classes, k, tau)}
    if len(with_photo):
        votes[PHOTO_NEIGHBOURS] = NeighbourVote(vectors[with_photo], labels[with_photo], n_classes, k, tau)
    return votes


def fit_duplicate_rule(
    bundle: Bundle,
    products: pd.DataFrame,
    photos: pd.DataFrame,
    arrays: FusionArrays,
    features: np.ndarray,
    rows: list[list[int]],
    settings: Settings,
    scratch: Path,
) -> dict[str, Any]:
    """Fit the duplicate-listing rule on the validation split into `bundle.duplicate_rule`.

    The catalogue (every listing's embedding and pooled photo vector) comes from the model
    inputs training already made, so only the synthetic copies are encoded: about a minute on
    the dev data (search/duplicate_training.py). Their photos go to a scratch folder that is
    removed after. Returns what bundle.json records: the figures on validation.
    """
    from fbmarket.search.duplicate_training import Catalogue, fit_on_split

    photo_vectors, has_photo = unit_pooled(features, rows)
    catalogue = Catalogue(
        products[S.PRODUCT_ID].astype(str).tolist(),
        bundle.embed_arrays(arrays),
        photo_vectors,
        has_photo,
        products[S.TITLE].astype(str).tolist(),
        products[S.DESCRIPTION].fillna("").astype(str).tolist(),
    )
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="duplicates-", dir=scratch))
    try:
        rule = fit_on_split(
            bundle, catalogue, products, photos, settings.duplicates, settings.data, folder, settings.seed
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bundle.duplicate_rule = rule
    return rule.to_json()


def fit_price_model(
    bundle: Bundle, products: pd.DataFrame, images: pd.DataFrame, settings: Settings
) -> dict[str, Any] | None:
    """Train the seller's price model (fbmarket/price/) into `bundle.price_model`.

    Fit on the training split, the 80% range calibrated on the validation split (CQR;
    without one, uncalibrated with a note), scored on the test split. Returns what
    bundle.json records, or None (with a warning) when there are too few priced listings.
    """
    from fbmarket.price.train import train_price_model

    # train_price_model also saves the model; that copy is thrown away (Bundle.save writes it)
    with tempfile.TemporaryDirectory(prefix="fbmarket-price-") as folder:
        try:
            model, record = train_price_model(
                bundle, products, images, settings.price, Path(folder), settings.seed
            )
        except ValueError as error:  # e.g. fewer than 2 priced training listings
            log.warning("no price model: %s", error)
            return None
    bundle.price_model = model
    return record


def price_headline(record: dict[str, Any]) -> dict[str, Any]:
    """The price model's figures for the training summary: every priced listing, £0 included."""
    figures = record["metrics"]
    every, priced = figures["all"], figures["priced"]
    return {
        "evaluated_on": record.get("evaluated_on"),
        "median_abs_error_gbp": every.get("median_abs_error_gbp"),
        "mae_gbp": every.get("mae_gbp"),
        "rmse_log": every.get("rmse_log"),
        "r2_log": every.get("r2_log"),
        "range_coverage": priced.get("coverage"),
        "range_mean_width_gbp": priced.get("mean_width_gbp"),
        "free_precision": figures["free"].get("precision"),
        "free_recall": figures["free"].get("recall"),
        "calibrated": bool(record["calibration"].get("calibrated")),
    }
