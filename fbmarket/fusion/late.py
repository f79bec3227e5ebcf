"""The late-fusion category head: log-linear pooling of every member's log-probabilities.

Why: trained jointly, the fusion network's text side reaches ~100% training accuracy,
so its photos explain nothing left over and its category head ends where the text
model does (dev test 0.810 = 0.810). Members trained separately and pooled with
weights fit on listings none of them trained on (the validation split) do gain from
photos: each member's over-confidence is measured, not learned around. This is
stacking (Wolpert 1992, "Stacked generalization") with a product-of-experts combiner
(Hinton 2002): p(c | x) ∝ exp(b_c + Σ_m w_m · m_m(x) · log p_m(c | x)), w_m >= 0,
m_m(x) = 0 when member m has nothing to say (a listing without photos for the
image member), so the pooled rule still holds for it.

Members (`MEMBERS`): the fusion network's own head, the Keras text branch, the image
head on pooled photo features, the TF-IDF logistic regression (`text/tfidf.py`) and the
votes of the nearest training listings by text and by photo (`fusion/neighbours.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

MEMBERS = ("fusion_network", "text", "image", "tfidf", "text_neighbours", "photo_neighbours")
LOG_FLOOR = -30.0  # log-probabilities clipped here: one member's 0 must not veto a class


@keras.saving.register_keras_serializable(package="fbmarket")
class LogLinearPooling(keras.layers.Layer):
    """logits[c] = bias[c] + sum_m weight[m] * mask[m] * log_prob[m, c] (weights >= 0).

    Input: log_probs (batch, members, classes), mask (batch, members) in {0, 1}.
    Output: (batch, classes) logits.
    """

    def __init__(self, members: Sequence[str], n_classes: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.members = list(members)
        self.n_classes = int(n_classes)

    def build(self, input_shape: Any) -> None:
        self.member_weights = self.add_weight(
            shape=(len(self.members),),
            initializer=keras.initializers.Constant(1.0 / max(len(self.members), 1)),
            constraint=keras.constraints.NonNeg(),
            name="member_weights",
        )
        self.bias = self.add_weight(shape=(self.n_classes,), initializer="zeros", name="bias")

    def call(self, log_probs, mask):
        clipped = ops.maximum(log_probs, LOG_FLOOR)
        weights = ops.expand_dims(self.member_weights * ops.cast(mask, log_probs.dtype), -1)
        return ops.sum(weights * clipped, axis=1) + self.bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "members": self.members, "n_classes": self.n_classes}


def build_late_fusion(members: Sequence[str], n_classes: int) -> keras.Model:
    """{"log_probs": (batch, M, C), "mask": (batch, M)} -> (batch, C) logits."""
    log_probs = keras.Input((len(members), n_classes), name="log_probs")
    mask = keras.Input((len(members),), name="mask")
    logits = LogLinearPooling(members, n_classes, name="pooling")(log_probs, mask)
    return keras.Model({"log_probs": log_probs, "mask": mask}, logits, name="late_fusion")


def fit_late_fusion(
    log_probs: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray,
    members: Sequence[str],
    steps: int = 400,
    learning_rate: float = 0.05,
    seed: int = 0,
) -> keras.Model:
    """Fit the pooling weights and class biases on held-out predictions.

    `log_probs` (n, M, C) are the members' log-probabilities on listings none of them
    trained on; `mask` (n, M) says which members saw each listing; `labels` (n,).
    Full-batch Adam on the (convex) cross-entropy: M + C parameters, seconds.
    Raises ValueError on empty or mismatched inputs.
    """
    log_probs = np.asarray(log_probs, np.float32)
    mask = np.asarray(mask, np.float32)
    labels = np.asarray(labels, np.int32)
    if log_probs.ndim != 3 or len(log_probs) == 0:
        raise ValueError(f"log_probs must be (n > 0, members, classes), got {log_probs.shape}")
    if mask.shape != log_probs.shape[:2] or labels.shape != (len(log_probs),):
        raise ValueError("log_probs, mask and labels disagree on rows or members")
    if log_probs.shape[1] != len(members):
        raise ValueError(f"{log_probs.shape[1]} member columns for {len(members)} member names")
    keras.utils.set_random_seed(seed)
    model = build_late_fusion(members, log_probs.shape[2])
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    inputs = {"log_probs": tf.constant(log_probs), "mask": tf.constant(mask)}
    targets = tf.constant(labels)

    @tf.function
    def step() -> tf.Tensor:
        # a plain loop: Model.fit's per-epoch overhead made 400 full-batch steps take ~17 s
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, model(inputs, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    for _ in range(steps):
        step()
    return model


def member_weights(model: keras.Model) -> dict[str, float]:
    """The fitted weight of each member (what the report and bundle.json show)."""
    layer = model.get_layer("pooling")
    return {
        name: round(float(w), 4) for name, w in zip(layer.members, layer.member_weights.numpy(), strict=True)
    }


def member_inputs(
    probabilities: dict[str, np.ndarray], has_photo: np.ndarray, has_text: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """MEMBERS' (n, C) probabilities -> their log-probabilities and (n,) masks.

    The photo members are silenced where `has_photo` is 0, the text members where
    `has_text` is 0 (default: every listing has words); the network always speaks.
    """
    ones = np.ones(len(has_photo), np.float32)
    text = ones if has_text is None else np.asarray(has_text, np.float32)
    photo = np.asarray(has_photo, np.float32)
    masks = {"fusion_network": ones, "image": photo, "photo_neighbours": photo, "text": text, "tfidf": text,
             "text_neighbours": text}  # fmt: skip
    log_probs = {name: np.log(np.clip(p, 1e-12, 1.0)) for name, p in probabilities.items()}
    return log_probs, {name: masks[name] for name in log_probs if name in masks}


def stack(
    log_probs: dict[str, np.ndarray], mask: dict[str, np.ndarray], members: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-member dicts -> ((n, M, C) log-probabilities, (n, M) mask) in `members` order."""
    stacked = np.stack([log_probs[name] for name in members], axis=1).astype(np.float32)
    masks = np.stack([mask[name] for name in members], axis=1).astype(np.float32)
    return stacked, masks


def pool(model: keras.Model, log_probs: dict[str, np.ndarray], mask: dict[str, np.ndarray]) -> np.ndarray:
    """(n, C) pooled probabilities from per-member (n, C) log-probabilities and (n,) masks.

    Members the head was not fit with are ignored; a member it needs and is not given
    raises KeyError.
    """
    layer = model.get_layer("pooling")
    stacked, masks = stack(log_probs, mask, layer.members)
    if len(stacked) == 0:
        return np.zeros((0, layer.n_classes), np.float32)
    logits = model({"log_probs": stacked, "mask": masks}, training=False)
    return ops.convert_to_numpy(ops.softmax(logits, axis=-1)).astype(np.float32)
