"""The Keras text branch: lemma strings in, a text feature vector out (Word2Vec-initialised).

Inputs are two strings per listing, the title's and the description's lemmas joined by
spaces (`fbmarket.text.tokenize`), so the saved model carries its own vocabularies
(TextVectorization) and serving needs only the spaCy tokeniser in front.

Two paths:

* deep: token ids -> Embedding initialised from Word2Vec (frozen first, fine-tuned
  after) -> Conv1D + global max pooling, next to a masked mean of the embeddings;
* wide: bag of word uni- and bigrams (title and description apart) -> one dense layer.
  On 3.7k training listings the wide path carries most of the accuracy; the deep path
  adds robustness to wording it never saw (similar words have similar vectors).

The bags make the dense layer's input ~140k wide on the dev data (a 144 MB kernel).
`SparseInputDense` multiplies by only the kernel rows whose input is non-zero: a typed
query has a few dozen, and reading the whole kernel made query encoding the slowest
step of a search.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fbmarket.config import TextSettings

TITLE = "title"
DESCRIPTION = "description"
EMBEDDING_LAYER = "word2vec_embedding"


@keras.saving.register_keras_serializable(package="fbmarket")
class MaskedMean(keras.layers.Layer):
    """Mean of the embeddings of real tokens (id > 0); zeros for an empty text."""

    def call(self, embedded, ids):
        mask = keras.ops.expand_dims(keras.ops.cast(keras.ops.greater(ids, 0), embedded.dtype), -1)
        total = keras.ops.sum(embedded * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="fbmarket")
class SparseInputDense(keras.layers.Dense):
    """A Dense layer whose input is mostly zeros: x @ W reads only the rows of W where x != 0.

    Same weights, result and weight gradients as `keras.layers.Dense`; the cost follows
    the non-zeros of the input (n-gram bags of one listing or query) instead of its width.
    An input that is exactly zero counts as absent and gets no gradient, which changes
    nothing here: the zeros come from the bags (nothing to train before them) or from
    ReLUs (whose gradient at zero is zero anyway).
    """

    def call(self, inputs, training=None):
        outputs = tf.sparse.sparse_dense_matmul(tf.sparse.from_dense(inputs), self.kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def _adapt_bag(
    name: str,
    texts: Sequence[str],
    max_tokens: int,
    ngrams: int | tuple[int, ...],
    mode: str,
    split: str = "whitespace",
) -> keras.layers.TextVectorization:
    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=None,  # the spaCy side already lower-cased and lemmatised
        split=split,
        ngrams=ngrams if not isinstance(ngrams, int) or ngrams > 1 else None,
        output_mode=mode,
        name=name,
    )
    corpus = [t for t in texts if t] or ["empty"]
    layer.adapt(tf.constant(corpus, dtype=tf.string), batch_size=512)
    return layer


def _unit(values, settings: TextSettings, name: str):
    """Unit length when parts are normalised, so no part wins by sheer magnitude."""
    return keras.layers.UnitNormalization(name=f"{name}_unit")(values) if settings.normalize_parts else values


def build_text_encoder(
    settings: TextSettings,
    words: Sequence[str],
    embedding_matrix: np.ndarray,
    train_titles: Sequence[str],
    train_descriptions: Sequence[str],
    seed: int,
) -> keras.Model:
    """(title string, description string) -> `settings.text_dim` features.

    `words` is the vocabulary without its padding/OOV rows; `embedding_matrix` has
    len(words) + 2 rows in the same order. The wide bags are fitted on training text only.
    """
    if embedding_matrix.shape[0] != len(words) + 2:
        raise ValueError("embedding_matrix needs one row per word plus padding and out-of-vocabulary")
    title = keras.Input((), dtype="string", name=TITLE)
    description = keras.Input((), dtype="string", name=DESCRIPTION)
    parts = []

    if settings.deep:
        title_ids = keras.layers.TextVectorization(
            standardize=None,
            split="whitespace",
            vocabulary=list(words),
            output_sequence_length=settings.max_title_tokens,
            name="title_ids",
        )(title)
        description_ids = keras.layers.TextVectorization(
            standardize=None,
            split="whitespace",
            vocabulary=list(words),
            output_sequence_length=settings.max_tokens,
            name="description_ids",
        )(description)
        ids = keras.layers.Concatenate(axis=1, name="token_ids")([title_ids, description_ids])
        embedded = keras.layers.Embedding(
            embedding_matrix.shape[0],
            embedding_matrix.shape[1],
            embeddings_initializer=keras.initializers.Constant(embedding_matrix),
            trainable=False,  # frozen until the fine-tuning phase
            name=EMBEDDING_LAYER,
        )(ids)
        embedded = keras.layers.SpatialDropout1D(settings.dropout / 2, seed=seed)(embedded)
        if settings.conv_filters > 0:
            conv = keras.layers.Conv1D(
                settings.conv_filters, settings.conv_kernel, padding="same", activation="relu", name="conv"
            )(embedded)
            parts.append(_unit(keras.layers.GlobalMaxPooling1D(name="conv_max")(conv), settings, "conv_max"))
        parts.append(_unit(MaskedMean(name="embedding_mean")(embedded, ids), settings, "embedding_mean"))

    if settings.wide:
        for name, text, corpus in (
            ("title_bag", title, train_titles),
            ("description_bag", description, train_descriptions),
        ):
            bag = _adapt_bag(name, corpus, settings.wide_max_tokens, settings.wide_ngrams, settings.wide_mode)
            parts.append(_unit(keras.ops.cast(bag(text), "float32"), settings, name))
    if settings.char_ngrams >= 3:
        grams = tuple(range(3, settings.char_ngrams + 1))
        for name, text, corpus in (
            ("title_chars", title, train_titles),
            ("description_chars", description, train_descriptions),
        ):
            bag = _adapt_bag(name, corpus, settings.wide_max_tokens, grams, settings.wide_mode, "character")
            parts.append(_unit(keras.ops.cast(bag(text), "float32"), settings, name))

    if not parts:
        raise ValueError("the text branch needs the deep path, the wide path, or both")
    joined = keras.layers.Concatenate(name="text_parts")(parts) if len(parts) > 1 else parts[0]
    hidden = keras.layers.Dropout(settings.dropout, seed=seed + 1)(joined)
    dense = SparseInputDense if (settings.wide or settings.char_ngrams >= 3) else keras.layers.Dense
    features = dense(settings.text_dim, activation="relu", name="text_features")(hidden)
    return keras.Model([title, description], features, name="text_encoder")


def build_text_classifier(encoder: keras.Model, n_classes: int, dropout: float, seed: int) -> keras.Model:
    """The text-only model: the encoder plus a softmax over root categories."""
    return build_text_models(encoder, n_classes, dropout, seed)[0]


def build_text_models(
    encoder: keras.Model, n_classes: int, dropout: float, seed: int, n_leaves: int = 0
) -> tuple[keras.Model, keras.Model]:
    """(classifier, trainer): the saved root classifier and the model that is fitted.

    Without leaves both are the classifier, (title, description) -> (batch, n_classes)
    probabilities. With `n_leaves` > 0 the trainer shares the encoder and the root head
    and adds a leaf-category head on the same features: its output is the root
    probabilities followed by the leaf logits, (batch, n_classes + n_leaves), for
    `compile_classifier(..., n_leaves=...)`. Why: the fusion model reads this encoder
    frozen, so whatever the encoder forgets, the fusion embedding cannot recover; trained
    on the 13 roots alone it keeps little of the fine category that similar listings need.
    """
    title = keras.Input((), dtype="string", name=TITLE)
    description = keras.Input((), dtype="string", name=DESCRIPTION)
    hidden = keras.layers.Dropout(dropout, seed=seed)(encoder([title, description]))
    probs = keras.layers.Dense(n_classes, activation="softmax", name="category")(hidden)
    classifier = keras.Model([title, description], probs, name="text_classifier")
    if n_leaves <= 0:
        return classifier, classifier
    leaf_logits = keras.layers.Dense(n_leaves, name="leaf_logits")(hidden)
    joined = keras.layers.Concatenate(name="category_and_leaf")([probs, leaf_logits])
    return classifier, keras.Model([title, description], joined, name="text_trainer")


def set_embedding_trainable(model: keras.Model, trainable: bool) -> bool:
    """Freeze or unfreeze the Word2Vec embedding wherever it sits; False when there is none."""
    for layer in _walk(model):
        if layer.name == EMBEDDING_LAYER:
            layer.trainable = trainable
            return True
    return False


def _walk(model: keras.layers.Layer):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _walk(layer)


def string_batch(values: Sequence[str]) -> tf.Tensor:
    """(n,) string tensor, the shape the text inputs take."""
    return tf.constant(list(values), dtype=tf.string, shape=(len(values),))
