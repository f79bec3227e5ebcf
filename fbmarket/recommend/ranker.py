"""Second-stage rankers whose scores decompose into factor contributions (docs/ranking.md).

Both rankers are additive in the ranking factors, so "why did this rank here" has an
exact answer: `score(features)` returns the scores and a contributions table (one
column per factor plus `bias`) whose rows add up to the scores.

* `RuleRanker`: contribution = weight x factor, with hand-set weights from
  `RankSettings.rule_weights`. Transparent and needs no training data: the ranker
  whenever no learned ranker exists (and, if configured, for buyers without history).
* `LearnedRanker`: a generalised additive model in Keras (a "neural additive model"):
  one small tanh subnetwork per factor, f_i(x_i) - f_i(0) (so a neutral factor
  contributes 0), plus a learned bias; trained on interactions with a listwise (softmax
  over a session's candidates) or pointwise (logistic) loss. It learns the *shape* of
  each factor (e.g. how fast distance stops mattering) but cannot invent interactions
  between factors, which is what keeps it explainable.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from fbmarket.config import RankSettings
from fbmarket.files import dumps_json
from fbmarket.recommend.features import FEATURES

BIAS = "bias"
CONTRIBUTION_COLUMNS = (*FEATURES, BIAS)
RULE_FILE = "rule_ranker.json"
LEARNED_MODEL_FILE = "learned_ranker.keras"
LEARNED_META_FILE = "learned_ranker.json"


class Ranker(Protocol):
    name: str

    def score(self, features: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]: ...


def _matrix(features: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise ValueError(f"ranking features lack column(s): {', '.join(missing)}")
    values = features[list(names)].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError("ranking features must be finite (features.py maps unknowns to 0)")
    return values


def _scored(contributions: np.ndarray, bias: float, index: pd.Index) -> tuple[np.ndarray, pd.DataFrame]:
    """(scores, contributions + bias column); the score is defined as the row sum."""
    table = np.column_stack([contributions, np.full(len(contributions), bias)])
    return table.sum(axis=1), pd.DataFrame(table, columns=list(CONTRIBUTION_COLUMNS), index=index)


def _padded_lists(
    x: np.ndarray, gain: np.ndarray, groups: np.ndarray, max_list: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """Rows grouped by session -> ([candidates (G, L, F), mask (G, L)], target distribution (G, L)).

    Sessions without a positive are dropped; longer sessions keep their positives and a
    random sample of the rest."""
    codes, starts = np.unique(groups, return_index=True)
    lists = []
    for code in codes[np.argsort(starts)]:
        rows = np.flatnonzero(groups == code)
        if gain[rows].sum() <= 0:
            continue
        if len(rows) > max_list:
            positive, rest = rows[gain[rows] > 0], rows[gain[rows] <= 0]
            rows = np.concatenate([positive, rng.permutation(rest)])[:max_list]
        lists.append(rows)
    if not lists:
        raise ValueError("no session has a positive: nothing to learn an order from")
    size = max(len(r) for r in lists)
    batch = np.zeros((len(lists), size, x.shape[1]), dtype="float32")
    mask = np.zeros((len(lists), size), dtype="float32")
    target = np.zeros((len(lists), size), dtype="float32")
    for i, rows in enumerate(lists):
        batch[i, : len(rows)] = x[rows]
        mask[i, : len(rows)] = 1.0
        target[i, : len(rows)] = gain[rows] / gain[rows].sum()
    return [batch, mask], target


class RuleRanker:
    """Transparent weighted sum of the factors."""

    name = "rule"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        weights = dict(RankSettings().rule_weights if weights is None else weights)
        unknown = set(weights) - set(FEATURES)
        if unknown:
            raise ValueError(f"rule weights for unknown factor(s): {', '.join(sorted(unknown))}")
        self.weights = {name: float(weights.get(name, 0.0)) for name in FEATURES}

    def score(self, features: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        values = _matrix(features, FEATURES)
        contributions = values * np.array([self.weights[n] for n in FEATURES])
        return _scored(contributions, 0.0, features.index)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / RULE_FILE
        path.write_text(dumps_json({"kind": "rule", "weights": self.weights}, indent=2))
        return path

    @classmethod
    def load(cls, directory: Path) -> RuleRanker:
        payload = json.loads((Path(directory) / RULE_FILE).read_text())
        return cls(payload["weights"])


def _keras():
    """Import Keras lazily: buyers, features and the rule ranker work without TensorFlow loaded."""
    import keras

    return keras


@functools.cache
def _layers():
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="fbmarket")
    class AdditiveFactors(keras.layers.Layer):
        """x (batch, F) -> contributions (batch, F): one tanh subnetwork per factor, zero at x = 0."""

        def __init__(self, hidden_units: int = 16, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden_units = hidden_units

        def build(self, input_shape: tuple[int, ...]) -> None:
            factors, hidden = int(input_shape[-1]), self.hidden_units
            init = keras.initializers
            self.w_in = self.add_weight(
                name="w_in", shape=(factors, hidden), initializer=init.RandomNormal(stddev=2.0)
            )
            self.b_in = self.add_weight(
                name="b_in", shape=(factors, hidden), initializer=init.RandomUniform(-2.0, 2.0)
            )
            self.w_out = self.add_weight(
                name="w_out", shape=(factors, hidden), initializer=init.RandomNormal(stddev=0.1)
            )
            self.linear = self.add_weight(name="linear", shape=(factors,), initializer="zeros")

        def call(self, x):
            hidden = ops.tanh(ops.expand_dims(x, -1) * self.w_in + self.b_in) - ops.tanh(self.b_in)
            return ops.sum(hidden * self.w_out, axis=-1) + x * self.linear

        def get_config(self) -> dict[str, Any]:
            return super().get_config() | {"hidden_units": self.hidden_units}

    @keras.saving.register_keras_serializable(package="fbmarket")
    class AdditiveScore(keras.layers.Layer):
        """Contributions (batch, F) -> logit (batch, 1) = their sum + a learned bias."""

        def build(self, input_shape: tuple[int, ...]) -> None:
            self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

        def call(self, contributions):
            return ops.sum(contributions, axis=-1, keepdims=True) + self.bias

    @keras.saving.register_keras_serializable(package="fbmarket")
    class MaskedLogits(keras.layers.Layer):
        """[scores (batch, list, 1), mask (batch, list)] -> logits (batch, list); padding -> -1e9."""

        def call(self, inputs):
            scores, mask = inputs
            return ops.squeeze(scores, -1) + (mask - 1.0) * 1e9

    return AdditiveFactors, AdditiveScore, MaskedLogits


class LearnedRanker:
    """Keras generalised additive model over FEATURES; see the module docstring."""

    name = "learned"

    def __init__(self, model: Any, meta: dict[str, Any] | None = None) -> None:
        self.model = model
        self.meta = meta or {}
        self._factors = model.get_layer("factors")
        self._score = model.get_layer("score")
        self._weights: tuple | None = None  # numpy copies for scoring; reset by `fit`

    @classmethod
    def build(cls, settings: RankSettings | None = None, seed: int = 0) -> LearnedRanker:
        settings = settings or RankSettings()
        keras = _keras()
        AdditiveFactors, AdditiveScore, _ = _layers()
        keras.utils.set_random_seed(seed)
        inputs = keras.Input(shape=(len(FEATURES),), name="factors_in")
        contributions = AdditiveFactors(settings.hidden_units, name="factors")(inputs)
        logit = AdditiveScore(name="score")(contributions)
        model = keras.Model(inputs, logit, name="additive_ranker")
        model.compile(
            optimizer=keras.optimizers.Adam(settings.learning_rate),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        meta = {
            "kind": "learned",
            "features": list(FEATURES),
            "hidden_units": settings.hidden_units,
            "learning_rate": settings.learning_rate,
            "seed": seed,
        }
        return cls(model, meta)

    def fit(
        self,
        features: pd.DataFrame,
        labels: np.ndarray,
        sample_weight: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        loss: str = "listwise",
        epochs: int = 10,
        batch_size: int = 256,
        validation_fraction: float = 0.1,
        max_list: int = 64,
        seed: int = 0,
        verbose: int = 0,
    ) -> dict[str, list[float]]:
        """Train on labelled candidates; returns the Keras history (loss, val_loss per epoch).

        "listwise" (needs `groups`, one id per session): softmax cross-entropy over each
        session's candidates, the target being its positives in proportion to their weight.
        Only differences *within* a session matter, so anything constant across a session
        (its time, hence every listing's freshness drifting together) cannot pose as a
        signal. "pointwise": weighted logistic loss per candidate. `batch_size` counts rows
        (pointwise) or sessions (listwise); a held-out `validation_fraction` of rows or
        sessions gives val_loss."""
        keras = _keras()
        x = _matrix(features, FEATURES).astype("float32")
        y = np.asarray(labels, dtype="float32").ravel()
        w = (
            np.ones(len(y), dtype="float32")
            if sample_weight is None
            else np.asarray(sample_weight, "float32")
        )
        if not len(x) == len(y) == len(w):
            raise ValueError(f"{len(x)} feature rows, {len(y)} labels and {len(w)} weights: they must match")
        if len(x) == 0:
            raise ValueError("no training examples")
        rng = np.random.default_rng(seed)
        keras.utils.set_random_seed(seed)
        if loss == "pointwise":
            inputs, targets, weights, model = x, y.reshape(-1, 1), w, self.model
        elif loss == "listwise":
            if groups is None or len(groups) != len(y):
                raise ValueError("listwise training needs one group (session) id per row")
            (inputs, targets), weights = _padded_lists(x, y * w, np.asarray(groups), max_list, rng), None
            model = self._listwise_model(inputs[0].shape[1])
        else:
            raise ValueError(f"loss must be 'pointwise' or 'listwise', got {loss!r}")
        n = len(targets)
        order = rng.permutation(n)
        n_val = int(round(validation_fraction * n)) if n >= 10 else 0
        val, train = order[:n_val], order[n_val:]

        def take(data, rows):
            if data is None:
                return None
            return [d[rows] for d in data] if isinstance(data, list) else data[rows]

        history = model.fit(
            take(inputs, train),
            targets[train],
            sample_weight=take(weights, train),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            validation_data=(take(inputs, val), targets[val], take(weights, val)) if n_val else None,
            verbose=verbose,
        )
        self._weights = None
        result = {k: [float(v) for v in values] for k, values in history.history.items()}
        self.meta.update({"history": result, "examples": int(len(x)), "loss": loss})
        return result

    def _listwise_model(self, list_size: int) -> Any:
        """A training head sharing this model's layers: (lists of candidates, mask) -> logits."""
        keras = _keras()
        _, _, MaskedLogits = _layers()
        candidates = keras.Input(shape=(list_size, len(FEATURES)), name="lists")
        mask = keras.Input(shape=(list_size,), name="mask")
        logits = MaskedLogits(name="masked")([self._score(self._factors(candidates)), mask])
        model = keras.Model([candidates, mask], logits, name="listwise_trainer")
        model.compile(
            optimizer=keras.optimizers.Adam(float(self.meta.get("learning_rate", 1e-2))),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        )
        return model

    def _numpy_weights(self) -> tuple[np.ndarray, ...]:
        if self._weights is None:
            layer = self._factors
            self._weights = tuple(
                np.asarray(w, dtype=float) for w in (layer.w_in, layer.b_in, layer.w_out, layer.linear)
            ) + (float(np.asarray(self._score.bias)),)
        return self._weights

    def score(self, features: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
        """The Keras model's arithmetic in numpy (float64): no graph call per request, and the
        contributions add up exactly; equal to `self.model(x)` up to float32 rounding."""
        x = _matrix(features, FEATURES)
        w_in, b_in, w_out, linear, bias = self._numpy_weights()
        hidden = np.tanh(x[:, :, None] * w_in + b_in) - np.tanh(b_in)
        contributions = (hidden * w_out).sum(axis=-1) + x * linear
        return _scored(contributions, bias, features.index)

    def shape(self, factor: str, values: np.ndarray) -> np.ndarray:
        """The learned contribution curve of one factor at `values` (others neutral): for plots and docs."""
        grid = pd.DataFrame(0.0, index=range(len(values)), columns=list(FEATURES))
        grid[factor] = np.asarray(values, dtype=float)
        return self.score(grid)[1][factor].to_numpy()

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_path = directory / LEARNED_MODEL_FILE
        tmp = directory / ("tmp-" + LEARNED_MODEL_FILE)
        self.model.save(tmp)
        tmp.replace(model_path)
        (directory / LEARNED_META_FILE).write_text(dumps_json(self.meta, indent=2))
        return model_path

    @classmethod
    def load(cls, directory: Path) -> LearnedRanker:
        directory = Path(directory)
        meta = json.loads((directory / LEARNED_META_FILE).read_text())
        if meta.get("features") != list(FEATURES):
            raise ValueError(
                f"{directory / LEARNED_META_FILE} was trained on factors {meta.get('features')}, "
                f"this version ranks with {list(FEATURES)}: retrain the ranker"
            )
        _layers()  # registers the custom layers for deserialisation
        model = _keras().models.load_model(directory / LEARNED_MODEL_FILE, compile=False)
        return cls(model, meta)

    @staticmethod
    def exists(directory: Path) -> bool:
        directory = Path(directory)
        return (directory / LEARNED_MODEL_FILE).is_file() and (directory / LEARNED_META_FILE).is_file()


def choose_ranker(
    has_history: bool,
    learned: LearnedRanker | None,
    rule: RuleRanker,
    settings: RankSettings | None = None,
) -> Ranker:
    """The fallback policy: the rule ranker when no learned ranker exists (no interaction data
    yet, or too little to train on); otherwise the learned one, except for buyers without
    history when `cold_start_ranker == "rule"`."""
    settings = settings or RankSettings()
    if learned is not None and (has_history or settings.cold_start_ranker == "learned"):
        return learned
    return rule
