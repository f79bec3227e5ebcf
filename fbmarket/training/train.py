"""Train the whole model bundle: every branch, then the bundle in memory, scored and saved once.

Order (each stage feeds the next):
1. spaCy lemmas of every title and description; Word2Vec on all of them;
2. the text-only classifier (Word2Vec embedding frozen, then fine-tuned);
3. the image branch: ResNet50V2 trained from scratch on training photos (no weights
   offline), or a pretrained one frozen; photo features cached on disk by image id
   and backbone configuration; an image-only head;
4. the fusion network (fusion/train.py), its text branch started from a copy of the trained
   text-only one, fed by a streaming generator dataset, trained multi-task (category +
   contrastive);
5. the `Bundle` made from those models in memory; a TF-IDF logistic regression
   (text/tfidf.py), the neighbour votes by text and photo (fusion/neighbours.py) and the
   late-fusion head (fusion/late.py): the six members' log-probabilities on the validation
   split, pooled with weights fit there; then the cheap members refit on train + val (the
   neighbour votes' references grow to train + val);
6. the seller's price model (fbmarket/price/): LightGBM quantile boosters on log price over
   the listings' price-free embeddings, category, location and text features, fit on
   train, the 80% range calibrated on val (CQR);
7. the duplicate-listing rule fit on the validation split (search/duplicate_training.py);
   the bundle evaluated on the persisted test split (JSON + confusion PNGs), then saved
   (`Bundle.save`: bundle.json, .keras models, Word2Vec, JSON vocabularies; no pickle).

TensorBoard logs (losses, metrics, learning rate, hyper-parameters) go to
`<fusion.log_dir>/<run>/`, best-epoch checkpoints to `<bundle>/checkpoints/`.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fbmarket.bundle import Bundle
from fbmarket.bundle.inputs import unit_pooled
from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.split import measurement_warnings
from fbmarket.errors import DataError
from fbmarket.evaluate import evaluate_bundle, summary_line
from fbmarket.files import dumps_json
from fbmarket.fusion.dataset import FusionArrays, TabularScaler
from fbmarket.fusion.train import train_fusion_network
from fbmarket.layout import FORMAT_VERSION, BundleLayout
from fbmarket.plan import plan_training
from fbmarket.text.branch import build_text_encoder, build_text_models, set_embedding_trainable
from fbmarket.text.tfidf import TfidfClassifier, product_text, product_titles
from fbmarket.text.tokenize import join, tokenize_listings
from fbmarket.text.train import text_dataset, train_text_classifier
from fbmarket.text.word2vec import Vocabulary, train_word2vec
from fbmarket.training.steps import (
    cap,
    copy_model,
    fit_duplicate_rule,
    fit_late_fusion_head,
    fit_price_model,
    leaf_encoding,
    log_hparams,
    loggers,
    positions,
    price_headline,
    weights_hash,
)
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
    bundle: Bundle | None = None  # the trained bundle, saved in bundle_dir and open for serving


def train_bundle(
    prepared: Any, settings: Settings, out_dir: Path | None = None, show_progress: bool = True
) -> TrainResult:
    """Train every branch on `prepared`, build the `Bundle` in memory and save it (once, at the end).

    `prepared` is a `fbmarket.prepare.PreparedData` (products with a `split` column,
    clean images, the category encoder). Returns the test-split figures and the bundle,
    ready to serve (`TrainResult.bundle`: later stages use it instead of loading it again).
    """
    started = time.perf_counter()
    layout = BundleLayout(Path(out_dir or settings.out_dir))
    out_dir = layout.root
    out_dir.mkdir(parents=True, exist_ok=True)
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
    train_idx, val_idx, test_idx = (positions(products, s) for s in S.SPLITS)
    if len(train_idx) == 0:
        raise DataError("no listing is in the training split: cannot train")
    too_small = measurement_warnings({"val": len(val_idx), "test": len(test_idx)})
    for warning in too_small:  # said on stderr now, and kept in metrics.json / bundle.json / summary.json
        log.warning(warning)
        if show_progress:
            print(f"  WARNING: {warning}", flush=True)
    held_out_val = len(val_idx) > 0
    if not held_out_val:
        log.warning("no validation listings: early stopping watches the training split")
        val_idx = train_idx
    run = f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    log_dir = Path(settings.fusion.log_dir) / run
    checkpoints = layout.checkpoints
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
    titles = [join(t) for t in title_tokens]
    descriptions = [join(d) for d in description_tokens]
    t = tick("tokenise + Word2Vec", t)

    def pick(values: list[str], index: np.ndarray) -> list[str]:
        return [values[i] for i in index]

    def new_text_encoder() -> keras.Model:
        """A text encoder over the Word2Vec start, its n-gram vocabularies adapted on train only."""
        return build_text_encoder(
            settings.text,
            vocabulary.words,
            vocabulary.embedding_matrix(vectors, seed),
            pick(titles, train_idx),
            pick(descriptions, train_idx),
            seed,
        )

    encoder = new_text_encoder()
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
        pick(titles, val_idx),
        pick(descriptions, val_idx),
        labels[val_idx],
        256,
        None,
        text_leaf_labels(val_idx),
    )
    history["text"] = train_text_classifier(
        text_trainer,
        text_train,
        text_val,
        settings.text,
        n_classes,
        callbacks=loggers(log_dir / "text", checkpoints / "text.weights.h5"),
        verbose=verbose,
        n_leaves=text_leaves,
    )
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
        on_train = cap(on_train, settings.vision.max_train_photos, seed)
        on_val = cap(on_val, settings.vision.max_train_photos // 4, seed + 1)
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
                callbacks=loggers(log_dir / "image", checkpoints / "image.weights.h5"),
                verbose=verbose,
            )
        fingerprint = f"scratch:{weights_hash(backbone)}"
    else:
        fingerprint = choice.fingerprint
    backbone.trainable = False
    t = tick("image backbone", t)

    arch = "ResNet50V2" if choice.arch == "resnet50v2" else choice.arch  # keeps old cache keys
    key = backbone_key(fingerprint, size, settings.data.image_size, arch=arch)
    cache = FeatureCache(layout.feature_cache, key) if settings.vision.cache_features else None
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
    t = tick("image-only head", t)
    texts = product_text(products)
    fs = settings.fusion
    late_fusion = fs.late_fusion and held_out_val and len(np.unique(labels[train_idx])) > 1
    if fs.late_fusion and not late_fusion:
        log.warning("no validation listings (or one category): 'fusion' is the fusion network's own head")
    tfidf = None
    if late_fusion:
        tfidf = TfidfClassifier.fit(
            texts[train_idx], labels[train_idx], n_classes, fs.tfidf_c, seed, product_titles(products)[train_idx]
        )
        t = tick("TF-IDF text model", t)

    # ---------------------------------------------------------------- 3. fusion
    raw_tabular = TabularScaler.raw(products, [len(r) for r in rows])
    scaler = TabularScaler.fit(raw_tabular.iloc[train_idx])
    feature_rows = features.features if len(features.features) else np.zeros((0, feature_dim), np.float32)
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
        text_only = copy_model(text_model)
        fusion_text = text_only.get_layer("text_encoder")
    else:
        fusion_text = new_text_encoder()
    set_embedding_trainable(fusion_text, True)
    if settings.fusion.freeze_text and text_only is not None:
        fusion_text.trainable = False  # the trained text-only encoder, as a fixed feature extractor
    max_photos = settings.vision.max_photos_per_product
    fusion, history["fusion"] = train_fusion_network(
        arrays,
        fusion_text,
        n_classes,
        feature_dim,
        len(leaves) if arrays.leaf_labels is not None else 0,
        train_idx,
        val_idx,
        fs,
        max_photos,
        seed,
        text_head_weights=text_only.get_layer("category").get_weights() if text_only is not None else None,
        callbacks=loggers(log_dir / "fusion", checkpoints / "fusion.weights.h5", fs.monitor),
        verbose=verbose,
    )
    t = tick("fusion model", t)

    # ---------------------------------------------------------------- 4. bundle
    created = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = {
        "format": FORMAT_VERSION,
        "version": f"{run}-{weights_hash(fusion)[:8]}",
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
        "files": {},  # what Bundle.save writes
        "synthetic_data": bool(getattr(prepared, "synthetic", False)),
        "plan": plan.to_json() if plan is not None else None,
        "log_dir": str(log_dir),
    }
    bundle = Bundle(
        layout,
        manifest,
        fusion,
        scaler,
        {"text_model": text_model, "backbone": backbone, "image_head": head},
        tfidf=tfidf,
        duplicate_rule=None,
        leaves=leaves,
        word2vec=vectors,
        vocabulary=vocabulary,
        settings=settings,
    )
    if late_fusion:
        manifest["late_fusion"] = fit_late_fusion_head(
            bundle,
            products,
            prepared.images,
            labels,
            train_idx,
            val_idx,
            settings,
            pooled_photos,
            history,
            texts,
            unit_pooled(features.features, rows),
        )
        t = tick("late-fusion head", t)

    # ---------------------------------------------------------------- 4b. price
    price_record: dict[str, Any] | None = None
    if settings.price.enabled:
        price_record = fit_price_model(bundle, products, prepared.images, settings)
        if price_record is not None:
            manifest["price"] = {k: v for k, v in price_record.items() if k != "files"}
        t = tick("price model", t)

    # ---------------------------------------------------------------- 4c. duplicate rule
    if settings.duplicates.fit_rule and held_out_val:
        manifest["duplicates"] = fit_duplicate_rule(
            bundle, products, photos, arrays, feature_rows, rows, settings, layout.cache_dir
        )
        t = tick("duplicate rule", t)

    # ---------------------------------------------------------------- 5. evaluation
    eval_split, eval_idx = ("test", test_idx) if len(test_idx) else ("val", val_idx)
    report_path = layout.reports_dir / f"model_{eval_split}.json"
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
    if too_small:
        summary["warnings"] = too_small
    if price_record is not None and "metrics" in price_record:
        summary["price"] = price_headline(price_record)
    layout.metrics.write_text(
        dumps_json(
            {
                "summary": summary,
                "timings_s": timings,
                "history": history,
                "test": metrics,
                "price": price_record,
            },
            indent=2,
            default=str,
        )
    )
    manifest["metrics"] = summary
    bundle.save()
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
    return TrainResult(out_dir, log_dir, summary, metrics, history, timings, bundle)
