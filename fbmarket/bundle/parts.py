"""The stored models of a bundle: manifest facts, lazily loaded parts, optional members.

`BundleParts` is the data half of `fbmarket.bundle.Bundle` (which adds `load`, `save` and
the serving API): what a bundle holds, whether it was trained a moment ago (training
builds it from the models in memory) or read from a folder (parts loaded on first use).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fbmarket.bundle import files
from fbmarket.bundle.files import PARTS, BundleError
from fbmarket.fusion.dataset import TabularScaler
from fbmarket.fusion.model import CosineLogits  # the import also registers FusionModel for loading
from fbmarket.fusion.neighbours import MEMBERS as NEIGHBOUR_MEMBERS
from fbmarket.fusion.neighbours import NeighbourVote
from fbmarket.layout import BundleLayout
from fbmarket.price.model import PriceModel
from fbmarket.search.categories import CategoryHead, CategorySpace
from fbmarket.search.duplicates import DuplicateRule
from fbmarket.text.tfidf import TfidfClassifier

_UNREAD = object()  # an optional part whose file was not looked at yet


class BundleParts:
    """What a trained bundle holds, in memory (serving, evaluation and `save` read it). Thread-safe
    for reads.

    `parts` holds the text-only model, the photo backbone and the image head (PARTS), or a
    function that loads one on first use (a loaded bundle's lazy parts). The optional
    members are None when the bundle has none: `tfidf` and `late_fusion` (without them
    "fusion" is the network's own head), `neighbours` (empty without the neighbour-vote
    members), `price_model` (with `price_error` saying why),
    `duplicate_rule` (read on first use when left unread). `word2vec`, `vocabulary` and
    `settings` are training records that only `save` writes (a loaded bundle leaves them
    None and `save` copies its files).
    """

    def __init__(
        self,
        layout: BundleLayout | Path | str,
        manifest: dict[str, Any],
        fusion: keras.Model,
        tabular: TabularScaler,
        parts: Mapping[str, keras.Model] | Callable[[str], keras.Model],
        *,
        tfidf: TfidfClassifier | None = None,
        neighbours: Mapping[str, NeighbourVote] | None = None,
        late_fusion: keras.Model | None = None,
        price_model: PriceModel | None = None,
        price_error: str | None = None,
        duplicate_rule: DuplicateRule | None | object = _UNREAD,
        leaves: list[str] | None | object = _UNREAD,
        word2vec: Any = None,  # gensim KeyedVectors (not imported here: serving never needs gensim)
        vocabulary: Any = None,  # fbmarket.text.word2vec.Vocabulary
        settings: Any = None,  # fbmarket.config.Settings of the run
    ):
        self.layout = layout if isinstance(layout, BundleLayout) else BundleLayout(Path(layout))
        self.manifest = manifest
        self.fusion = fusion
        self.tabular = tabular
        self.classes: list[str] = list(manifest["classes"])
        self.prior = np.asarray(manifest.get("prior") or np.full(len(self.classes), 1 / len(self.classes)))
        self._cache_lock = threading.Lock()
        self._products_fn = tf.function(lambda x: fusion(x, training=False), reduce_retracing=True)
        self._query_fn = tf.function(lambda x: fusion.encode_query(x, training=False), reduce_retracing=True)
        self._parts: dict[str, keras.Model] = {}
        self._part_fns: dict[str, Any] = {}
        self._parts_lock = threading.Lock()
        if callable(parts):
            self._load_part = parts
        else:
            self._load_part = _missing_part
            for key, model in parts.items():
                self._set_part(key, model)
        self.tfidf = tfidf
        self.neighbours: dict[str, NeighbourVote] = dict(neighbours or {})
        self.late_fusion = late_fusion
        self.price_model = price_model
        self._price_error = price_error if price_model is None else None
        self._duplicate_rule = duplicate_rule
        self._leaves = leaves
        self.word2vec, self.vocabulary, self.settings = word2vec, vocabulary, settings
        pooled = self.late_fusion.get_layer("pooling").members if self.late_fusion is not None else []
        if "tfidf" in pooled and self.tfidf is None:
            raise BundleError(
                f"bundle {self.directory} is incomplete: missing {self.layout.relative(self.layout.tfidf)}"
            )
        absent = [name for name in pooled if name in NEIGHBOUR_MEMBERS and name not in self.neighbours]
        if absent:
            raise BundleError(
                f"bundle {self.directory} is incomplete: its late-fusion head pools {', '.join(absent)} "
                f"and {self.layout.relative(self.layout.neighbours)} does not hold them"
            )

    @property
    def directory(self) -> Path:
        return self.layout.root

    def part(self, key: str) -> keras.Model:
        """A part (PARTS), loaded with its compiled call on first use."""
        with self._parts_lock:
            if key not in self._parts:
                self._set_part(key, self._load_part(key))
            return self._parts[key]

    def set_part(self, key: str, model: keras.Model) -> None:
        """Replace a part (training refits the image head on train + val)."""
        with self._parts_lock:
            self._set_part(key, model)

    def _set_part(self, key: str, model: keras.Model) -> None:
        if key not in PARTS:
            raise KeyError(f"{key!r} is not a bundle part ({', '.join(PARTS)})")
        self._parts[key] = model
        if key == "text_model":
            call = tf.function(lambda t, d: model([t, d], training=False), reduce_retracing=True)
        else:
            call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        self._part_fns[key] = call

    def _part_fn(self, key: str) -> Any:
        """The compiled call of a part."""
        self.part(key)
        return self._part_fns[key]

    @property
    def loaded_parts(self) -> tuple[str, ...]:
        """Which of PARTS are loaded so far."""
        with self._parts_lock:
            return tuple(key for key in PARTS if key in self._parts)

    @property
    def text_model(self) -> keras.Model:
        return self.part("text_model")

    @property
    def backbone(self) -> keras.Model:
        return self.part("backbone")

    @property
    def image_head(self) -> keras.Model:
        return self.part("image_head")

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
                self._duplicate_rule = files.read_duplicate_rule(self.layout)
            return self._duplicate_rule  # type: ignore[return-value]

    @duplicate_rule.setter
    def duplicate_rule(self, rule: DuplicateRule | None) -> None:
        with self._parts_lock:
            self._duplicate_rule = rule

    @property
    def leaves(self) -> list[str] | None:
        """The leaf categories of the fusion model's auxiliary head (None: a bundle without them)."""
        with self._parts_lock:
            if self._leaves is _UNREAD:
                self._leaves = files.read_leaves(self.layout)
            return self._leaves  # type: ignore[return-value]

    @property
    def backbone_size(self) -> int:
        return int(self.manifest["backbone_size"])

    @property
    def max_photos(self) -> int:
        return int(self.manifest["max_photos"])

    @property
    def feature_cache_dir(self) -> Path:
        return self.layout.feature_cache

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


def _missing_part(key: str) -> keras.Model:
    raise BundleError(f"this in-memory bundle was made without its {key}")
