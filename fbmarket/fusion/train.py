"""Train the whole model bundle: text-only, image-only and fusion, then score the test split.

Order (each stage feeds the next):
1. spaCy lemmas of every title and description; Word2Vec on all of them;
2. the text-only classifier (Word2Vec embedding frozen, then fine-tuned);
3. the image branch: ResNet50V2 trained from scratch on training photos (no weights
   offline), or a pretrained one frozen; photo features cached on disk by image id
   and backbone configuration; an image-only head;
4. the fusion model, its text branch started from the trained text-only one, fed by a
   streaming generator dataset, trained multi-task (category + contrastive);
5. a TF-IDF logistic regression (text/tfidf.py) and the late-fusion head (fusion/late.py):
   the four members' log-probabilities on the validation split, pooled with weights fit
   there; then the two cheap members refit on train + val;
6. the seller's price model (fbmarket/price/): LightGBM quantile boosters on log price over
   the listings' price-free embeddings, category, location and text features, fit on
   train, the 80% range calibrated on val (CQR), saved as LightGBM text + JSON;
7. the bundle written (bundle.json, .keras models, Word2Vec, JSON vocabularies), loaded
   back; the duplicate-listing rule fit on the validation split (model/duplicates.json,
   search/duplicate_training.py); the bundle evaluated on the persisted test split (JSON +
   confusion PNGs).

TensorBoard logs (losses, metrics, learning rate, hyper-parameters) go to
`<fusion.log_dir>/<run>/`, best-epoch checkpoints to `<bundle>/checkpoints/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fbmarket.bundle import (
    BUNDLE_FILE,
    FILES,
    FORMAT_VERSION,
    LATE_FUSION_FILE,
    LEAVES_FILE,
    MODEL_DIR,
    Bundle,
)
from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.evaluate import evaluate_bundle, summary_line
from fbmarket.fusion import late
from fbmarket.fusion.dataset import FusionArrays, TabularScaler, make_dataset
from fbmarket.fusion.model import FusionModel
from fbmarket.plan import plan_training
from fbmarket.price.model import FREE_FILE, PRICE_FILE, QUANTILE_FILES
from fbmarket.price.text_price import CONFIG_FILE as TEXT_PRICE_CONFIG
from fbmarket.price.text_price import WEIGHTS_FILE as TEXT_PRICE_WEIGHTS
from fbmarket.search.duplicates import RULE_FILE as DUPLICATES_FILE
from fbmarket.text.branch import build_text_encoder, build_text_models, set_embedding_trainable
from fbmarket.text.tfidf import VOCABULARY_FILE as TFIDF_FILE
from fbmarket.text.tfidf import WEIGHTS_FILE as TFIDF_WEIGHTS_FILE
from fbmarket.text.tfidf import TfidfClassifier, product_text
from fbmarket.text.tokenize import join, tokenize_listings
from fbmarket.text.train import KeepBest, metric_mode, text_dataset, train_text_classifier
from fbmarket.text.word2vec import Vocabulary, save_vectors, train_word2vec
from fbmarket.vision.backbone import build_backbone, build_chosen_backbone, resolve_weights
from fbmarket.vision.features import (
    FeatureCache,
    backbone_key,
    cached_photo_features,
    existing_photos,
    pool_products,
    product_photo_rows,
)
from fbmarket.vision.train import train_feature_head, train_scratch_backbone

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    bundle_dir: Path
    log_dir: Path
    summary: dict[str, Any]  # headline figures per branch (test split), weights, wall time
    metrics: dict[str, Any]  # the full evaluation report
    history: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the optimiser's current learning rate into the epoch logs (TensorBoard plots it)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


def _callbacks(
    log_dir: Path, checkpoint: Path, monitor: str = "val_accuracy"
) -> list[keras.callbacks.Callback]:
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


def _weights_hash(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def leaf_encoding(products: pd.DataFrame, train_idx: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Leaf categories seen in training (sorted) and every product's leaf label (-1: unseen)."""
    if S.LEAF_CATEGORY not in products:
        return [], np.full(len(products), -1)
    leaf = products[S.LEAF_CATEGORY].astype(str)
    leaves = sorted(set(leaf.iloc[train_idx]))
    index = {name: i for i, name in enumerate(leaves)}
    return leaves, leaf.map(lambda name: index.get(name, -1)).to_numpy(dtype=np.int64)


def _cap(mask: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` True entries, chosen at random (limit <= 0: all)."""
    chosen = np.flatnonzero(mask)
    if limit <= 0 or len(chosen) <= limit:
        return mask
    keep = np.zeros_like(mask)
    keep[np.random.default_rng(seed).choice(chosen, size=limit, replace=False)] = True
    return keep


def _positions(frame: pd.DataFrame, split: str) -> np.ndarray:
    return np.flatnonzero(frame[S.SPLIT].to_numpy() == split)


def fit_late_fusion_head(
    out_dir: Path,
    products: pd.DataFrame,
    images: pd.DataFrame,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: Settings,
    pooled_photos: tuple[np.ndarray, np.ndarray] | None,
    history: dict[str, Any],
    texts: np.ndarray,
) -> dict[str, Any]:
    """Fit the late-fusion head on the validation split, then refit the cheap members.

    Reads the bundle written so far (every member saved), writes
    `model/late_fusion.keras` and, with `fusion.refit_on_val`, a TF-IDF model and an
    image head trained on train + val (the image head for the number of epochs that
    was best on val; only for frozen pretrained features, `pooled_photos`; `texts` are
    `product_text(products)`, already made for the first fit). Returns
    what bundle.json records: the member weights and what was refit.
    """
    model_dir = out_dir / MODEL_DIR
    fs = settings.fusion
    predictions = Bundle.load(out_dir).member_predictions(products.iloc[val_idx], images)
    names = [name for name in late.MEMBERS if name in predictions.probabilities]
    has_photo = np.array([bool(rows) for rows in predictions.photo_rows], np.float32)
    log_probs, mask = late.stack(*late.member_inputs(predictions.probabilities, has_photo), names)
    head = late.fit_late_fusion(log_probs, mask, labels[val_idx], names, seed=settings.seed)
    head.save(model_dir / LATE_FUSION_FILE)
    record: dict[str, Any] = {
        "members": late.member_weights(head),
        "fit_on": {"split": "val", "listings": len(val_idx)},
        "refit_on_train_val": [],
    }
    if not fs.refit_on_val:
        return record
    both = np.concatenate([train_idx, val_idx])
    TfidfClassifier.fit(texts[both], labels[both], log_probs.shape[2], fs.tfidf_c, settings.seed).save(
        model_dir
    )
    record["refit_on_train_val"].append("tfidf")
    if pooled_photos is not None:
        pooled, with_photo = pooled_photos
        rows = np.intersect1d(both, np.flatnonzero(with_photo))
        accuracy = history.get("image_head", {}).get("val_accuracy") or []
        epochs = int(np.argmax(accuracy)) + 1 if accuracy else settings.vision.head_epochs
        head_settings = replace(settings.vision, head_epochs=epochs)
        image_head, _ = train_feature_head(
            pooled[rows], labels[rows], pooled[:0], labels[:0], head_settings, log_probs.shape[2],
            settings.seed,
        )  # fmt: skip
        image_head.save(model_dir / FILES["image_head"])
        record["refit_on_train_val"].append(f"image head ({epochs} epochs)")
    return record


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
    """Fit the duplicate-listing rule on the validation split and write `model/duplicates.json`.

    The catalogue (every listing's embedding and pooled photo vector) comes from the model
    inputs training already made, so only the synthetic copies are encoded: about a minute on
    the dev data (search/duplicate_training.py). Their photos go to a scratch folder that is
    removed after. Returns what bundle.json records: the figures on validation.
    """
    import shutil
    import tempfile

    from fbmarket.bundle import unit_pooled
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
    rule.save(bundle.directory / MODEL_DIR / DUPLICATES_FILE)
    return rule.to_json()
def fit_price_model(
    out_dir: Path, products: pd.DataFrame, images: pd.DataFrame, settings: Settings
) -> dict[str, Any] | None:
    """Train the seller's price model (fbmarket/price/) on the bundle written so far.

    Fit on the training split, the 80% range calibrated on the validation split (CQR;
    without one, uncalibrated with a note), scored on the test split. Returns what
    bundle.json records, or None (with a warning) when there are too few priced listings.
    """
    from fbmarket.price.train import train_price_model

    try:
        _, record = train_price_model(
            Bundle.load(out_dir), products, images, settings.price, out_dir / MODEL_DIR, settings.seed
        )
    except ValueError as error:  # e.g. fewer than 2 priced training listings
        log.warning("no price model: %s", error)
        return None
    return record


def _price_file_key(name: str) -> str:
    """bundle.json's name for a price model file: price, price_low ... price_free, price_text_json/npz."""
    if name == PRICE_FILE:
        return "price"
    return Path(name).stem if name.endswith(".txt") else name.replace(".", "_")


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


def train_bundle(
    prepared: Any, settings: Settings, out_dir: Path | None = None, show_progress: bool = True
) -> TrainResult:
    """Train text-only, image-only and fusion models on `prepared` and write the bundle.

    `prepared` is a `fbmarket.pipeline.PreparedData` (products with a `split` column,
    clean images, the category encoder). Returns the test-split figures.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir or settings.out_dir)
    model_dir = out_dir / MODEL_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    verbose = 2 if show_progress else 0
    seed = settings.seed
    keras.utils.set_random_seed(seed)
    timings: dict[str, float] = {}
    history: dict[str, Any] = {}

    def tick(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 2)
        if show_progress:
            print(f"  {name}: {timings[name]:.1f} s", flush=True)
        return time.perf_counter()

    products = prepared.products.reset_index(drop=True)
    S.require_columns(products, (S.PRODUCT_ID, S.TITLE, S.DESCRIPTION, S.ROOT_CATEGORY, S.SPLIT), "products")
    classes = list(prepared.encoder.classes)
    n_classes = len(classes)
    labels = prepared.encoder.transform(products[S.ROOT_CATEGORY])
    train_idx, val_idx, test_idx = (_positions(products, s) for s in S.SPLITS)
    if len(train_idx) == 0:
        raise ValueError("no listing is in the training split: cannot train")
    held_out_val = len(val_idx) > 0
    if not held_out_val:
        log.warning("no validation listings: early stopping watches the training split")
        val_idx = train_idx
    run = f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    log_dir = Path(settings.fusion.log_dir) / run
    checkpoints = out_dir / "checkpoints"
    prior = np.bincount(labels[train_idx], minlength=n_classes) / len(train_idx)
    kept = set(products[S.PRODUCT_ID].astype(str))
    n_photos = int(prepared.images[S.PRODUCT_ID].astype(str).isin(kept).sum())
    plan = plan_training(settings, len(train_idx), len(products), n_photos)
    if plan is not None and show_progress:
        print(f"  {plan.note}", flush=True)

    # ---------------------------------------------------------------- 1. text
    t = time.perf_counter()
    title_tokens, description_tokens = tokenize_listings(
        products[S.TITLE].tolist(), products[S.DESCRIPTION].tolist(), show_progress
    )
    vectors = train_word2vec(title_tokens + description_tokens, settings.text, seed)
    vocabulary = Vocabulary.build(
        title_tokens + description_tokens, settings.text.w2v_min_count, settings.text.vocab_size
    )
    save_vectors(vectors, model_dir)
    vocabulary.save(model_dir / FILES["vocabulary"])
    titles = [join(t) for t in title_tokens]
    descriptions = [join(d) for d in description_tokens]
    t = tick("tokenise + Word2Vec", t)

    def pick(values: list[str], index: np.ndarray) -> list[str]:
        return [values[i] for i in index]

    encoder = build_text_encoder(
        settings.text,
        vocabulary.words,
        vocabulary.embedding_matrix(vectors, seed),
        pick(titles, train_idx),
        pick(descriptions, train_idx),
        seed,
    )
    leaves, leaf_labels = leaf_encoding(products, train_idx)
    text_leaves = len(leaves) if settings.text.leaf_weight > 0 else 0
    text_model, text_trainer = build_text_models(
        encoder, n_classes, settings.text.dropout / 2, seed, text_leaves
    )

    def text_leaf_labels(index: np.ndarray) -> np.ndarray | None:
        return leaf_labels[index] if text_leaves else None

    text_train = text_dataset(
        pick(titles, train_idx),
        pick(descriptions, train_idx),
        labels[train_idx],
        settings.text.batch_size,
        seed,
        text_leaf_labels(train_idx),
    )
    text_val = text_dataset(
        pick(titles, val_idx), pick(descriptions, val_idx), labels[val_idx], 256, None, text_leaf_labels(val_idx)
    )
    history["text"] = train_text_classifier(
        text_trainer,
        text_train,
        text_val,
        settings.text,
        n_classes,
        callbacks=_callbacks(log_dir / "text", checkpoints / "text.weights.h5"),
        verbose=verbose,
        n_leaves=text_leaves,
    )
    text_model.save(model_dir / FILES["text_model"])
    t = tick("text-only model", t)

    # ---------------------------------------------------------------- 2. image
    choice = resolve_weights(settings.vision)
    photos, missing_files = existing_photos(
        prepared.images[prepared.images[S.PRODUCT_ID].astype(str).isin(kept)]
    )
    photo_split = photos[S.PRODUCT_ID].map(products.set_index(S.PRODUCT_ID)[S.SPLIT]).to_numpy()
    photo_labels = prepared.encoder.transform(
        photos[S.PRODUCT_ID].map(products.set_index(S.PRODUCT_ID)[S.ROOT_CATEGORY])
    )
    if choice.trains_backbone:
        size = settings.vision.train_size
        backbone = build_backbone(size, None)
    else:
        size = settings.vision.feature_size or choice.native_size
        backbone = build_chosen_backbone(choice, size)
    feature_dim = int(backbone.output_shape[-1])
    head = None
    if choice.trains_backbone:
        on_train, on_val = photo_split == "train", photo_split == "val"
        on_train = _cap(on_train, settings.vision.max_train_photos, seed)
        on_val = _cap(on_val, settings.vision.max_train_photos // 4, seed + 1)
        if on_train.sum() == 0 or settings.vision.epochs <= 0:
            reason = "no training photos" if on_train.sum() == 0 else "vision.epochs is 0"
            log.warning("%s: the backbone stays at its random initialisation", reason)
            choice = replace(choice, description=f"none: random, untrained ResNet50V2 ({reason})")
        else:
            head, history["image"] = train_scratch_backbone(
                backbone,
                photos.loc[on_train, S.IMAGE_PATH].tolist(),
                photo_labels[on_train],
                photos.loc[on_val, S.IMAGE_PATH].tolist(),
                photo_labels[on_val],
                settings.vision,
                n_classes,
                seed,
                callbacks=_callbacks(log_dir / "image", checkpoints / "image.weights.h5"),
                verbose=verbose,
            )
        fingerprint = f"scratch:{_weights_hash(backbone)}"
    else:
        fingerprint = choice.fingerprint
    backbone.trainable = False
    backbone.save(model_dir / FILES["backbone"])
    t = tick("image backbone", t)

    arch = "ResNet50V2" if choice.arch == "resnet50v2" else choice.arch  # keeps old cache keys
    key = backbone_key(fingerprint, size, settings.data.image_size, arch=arch)
    cache = FeatureCache(out_dir / "cache" / "features", key) if settings.vision.cache_features else None
    features = cached_photo_features(backbone, photos, size, settings.vision.batch_size, cache, show_progress)
    t = tick(
        f"photo features ({features.computed} computed, {len(features.image_ids) - features.computed} cached)",
        t,
    )
    product_ids = products[S.PRODUCT_ID].astype(str).tolist()
    rows = product_photo_rows(features, product_ids, settings.vision.max_photos_per_product)
    pooled_photos: tuple[np.ndarray, np.ndarray] | None = None  # the head's inputs, for its refit
    if head is None:
        pooled, has_photo = pool_products(features.features, rows)
        pooled_photos = (pooled, has_photo)
        on_train = np.intersect1d(train_idx, np.flatnonzero(has_photo))
        on_val = np.intersect1d(val_idx, np.flatnonzero(has_photo))
        head, history["image_head"] = train_feature_head(
            pooled[on_train],
            labels[on_train],
            pooled[on_val],
            labels[on_val],
            settings.vision,
            n_classes,
            seed,
            verbose=0,
        )
    head.save(model_dir / FILES["image_head"])
    t = tick("image-only head", t)
    texts = product_text(products)
    fs = settings.fusion
    late_fusion = fs.late_fusion and held_out_val and len(np.unique(labels[train_idx])) > 1
    if fs.late_fusion and not late_fusion:
        log.warning("no validation listings (or one category): 'fusion' is the fusion network's own head")
    # a bundle folder trained into before must not keep serving an older run's head and members
    for stale in (LATE_FUSION_FILE, TFIDF_FILE, TFIDF_WEIGHTS_FILE, DUPLICATES_FILE):
        (model_dir / stale).unlink(missing_ok=True)
    if late_fusion:
        TfidfClassifier.fit(texts[train_idx], labels[train_idx], n_classes, fs.tfidf_c, seed).save(model_dir)
        t = tick("TF-IDF text model", t)

    # ---------------------------------------------------------------- 3. fusion
    raw_tabular = TabularScaler.raw(products, [len(r) for r in rows])
    scaler = TabularScaler.fit(raw_tabular.iloc[train_idx])
    scaler.save(model_dir / FILES["tabular"])
    feature_rows = features.features if len(features.features) else np.zeros((0, feature_dim), np.float32)
    (model_dir / LEAVES_FILE).write_text(json.dumps({"leaves": leaves}, indent=2, ensure_ascii=False))
    arrays = FusionArrays(
        titles,
        descriptions,
        title_tokens,
        rows,
        feature_rows,
        scaler.transform(raw_tabular),
        labels,
        leaf_labels if fs.leaf_weight > 0 and leaves else None,
    )
    text_only = None
    if settings.fusion.init_text_from_text_model:
        text_only = keras.models.load_model(model_dir / FILES["text_model"], compile=False)
        fusion_text = text_only.get_layer("text_encoder")
    else:
        fusion_text = build_text_encoder(
            settings.text,
            vocabulary.words,
            vocabulary.embedding_matrix(vectors, seed),
            pick(titles, train_idx),
            pick(descriptions, train_idx),
            seed,
        )
    set_embedding_trainable(fusion_text, True)
    if settings.fusion.freeze_text and text_only is not None:
        fusion_text.trainable = False  # the trained text-only encoder, as a fixed feature extractor
    fusion = FusionModel(
        fusion_text,
        n_classes,
        feature_dim,
        arrays.tabular.shape[1],
        embedding_dim=fs.embedding_dim,
        hidden_dim=fs.hidden_dim,
        dropout=fs.dropout,
        temperature=fs.temperature,
        contrastive_weight=fs.contrastive_weight,
        label_smoothing=fs.label_smoothing,
        seed=seed,
        n_leaves=len(leaves) if arrays.leaf_labels is not None else 0,
        leaf_weight=fs.leaf_weight,
        text_skip=fs.text_skip,
        cosine_scale=fs.cosine_scale,
        name="fusion",
    )
    if fusion.text_head is not None and text_only is not None:
        # softmax(Wx + b) of the text-only model -> the logits Wx + b the fusion adds to its own
        fusion.text_head.get_layer("logits").set_weights(text_only.get_layer("category").get_weights())
    fusion.compile(optimizer=keras.optimizers.Adam(fs.learning_rate))
    max_photos = settings.vision.max_photos_per_product
    train_data = make_dataset(
        arrays.subset(train_idx),
        fs.batch_size,
        max_photos,
        seed,
        training=True,
        photo_dropout=fs.photo_dropout,
        query_photo_share=fs.query_photo_share,
        description_dropout=fs.description_dropout,
        text_dropout=fs.text_dropout,
    )
    val_data = make_dataset(
        arrays.subset(val_idx),
        fs.batch_size,
        max_photos,
        seed,
        training=False,
        query_photo_share=fs.query_photo_share,
    )
    keep = KeepBest(fs.monitor)
    mode = metric_mode(fs.monitor)
    fitted = fusion.fit(
        train_data,
        validation_data=val_data,
        epochs=fs.epochs,
        callbacks=[
            keep,
            keras.callbacks.ReduceLROnPlateau(monitor=fs.monitor, mode=mode, factor=0.5, patience=2),
            keras.callbacks.EarlyStopping(monitor=fs.monitor, mode=mode, patience=fs.patience),
            *_callbacks(log_dir / "fusion", checkpoints / "fusion.weights.h5", fs.monitor),
        ],
        shuffle=False,  # the generator reshuffles itself each epoch
        verbose=verbose,
    )
    keep.restore(fusion)
    history["fusion"] = {k: [float(v) for v in vals] for k, vals in fitted.history.items()}
    history["fusion"]["best_val_accuracy"] = [keep.best_logs.get("val_accuracy", float("nan"))]
    fusion.save(model_dir / FILES["fusion"])
    t = tick("fusion model", t)

    # ---------------------------------------------------------------- 4. bundle
    (model_dir / FILES["labels"]).write_text(json.dumps({"classes": classes}, indent=2, ensure_ascii=False))
    created = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = {
        "format": FORMAT_VERSION,
        "version": f"{run}-{_weights_hash(fusion)[:8]}",
        "created": created,
        "classes": classes,
        "prior": prior.tolist(),
        "weights": choice.to_json() | {"backbone_fingerprint": fingerprint},
        "backbone_size": size,
        "image_size": settings.data.image_size,
        "feature_dim": feature_dim,
        "backbone": choice.arch,
        "feature_key": key,
        "max_photos": max_photos,
        "max_title_tokens": settings.text.max_title_tokens,
        "embedding_dim": fs.embedding_dim,
        "n_leaves": len(leaves),
        "vocabulary_size": len(vocabulary),
        "word2vec_coverage": vocabulary.coverage(vectors),
        "tabular_columns": list(scaler.to_json()["columns"]),
        "files": {k: f"{MODEL_DIR}/{v}" for k, v in FILES.items()} | {"leaves": f"{MODEL_DIR}/{LEAVES_FILE}"},
        "synthetic_data": bool(getattr(prepared, "synthetic", False)),
        "plan": plan.to_json() if plan is not None else None,
        "log_dir": str(log_dir),
    }
    (out_dir / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2))
    settings.save(out_dir / "settings.json")
    if late_fusion:
        manifest["files"] |= {
            "late_fusion": f"{MODEL_DIR}/{LATE_FUSION_FILE}",
            "tfidf": f"{MODEL_DIR}/{TFIDF_FILE}",
            "tfidf_weights": f"{MODEL_DIR}/{TFIDF_WEIGHTS_FILE}",
        }
        manifest["late_fusion"] = fit_late_fusion_head(
            out_dir,
            products,
            prepared.images,
            labels,
            train_idx,
            val_idx,
            settings,
            pooled_photos,
            history,
            texts,
        )
        (out_dir / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2))
        t = tick("late-fusion head", t)

    # ---------------------------------------------------------------- 4b. price
    # a bundle folder trained into before must not keep serving an older run's price model
    for stale in (PRICE_FILE, *QUANTILE_FILES, FREE_FILE, TEXT_PRICE_CONFIG, TEXT_PRICE_WEIGHTS):
        (model_dir / stale).unlink(missing_ok=True)
    price_record: dict[str, Any] | None = None
    if settings.price.enabled:
        price_record = fit_price_model(out_dir, products, prepared.images, settings)
        if price_record is not None:
            manifest["files"] |= {
                _price_file_key(name): f"{MODEL_DIR}/{name}"
                for name in price_record["files"]
            }
            manifest["price"] = {k: v for k, v in price_record.items() if k != "files"}
            (out_dir / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2))
        t = tick("price model", t)

    # ---------------------------------------------------------------- 4c. duplicate rule
    bundle = Bundle.load(out_dir)
    if settings.duplicates.fit_rule and held_out_val:
        manifest["duplicates"] = fit_duplicate_rule(
            bundle, products, photos, arrays, feature_rows, rows, settings, out_dir / "cache"
        )
        manifest["files"]["duplicates"] = f"{MODEL_DIR}/{DUPLICATES_FILE}"
        (out_dir / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2))
        t = tick("duplicate rule", t)

    # ---------------------------------------------------------------- 5. evaluation
    eval_split, eval_idx = ("test", test_idx) if len(test_idx) else ("val", val_idx)
    report_path = out_dir / "reports" / f"model_{eval_split}.json"
    metrics = evaluate_bundle(
        out_dir, products.iloc[eval_idx], prepared.images, report_path, show_progress=False, bundle=bundle
    )
    t = tick(f"evaluation on the {eval_split} split", t)
    wall = round(time.perf_counter() - started, 1)
    peak_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    summary = {
        branch: {
            "accuracy": metrics["branches"][branch]["accuracy"],
            "macro_f1": metrics["branches"][branch]["macro_f1"],
        }
        for branch in ("text", "image", "fusion")
    } | {
        "evaluated_on": eval_split,
        "n_products": metrics["n_products"],
        "image_weights": choice.description,
        "backbone": choice.arch,
        "training_plan": plan.tier if plan is not None else "as configured",
        "missing_photo_files": missing_files,
        "train_wall_time_s": wall,
        "peak_memory_mb": peak_mb,
        "bundle": str(out_dir),
        "version": manifest["version"],
    }
    if price_record is not None and "metrics" in price_record:
        summary["price"] = price_headline(price_record)
    (out_dir / "metrics.json").write_text(
        json.dumps(
            {"summary": summary, "timings_s": timings, "history": history, "test": metrics, "price": price_record},
            indent=2,
            default=str,
        )
    )
    manifest["metrics"] = summary
    (out_dir / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2))
    hparams = {
        "w2v_dim": settings.text.w2v_dim,
        "text_wide": settings.text.wide,
        "text_deep": settings.text.deep,
        "image_weights": choice.kind,
        "image_size": size,
        "embedding_dim": fs.embedding_dim,
        "contrastive_weight": fs.contrastive_weight,
        "temperature": fs.temperature,
        "leaf_weight": fs.leaf_weight,
        "cosine_scale": fs.cosine_scale,
        "monitor": fs.monitor,
        "learning_rate": fs.learning_rate,
    }
    log_hparams(
        log_dir,
        run,
        hparams,
        {f"test_{b}_accuracy": summary[b]["accuracy"] for b in ("text", "image", "fusion")},
    )
    if show_progress:
        print(
            f"  {eval_split}: {summary_line(metrics['branches'])} (image weights: {choice.description})",
            flush=True,
        )
    return TrainResult(out_dir, log_dir, summary, metrics, history, timings)
