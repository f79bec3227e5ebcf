"""Product-level split: disjoint, stratified, persisted and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbmarket.data import schema as S
from fbmarket.data.split import assign_split, hash_split, load_split, make_split


def products(n: int = 300, roots: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            S.PRODUCT_ID: [f"p{i}" for i in range(n)],
            S.ROOT_CATEGORY: [f"r{k}" for k in rng.integers(0, roots, n)],
        }
    )


def test_split_is_disjoint_complete_and_stratified() -> None:
    frame = products()
    split = make_split(frame, (0.7, 0.15, 0.15), seed=1)
    assert split.index.is_unique and set(split.index) == set(frame[S.PRODUCT_ID])
    parts = {name: set(split[split == name].index) for name in S.SPLITS}
    assert (
        not (parts["train"] & parts["test"])
        and not (parts["train"] & parts["val"])
        and not (parts["val"] & parts["test"])
    )
    assert len(parts["test"]) == pytest.approx(45, abs=2)
    # every root keeps about the same share in train as overall
    joined = frame.assign(split=frame[S.PRODUCT_ID].map(split))
    shares = joined.groupby(S.ROOT_CATEGORY)["split"].apply(lambda s: (s == "train").mean())
    assert shares.between(0.6, 0.8).all()


def test_split_is_deterministic_under_seed() -> None:
    frame = products()
    assert make_split(frame, (0.7, 0.15, 0.15), 3).equals(make_split(frame, (0.7, 0.15, 0.15), 3))
    assert not make_split(frame, (0.7, 0.15, 0.15), 3).equals(make_split(frame, (0.7, 0.15, 0.15), 4))


def test_saved_split_is_reused_and_new_products_get_a_stable_split(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    first = assign_split(products(), path, (0.7, 0.15, 0.15), seed=1)
    again = assign_split(products(), path, (0.7, 0.15, 0.15), seed=99)  # the seed no longer matters
    assert first[S.SPLIT].tolist() == again[S.SPLIT].tolist()
    grown = pd.concat([products(), pd.DataFrame({S.PRODUCT_ID: ["new"], S.ROOT_CATEGORY: ["r0"]})])
    assigned = assign_split(grown, path, (0.7, 0.15, 0.15), seed=1)
    assert assigned[S.SPLIT].iloc[-1] == hash_split("new", (0.7, 0.15, 0.15))
    assert len(load_split(path)) == 300


def test_tiny_or_unbalanced_data_still_splits() -> None:
    frame = pd.DataFrame({S.PRODUCT_ID: [f"p{i}" for i in range(12)], S.ROOT_CATEGORY: ["a"] * 11 + ["b"]})
    split = make_split(frame, (0.5, 0.25, 0.25), seed=0)
    assert set(split) == {"train", "val", "test"}


def test_fractions_must_add_up() -> None:
    with pytest.raises(ValueError, match="add up to 1"):
        make_split(products(), (0.5, 0.2, 0.2), seed=0)
