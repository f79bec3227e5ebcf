"""The multimodal fusion model: one L2-normalised embedding per listing, plus a category head.

`FusionModel` (a `keras.Model` subclass) holds small functional towers,
each built with its input shapes at construction, so every weight exists before a
saved `.keras` file is loaded back into it:

* text: the text branch (title, description lemma strings) -> text features;
* photos: (n photos, d) cached backbone features + mask -> masked mean -> unit length -> dense;
* tabular: log price, latitude/longitude, photo count (standardised) -> dense;
* product tower: [text, photos, tabular] -> embedding (unit length) -> category logits
  (and, optionally, leaf-category logits: an auxiliary task that makes neighbours in
  the embedding share the fine category, which "similar listings" needs). The heads are
  Dense, or cosine classifiers (`CosineLogits`) that score only the angle to a class
  prototype, so learning the categories gathers each one's listings in the embedding;
* text head (optional, `text_skip`): a linear map from the text features straight to
  the category logits, added to the embedding's. Started from the text-only model's
  output layer, the fusion begins where the text model ends and the photos and
  tabular features only have to explain what text leaves over. Off by default: on the
  dev data it did not lift fusion accuracy beyond noise (0.803 -> 0.806, text alone
  0.813) and, with the category carried past it, the embedding grouped listings by
  category less well (similar-listing precision@10 same root 0.750 -> 0.690);
* query tower: free text through the *same* text branch (description empty) and/or
  one photo through the *same* photo tower -> embedding in the product space.

Training is multi-task (`compute_loss`): category cross-entropy plus a symmetric
in-batch contrastive (InfoNCE) loss between each product and its pseudo-query, so
one vector serves classification and search (search/hybrid.py).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from fbmarket.text.train import known_leaf_cross_entropy

TEXT_INPUTS = ("title", "description")
PRODUCT_INPUTS = ("title", "description", "photos", "photo_mask", "tabular")
QUERY_INPUTS = ("query_text", "query_text_mask", "query_photo", "query_photo_mask")
# towers serialised in the config; the leaf and text heads are rebuilt from n_leaves / text_skip
SAVED_TOWERS = ("text_encoder", "photo_tower", "tabular_tower", "product_tower", "query_tower", "category_head")


@keras.saving.register_keras_serializable(package="fbmarket")
class MaskedPhotoMean(keras.layers.Layer):
    """Mean over a product's photos (mask 1 = real photo); zeros when it has none."""

    def call(self, photos, mask):
        weights = ops.expand_dims(ops.cast(mask, photos.dtype), -1)
        return ops.sum(photos * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="fbmarket")
class L2Normalize(keras.layers.Layer):
    def call(self, x):
        return x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)


def build_photo_tower(feature_dim: int, hidden: int, dropout: float, seed: int) -> keras.Model:
    photos = keras.Input((None, feature_dim), name="photos")
    mask = keras.Input((None,), name="photo_mask")
    pooled = MaskedPhotoMean(name="photo_mean")(photos, mask)
    # unit length: frozen ImageNet features vary in norm with how busy a photo is, and the
    # direction is what carries the content (the image head does the same)
    pooled = keras.layers.UnitNormalization(name="photo_unit")(pooled)
    has_photo = ops.cast(ops.greater(ops.sum(mask, axis=1, keepdims=True), 0), "float32")
    hidden_out = keras.layers.Dropout(dropout, seed=seed)(pooled)
    hidden_out = keras.layers.Dense(hidden, activation="relu", name="photo_dense")(hidden_out)
    return keras.Model([photos, mask], hidden_out * has_photo, name="photo_tower")


def build_tabular_tower(tabular_dim: int, hidden: int) -> keras.Model:
    tabular = keras.Input((tabular_dim,), name="tabular")
    out = keras.layers.Dense(hidden, activation="relu", name="tabular_dense")(tabular)
    return keras.Model(tabular, out, name="tabular_tower")


def build_product_tower(
    text_dim: int,
    photo_dim: int,
    tabular_dim: int,
    hidden: int,
    embedding_dim: int,
    dropout: float,
    seed: int,
) -> keras.Model:
    text = keras.Input((text_dim,), name="text")
    photo = keras.Input((photo_dim,), name="photo")
    tabular = keras.Input((tabular_dim,), name="tabular")
    joined = keras.layers.Concatenate()([text, photo, tabular])
    joined = keras.layers.Dropout(dropout, seed=seed)(joined)
    hidden_out = keras.layers.Dense(hidden, activation="relu", name="fuse")(joined)
    embedding = keras.layers.Dense(embedding_dim, name="embed")(hidden_out)
    return keras.Model([text, photo, tabular], L2Normalize(name="unit")(embedding), name="product_tower")


def build_query_tower(text_dim: int, photo_dim: int, embedding_dim: int) -> keras.Model:
    """Words and/or a photo -> embedding; a missing part (mask 0) contributes nothing."""
    text = keras.Input((text_dim,), name="text")
    text_mask = keras.Input((1,), name="text_mask")
    photo = keras.Input((photo_dim,), name="photo")
    photo_mask = keras.Input((1,), name="photo_mask")
    from_text = keras.layers.Dense(embedding_dim, name="from_text")(text) * text_mask
    from_photo = keras.layers.Dense(embedding_dim, name="from_photo")(photo) * photo_mask
    summed = keras.layers.Add()([from_text, from_photo])
    return keras.Model(
        [text, text_mask, photo, photo_mask], L2Normalize(name="unit")(summed), name="query_tower"
    )


@keras.saving.register_keras_serializable(package="fbmarket")
class CosineLogits(keras.layers.Layer):
    """logits = scale * cos(embedding, class prototype): a cosine (NormFace) classifier.

    A plain Dense head on a unit embedding can raise a class by growing its weight
    norm; here only the angle counts, so classifying well means each class's listings
    gather around their prototype, which is what nearest-neighbour search reads.
    """

    def __init__(self, units: int, scale: float = 20.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = int(units)
        self.scale = float(scale)

    def build(self, input_shape) -> None:
        self.prototypes = self.add_weight(
            shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform", name="prototypes"
        )

    def call(self, x):
        prototypes = self.prototypes / ops.maximum(ops.norm(self.prototypes, axis=0, keepdims=True), 1e-12)
        unit = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
        return self.scale * ops.matmul(unit, prototypes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "scale": self.scale}


def build_category_head(
    embedding_dim: int, n_classes: int, name: str = "category_head", cosine_scale: float = 0.0
) -> keras.Model:
    """Linear logits, or cosine logits when `cosine_scale` > 0."""
    embedding = keras.Input((embedding_dim,), name="embedding")
    if cosine_scale > 0:
        logits = CosineLogits(n_classes, cosine_scale, name="logits")(embedding)
    else:
        logits = keras.layers.Dense(n_classes, name="logits")(embedding)
    return keras.Model(embedding, logits, name=name)


def info_nce(products, queries, temperature: float):
    """Symmetric in-batch contrastive loss: product i should match query i, not query j."""
    logits = ops.matmul(products, ops.transpose(queries)) / temperature
    labels = ops.arange(ops.shape(logits)[0])
    forward = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    backward = keras.losses.sparse_categorical_crossentropy(labels, ops.transpose(logits), from_logits=True)
    return (ops.mean(forward) + ops.mean(backward)) / 2.0


@keras.saving.register_keras_serializable(package="fbmarket")
class FusionModel(keras.Model):
    """Product embedding + category head + query encoder, trained multi-task.

    `call(inputs)` takes a dict with PRODUCT_INPUTS (and, while training, QUERY_INPUTS)
    and returns {"category": probabilities, "embedding": unit vectors[, "query_embedding"]}.
    """

    def __init__(
        self,
        text_encoder: keras.Model,
        n_classes: int,
        feature_dim: int,
        tabular_dim: int,
        embedding_dim: int = 256,
        hidden_dim: int = 256,
        dropout: float = 0.3,
        temperature: float = 0.05,
        contrastive_weight: float = 0.5,
        label_smoothing: float = 0.1,
        seed: int = 0,
        n_leaves: int = 0,
        leaf_weight: float = 0.0,
        text_skip: bool = False,
        cosine_scale: float = 0.0,
        photo_tower: keras.Model | None = None,
        tabular_tower: keras.Model | None = None,
        product_tower: keras.Model | None = None,
        query_tower: keras.Model | None = None,
        category_head: keras.Model | None = None,
        leaf_head: keras.Model | None = None,
        text_head: keras.Model | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.n_classes = int(n_classes)
        self.feature_dim = int(feature_dim)
        self.tabular_dim = int(tabular_dim)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)
        self.dropout = float(dropout)
        self.temperature = float(temperature)
        self.contrastive_weight = float(contrastive_weight)
        self.label_smoothing = float(label_smoothing)
        self.seed = int(seed)
        self.n_leaves = int(n_leaves)
        self.leaf_weight = float(leaf_weight)
        self.text_skip = bool(text_skip)
        self.cosine_scale = float(cosine_scale)
        text_dim = int(text_encoder.output_shape[-1])
        tab_hidden = 32
        self.text_encoder = text_encoder
        self.photo_tower = photo_tower or build_photo_tower(feature_dim, hidden_dim, dropout, seed)
        self.tabular_tower = tabular_tower or build_tabular_tower(tabular_dim, tab_hidden)
        self.product_tower = product_tower or build_product_tower(
            text_dim, hidden_dim, tab_hidden, hidden_dim, embedding_dim, dropout, seed + 1
        )
        self.query_tower = query_tower or build_query_tower(text_dim, hidden_dim, embedding_dim)
        self.category_head = category_head or build_category_head(
            embedding_dim, n_classes, cosine_scale=self.cosine_scale
        )
        self.leaf_head = None
        if self.n_leaves > 0:
            self.leaf_head = leaf_head or build_category_head(
                embedding_dim, self.n_leaves, "leaf_head", self.cosine_scale
            )
        self.text_head = None
        if self.text_skip:
            self.text_head = text_head or build_category_head(text_dim, n_classes, "text_head")
        self.category_loss_tracker = keras.metrics.Mean(name="category_loss")
        self.contrastive_loss_tracker = keras.metrics.Mean(name="contrastive_loss")
        self.leaf_loss_tracker = keras.metrics.Mean(name="leaf_loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True  # every weight lives in the towers, all built above

    # ---------------------------------------------------------------- forward
    def embed_products(self, inputs: dict[str, Any], training: bool = False):
        return self._embed_products(inputs, training)[0]

    def _embed_products(self, inputs: dict[str, Any], training: bool):
        """(unit embedding, text features): the category logits read both."""
        text = self.text_encoder([inputs["title"], inputs["description"]], training=training)
        photo = self.photo_tower([inputs["photos"], inputs["photo_mask"]], training=training)
        tabular = self.tabular_tower(inputs["tabular"], training=training)
        return self.product_tower([text, photo, tabular], training=training), text

    def encode_query(self, inputs: dict[str, Any], training: bool = False):
        no_description = tf.zeros_like(inputs["query_text"])  # a query is all title: "" description
        text = self.text_encoder([inputs["query_text"], no_description], training=training)
        photo = self.photo_tower([inputs["query_photo"], inputs["query_photo_mask"]], training=training)
        has_photo = ops.cast(
            ops.greater(ops.sum(inputs["query_photo_mask"], axis=1, keepdims=True), 0), "float32"
        )
        text_mask = ops.reshape(ops.cast(inputs["query_text_mask"], "float32"), (-1, 1))
        return self.query_tower([text, text_mask, photo, has_photo], training=training)

    def call(self, inputs: dict[str, Any], training: bool = False):
        embedding, text = self._embed_products(inputs, training)
        logits = self.category_head(embedding, training=training)
        if self.text_head is not None:
            logits = logits + self.text_head(text, training=training)
        out = {"category": ops.softmax(logits), "logits": logits, "embedding": embedding}
        if self.leaf_head is not None:
            out["leaf_logits"] = self.leaf_head(embedding, training=training)
        if "query_text" in inputs:
            out["query_embedding"] = self.encode_query(inputs, training=training)
        return out

    # ---------------------------------------------------------------- training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Root-category cross-entropy + contrastive (+ leaf-category cross-entropy).

        `y` is the root label, or {"category": root, "leaf": leaf} with leaf -1 for
        leaves unseen in training (left out of the leaf term).
        """
        roots, leaves = (y["category"], y.get("leaf")) if isinstance(y, dict) else (y, None)
        labels = ops.reshape(ops.cast(roots, "int32"), (-1,))
        onehot = ops.one_hot(labels, self.n_classes)
        category = keras.losses.categorical_crossentropy(
            onehot, y_pred["logits"], from_logits=True, label_smoothing=self.label_smoothing
        )
        category = ops.mean(category)
        total = category
        self.category_loss_tracker.update_state(category)
        if "query_embedding" in y_pred and self.contrastive_weight > 0:
            contrastive = info_nce(y_pred["embedding"], y_pred["query_embedding"], self.temperature)
            total = total + self.contrastive_weight * contrastive
            self.contrastive_loss_tracker.update_state(contrastive)
        if leaves is not None and "leaf_logits" in y_pred and self.leaf_weight > 0:
            per_row, known = known_leaf_cross_entropy(leaves, y_pred["leaf_logits"])
            leaf = ops.sum(per_row * known) / ops.maximum(ops.sum(known), 1.0)
            total = total + self.leaf_weight * leaf
            self.leaf_loss_tracker.update_state(leaf)
        self.accuracy_tracker.update_state(labels, y_pred["category"])
        if self.losses:
            total = total + ops.sum(self.losses)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    # ---------------------------------------------------------------- saving
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "n_classes": self.n_classes,
                "feature_dim": self.feature_dim,
                "tabular_dim": self.tabular_dim,
                "embedding_dim": self.embedding_dim,
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "temperature": self.temperature,
                "contrastive_weight": self.contrastive_weight,
                "label_smoothing": self.label_smoothing,
                "seed": self.seed,
                "n_leaves": self.n_leaves,
                "leaf_weight": self.leaf_weight,
                "text_skip": self.text_skip,
                "cosine_scale": self.cosine_scale,
            }
        )
        for name in SAVED_TOWERS:
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FusionModel:
        config = dict(config)
        for name in SAVED_TOWERS:
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
