"""Prices a seller states in the words: "£90", "RRP £450", "paid 200 pounds", "£1.2k".

Why: on the dev data 30% of priced listings name at least one amount in their title or
description, and for two thirds of those one of the amounts is within 10% of the listed
price (a seller repeats the asking price, "£50 ono", or quotes what it cost new). The
TF-IDF ridge sees "£90" only as a character n-gram, with no notion of its size, and the
trees cannot read text at all; these columns give the boosters the amounts as numbers.

An amount is a *reference* when words like "RRP", "paid", "cost", "was", "worth" or
"retail" come just before it: those quote a new or original price, usually above the
asking one. Everything else is an *asking* candidate. The boosters read both, plus the
first, last, smallest and largest amount and how many there are, and learn how far to
trust each (a shop listing a price list names dozens).

Amounts are read as a seller writes them in Britain: "£1,250" is 1250, "£12.50" 12.5,
"£1.2k" 1200, "£ 100", "GBP 40", "40 pounds", "40 quid". Periodic prices ("£40 pcm") are
still amounts: the rent words are rare in listings that pass cleaning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fbmarket.config import DataSettings

STATED_COLUMNS = (
    "stated_count",
    "stated_first_log",
    "stated_last_log",
    "stated_min_log",
    "stated_max_log",
    "stated_asking_log",
    "stated_reference_log",
    "stated_in_title_log",
)
# above the cleaning's own price ceiling a "£" number is a typo or a model code, not a price
MAX_AMOUNT = DataSettings.max_price
# The amount a listing's price is most likely stated as, in order of trust: on the dev
# train + val listings naming an amount, the title's amount is the price (within 10%) for
# 80%, the smallest non-reference amount for 64%, the smallest amount of all for 57%.
ANCHOR_COLUMNS = ("stated_in_title_log", "stated_asking_log", "stated_min_log")
# The estimates an anchored booster compares the stated amount with (those the model has):
# a tree splits on "the amount is 1.5 above what the words and the comparables say" in one
# step, where from the two columns apart it needs a staircase of splits.
REFERENCE_ESTIMATES = ("text_price_log", "knn_text_1_median", "knn_text_5_median", "knn_embedding_5_median")

_NUMBER = r"(?P<number{0}>\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.(?P<pence{0}>\d{{1,2}})(?!\d))?"
_AMOUNT = re.compile(
    rf"(?:£|\bgbp)\s?{_NUMBER.format('')}\s?(?P<k>k\b)?"  # £40, £ 40, GBP40, £1,250.00, £1.2k
    rf"|\b{_NUMBER.format('_word')}\s?(?:pounds?|quid)\b",  # 40 pounds, 40 quid
    re.IGNORECASE,
)
_REFERENCE = re.compile(
    r"\b(rrp|r\.r\.p|retails?|retailing|paid|cost|costs|costing|bought|was|were|worth|valued?|"
    r"original(?:ly)?|(?<!brand )new|sells?|selling|priced|elsewhere|shops?|online)\b[^£\d,.;!?]{0,10}$",
    re.IGNORECASE,
)
_CONTEXT = 30  # characters before an amount searched for reference words (in its own clause)


def stated_amounts(text: str) -> list[tuple[float, bool]]:
    """Every amount in `text`, in order, as (pounds, is_reference). Amounts of £0 or above
    MAX_AMOUNT are skipped."""
    found: list[tuple[float, bool]] = []
    for match in _AMOUNT.finditer(text):
        groups = {key.removesuffix("_word"): value for key, value in match.groupdict().items() if value}
        whole = float(groups["number"].replace(",", ""))
        pounds = whole + (float(f"0.{groups['pence']}") if "pence" in groups else 0.0)
        if "k" in groups:
            pounds *= 1000.0
        if not 0 < pounds <= MAX_AMOUNT:
            continue
        before = text[max(0, match.start() - _CONTEXT) : match.start()]
        found.append((pounds, bool(_REFERENCE.search(before))))
    return found


def stated_price_columns(titles: Sequence[str], descriptions: Sequence[str]) -> dict[str, np.ndarray]:
    """The STATED_COLUMNS of n listings: (n,) arrays, log1p(pounds) or NaN where the text names
    no such amount (LightGBM routes missing values); `stated_count` is a count (0 when none)."""
    n = len(titles)
    out = {name: np.full(n, np.nan) for name in STATED_COLUMNS}
    out["stated_count"] = np.zeros(n)
    for i, (title, description) in enumerate(zip(titles, descriptions, strict=True)):
        in_title = stated_amounts(title or "")
        amounts = in_title + stated_amounts(description or "")
        if not amounts:
            continue
        values = np.array([pounds for pounds, _ in amounts])
        asking = [pounds for pounds, reference in amounts if not reference]
        reference = [pounds for pounds, is_reference in amounts if is_reference]
        out["stated_count"][i] = len(amounts)
        out["stated_first_log"][i] = np.log1p(values[0])
        out["stated_last_log"][i] = np.log1p(values[-1])
        out["stated_min_log"][i] = np.log1p(values.min())
        out["stated_max_log"][i] = np.log1p(values.max())
        if asking:
            out["stated_asking_log"][i] = np.log1p(min(asking))
        if reference:
            out["stated_reference_log"][i] = np.log1p(max(reference))
        if in_title:
            out["stated_in_title_log"][i] = np.log1p(in_title[0][0])
    return out


def stated_anchor(features: pd.DataFrame) -> np.ndarray:
    """(n,) log1p(pounds) of the amount each listing most likely states as its price
    (the first of ANCHOR_COLUMNS present), NaN where the words name no amount."""
    anchor = np.full(len(features), np.nan)
    for column in ANCHOR_COLUMNS:
        values = features[column].to_numpy(dtype=float)
        anchor = np.where(np.isnan(anchor), values, anchor)
    return anchor


def anchor_differences(features: pd.DataFrame, anchor: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(n, m) the anchor minus each of the m REFERENCE_ESTIMATES in `features` (log1p
    pounds; NaN where either is missing), and the columns' names."""
    present = [column for column in REFERENCE_ESTIMATES if column in features]
    values = (
        np.stack([anchor - features[c].to_numpy(dtype=float) for c in present], axis=1) if present else None
    )
    names = [f"stated_minus_{column}" for column in present]
    return (values if values is not None else np.zeros((len(features), 0))), names
