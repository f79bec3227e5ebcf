"""Training the text-only classifier: Word2Vec embedding frozen first, then fine-tuned.

Phase 1 trains everything but the Word2Vec-initialised embedding, so the randomly
initialised layers above it cannot wreck the vectors with large early gradients;
phase 2 unfreezes the embedding at a lower learning rate. Both phases stop early on
validation accuracy; the best weights over both phases are kept.

With leaf labels the fitted model is `build_text_models`' trainer: root cross-entropy
plus `TextSettings.leaf_weight` times the leaf-category cross-entropy on the same
features (a multi-task auxiliary loss); accuracy and early stopping stay on the root.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fbmarket.config import TextSettings
from fbmarket.text.branch import set_embedding_trainable


def text_dataset(
    titles: Sequence[str],
    descriptions: Sequence[str],
    labels: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None = None,
    leaf_labels: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of ((title, description), y): y is the root label, (batch,), or with
    `leaf_labels` the pairs (root, leaf), (batch, 2), leaf -1 where unknown."""
    targets = labels.astype(np.int32)
    if leaf_labels is not None:
        targets = np.stack([targets, np.asarray(leaf_labels).astype(np.int32)], axis=1)
    data = tf.data.Dataset.from_tensor_slices(
        ((tf.constant(list(titles), tf.string), tf.constant(list(descriptions), tf.string)), targets)
    )
    if shuffle_seed is not None:
        data = data.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def known_leaf_cross_entropy(leaves, leaf_logits):
    """(per-row leaf cross-entropy, 1.0 where the leaf is known): leaf labels -1 mark leaves
    unseen in training, which the caller leaves out of its leaf term. Shapes (batch,)."""
    leaves = keras.ops.reshape(keras.ops.cast(leaves, "int32"), (-1,))
    known = keras.ops.cast(keras.ops.greater_equal(leaves, 0), "float32")
    per_row = keras.losses.sparse_categorical_crossentropy(
        keras.ops.maximum(leaves, 0), leaf_logits, from_logits=True
    )
    return per_row, known


def compile_classifier(
    model: keras.Model,
    learning_rate: float,
    label_smoothing: float,
    n_classes: int,
    n_leaves: int = 0,
    leaf_weight: float = 0.0,
) -> None:
    """Adam, root cross-entropy (label-smoothed) and root accuracy ("accuracy").

    With `n_leaves` > 0 the model's output is root probabilities then leaf logits (the
    trainer of `build_text_models`) and y the (root, leaf) pairs of `text_dataset`; the
    loss adds `leaf_weight` x the leaf cross-entropy of the rows whose leaf is known.
    """
    smoothing = float(label_smoothing)

    def split(y_true, y_pred):
        if n_leaves <= 0:
            return keras.ops.reshape(y_true, (-1,)), y_pred, None, None
        y_true = keras.ops.reshape(y_true, (-1, 2))
        return y_true[:, 0], y_pred[:, :n_classes], y_true[:, 1], y_pred[:, n_classes:]

    def loss(y_true, y_pred):
        roots, probs, leaves, leaf_logits = split(y_true, y_pred)
        onehot = keras.ops.one_hot(keras.ops.cast(roots, "int32"), n_classes)
        total = keras.losses.categorical_crossentropy(onehot, probs, label_smoothing=smoothing)
        if leaves is not None and leaf_weight > 0:
            leaf, known = known_leaf_cross_entropy(leaves, leaf_logits)
            total = total + leaf_weight * leaf * known
        return total

    def accuracy(y_true, y_pred):
        roots, probs, _, _ = split(y_true, y_pred)
        hit = keras.ops.equal(keras.ops.cast(roots, "int32"), keras.ops.cast(keras.ops.argmax(probs, -1), "int32"))
        return keras.ops.cast(hit, "float32")

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=[keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")],
    )


def metric_mode(monitor: str) -> str:
    """Keras callback mode for a metric: losses fall, accuracies rise."""
    return "min" if monitor.endswith("loss") else "max"


class KeepBest(keras.callbacks.Callback):
    """Best weights by a validation metric across several `fit` calls (both phases)."""

    def __init__(self, monitor: str = "val_accuracy", mode: str | None = None):
        super().__init__()
        self.monitor = monitor
        self.sign = 1.0 if (mode or metric_mode(monitor)) == "max" else -1.0
        self.best = -np.inf * self.sign
        self.best_logs: dict[str, float] = {}
        self.best_weights: list[np.ndarray] | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and self.sign * value > self.sign * self.best:
            self.best = float(value)
            self.best_logs = {k: float(v) for k, v in (logs or {}).items()}
            self.best_weights = self.model.get_weights()

    def restore(self, model: keras.Model) -> None:
        if self.best_weights is not None:
            model.set_weights(self.best_weights)


def train_text_classifier(
    classifier: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    settings: TextSettings,
    n_classes: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
    n_leaves: int = 0,
) -> dict[str, list[float]]:
    """Two-phase fit; returns the concatenated history (with a `phase` entry per epoch).

    `classifier` is the model fitted: the classifier, or with `n_leaves` > 0 the trainer
    of `build_text_models` (whose layers the classifier shares) on (root, leaf) labels.
    """
    history: dict[str, list[float]] = {}
    keep = KeepBest()

    def run(epochs: int, learning_rate: float, phase: int, initial_epoch: int) -> int:
        if epochs <= 0:
            return initial_epoch
        compile_classifier(
            classifier, learning_rate, settings.label_smoothing, n_classes, n_leaves, settings.leaf_weight
        )
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=settings.patience)
        fitted = classifier.fit(
            train,
            validation_data=val,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            callbacks=[keep, stop, *callbacks],
            shuffle=False,  # the dataset reshuffles itself each epoch
            verbose=verbose,
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("phase", []).extend([phase] * len(fitted.epoch))
        return initial_epoch + len(fitted.epoch)

    has_embedding = set_embedding_trainable(classifier, False)
    done = run(settings.frozen_epochs, settings.learning_rate, 1, 0)
    if has_embedding:
        set_embedding_trainable(classifier, True)
        run(settings.finetune_epochs, settings.finetune_learning_rate, 2, done)
    keep.restore(classifier)
    history["best_val_accuracy"] = [keep.best]
    return history
