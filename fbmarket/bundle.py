"""The model bundle: everything needed to serve, loadable on another machine (no pickle).

Layout under the bundle folder (`artifacts/` by default):

    bundle.json              manifest: version, classes, image weights used, sizes, metrics
    settings.json            the run's settings
    model/text_model.keras   text-only classifier (its vocabularies inside)
    model/image_backbone.keras  ResNet50V2 feature extractor (trained or pretrained)
    model/image_head.keras   image-only classifier over photo features
    model/fusion.keras       FusionModel: product embedding, category head, query encoder
    model/word2vec.bin       Word2Vec vectors (word2vec binary format)
    model/vocabulary.json    Embedding-layer vocabulary with counts
    model/labels.json        root categories in label order
    model/tabular.json       price/location standardisation
    model/leaves.json        leaf categories of the fusion model's auxiliary head
    model/tfidf.json, tfidf.npz   TF-IDF text model (vocabularies; idf and coefficients)
    model/late_fusion.keras  the pooling head over every member (fusion/late.py)
    model/price.json, price_{low,median,high,free}.txt  the seller's price model (optional;
                             fbmarket/price/: LightGBM text format + JSON metadata)
    model/duplicates.json    the duplicate-listing rule and thresholds (search/duplicates.py; optional)
    metrics.json, reports/   evaluation figures and confusion matrices

`Bundle.load(dir)` gives the serving API: `encode_products`, `encode_query`,
`predict_category` (and `predict_products` for evaluation). The category called
"fusion" is the late-fusion head's pooling of the members when the bundle has one
(bundles from before it, or trained with `fusion.late_fusion` off, use the fusion
network's own head).
"""

from __future__ import annotations

import json
import logging
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

from fbmarket.data import schema as S
from fbmarket.fusion import late
from fbmarket.fusion.dataset import FusionArrays, TabularScaler, product_batch
from fbmarket.fusion.model import CosineLogits  # the import also registers FusionModel for loading
from fbmarket.price.model import PRICE_FILE, PriceModel, PriceModelError
from fbmarket.search.categories import CategoryHead, CategorySpace
from fbmarket.search.duplicates import RULE_FILE as DUPLICATES_FILE
from fbmarket.search.duplicates import DuplicateRule
from fbmarket.text import branch as _text_branch  # noqa: F401  (registers custom layers)
from fbmarket.text.tfidf import VOCABULARY_FILE as TFIDF_FILE
from fbmarket.text.tfidf import WEIGHTS_FILE as TFIDF_WEIGHTS_FILE
from fbmarket.text.tfidf import TfidfClassifier, product_text
from fbmarket.text.tokenize import get_tokenizer, join, tokenize_listings
from fbmarket.vision.features import (
    FeatureCache,
    PhotoFeatures,
    cached_photo_features,
    pool_products,
    product_photo_rows,
)

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
MODEL_DIR = "model"
FORMAT_VERSION = 1
FILES = {
    "text_model": "text_model.keras",
    "backbone": "image_backbone.keras",
    "image_head": "image_head.keras",
    "fusion": "fusion.keras",
    "word2vec": "word2vec.bin",
    "vocabulary": "vocabulary.json",
    "labels": "labels.json",
    "tabular": "tabular.json",
}
PARTS = ("text_model", "backbone", "image_head")  # models a typed search does not need (Bundle.load lazy)
LEAVES_FILE = "leaves.json"  # leaf categories of the auxiliary head (optional)
LATE_FUSION_FILE = "late_fusion.keras"  # optional: without it "fusion" is the network's head
# Encode through the on-disk feature cache only for batches this large; single live
# listings would otherwise rewrite the whole cache file each time.
CACHE_MIN_PHOTOS = 256


class BundleError(FileNotFoundError):
    """A folder that is not a complete bundle; the message names what is missing."""


@dataclass
class ProductPredictions:
    probabilities: dict[str, np.ndarray]  # branch -> (n, classes)
    embeddings: np.ndarray  # (n, embedding_dim), unit length
    without_photo: int
    missing_photos: int
    empty_descriptions: int
    photo_rows: Sequence[Sequence[int]] = ()  # each listing's rows of photo features (empty: none)


@dataclass
class EncodedListings:
    embeddings: np.ndarray  # (n, embedding_dim), unit length
    photo_vectors: np.ndarray  # (n, feature_dim): mean of each listing's photo features, unit length
    has_photo: np.ndarray  # (n,) bool; rows without a photo are zeros in photo_vectors


@dataclass
class PhotoQuery:
    features: np.ndarray  # (feature_dim,) backbone features of the photo
    root_probs: np.ndarray  # (classes,) image-only head, in `Bundle.classes` order


class Bundle:
    """A trained model bundle, loaded for serving and evaluation. Thread-safe for reads."""

    def __init__(
        self,
        directory: Path,
        manifest: dict[str, Any],
        fusion: keras.Model,
        tabular: TabularScaler,
        load_part: Callable[[str], keras.Model],
        lazy: bool = False,
    ):
        self.directory = Path(directory)
        self.manifest = manifest
        self.fusion = fusion
        self.tabular = tabular
        self.classes: list[str] = list(manifest["classes"])
        self.prior = np.asarray(manifest.get("prior") or np.full(len(self.classes), 1 / len(self.classes)))
        self._cache_lock = threading.Lock()
        self._products_fn = tf.function(lambda x: fusion(x, training=False), reduce_retracing=True)
        self._query_fn = tf.function(lambda x: fusion.encode_query(x, training=False), reduce_retracing=True)
        self._load_part = load_part
        self._parts: dict[str, keras.Model] = {}
        self._part_fns: dict[str, Any] = {}
        self._parts_lock = threading.Lock()
        self.late_fusion: keras.Model | None = None
        self.tfidf: TfidfClassifier | None = None
        self.tfidf = _load_tfidf(self.directory, len(self.classes))
        self._duplicate_rule: DuplicateRule | None | object = _UNREAD
        self.late_fusion = _load_late_fusion(self.directory, manifest, self.classes)
        self.price_model, self._price_error = _load_price_model(self.directory)
        pooled = self.late_fusion.get_layer("pooling").members if self.late_fusion is not None else []
        if "tfidf" in pooled and self.tfidf is None:
            raise BundleError(f"bundle {self.directory} is incomplete: missing model/{TFIDF_FILE}")
        if not lazy:
            for key in PARTS:
                self._part(key)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, directory: Path | str, lazy: bool = False) -> Bundle:
        """Open a bundle. `lazy` defers the text-only model, the photo backbone and the image
        head (about half of the loading time) to their first use: a typed search needs none."""
        directory = Path(directory)
        manifest_path = directory / BUNDLE_FILE
        if not manifest_path.is_file():
            raise BundleError(
                f"{directory} is not a model bundle: {BUNDLE_FILE} is missing (train one first)"
            )
        manifest = json.loads(manifest_path.read_text())
        model_dir = directory / MODEL_DIR
        missing = [name for name in FILES.values() if not (model_dir / name).is_file()]
        if missing:
            raise BundleError(
                f"bundle {directory} is incomplete: missing {', '.join('model/' + m for m in missing)}"
            )

        def load_model(key: str) -> keras.Model:
            return keras.models.load_model(model_dir / FILES[key], compile=False)

        fusion = load_model("fusion")
        return cls(
            directory, manifest, fusion, TabularScaler.load(model_dir / FILES["tabular"]), load_model, lazy
        )

    def _part(self, key: str) -> keras.Model:
        """A part (PARTS), loaded with its compiled call on first use."""
        with self._parts_lock:
            if key not in self._parts:
                model = self._parts[key] = self._load_part(key)
                if key == "text_model":
                    call = tf.function(lambda t, d: model([t, d], training=False), reduce_retracing=True)
                else:
                    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
                self._part_fns[key] = call
            return self._parts[key]

    def _part_fn(self, key: str) -> Any:
        """The compiled call of a part."""
        self._part(key)
        return self._part_fns[key]

    @property
    def loaded_parts(self) -> tuple[str, ...]:
        """Which of PARTS are loaded so far."""
        with self._parts_lock:
            return tuple(key for key in PARTS if key in self._parts)

    @property
    def text_model(self) -> keras.Model:
        return self._part("text_model")

    @property
    def backbone(self) -> keras.Model:
        return self._part("backbone")

    @property
    def image_head(self) -> keras.Model:
        return self._part("image_head")

    # ------------------------------------------------------------------ facts
    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def embedding_dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    @property
    def weights_info(self) -> dict[str, Any]:
        return dict(self.manifest["weights"])

    @property
    def model_info(self) -> dict[str, str]:
        """Which model serves: version, image backbone and its weights (for /ready and the page)."""
        weights = self.weights_info
        if self.late_fusion is not None:
            members = self.late_fusion.get_layer("pooling").members
            category = f"late fusion of {', '.join(members)}"
        else:
            category = "fusion network"
        return {
            "version": self.version,
            "backbone": str(self.manifest.get("backbone") or weights.get("arch") or "resnet50v2"),
            "image_weights": str(weights.get("description", "")),
            "category_model": category,
        }

    @property
    def duplicate_rule(self) -> DuplicateRule | None:
        """The duplicate-listing rule fit on this bundle's validation split (`model/duplicates.json`),
        or None for a bundle trained before it (the caller then uses `DuplicateSettings`).

        Read on first use; a file that is there but unusable is a BundleError naming it, never
        silently replaced by defaults that were not chosen for this model."""
        with self._parts_lock:
            if self._duplicate_rule is _UNREAD:
                self._duplicate_rule = _load_duplicate_rule(self.directory)
            return self._duplicate_rule  # type: ignore[return-value]

    @property
    def backbone_size(self) -> int:
        return int(self.manifest["backbone_size"])

    @property
    def max_photos(self) -> int:
        return int(self.manifest["max_photos"])

    @property
    def feature_cache_dir(self) -> Path:
        return self.directory / "cache" / "features"

    def category_space(self) -> CategorySpace:
        """The fusion model's root (and leaf) heads over the embedding, as matrices for search."""

        def head(model: keras.Model) -> CategoryHead:
            layer = model.get_layer("logits")
            weights = layer.get_weights()
            if isinstance(layer, CosineLogits):
                return CategoryHead(weights[0], scale=layer.scale)
            return CategoryHead(weights[0], weights[1] if len(weights) > 1 else None)

        leaf = self.fusion.leaf_head
        return CategorySpace(head(self.fusion.category_head), head(leaf) if leaf is not None else None)

    # ------------------------------------------------------------------ inputs
    def _photo_features(
        self, images: pd.DataFrame, show_progress: bool, use_cache: bool | None
    ) -> PhotoFeatures:
        if use_cache is None:
            use_cache = len(images) >= CACHE_MIN_PHOTOS
        model = _Predictor(self._part_fn("backbone"), self.backbone)
        if not use_cache:
            return cached_photo_features(model, images, self.backbone_size, 32, None, show_progress)
        with self._cache_lock:
            cache = FeatureCache(self.feature_cache_dir, self.manifest["feature_key"])
            return cached_photo_features(model, images, self.backbone_size, 32, cache, show_progress)

    def arrays(
        self,
        products: pd.DataFrame,
        images: pd.DataFrame,
        show_progress: bool = False,
        use_cache: bool | None = None,
    ) -> tuple[FusionArrays, PhotoFeatures]:
        """Model inputs for clean listings (labels -1: evaluation attaches its own)."""
        S.require_columns(products, (S.PRODUCT_ID, S.TITLE, S.DESCRIPTION), "products")
        S.require_columns(images, (S.IMAGE_ID, S.PRODUCT_ID, S.IMAGE_PATH), "images")
        ids = products[S.PRODUCT_ID].astype(str).tolist()
        wanted = images[images[S.PRODUCT_ID].astype(str).isin(set(ids))]
        photos = self._photo_features(wanted, show_progress, use_cache)
        rows = product_photo_rows(photos, ids, self.max_photos)
        titles, descriptions = tokenize_listings(
            products[S.TITLE].tolist(), products[S.DESCRIPTION].tolist(), show_progress
        )
        raw = TabularScaler.raw(products.reset_index(drop=True), [len(r) for r in rows])
        features = (
            photos.features
            if len(photos.features)
            else np.zeros((0, self.manifest["feature_dim"]), np.float32)
        )
        arrays = FusionArrays(
            [join(t) for t in titles],
            [join(d) for d in descriptions],
            titles,
            rows,
            features,
            self.tabular.transform(raw),
            np.full(len(ids), -1),
        )
        return arrays, photos

    # ------------------------------------------------------------------ products
    def predict_products(
        self, products: pd.DataFrame, images: pd.DataFrame, show_progress: bool = False, batch_size: int = 256
    ) -> ProductPredictions:
        """Category probabilities of every branch, and the fusion embeddings, for clean listings.

        Branches: "text", "image", "fusion" (the late-fusion pooling when the bundle has
        one), and with it its other members, "fusion_network" and "tfidf".
        """
        predictions = self.member_predictions(products, images, show_progress, batch_size)
        members = predictions.probabilities
        if self.late_fusion is None:
            members["fusion"] = members.pop("fusion_network")
            members.pop("tfidf", None)
            return predictions
        has_photo = np.array([bool(rows) for rows in predictions.photo_rows], np.float32)
        members["fusion"] = self.pool(members, has_photo)
        return predictions

    def pool(
        self, probabilities: dict[str, np.ndarray], has_photo: np.ndarray, has_text: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, C) late-fusion probabilities from each member's (n, C) probabilities.

        `has_photo` / `has_text` (n,) in {0, 1} silence the image member and the two text
        members for listings without photos / words. Requires `late_fusion`.
        """
        assert self.late_fusion is not None
        return late.pool(self.late_fusion, *late.member_inputs(probabilities, has_photo, has_text))

    def member_predictions(
        self, products: pd.DataFrame, images: pd.DataFrame, show_progress: bool = False, batch_size: int = 256
    ) -> ProductPredictions:
        """Every member's own probabilities (`fusion.late.MEMBERS`: "fusion_network", "text",
        "image" and, when the bundle has it, "tfidf"): what the late-fusion head is fit on
        and pools."""
        arrays, photos = self.arrays(products, images, show_progress)
        n = len(arrays)
        text_probs, fusion_probs, embeddings = [], [], []
        text_fn = self._part_fn("text_model")
        for start in range(0, n, batch_size):
            index = list(range(start, min(n, start + batch_size)))
            batch = product_batch(arrays, index, self.max_photos)
            inputs = _tensors(batch)
            out = self._products_fn(inputs)
            fusion_probs.append(out["category"].numpy())
            embeddings.append(out["embedding"].numpy())
            text_probs.append(text_fn(inputs["title"], inputs["description"]).numpy())
        image_probs = self.image_probabilities(arrays.features, arrays.photo_rows)
        k = len(self.classes)
        probabilities = {
            "text": np.concatenate(text_probs) if n else np.zeros((0, k)),
            "image": image_probs,
            "fusion_network": np.concatenate(fusion_probs) if n else np.zeros((0, k)),
        }
        if self.tfidf is not None:
            probabilities["tfidf"] = self.tfidf.predict_proba(product_text(products))
        return ProductPredictions(
            probabilities,
            np.concatenate(embeddings) if n else np.zeros((0, self.embedding_dim), np.float32),
            without_photo=sum(1 for r in arrays.photo_rows if not r),
            missing_photos=photos.missing_files,
            empty_descriptions=sum(1 for d in arrays.descriptions if not d),
            photo_rows=arrays.photo_rows,
        )

    def image_probabilities(self, features: np.ndarray, photo_rows: Sequence[Sequence[int]]) -> np.ndarray:
        """(n, classes) image-only category probabilities: the head over each product's pooled
        photo features; a product without photos gets the training prior."""
        out = np.tile(self.prior.astype(np.float32), (len(photo_rows), 1))
        pooled, has_photo = pool_products(features, photo_rows)
        if has_photo.any():
            out[has_photo] = self._part_fn("image_head")(tf.constant(pooled[has_photo])).numpy()
        return out

    def encode_products(
        self, products: pd.DataFrame, images: pd.DataFrame, show_progress: bool = False, batch_size: int = 256
    ) -> np.ndarray:
        """(n, embedding_dim) unit vectors for clean listings, in row order."""
        return self.encode_listings(products, images, show_progress, batch_size).embeddings

    def encode_listings(
        self,
        products: pd.DataFrame,
        images: pd.DataFrame,
        show_progress: bool = False,
        batch_size: int = 256,
        use_cache: bool | None = None,
    ) -> EncodedListings:
        """Embeddings and pooled photo vectors for clean listings, in row order (one photo pass).

        `use_cache` False keeps photos that are not the catalogue's (a draft, a synthetic
        copy) out of the bundle's feature cache; None caches large batches only."""
        dim = int(self.manifest["feature_dim"])
        if products.empty:
            return EncodedListings(
                np.zeros((0, self.embedding_dim), np.float32),
                np.zeros((0, dim), np.float32),
                np.zeros(0, bool),
            )
        arrays, _ = self.arrays(products, images, show_progress, use_cache=use_cache)
        photo_vectors, has_photo = unit_pooled(arrays.features, arrays.photo_rows)
        return EncodedListings(self.embed_arrays(arrays, batch_size), photo_vectors, has_photo)

    def embed_arrays(self, arrays: FusionArrays, batch_size: int = 256) -> np.ndarray:
        """(n, embedding_dim) unit embeddings of model inputs already made (training has them)."""
        out = [np.zeros((0, self.embedding_dim), np.float32)]
        for start in range(0, len(arrays), batch_size):
            index = list(range(start, min(len(arrays), start + batch_size)))
            out.append(
                self._products_fn(_tensors(product_batch(arrays, index, self.max_photos)))[
                    "embedding"
                ].numpy()
            )
        return np.concatenate(out).astype(np.float32)

    def photo_vectors(
        self, products: pd.DataFrame, images: pd.DataFrame, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, feature_dim) unit pooled photo vectors and (n,) has-photo, without the text
        and fusion passes `encode_listings` also makes (the photo index needs only these)."""
        ids = products[S.PRODUCT_ID].astype(str).tolist()
        photos = self._photo_features(
            images[images[S.PRODUCT_ID].astype(str).isin(set(ids))], show_progress, None
        )
        return unit_pooled(photos.features, product_photo_rows(photos, ids, self.max_photos))

    # ------------------------------------------------------------------ queries
    def photo_vector(self, image: Image.Image) -> np.ndarray:
        """Backbone features of one photo, cleaned the way training photos were."""
        from fbmarket.data.images import letterbox, to_rgb

        square = letterbox(to_rgb(image), int(self.manifest["image_size"]))
        pixels = tf.image.resize(
            tf.constant(np.asarray(square, dtype=np.float32)[None]), (self.backbone_size,) * 2, antialias=True
        )
        return self._part_fn("backbone")(pixels).numpy()[0]

    def photo_query(self, image: Image.Image) -> PhotoQuery:
        """A query photo's backbone features and the image-only head's root probabilities."""
        features = self.photo_vector(image)
        probs = self._part_fn("image_head")(tf.constant(features[None])).numpy()[0]
        return PhotoQuery(features.astype(np.float32), probs.astype(np.float32))

    def _query_inputs(
        self, text: str | None, image: Image.Image | None, photo_features: np.ndarray | None = None
    ) -> dict[str, tf.Tensor]:
        words = join(get_tokenizer().tokenize(text)) if text else ""
        if not words and image is None and photo_features is None:
            raise ValueError("a query needs words (letters or digits) or a photo")
        dim = int(self.manifest["feature_dim"])
        photo = np.zeros((1, 1, dim), np.float32)
        mask = np.zeros((1, 1), np.float32)
        if photo_features is not None:
            photo[0, 0] = photo_features
            mask[0, 0] = 1.0
        elif image is not None:
            photo[0, 0] = self.photo_vector(image)
            mask[0, 0] = 1.0
        return {
            "query_text": tf.constant([words]),
            "query_text_mask": tf.constant([1.0 if words else 0.0]),
            "query_photo": tf.constant(photo),
            "query_photo_mask": tf.constant(mask),
        }

    def encode_query(
        self,
        text: str | None = None,
        image: Image.Image | None = None,
        photo_features: np.ndarray | None = None,
    ) -> np.ndarray:
        """A search query (words, a photo, or both) as a unit vector in the product space.

        `photo_features` (from `photo_query`) stands in for `image` so the backbone runs once.
        """
        return self._query_fn(self._query_inputs(text, image, photo_features)).numpy()[0].astype(np.float32)

    def predict_category(
        self, text: str | None = None, image: Image.Image | None = None, top: int = 3
    ) -> list[tuple[str, float]]:
        """Top root categories for a would-be listing described by text and/or a photo."""
        tokens = get_tokenizer().tokenize(text) if text else []
        if not tokens and image is None:
            raise ValueError("give text with letters or digits, a photo, or both to predict a category")
        title_length = int(self.manifest["max_title_tokens"])
        title = join(tokens[:title_length])
        description = join(tokens) if len(tokens) > title_length else ""
        dim = int(self.manifest["feature_dim"])
        photos = np.zeros((1, 1, dim), np.float32)
        mask = np.zeros((1, 1), np.float32)
        if image is not None:
            photos[0, 0] = self.photo_vector(image)
            mask[0, 0] = 1.0
        raw = TabularScaler.raw(pd.DataFrame(index=[0]), [int(mask.sum())])
        inputs = {
            "title": tf.constant([title]),
            "description": tf.constant([description]),
            "photos": tf.constant(photos),
            "photo_mask": tf.constant(mask),
            "tabular": tf.constant(self.tabular.transform(raw)),
        }
        probs = self._products_fn(inputs)["category"].numpy()[0]
        if self.late_fusion is not None:
            members = {"fusion_network": probs[None]}
            members["text"] = self._part_fn("text_model")(inputs["title"], inputs["description"]).numpy()
            members["image"] = self.image_probabilities(photos[0], [[0]] if image is not None else [[]])
            if self.tfidf is not None:
                members["tfidf"] = self.tfidf.predict_proba([text or ""])
            probs = self.pool(members, np.array([float(image is not None)]), np.array([float(bool(tokens))]))[
                0
            ]
        order = np.argsort(-probs)[: max(1, int(top))]
        return [(self.classes[i], float(probs[i])) for i in order]

    # ------------------------------------------------------------------ price
    def require_price_model(self) -> PriceModel:
        """The price model, or PriceModelError saying why there is none (the API's 503)."""
        if self.price_model is None:
            raise PriceModelError(self._price_error or "this bundle has no price model; retrain with fbmarket train")
        return self.price_model

    def predict_leaf(self, embedding: np.ndarray, root: str) -> str | None:
        """The most likely leaf category under `root` for a listing's embedding (the fusion
        model's auxiliary leaf head), or None when the bundle has no leaf head or no leaf
        of that root. `predict_category` names only the root; the price depends on the leaf."""
        path = self.directory / MODEL_DIR / LEAVES_FILE
        leaf_head = self.category_space().leaf
        if leaf_head is None or not path.is_file():
            return None
        leaves = list(json.loads(path.read_text(encoding="utf-8")).get("leaves") or [])
        if len(leaves) != leaf_head.kernel.shape[1]:
            return None
        under = [i for i, leaf in enumerate(leaves) if leaf.split("/")[0].strip() == root]
        if not under:
            return None
        probabilities = leaf_head.probabilities(embedding)[0]
        return str(leaves[max(under, key=lambda i: probabilities[i])])

    def encode_drafts(self, products: pd.DataFrame, photo_features: Sequence[np.ndarray]) -> np.ndarray:
        """(n, embedding_dim) embeddings of listings that exist nowhere yet (a seller's draft).

        `photo_features[i]` is a (photos, feature_dim) array of listing i's photos as
        `photo_vector` gives them (decoded in memory: nothing is cached or written), empty
        for a listing without photos. Everything else is encoded as `encode_listings` does.
        """
        if len(photo_features) != len(products):
            raise ValueError(f"{len(photo_features)} photo sets for {len(products)} listings")
        dim = int(self.manifest["feature_dim"])
        rows: list[list[int]] = []
        blocks: list[np.ndarray] = []
        start = 0
        for features in photo_features:
            block = np.asarray(features, np.float32).reshape(-1, dim)[: self.max_photos]
            rows.append(list(range(start, start + len(block))))
            blocks.append(block)
            start += len(block)
        titles, descriptions = tokenize_listings(
            products[S.TITLE].tolist(), products[S.DESCRIPTION].tolist(), False
        )
        raw = TabularScaler.raw(products.reset_index(drop=True), [len(r) for r in rows])
        arrays = FusionArrays(
            [join(t) for t in titles],
            [join(d) for d in descriptions],
            titles,
            rows,
            np.concatenate(blocks) if start else np.zeros((0, dim), np.float32),
            self.tabular.transform(raw),
            np.full(len(products), -1),
        )
        batch = product_batch(arrays, list(range(len(products))), self.max_photos)
        return self._products_fn(_tensors(batch))["embedding"].numpy().astype(np.float32)


_UNREAD = object()  # Bundle.duplicate_rule before its file was looked at


def _load_duplicate_rule(directory: Path) -> DuplicateRule | None:
    path = directory / MODEL_DIR / DUPLICATES_FILE
    if not path.exists():
        return None
    try:
        return DuplicateRule.load(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BundleError(
            f"bundle {directory}: {MODEL_DIR}/{DUPLICATES_FILE} cannot be used ({error}); retrain the "
            f"bundle, or delete the file to use the duplicate rule of DuplicateSettings"
        ) from error


def _load_tfidf(directory: Path, n_classes: int) -> TfidfClassifier | None:
    """The TF-IDF member when the bundle has one; BundleError naming the file when it is unusable."""
    model_dir = directory / MODEL_DIR
    if not (model_dir / TFIDF_FILE).exists():
        return None
    try:
        tfidf = TfidfClassifier.load(model_dir)
    except FileNotFoundError as error:
        missing = Path(error.filename).name if error.filename else TFIDF_WEIGHTS_FILE
        raise BundleError(f"bundle {directory} is incomplete: missing {MODEL_DIR}/{missing}") from error
    except (OSError, ValueError) as error:
        raise BundleError(
            f"bundle {directory}: the TF-IDF member ({MODEL_DIR}/{TFIDF_FILE}, {MODEL_DIR}/{TFIDF_WEIGHTS_FILE}) "
            f"cannot be used: {error}"
        ) from error
    if tfidf.n_classes != n_classes:
        raise BundleError(
            f"bundle {directory}: {MODEL_DIR}/{TFIDF_FILE} is for {tfidf.n_classes} categories, "
            f"the bundle has {n_classes}"
        )
    return tfidf


def _load_late_fusion(
    directory: Path, manifest: dict[str, Any], classes: Sequence[str]
) -> keras.Model | None:
    """The late-fusion head when the bundle has one, checked against the bundle's members and
    categories; BundleError naming the file when it is unusable (a corrupt head is never
    silently replaced by the network's own: delete the file to serve that)."""
    path = directory / MODEL_DIR / LATE_FUSION_FILE
    name = f"{MODEL_DIR}/{LATE_FUSION_FILE}"
    if not path.exists():
        if manifest.get("late_fusion"):
            log.warning(
                "bundle %s records a late-fusion head but %s is missing: 'fusion' is the fusion "
                "network's own category head",
                directory,
                name,
            )
        return None
    hint = f"retrain the bundle, or delete {name} to serve the fusion network's own category head"
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise BundleError(
            f"bundle {directory}: {name} is not a .keras (zip) file: truncated or corrupt; {hint}"
        )
    try:
        model = keras.models.load_model(path, compile=False)
        layer = model.get_layer("pooling")
    except Exception as error:  # keras reports a damaged archive with many exception types
        raise BundleError(
            f"bundle {directory}: {name} cannot be loaded ({type(error).__name__}: {error}); {hint}"
        ) from error
    if not isinstance(layer, late.LogLinearPooling):
        raise BundleError(f"bundle {directory}: {name} is not a late-fusion pooling head; {hint}")
    unknown = [member for member in layer.members if member not in late.MEMBERS]
    if unknown:
        raise BundleError(
            f"bundle {directory}: {name} pools unknown members {unknown} (known: {', '.join(late.MEMBERS)}); {hint}"
        )
    if layer.n_classes != len(classes):
        raise BundleError(
            f"bundle {directory}: {name} is for {layer.n_classes} categories, the bundle has {len(classes)}; {hint}"
        )
    return model


def _load_price_model(directory: Path) -> tuple[PriceModel | None, str | None]:
    """The price model when the bundle has one, else None and the reason.

    Optional on purpose: bundles trained before it serve search as before, and a damaged
    price model costs only price suggestions (which then say why), never the whole bundle.
    """
    if not (directory / MODEL_DIR / PRICE_FILE).exists():
        return None, "this bundle has no price model; retrain with fbmarket train"
    try:
        return PriceModel.load(directory / MODEL_DIR), None
    except PriceModelError as error:
        log.warning("price model unusable: %s", error)
        return None, str(error)


class _Predictor:
    """What `extract_features` needs from a model, backed by a compiled function."""

    def __init__(self, fn: Any, model: keras.Model):
        self._fn = fn
        self.output_shape = model.output_shape

    def predict_on_batch(self, batch: Any) -> np.ndarray:
        return self._fn(batch).numpy()


def unit_pooled(features: np.ndarray, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each product's mean photo features at unit length (zeros without a photo), and has-photo."""
    pooled, has_photo = pool_products(features, rows)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return (pooled / norms).astype(np.float32), has_photo


def _tensors(batch: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {
        key: tf.constant(value.astype(str) if value.dtype == object else value)
        for key, value in batch.items()
    }
