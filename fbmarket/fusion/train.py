"""Train the fusion network: one multi-task model (category + contrastive) over text, photos and tabular.

Only the fusion network's own step; the whole bundle (text-only, image-only, fusion and
the late-fusion members, the price model, the duplicate rule) is trained by
fbmarket/training/, which calls this with the model inputs it already made.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from fbmarket.config import FusionSettings
from fbmarket.fusion.dataset import FusionArrays, make_dataset
from fbmarket.fusion.model import FusionModel
from fbmarket.text.train import KeepBest, metric_mode


def train_fusion_network(
    arrays: FusionArrays,
    text_encoder: keras.Model,
    n_classes: int,
    feature_dim: int,
    n_leaves: int,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    settings: FusionSettings,
    max_photos: int,
    seed: int,
    text_head_weights: list[np.ndarray] | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
) -> tuple[FusionModel, dict[str, list[float]]]:
    """Build and fit the fusion network on `arrays` (train rows `train_idx`, early stopping on
    `val_idx`), restored to its best epoch by `settings.monitor`; returns it and its history.

    `text_head_weights` (the text-only model's softmax(Wx + b) layer) start the fusion's
    text head, whose logits it adds to its own; `callbacks` are the caller's loggers.
    """
    fs = settings
    fusion = FusionModel(
        text_encoder,
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
        n_leaves=n_leaves,
        leaf_weight=fs.leaf_weight,
        text_skip=fs.text_skip,
        cosine_scale=fs.cosine_scale,
        name="fusion",
    )
    if fusion.text_head is not None and text_head_weights is not None:
        fusion.text_head.get_layer("logits").set_weights(text_head_weights)
    fusion.compile(optimizer=keras.optimizers.Adam(fs.learning_rate))
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
            *(callbacks or []),
        ],
        shuffle=False,  # the generator reshuffles itself each epoch
        verbose=verbose,
    )
    keep.restore(fusion)
    history: dict[str, Any] = {k: [float(v) for v in vals] for k, vals in fitted.history.items()}
    history["best_val_accuracy"] = [keep.best_logs.get("val_accuracy", float("nan"))]
    return fusion, history
