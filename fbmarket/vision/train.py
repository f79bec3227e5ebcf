"""Training the image branch: the backbone from scratch on photos, or a head on frozen features.

From scratch (no pretrained weights offline), ResNet50V2 learns root categories from
the training split's photos at a reduced resolution, with augmentation; its decoded
photos are cached in memory once (tf.data `cache`), so later epochs cost only the
model. The trained backbone is then frozen and used as a feature extractor exactly
like a pretrained one, so both paths share the feature cache, the image-only
classifier and the fusion model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

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


HEAD_SOLVERS = ("logistic_regression", "adam")
UNSEEN_CLASS_BIAS = -30.0  # logit of a class absent from the head's training rows (p ~ 1e-13)


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
    """A softmax head on frozen features (the pretrained-weights path), by `settings.head_solver`.

    Rows are products (the mean of each one's photo features, `pool_products`), (n, d)
    float32; labels (n,) their root category. Returns the head, a Keras model
    (n, d) -> (n, n_classes) probabilities of the one shape `build_feature_head` gives,
    whichever solver fit it, and the fit's history. Raises ValueError for an unknown solver.
    """
    if settings.head_solver not in HEAD_SOLVERS:
        raise ValueError(f"vision.head_solver must be one of {HEAD_SOLVERS}, got {settings.head_solver!r}")
    if settings.head_solver == "logistic_regression":
        return fit_logistic_head(
            train_features, train_labels, val_features, val_labels, settings, n_classes, seed
        )
    # "adam": the softmax layer trained by Adam with label smoothing; the epoch with the best
    # validation accuracy is kept
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


def fit_logistic_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    settings: VisionSettings,
    n_classes: int,
    seed: int,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """The "logistic_regression" head: scikit-learn's multinomial L2 logistic regression
    (lbfgs) on unit-length features, written into the head's softmax layer.

    Why: on frozen ImageNet features the convex fit beats the Adam-trained layer (dev product
    split, Lite2 at 260 px, trained on train + val: test 0.595 against 0.570), and it needs
    no epoch count to carry from the validation fit to the refit on train + val. C is the
    best of `settings.head_c` on the validation rows (the first when there are none); the
    history records each C's validation accuracy and the chosen one (`best_c`). Classes
    absent from the training rows get weight 0 and bias `UNSEEN_CLASS_BIAS`. Raises
    ValueError when `head_hidden` is set (a hidden layer needs the "adam" solver) or the
    training rows hold fewer than two classes.
    """
    if settings.head_hidden > 0:
        raise ValueError("vision.head_hidden needs vision.head_solver 'adam'")
    labels = np.asarray(train_labels, np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError("the image head needs at least two categories in its training rows")
    x_train = _unit(train_features)
    x_val, y_val = _unit(val_features), np.asarray(val_labels, np.int64)
    grid = tuple(settings.head_c) or (1.0,)
    fitted: list[LogisticRegression] = []
    accuracy: list[float] = []
    for c in grid if len(y_val) else grid[:1]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations short still ranks well
            model = LogisticRegression(C=float(c), max_iter=3000, random_state=seed).fit(x_train, labels)
        fitted.append(model)
        accuracy.append(float(model.score(x_val, y_val)) if len(y_val) else float("nan"))
    best = int(np.nanargmax(accuracy)) if len(y_val) else 0
    model = fitted[best]
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: make it symmetric
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    kernel = np.zeros((x_train.shape[1], n_classes), np.float32)
    bias = np.full(n_classes, UNSEEN_CLASS_BIAS, np.float32)
    kernel[:, model.classes_] = coef.T
    bias[model.classes_] = intercept
    head = build_feature_head(int(x_train.shape[1]), n_classes, seed, settings.head_dropout, hidden=0)
    head.get_layer("category").set_weights([kernel, bias])
    history = {"c": [float(c) for c in grid[: len(accuracy)]], "best_c": [float(grid[best])]}
    if len(y_val):
        history["val_accuracy"] = accuracy
        history["best_val_accuracy"] = [accuracy[best]]
    return head, history


def _unit(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as the head's UnitNormalization layer does (zero rows stay 0)."""
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)
