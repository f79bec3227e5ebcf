"""Product-level, root-stratified train/val/test split, persisted so every model and report agrees.

Splitting by product (not by photo) is what keeps a listing's text and photos out of the
test set while it trains; the saved JSON is the single source of truth afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fbmarket.data import schema as S
from fbmarket.errors import DataError
from fbmarket.files import atomic_write_text, dumps_json

MIN_PER_ROOT_TO_STRATIFY = 3
# Below this many listings in the validation or test split a figure measured on it is noise:
# one listing moves an accuracy by 5 points or more, an R² of one listing is undefined. Training
# still runs (the README's smallest dataset is what `prepare` accepts), with a warning.
MIN_LISTINGS_TO_MEASURE = 20


class NotEnoughListingsError(DataError):
    """Too few listings survived cleaning to give train, validation and test one each."""


def split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, val, test) sizes for n listings, exactly as the two train_test_split calls round
    them: the held-out part is ceil(n * (val + test)), its test share ceil(rest * test / (val + test))."""
    _, val_frac, test_frac = fractions
    rest = math.ceil((val_frac + test_frac) * n)
    test = math.ceil(test_frac / (val_frac + test_frac) * rest)
    return n - rest, rest - test, test


def min_listings(fractions: tuple[float, float, float]) -> int:
    """The smallest number of listings that gives every split at least one (4 for 70/15/15)."""
    n = 3
    while min(split_sizes(n, fractions)) < 1:
        n += 1
    return n


def measurement_warnings(sizes: dict[str, int]) -> list[str]:
    """One sentence per held-out split ("val", "test") smaller than `MIN_LISTINGS_TO_MEASURE`,
    saying how many it has and how many a measurement needs; [] when both are large enough."""
    names = {"val": "validation", "test": "test"}
    return [
        f"the {names[split]} split has {sizes.get(split, 0)} listing(s): figures measured on it (accuracy, "
        f"F1, price error, R²) are not meaningful below {MIN_LISTINGS_TO_MEASURE}; the early stopping and "
        "weights chosen on it are guesses. Add listings (about "
        f"{MIN_LISTINGS_TO_MEASURE * 7} for {MIN_LISTINGS_TO_MEASURE} in each of validation and test at 70/15/15)."
        for split in ("val", "test")
        if sizes.get(split, 0) < MIN_LISTINGS_TO_MEASURE
    ]


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, got {fractions}")
    if min(fractions) <= 0:
        raise ValueError(f"split fractions must all be above 0 (train, validation, test), got {fractions}")


def _stratify(labels: np.ndarray, n_test: int) -> np.ndarray | None:
    """Stratify by root when every root has a few listings and each side can hold every root;
    otherwise (tiny or lopsided data) a plain random split, as scikit-learn would refuse."""
    counts = pd.Series(labels).value_counts()
    n_train = len(labels) - n_test
    usable = len(counts) > 1 and counts.min() >= MIN_PER_ROOT_TO_STRATIFY
    return labels if usable and min(n_test, n_train) >= len(counts) else None


def make_split(products: pd.DataFrame, fractions: tuple[float, float, float], seed: int) -> pd.Series:
    """product_id -> 'train' | 'val' | 'test', stratified by root category where every root has enough rows.

    Raises NotEnoughListingsError (a ValueError, so the CLI prints it) when the listings
    cannot give every split at least one: `min_listings(fractions)`, 4 for the default
    70/15/15. Stratifying also needs `MIN_PER_ROOT_TO_STRATIFY` listings in every root
    category; without them the split is random, not refused.
    """
    _check_fractions(fractions)
    _, val_frac, test_frac = fractions
    n = len(products)
    if min(split_sizes(n, fractions)) < 1:
        needed = min_listings(fractions)
        shares = "/".join(f"{fraction:.0%}" for fraction in fractions)
        raise NotEnoughListingsError(
            f"{n} listing(s) survived cleaning; a train/validation/test split of {shares} needs at least "
            f"{needed} (one or more in each part: {needed} listings split "
            f"{'/'.join(map(str, split_sizes(needed, fractions)))}). Add listings, or change the split "
            f"fractions. Stratifying by root category also needs {MIN_PER_ROOT_TO_STRATIFY} listings "
            "in every root category; with fewer the split is random."
        )
    ids = products[S.PRODUCT_ID].to_numpy()
    roots = products[S.ROOT_CATEGORY].to_numpy()
    held_out = val_frac + test_frac
    train_ids, rest_ids, _, rest_roots = train_test_split(
        ids, roots, test_size=held_out, random_state=seed, stratify=_stratify(roots, math.ceil(held_out * n))
    )
    test_share = test_frac / held_out
    val_ids, test_ids = train_test_split(
        rest_ids,
        test_size=test_share,
        random_state=seed,
        stratify=_stratify(rest_roots, math.ceil(test_share * len(rest_ids))),
    )
    split = pd.Series("train", index=pd.Index(ids, name=S.PRODUCT_ID), name=S.SPLIT, dtype=object)
    split[val_ids] = "val"
    split[test_ids] = "test"
    return split


def hash_split(product_id: str, fractions: tuple[float, float, float]) -> str:
    """Deterministic split for a listing the saved split has never seen (e.g. added live)."""
    bucket = int(hashlib.sha256(product_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < fractions[0]:
        return "train"
    return "val" if bucket < fractions[0] + fractions[1] else "test"


def save_split(split: pd.Series, path: Path) -> None:
    atomic_write_text(path, dumps_json({str(k): v for k, v in split.items()}, indent=0, sort_keys=True))


def load_split(path: Path) -> pd.Series:
    mapping = json.loads(Path(path).read_text())
    return pd.Series(mapping, name=S.SPLIT, dtype=object).rename_axis(S.PRODUCT_ID)


def assign_split(
    products: pd.DataFrame, path: Path, fractions: tuple[float, float, float], seed: int
) -> pd.DataFrame:
    """Add the `split` column: reuse the saved split when there is one, else make and save it."""
    products = products.copy()
    if path.is_file():
        saved = load_split(path)
        split = products[S.PRODUCT_ID].map(saved)
        unseen = split.isna()
        split[unseen] = products.loc[unseen, S.PRODUCT_ID].map(lambda pid: hash_split(pid, fractions))
    else:
        made = make_split(products, fractions, seed)
        save_split(made, path)
        split = products[S.PRODUCT_ID].map(made)
    products[S.SPLIT] = split.to_numpy()
    return products
