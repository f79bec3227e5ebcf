"""The model bundle: everything needed to serve, loadable on another machine (no pickle).

`Bundle` is the in-memory bundle; `Bundle.save(dir)` writes it and `Bundle.load(dir)`
reads it back, as `save_pretrained` / `from_pretrained` do in the Hugging Face libraries.
Training (fbmarket/training/) builds a Bundle from the models it trained and calls save;
nothing else writes bundle files. The folder's files are named in `fbmarket.layout`
(`BundleLayout`); reading and writing them is fbmarket/bundle/files.py.

A loaded bundle gives the serving API: `encode_products`, `encode_query`,
`predict_category` (and `predict_products` for evaluation). The category called
"fusion" is the late-fusion head's pooling of the members when the bundle has one
(bundles from before it, or trained with `fusion.late_fusion` off, use the fusion
network's own head).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from scipy import sparse

from fbmarket.bundle import files, inputs
from fbmarket.bundle.files import PARTS, BundleError
from fbmarket.bundle.inputs import unit_pooled
from fbmarket.bundle.parts import BundleParts
from fbmarket.data import schema as S
from fbmarket.fusion import late
from fbmarket.fusion.dataset import FusionArrays, product_batch
from fbmarket.fusion.neighbours import PHOTO as PHOTO_NEIGHBOURS
from fbmarket.fusion.neighbours import TEXT as TEXT_NEIGHBOURS
from fbmarket.layout import BundleLayout
from fbmarket.price.model import PriceModel, PriceModelError
from fbmarket.text.tfidf import product_text, product_titles
from fbmarket.text.tokenize import get_tokenizer
from fbmarket.vision.features import (
    FeatureCache,
    PhotoFeatures,
    cached_photo_features,
    pool_products,
    product_photo_rows,
)

__all__ = [
    "PARTS",
    "Bundle",
    "BundleError",
    "EncodedListings",
    "PhotoQuery",
    "ProductPredictions",
    "unit_pooled",
]

# Encode through the on-disk feature cache only for batches this large; single live
# listings would otherwise rewrite the whole cache file each time.
CACHE_MIN_PHOTOS = 256


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


class Bundle(BundleParts):
    """A trained model bundle: `load` / `save` and the serving and evaluation API (see `BundleParts`)."""

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(cls, directory: Path | str, lazy: bool = False) -> Bundle:
        """Open a saved bundle. `lazy` defers the text-only model, the photo backbone and the image
        head (about half of the loading time) to their first use: a typed search needs none."""
        layout = BundleLayout(Path(directory))
        manifest = files.read_manifest(layout)
        classes = list(manifest["classes"])
        tfidf = files.read_tfidf(layout, len(classes))
        neighbours = files.read_neighbours(layout, len(classes))
        late_fusion = files.read_late_fusion(layout, manifest, classes)
        price_model, price_error = files.read_price_model(layout)
        bundle = cls(
            layout,
            manifest,
            files.load_model(layout, "fusion"),
            files.read_tabular(layout),
            lambda key: files.load_model(layout, key),
            tfidf=tfidf,
            neighbours=neighbours,
            late_fusion=late_fusion,
            price_model=price_model,
            price_error=price_error,
        )
        if not lazy:
            for key in PARTS:
                bundle.part(key)
        return bundle

    def save(self, directory: Path | str | BundleLayout | None = None) -> BundleLayout:
        """Write the bundle (default: where it lives); bundle.json last. Returns the layout written."""
        if directory is None:
            layout = self.layout
        else:
            layout = directory if isinstance(directory, BundleLayout) else BundleLayout(Path(directory))
        files.write_bundle(self, layout)
        return layout

    # ------------------------------------------------------------------ inputs
    def _photo_features(
        self, images: pd.DataFrame, show_progress: bool, use_cache: bool | None
    ) -> PhotoFeatures:
        if use_cache is None:
            use_cache = len(images) >= CACHE_MIN_PHOTOS
        model = inputs.Predictor(self._part_fn("backbone"), self.backbone)
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
        features = (
            photos.features
            if len(photos.features)
            else np.zeros((0, self.manifest["feature_dim"]), np.float32)
        )
        arrays = inputs.listing_arrays(products, rows, features, self.tabular, show_progress)
        return arrays, photos

    # ------------------------------------------------------------------ products
    def predict_products(
        self, products: pd.DataFrame, images: pd.DataFrame, show_progress: bool = False, batch_size: int = 256
    ) -> ProductPredictions:
        """Category probabilities of every branch, and the fusion embeddings, for clean listings.

        Branches: "text", "image", "fusion" (the late-fusion pooling when the bundle has
        one), and with it its other members, "fusion_network", "tfidf" and the neighbour
        votes "text_neighbours" / "photo_neighbours" when the bundle has them.
        """
        return self._with_fusion(self.member_predictions(products, images, show_progress, batch_size))

    def stored_category_probabilities(
        self, products: pd.DataFrame, photo_vectors: np.ndarray, photo_counts: Sequence[int]
    ) -> np.ndarray:
        """(n, classes) served root-category probabilities ("fusion": the late-fusion pooling
        when the bundle has one) of stored listings, from their photo index vectors
        (`stored_member_predictions`): what similar listings read a listing's category by."""
        return self._with_fusion(self.stored_member_predictions(products, photo_vectors, photo_counts)).probabilities[
            "fusion"
        ]

    def _with_fusion(self, predictions: ProductPredictions) -> ProductPredictions:
        """`predictions` with the served "fusion" probabilities added (in place)."""
        members = predictions.probabilities
        if self.late_fusion is None:
            members["fusion"] = members.pop("fusion_network")
            for name in ("tfidf", TEXT_NEIGHBOURS, PHOTO_NEIGHBOURS):
                members.pop(name, None)
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
        "image" and, when the bundle has them, "tfidf", "text_neighbours" and
        "photo_neighbours"): what the late-fusion head is fit on and pools."""
        arrays, photos = self.arrays(products, images, show_progress)
        return self._member_predictions(products, arrays, photos.missing_files, batch_size)

    def stored_member_predictions(
        self, products: pd.DataFrame, photo_vectors: np.ndarray, photo_counts: Sequence[int]
    ) -> ProductPredictions:
        """`member_predictions` of stored listings from their unit pooled photo vectors (the
        photo index's rows, `photo_vectors`), without running the backbone again.

        Why this equals `member_predictions`: every member reads a listing's photos through
        their mean at unit length (the fusion network's photo tower, the image head and the
        photo votes alike), and `photo_counts[i]` copies of that unit vector have the same
        unit mean; the count itself is a tabular input, so it is kept. Shapes: products (n
        rows), photo_vectors (n, feature_dim), photo_counts (n,) (0: no photo, the vector is
        ignored).
        """
        vectors = np.asarray(photo_vectors, np.float32).reshape(len(products), -1)
        rows = [[i] * min(int(c), self.max_photos) for i, c in enumerate(photo_counts)]
        arrays = inputs.listing_arrays(products, rows, vectors, self.tabular)
        return self._member_predictions(products, arrays, 0)

    def _member_predictions(
        self, products: pd.DataFrame, arrays: FusionArrays, missing_photos: int, batch_size: int = 256
    ) -> ProductPredictions:
        n = len(arrays)
        text_probs, fusion_probs, embeddings = [], [], []
        text_fn = self._part_fn("text_model")
        for start in range(0, n, batch_size):
            index = list(range(start, min(n, start + batch_size)))
            batch = product_batch(arrays, index, self.max_photos)
            batch_in = inputs.tensors(batch)
            out = self._products_fn(batch_in)
            fusion_probs.append(out["category"].numpy())
            embeddings.append(out["embedding"].numpy())
            text_probs.append(text_fn(batch_in["title"], batch_in["description"]).numpy())
        image_probs = self.image_probabilities(arrays.features, arrays.photo_rows)
        k = len(self.classes)
        probabilities = {
            "text": np.concatenate(text_probs) if n else np.zeros((0, k)),
            "image": image_probs,
            "fusion_network": np.concatenate(fusion_probs) if n else np.zeros((0, k)),
        }
        if self.tfidf is not None:
            texts, titles = product_text(products), product_titles(products)
            rows = self.tfidf.features(texts, titles)  # read by the TF-IDF member and the text vote
            probabilities["tfidf"] = self.tfidf.predict_proba(texts, titles, rows)
            probabilities |= self.neighbour_votes(lambda: rows, arrays)
        return ProductPredictions(
            probabilities,
            np.concatenate(embeddings) if n else np.zeros((0, self.embedding_dim), np.float32),
            without_photo=sum(1 for r in arrays.photo_rows if not r),
            missing_photos=missing_photos,
            empty_descriptions=sum(1 for d in arrays.descriptions if not d),
            photo_rows=arrays.photo_rows,
        )

    def neighbour_votes(
        self,
        text_features: Callable[[], sparse.csr_matrix],
        arrays: FusionArrays | None = None,
        photo_vectors: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The neighbour-vote members' (n, C) probabilities (`fusion/neighbours.py`): by the
        TF-IDF member's rows (`text_features()`, made only when the bundle has the text vote)
        and by unit pooled photo features (`photo_vectors` (n, feature_dim), or pooled from
        `arrays`). Empty when the bundle has no such members."""
        out: dict[str, np.ndarray] = {}
        if TEXT_NEIGHBOURS in self.neighbours:
            out[TEXT_NEIGHBOURS] = self.neighbours[TEXT_NEIGHBOURS].predict_proba(text_features())
        if PHOTO_NEIGHBOURS in self.neighbours:
            if photo_vectors is None:
                assert arrays is not None, "photo votes need `arrays` or `photo_vectors`"
                photo_vectors, _ = unit_pooled(arrays.features, arrays.photo_rows)
            out[PHOTO_NEIGHBOURS] = self.neighbours[PHOTO_NEIGHBOURS].predict_proba(photo_vectors)
        return out

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
                self._products_fn(inputs.tensors(product_batch(arrays, index, self.max_photos)))[
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

    def encode_query(
        self,
        text: str | None = None,
        image: Image.Image | None = None,
        photo_features: np.ndarray | None = None,
    ) -> np.ndarray:
        """A search query (words, a photo, or both) as a unit vector in the product space.

        `photo_features` (from `photo_query`) stands in for `image` so the backbone runs once.
        """
        if photo_features is None and image is not None:
            photo_features = self.photo_vector(image)
        query = inputs.query_inputs(text, photo_features, int(self.manifest["feature_dim"]))
        return self._query_fn(query).numpy()[0].astype(np.float32)

    def predict_category(
        self, text: str | None = None, image: Image.Image | None = None, top: int = 3
    ) -> list[tuple[str, float]]:
        """Top root categories for a would-be listing described by text and/or a photo."""
        tokens = get_tokenizer().tokenize(text) if text else []
        if not tokens and image is None:
            raise ValueError("give text with letters or digits, a photo, or both to predict a category")
        photo = self.photo_vector(image) if image is not None else None
        model_inputs = inputs.category_inputs(
            tokens,
            photo,
            int(self.manifest["max_title_tokens"]),
            int(self.manifest["feature_dim"]),
            self.tabular,
        )
        probs = self._products_fn(model_inputs)["category"].numpy()[0]
        if self.late_fusion is not None:
            members = {"fusion_network": probs[None]}
            text_fn = self._part_fn("text_model")
            members["text"] = text_fn(model_inputs["title"], model_inputs["description"]).numpy()
            members["image"] = self.image_probabilities(
                model_inputs["photos"].numpy()[0], [[0]] if image is not None else [[]]
            )
            if self.tfidf is not None:
                query = [text or ""]  # a query: its own title
                members["tfidf"] = self.tfidf.predict_proba(query, query)
                photo = model_inputs["photos"].numpy()[0][:1] if image is not None else None
                members |= self.neighbour_votes(
                    lambda: self.tfidf.features(query, query),
                    photo_vectors=photo
                    if photo is not None
                    else np.zeros((1, int(self.manifest["feature_dim"]))),
                )
            has_photo, has_text = np.array([float(image is not None)]), np.array([float(bool(tokens))])
            probs = self.pool(members, has_photo, has_text)[0]
        order = np.argsort(-probs)[: max(1, int(top))]
        return [(self.classes[i], float(probs[i])) for i in order]

    # ------------------------------------------------------------------ price
    def require_price_model(self) -> PriceModel:
        """The price model, or PriceModelError saying why there is none (the API's 503)."""
        if self.price_model is None:
            raise PriceModelError(
                self._price_error or "this bundle has no price model; retrain with fbmarket train"
            )
        return self.price_model

    def predict_leaf(self, embedding: np.ndarray, root: str) -> str | None:
        """The most likely leaf category under `root` for a listing's embedding (the fusion
        model's auxiliary leaf head), or None when the bundle has no leaf head or no leaf
        of that root. `predict_category` names only the root; the price depends on the leaf."""
        leaf_head = self.category_space().leaf
        leaves = self.leaves
        if leaf_head is None or leaves is None:
            return None
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
        rows, features = inputs.draft_photos(
            photo_features, int(self.manifest["feature_dim"]), self.max_photos
        )
        arrays = inputs.listing_arrays(products, rows, features, self.tabular)
        batch = product_batch(arrays, list(range(len(products))), self.max_photos)
        return self._products_fn(inputs.tensors(batch))["embedding"].numpy().astype(np.float32)
