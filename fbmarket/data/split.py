"""Product-level, root-stratified train/val/test split, persisted so every model and report agrees (§4.4).

Splitting by product (not by photo) is what keeps a listing's text and photos out of the
test set while it trains; the saved JSON is the single source of truth afterwards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from fbmarket.data import schema as S


def make_split(products: pd.DataFrame, fractions: tuple[float, float, float], seed: int) -> pd.Series:
    """product_id -> 'train' | 'val' | 'test', stratified by root category where every root has enough rows."""
    train_frac, val_frac, test_frac = fractions
    if abs(train_frac + val_frac + test_frac - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, got {fractions}")
    ids = products[S.PRODUCT_ID].to_numpy()
    roots = products[S.ROOT_CATEGORY].to_numpy()

    def stratify(labels):
        counts = pd.Series(labels).value_counts()
        return labels if len(counts) > 1 and counts.min() >= 3 else None

    train_ids, rest_ids, _, rest_roots = train_test_split(
        ids, roots, test_size=val_frac + test_frac, random_state=seed, stratify=stratify(roots)
    )
    val_ids, test_ids = train_test_split(
        rest_ids,
        test_size=test_frac / (val_frac + test_frac),
        random_state=seed,
        stratify=stratify(rest_roots),
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in split.items()}, indent=0, sort_keys=True))
    tmp.replace(path)


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
