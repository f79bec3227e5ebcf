"""How good a price suggestion is, in the figures a seller and the issue care about.

On listings with a known price > 0 (what the quantile models predict): median absolute
error and MAE in pounds, RMSE and R² on log1p(price), and the share of true prices inside
the range with its mean width. Over every priced listing, £0 included, the suggestion
is £0 when P(free) >= the threshold, else the median: that is the figure comparable with
the ridge baseline (fbmarket/baselines.py), which scored every test listing. The free
class gets precision and recall at the threshold: the price model's own
(`PriceModel.free_threshold`, chosen on the validation split); FREE_THRESHOLD (0.5) is only
the default of models saved before that choice existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from fbmarket.price.conformal import coverage_and_width

FREE_THRESHOLD = 0.5


def regression_metrics(
    price: np.ndarray, median: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None
) -> dict[str, Any]:
    """Errors of `median` against `price` (pounds), and the range's coverage when given."""
    price, median = np.asarray(price, dtype=float), np.asarray(median, dtype=float)
    n = len(price)
    if n == 0:
        return {"n": 0}
    error = np.abs(price - median)
    log_truth, log_pred = np.log1p(price), np.log1p(np.clip(median, 0, None))
    residual = float(np.sum((log_truth - log_pred) ** 2))
    total = float(np.sum((log_truth - log_truth.mean()) ** 2))
    out: dict[str, Any] = {
        "n": int(n),
        "median_abs_error_gbp": float(np.median(error)),
        "mae_gbp": float(np.mean(error)),
        "rmse_log": float(np.sqrt(residual / n)),
        "r2_log": float(1 - residual / total) if total > 0 else float("nan"),
    }
    if low is not None and high is not None:
        coverage, width = coverage_and_width(price, low, high)
        out["coverage"] = coverage
        out["mean_width_gbp"] = width
        out["median_width_gbp"] = float(np.median(np.asarray(high) - np.asarray(low)))
    return out


def free_metrics(
    price: np.ndarray, free_probability: np.ndarray, threshold: float = FREE_THRESHOLD
) -> dict[str, Any]:
    """Precision and recall of 'free' (£0) at `threshold`."""
    is_free = np.asarray(price, dtype=float) <= 0
    said_free = np.asarray(free_probability, dtype=float) >= threshold
    hits = int((is_free & said_free).sum())
    both = 0 < is_free.sum() < len(is_free)
    return {
        "threshold": threshold,
        "free_listings": int(is_free.sum()),
        "predicted_free": int(said_free.sum()),
        "precision": hits / int(said_free.sum()) if said_free.any() else None,
        "recall": hits / int(is_free.sum()) if is_free.any() else None,
        # threshold-free: how well P(free) ranks free listings above the rest (base rate = no skill)
        "average_precision": float(average_precision_score(is_free, free_probability)) if both else None,
        "roc_auc": float(roc_auc_score(is_free, free_probability)) if both else None,
        "base_rate": float(is_free.mean()) if len(is_free) else None,
    }


def suggestion_metrics(
    price: np.ndarray,
    median: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    free_probability: np.ndarray,
    threshold: float = FREE_THRESHOLD,
) -> dict[str, Any]:
    """Every figure for listings with a known price: `priced` (> 0), `all` (£0 included), `free`."""
    price = np.asarray(price, dtype=float)
    known = np.isfinite(price)
    price, median, low, high, free_probability = (
        np.asarray(a, dtype=float)[known] for a in (price, median, low, high, free_probability)
    )
    positive = price > 0
    said_free = free_probability >= threshold
    point = np.where(said_free, 0.0, median)
    return {
        "priced": regression_metrics(price[positive], median[positive], low[positive], high[positive]),
        "all": regression_metrics(
            price, point, np.where(said_free, 0.0, low), np.where(said_free, 0.0, high)
        ),
        "free": free_metrics(price, free_probability, threshold),
        "excluded_missing_price": int((~known).sum()) if len(known) else 0,
    }
