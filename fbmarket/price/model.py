"""The price model: three LightGBM quantile boosters on log1p(price) and a P(free) classifier.

Why this shape:
- Quantile (pinball-loss) gradient boosting gives the low / median / high price of a
  listing directly (LightGBM `objective="quantile"`, https://lightgbm.readthedocs.io/en/
  stable/Parameters.html#objective); on log1p(price) because prices span £0.50 to £20,000
  and a seller's error is relative (£10 off a £20 lamp matters, off a £2,000 sofa not).
- A text-only ridge estimate of the price (fbmarket/price/text_price.py) is one feature.
- The 80% range is then calibrated on the validation split (fbmarket/price/conformal.py,
  CQR), stored as one offset in log space.
- The prices of the nearest training listings ("comparables", fbmarket/price/knn.py, by
  fusion embedding and TF-IDF text) are features too, leave-one-out on train.
- A listing whose words state an amount ("£90 ono", "RRP £450"; fbmarket/price/stated.py)
  that lies inside the main boosters' own (uncalibrated) range is priced by a second set
  of three quantile boosters, fit only on listings that state an amount, on how far
  log1p(price) lies from it (the amount is their `init_score`; they also read the amount
  minus the text and comparables' estimates). One set of trees cannot echo "£90" back as
  £90: it learns a piecewise-constant function of the amount's column, off by a few
  pounds. An amount outside the range is more often an RRP, a bundle's or a shop's price
  list, and keeps the main boosters' answer (benchmarks/results/settings.md#price).
- Listings at £0 ("free to collector") are not the bottom of the price scale but another
  kind of listing, so a binary booster gives P(free) and the quantile models see only
  price > 0 (on the dev data 72 of 5,297 listings are free). A listing is called free
  when P(free) >= `free_threshold`, chosen on the validation split (best F1 of the free
  class, never under FREE_THRESHOLD_FLOOR); the suggestion is then £0.

Saved in the bundle as LightGBM's own text format (`Booster.save_model`) plus a JSON
document (feature names, category vocabularies, conformal offset, free threshold), the
text ridge's and the comparables' catalogue's npz files: never pickle. Every
file is written atomically (temporary file, fsync, rename), the JSON last, so a bundle
holds either a complete old model or a complete new one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from fbmarket.config import PriceSettings
from fbmarket.errors import ModelUnavailableError
from fbmarket.files import atomic_write_json, commit, discard, stage
from fbmarket.price.conformal import conformal_offset
from fbmarket.price.features import CATEGORICAL, PriceFeatureSpec
from fbmarket.price.knn import KNN_FILE, NeighbourPrices, neighbour_vectors
from fbmarket.price.metrics import FREE_THRESHOLD
from fbmarket.price.stated import anchor_differences, stated_anchor
from fbmarket.price.text_price import CONFIG_FILE as TEXT_CONFIG_FILE
from fbmarket.price.text_price import WEIGHTS_FILE as TEXT_WEIGHTS_FILE
from fbmarket.price.text_price import TextPriceRidge
from fbmarket.text.tfidf import product_text

log = logging.getLogger(__name__)

PRICE_FILE = "price.json"  # the metadata; its presence means "this bundle has a price model"
QUANTILE_FILES = ("price_low.txt", "price_median.txt", "price_high.txt")
STATED_FILES = ("price_low_stated.txt", "price_median_stated.txt", "price_high_stated.txt")
FREE_FILE = "price_free.txt"
MODEL_NAME = "lightgbm-quantile"
FORMAT = 1
FREE_THRESHOLD_FLOOR = 0.05  # a lower threshold would call free on noise (the base rate is ~1.4%)


class PriceModelError(ModelUnavailableError):
    """A bundle without a (usable) price model; the message says how to get one."""

    reason = "no_price_model"


@dataclass
class PricePrediction:
    """Per listing, in pounds: the median and the calibrated range, and P(free)."""

    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    free_probability: np.ndarray
    free: np.ndarray | None = None  # P(free) >= the model's threshold: suggest £0


@dataclass
class PriceModel:
    spec: PriceFeatureSpec
    quantiles: list[lgb.Booster]  # low, median, high on log1p(price)
    alphas: tuple[float, float, float]
    free: lgb.Booster | None  # None when training held no free listing (or only free ones)
    free_rate: float  # share of free listings in training: P(free) without a classifier
    offset: float = 0.0  # CQR offset on log1p(price); 0 when not calibrated
    calibration: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    text_price: TextPriceRidge | None = None  # the stacked text-only estimate (spec.text_price)
    neighbours: NeighbourPrices | None = None  # the comparables' catalogue (spec.knn_sources)
    free_threshold: float = FREE_THRESHOLD  # P(free) at which a listing is called free
    free_selection: dict[str, Any] = field(default_factory=dict)
    # low, median, high on log1p(price) - the stated amount (stated.stated_anchor), for the
    # listings that state one; None when off or too few training listings state an amount
    stated_quantiles: list[lgb.Booster] | None = None

    def features(
        self, products: pd.DataFrame, embeddings: np.ndarray | None, photo_counts: Sequence[int]
    ) -> pd.DataFrame:
        """The feature table of clean listings for this model (the text estimate and the
        comparables' prices included)."""
        estimate, neighbours = None, None
        texts = product_text(products) if (self.spec.text_price or "text" in self.spec.knn_sources) else None
        if self.spec.text_price:
            if self.text_price is None:
                raise PriceModelError("the price model reads a text price estimate but has no text model")
            estimate = self.text_price.predict(texts)
        if self.spec.knn_sources:
            if self.neighbours is None:
                raise PriceModelError("the price model reads comparables' prices but has no catalogue")
            neighbours = self.neighbours.features(
                neighbour_vectors(self.spec.knn_sources, embeddings, texts, self.text_price)
            )
        return self.spec.frame(
            products, embeddings if self.spec.embedding_dim else None, photo_counts, estimate, neighbours
        )

    @property
    def interval(self) -> float:
        return round(self.alphas[2] - self.alphas[0], 6)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        features: pd.DataFrame,
        price: np.ndarray,
        spec: PriceFeatureSpec,
        settings: PriceSettings,
        seed: int = 42,
    ) -> PriceModel:
        """Fit on training listings. Rows whose price is NaN are excluded and counted."""
        price = np.asarray(price, dtype=float)
        known = np.isfinite(price)
        x = _matrix(features, spec)
        is_free = known & (price <= 0)
        priced = known & (price > 0)
        if priced.sum() < 2:
            raise ValueError(
                f"the price model needs at least 2 priced training listings, got {int(priced.sum())}"
            )
        y = np.log1p(price[priced])
        boosters = [
            _train(x[priced], y, spec, _params(settings, seed, "quantile", alpha), settings.num_boost_round)
            for alpha in settings.alphas
        ]
        stated_quantiles = None
        anchor = stated_anchor(features) if spec.stated_prices else np.full(len(price), np.nan)
        stated = priced & np.isfinite(anchor)
        if settings.stated_quantiles and stated.sum() >= settings.min_stated_listings:
            stated_x, stated_columns = _stated_matrix(features, spec, anchor)
            stated_quantiles = [
                _train(
                    stated_x[stated],
                    np.log1p(price[stated]),
                    spec,
                    _params(settings, seed, "quantile", alpha),
                    settings.num_boost_round,
                    stated_columns,
                    init_score=anchor[stated],
                )
                for alpha in settings.alphas
            ]
        free_rate = float(is_free[known].mean()) if known.any() else 0.0
        free = None
        if 0 < is_free[known].sum() < known.sum():
            free = _train(
                _matrix(features, spec, spec.free_columns)[known],
                is_free[known].astype(float),
                spec,
                _params(settings, seed, "binary"),
                settings.free_rounds,
                spec.free_columns,
            )
        training = {
            "listings": int(len(price)),
            "excluded_missing_price": int((~known).sum()),
            "priced": int(priced.sum()),
            "free": int(is_free.sum()),
            "priced_stating_an_amount": int(stated.sum()),
            "stated_quantiles": stated_quantiles is not None,
        }
        return cls(
            spec,
            boosters,
            tuple(settings.alphas),
            free,
            free_rate,
            training=training,
            stated_quantiles=stated_quantiles,
        )

    def calibrate(self, features: pd.DataFrame, price: np.ndarray) -> dict[str, Any]:
        """Set the CQR offset from held-out priced listings (validation split); returns the record."""
        price = np.asarray(price, dtype=float)
        priced = np.isfinite(price) & (price > 0)
        if not priced.any():
            self.offset = 0.0
            self.calibration = {
                "calibrated": False,
                "note": "no priced validation listing: range not calibrated",
            }
            return self.calibration
        low, _, high = self.predict_log(features.iloc[np.flatnonzero(priced)])
        y = np.log1p(price[priced])
        self.offset = conformal_offset(y, low, high, self.interval)
        raw_inside = float(np.mean((y >= low) & (y <= high)))
        self.calibration = {
            "calibrated": True,
            "method": "conformalized quantile regression (Romano et al. 2019) on log1p(price)",
            "split": "val",
            "listings": int(priced.sum()),
            "offset_log": self.offset,
            "uncalibrated_val_coverage": raw_inside,
        }
        return self.calibration

    def choose_free_threshold(self, features: pd.DataFrame, price: np.ndarray) -> dict[str, Any]:
        """Set `free_threshold` from held-out listings (validation split): the P(free) that
        maximises the free class's F1, never under FREE_THRESHOLD_FLOOR; returns the record."""
        price = np.asarray(price, dtype=float)
        known = np.isfinite(price)
        is_free = price[known] <= 0
        if self.free is None or not is_free.any():
            self.free_threshold = FREE_THRESHOLD
            self.free_selection = {"chosen": False, "note": "no free validation listing (or no classifier)"}
            return self.free_selection
        probability = self.free_probability(features.iloc[np.flatnonzero(known)])
        best = (-1.0, FREE_THRESHOLD, 0.0, 0.0)
        for threshold in sorted({float(p) for p in probability if p >= FREE_THRESHOLD_FLOOR}):
            said = probability >= threshold
            hits = float((said & is_free).sum())
            precision, recall = hits / float(said.sum()), hits / float(is_free.sum())
            f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
            if f1 > best[0]:
                best = (f1, threshold, precision, recall)
        f1, threshold, precision, recall = best
        if f1 <= 0:  # no threshold above the floor finds a free listing
            threshold = FREE_THRESHOLD
        self.free_threshold = float(threshold)
        self.free_selection = {
            "chosen": bool(f1 > 0),
            "method": f"best F1 of the free class on val, threshold >= {FREE_THRESHOLD_FLOOR}",
            "split": "val",
            "free_listings": int(is_free.sum()),
            "listings": int(known.sum()),
            "threshold": self.free_threshold,
            "val_f1": float(f1),
            "val_precision": float(precision),
            "val_recall": float(recall),
        }
        return self.free_selection

    # ------------------------------------------------------------------ predicting
    def predict_log(self, features: pd.DataFrame, calibrated: bool = True) -> tuple[np.ndarray, ...]:
        """(low, median, high) on log1p(price), ordered low <= median <= high."""
        x = _matrix(features, self.spec)
        low, median, high = (booster.predict(x) for booster in self.quantiles)
        if self.stated_quantiles is not None:
            anchor = stated_anchor(features)
            stated = np.flatnonzero(np.isfinite(anchor) & (anchor >= low) & (anchor <= high))
            if len(stated):
                stated_x, _ = _stated_matrix(features.iloc[stated], self.spec, anchor[stated])
                for values, booster in zip((low, median, high), self.stated_quantiles, strict=True):
                    # a booster's predict() leaves out the init_score it was fit on
                    values[stated] = booster.predict(stated_x) + anchor[stated]
        if calibrated:
            low, high = low - self.offset, high + self.offset
        # quantile boosters are fit separately and may cross; sorting restores the order
        # (Chernozhukov, Fernandez-Val & Galichon 2010, "Quantile and probability curves
        # without crossing": rearrangement never increases the loss)
        stacked = np.sort(np.stack([low, median, high]), axis=0)
        return stacked[0], stacked[1], stacked[2]

    def predict(self, features: pd.DataFrame, calibrated: bool = True) -> PricePrediction:
        """Prices in pounds (the regression's, for free listings too) and P(free); `free` marks
        the listings called free (P(free) >= free_threshold), whose suggestion is £0."""
        low, median, high = (np.clip(np.expm1(v), 0.0, None) for v in self.predict_log(features, calibrated))
        probability = self.free_probability(features)
        free = probability >= self.free_threshold
        return PricePrediction(median, low, high, probability, free)

    def free_probability(self, features: pd.DataFrame) -> np.ndarray:
        if self.free is None:
            return np.full(len(features), self.free_rate)
        columns = self.free.feature_name()
        return np.asarray(self.free.predict(_matrix(features, self.spec, columns)), dtype=float)

    # ------------------------------------------------------------------ files
    def save(self, model_dir: Path) -> list[str]:
        """Write the boosters (LightGBM text) and price.json atomically; returns the file names."""
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        boosters = dict(zip(QUANTILE_FILES, self.quantiles, strict=True))
        if self.stated_quantiles is not None:
            boosters.update(zip(STATED_FILES, self.stated_quantiles, strict=True))
        if self.free is not None:
            boosters[FREE_FILE] = self.free
        staged: list[tuple[Path, Path]] = []
        try:
            for name, booster in boosters.items():
                target = model_dir / name
                staged.append((stage(target, lambda tmp, b=booster: b.save_model(str(tmp))), target))
        except BaseException:
            discard(*(temp for temp, _ in staged))
            raise
        for temp, target in staged:
            commit(temp, target)
        if self.free is None:
            (model_dir / FREE_FILE).unlink(missing_ok=True)  # never a stale classifier from an older run
        if self.stated_quantiles is None:
            for name in STATED_FILES:
                (model_dir / name).unlink(missing_ok=True)
        text_files = self.text_price.save(model_dir) if self.text_price is not None else []
        if self.text_price is None:
            for name in (TEXT_CONFIG_FILE, TEXT_WEIGHTS_FILE):
                (model_dir / name).unlink(missing_ok=True)
        knn_files = self.neighbours.save(model_dir) if self.neighbours is not None else []
        if self.neighbours is None:
            (model_dir / KNN_FILE).unlink(missing_ok=True)
        text_files = [*text_files, *knn_files]
        atomic_write_json(model_dir / PRICE_FILE, self.to_json())
        return [*boosters, *text_files, PRICE_FILE]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": MODEL_NAME,
            "target": "log1p(price in GBP); quantile regression on listings priced > 0",
            "alphas": list(self.alphas),
            "interval": self.interval,
            "files": {
                "low": QUANTILE_FILES[0],
                "median": QUANTILE_FILES[1],
                "high": QUANTILE_FILES[2],
                "free": FREE_FILE if self.free is not None else None,
                "stated": list(STATED_FILES) if self.stated_quantiles is not None else None,
                "text_price": [TEXT_CONFIG_FILE, TEXT_WEIGHTS_FILE] if self.text_price is not None else None,
                "neighbours": KNN_FILE if self.neighbours is not None else None,
            },
            "features": self.spec.to_json(),
            "free_rate": self.free_rate,
            "free_threshold": self.free_threshold,
            "free_selection": self.free_selection,
            "conformal_offset_log": self.offset,
            "calibration": self.calibration,
            "training": self.training,
        }

    @classmethod
    def load(cls, model_dir: Path) -> PriceModel:
        """Read a saved model; PriceModelError naming the file when it is missing or unusable."""
        model_dir = Path(model_dir)
        path = model_dir / PRICE_FILE
        if not path.is_file():
            raise PriceModelError(
                f"{path} is missing: this bundle has no price model; retrain with fbmarket train"
            )
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            files = meta["files"]

            def booster(name: str) -> lgb.Booster:
                file = model_dir / name
                if not file.is_file():
                    raise PriceModelError(
                        f"{file} is missing (named by {PRICE_FILE}); retrain with fbmarket train"
                    )
                return lgb.Booster(model_file=str(file))

            quantiles = [booster(files[key]) for key in ("low", "median", "high")]
            free = booster(files["free"]) if files.get("free") else None
            stated_quantiles = [booster(name) for name in files["stated"]] if files.get("stated") else None
            text_price = None
            if files.get("text_price"):
                for name in files["text_price"]:
                    if not (model_dir / name).is_file():
                        raise PriceModelError(
                            f"{model_dir / name} is missing (named by {PRICE_FILE}); retrain with fbmarket train"
                        )
                text_price = TextPriceRidge.load(model_dir)
            neighbours = None
            if files.get("neighbours"):
                if not (model_dir / files["neighbours"]).is_file():
                    raise PriceModelError(
                        f"{model_dir / files['neighbours']} is missing (named by {PRICE_FILE}); "
                        "retrain with fbmarket train"
                    )
                neighbours = NeighbourPrices.load(model_dir)
            return cls(
                PriceFeatureSpec.from_json(meta["features"]),
                quantiles,
                tuple(float(a) for a in meta["alphas"]),  # type: ignore[arg-type]
                free,
                float(meta["free_rate"]),
                float(meta["conformal_offset_log"]),
                dict(meta.get("calibration") or {}),
                dict(meta.get("training") or {}),
                text_price,
                neighbours,
                float(meta.get("free_threshold", FREE_THRESHOLD)),
                dict(meta.get("free_selection") or {}),
                stated_quantiles,
            )
        except PriceModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as error:
            raise PriceModelError(
                f"the price model in {model_dir} cannot be read ({error}); retrain with fbmarket train"
            ) from error


def _params(settings: PriceSettings, seed: int, objective: str, alpha: float | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf,
        "feature_fraction": settings.feature_fraction,
        "lambda_l2": settings.lambda_l2,
        "num_threads": settings.threads,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        # categories with few listings still get their own split (the leaf vocabulary is ~400)
        "min_data_per_group": 10,
        "cat_smooth": 10.0,
    }
    if alpha is not None:
        params["alpha"] = alpha
    return params


def _train(
    x: np.ndarray,
    y: np.ndarray,
    spec: PriceFeatureSpec,
    params: dict[str, Any],
    rounds: int,
    columns: list[str] | None = None,
    init_score: np.ndarray | None = None,
) -> lgb.Booster:
    columns = list(spec.columns if columns is None else columns)
    data = lgb.Dataset(
        x,
        label=y,
        init_score=init_score,
        feature_name=columns,
        categorical_feature=[c for c in CATEGORICAL if c in columns],
        free_raw_data=True,
        params={"verbosity": -1},  # LightGBM prints dataset warnings to stdout, where --json goes
    )
    return lgb.train(params, data, num_boost_round=rounds)


def _matrix(features: pd.DataFrame, spec: PriceFeatureSpec, columns: list[str] | None = None) -> np.ndarray:
    columns = list(spec.columns if columns is None else columns)
    missing = [c for c in columns if c not in features]
    if missing:
        raise ValueError(f"price features are missing columns: {missing[:5]}")
    return features[columns].to_numpy(dtype=np.float64)


def _stated_matrix(
    features: pd.DataFrame, spec: PriceFeatureSpec, anchor: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """The anchored boosters' input: the main columns, then the anchor minus each estimate."""
    differences, names = anchor_differences(features, anchor)
    return np.hstack([_matrix(features, spec), differences]), [*spec.columns, *names]


def round_gbp(value: float) -> float:
    """A price as a seller would write it: 50p steps under £10, whole pounds under £100,
    £5 steps under £1,000, £10 steps above. Monotone, so low <= median <= high survives it."""
    value = max(0.0, float(value))
    if value < 10:
        return round(value * 2) / 2
    if value < 100:
        return float(round(value))
    if value < 1000:
        return float(round(value / 5) * 5)
    return float(round(value / 10) * 10)
