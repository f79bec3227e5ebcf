"""Training the image branch: the backbone from scratch on photos, or a head on frozen features.

From scratch (no pretrained weights offline), ResNet50V2 learns root categories from
the training split's photos at a reduced resolution, with augmentation; its decoded
photos are cached in memory once (tf.data `cache`), so later epochs cost only the
model. The trained backbone is then frozen and used as a feature extractor exactly
like a pretrained one, so both paths share the feature cache, the image-only
classifier and the fusion model.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fbmarket.config import VisionSettings
from fbmarket.text.train import KeepBest
from fbmarket.vision.backbone import build_feature_head, build_photo_classifier
from fbmarket.vision.features import _decode


def _sparse_smoothed_loss(n_classes: int, smoothing: float):
    def loss(y_true, y_pred):
        onehot = keras.ops.one_hot(keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,)), n_classes)
        return keras.losses.categorical_crossentropy(onehot, y_pred, label_smoothing=smoothing)

    return loss


def photo_training_dataset(
    paths: Sequence[str], labels: np.ndarray, size: int, batch_size: int, seed: int | None
) -> tf.data.Dataset:
    """Decoded once and cached in memory; reshuffled every epoch when `seed` is given."""
    data = tf.data.Dataset.from_tensor_slices(([str(p) for p in paths], labels.astype(np.int32)))
    data = data.map(lambda p, y: (_decode(p, size), y), num_parallel_calls=tf.data.AUTOTUNE).cache()
    if seed is not None:
        data = data.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_scratch_backbone(
    backbone: keras.Model,
    train_paths: Sequence[str],
    train_labels: np.ndarray,
    val_paths: Sequence[str],
    val_labels: np.ndarray,
    settings: VisionSettings,
    n_classes: int,
    seed: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Fit backbone + head on photos (label = the product's root category); returns the head."""
    classifier, head = build_photo_classifier(backbone, n_classes, seed, augment=settings.augment)
    size = int(backbone.input_shape[1])
    steps = max(1, (len(train_paths) + settings.batch_size - 1) // settings.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, decay_steps=max(1, steps * settings.epochs), alpha=0.05
    )
    classifier.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss=_sparse_smoothed_loss(n_classes, 0.1),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    train = photo_training_dataset(train_paths, train_labels, size, settings.batch_size, seed)
    val = (
        photo_training_dataset(val_paths, val_labels, size, settings.batch_size, None)
        if len(val_paths)
        else None
    )
    keep = KeepBest()
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=settings.patience)
    fitted = classifier.fit(
        train,
        validation_data=val,
        epochs=settings.epochs,
        callbacks=[keep, stop, *callbacks] if val is not None else list(callbacks),
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=verbose,
    )
    keep.restore(classifier)
    history = {k: [float(v) for v in vals] for k, vals in fitted.history.items()}
    history["best_val_accuracy"] = [keep.best]
    return head, history


def train_feature_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    settings: VisionSettings,
    n_classes: int,
    seed: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """A softmax head on frozen features (the pretrained-weights path).

    Rows are products (the mean of each one's photo features, `pool_products`), labels
    their root category; the epoch with the best validation accuracy is kept.
    """
    head = build_feature_head(
        int(train_features.shape[1]), n_classes, seed, settings.head_dropout, settings.head_hidden
    )
    head.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=_sparse_smoothed_loss(n_classes, 0.1),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    keep = KeepBest()
    has_val = len(val_labels) > 0
    fitted = head.fit(
        train_features,
        train_labels.astype(np.int32),
        validation_data=(val_features, val_labels.astype(np.int32)) if has_val else None,
        epochs=settings.head_epochs,
        batch_size=64,
        callbacks=[keep, *callbacks] if has_val else list(callbacks),
        verbose=verbose,
    )
    keep.restore(head)
    history = {k: [float(v) for v in vals] for k, vals in fitted.history.items()}
    history["best_val_accuracy"] = [keep.best]
    return head, history
