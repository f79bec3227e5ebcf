"""Conformalized quantile regression (CQR): calibrating a quantile range on held-out listings.

Romano, Patterson & Candes, "Conformalized Quantile Regression", NeurIPS 2019
(arXiv:1905.03222), Algorithm 1. Quantile boosters fit on the training split give a
range [q_lo(x), q_hi(x)] that is usually too narrow (or too wide) out of sample:
pinball loss on a finite sample does not pin the tails down. On a calibration set the
nonconformity score of each listing is

    E_i = max(q_lo(x_i) - y_i, y_i - q_hi(x_i))

(negative when y_i is inside, by how much), and the calibrated range is
[q_lo(x) - Q, q_hi(x) + Q] where Q is the ceil((n + 1)(1 - a))-th smallest of the E_i.
Under exchangeability of calibration and new listings this covers the true price with
probability >= 1 - a (Theorem 1 there); Q < 0 narrows an over-wide range.
All of this happens on log1p(price), so the offset is a multiplicative widening in pounds.
"""

from __future__ import annotations

import math

import numpy as np


def nonconformity(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """CQR scores E_i = max(low - y, y - high): how far outside the range each truth lies."""
    y, low, high = (np.asarray(a, dtype=float) for a in (y, low, high))
    return np.maximum(low - y, y - high)


def conformal_offset(y: np.ndarray, low: np.ndarray, high: np.ndarray, coverage: float) -> float:
    """The CQR offset Q for a range meant to cover `coverage` (e.g. 0.8) of new listings.

    Q is the k-th smallest calibration score, k = ceil((n + 1) * coverage) (Romano et al.
    2019, eq. 7); with too few listings for that (k > n) the largest score is used, which
    makes the guarantee approximate.
    """
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be within (0, 1), got {coverage}")
    scores = nonconformity(y, low, high)
    scores = np.sort(scores[np.isfinite(scores)])
    n = len(scores)
    if n == 0:
        raise ValueError("no calibration listings: the conformal offset needs at least one")
    k = min(n, math.ceil((n + 1) * coverage))
    return float(scores[k - 1])


def coverage_and_width(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """Share of truths inside [low, high], and the mean width (in the units given)."""
    y, low, high = (np.asarray(a, dtype=float) for a in (y, low, high))
    if len(y) == 0:
        return float("nan"), float("nan")
    inside = (y >= low) & (y <= high)
    return float(inside.mean()), float(np.mean(high - low))
