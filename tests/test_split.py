"""Product-level split: disjoint, stratified, persisted and reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbmarket.data import schema as S
from fbmarket.data.split import (
    MIN_LISTINGS_TO_MEASURE,
    NotEnoughListingsError,
    assign_split,
    hash_split,
    load_split,
    make_split,
    measurement_warnings,
    min_listings,
    split_sizes,
)
from fbmarket.errors import DataError


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


# ---- issue 14, kind 11: tiny datasets ----------------------------------------------------------------
@pytest.mark.parametrize(
    "fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.6, 0.3, 0.1)]
)
def test_split_sizes_are_what_the_split_gives(fractions: tuple[float, float, float]) -> None:
    for n in range(min_listings(fractions), 60):
        split = make_split(products(n, roots=3), fractions, seed=0)
        counts = split.value_counts()
        assert tuple(int(counts.get(part, 0)) for part in S.SPLITS) == split_sizes(n, fractions)


def test_the_smallest_dataset_is_documented_and_splits() -> None:
    assert min_listings((0.7, 0.15, 0.15)) == 4  # README "Input format"
    assert split_sizes(5297, (0.7, 0.15, 0.15)) == (3707, 795, 795)  # the dev data, unchanged
    split = make_split(products(4, roots=2), (0.7, 0.15, 0.15), seed=0)
    assert split.value_counts().to_dict() == {"train": 2, "val": 1, "test": 1}


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_fewer_listings_fail_with_a_clear_message(n: int) -> None:
    with pytest.raises(NotEnoughListingsError) as caught:
        make_split(products(n, roots=1), (0.7, 0.15, 0.15), seed=0)
    message = str(caught.value)
    assert f"{n} listing(s) survived cleaning" in message and "needs at least 4" in message
    assert "2/1/1" in message and "3 listings in every root category" in message
    assert isinstance(caught.value, DataError)  # the CLI prints it as the user's to fix, on one line


def test_stratification_steps_aside_when_a_side_cannot_hold_every_root() -> None:
    # 4 roots x 3 listings, 5% + 5% held out: 2 held-out listings cannot hold 4 roots
    frame = pd.DataFrame(
        {S.PRODUCT_ID: [f"p{i}" for i in range(12)], S.ROOT_CATEGORY: [f"r{i % 4}" for i in range(12)]}
    )
    split = make_split(frame, (0.9, 0.05, 0.05), seed=0)
    assert split.value_counts().to_dict() == {"train": 10, "val": 1, "test": 1}


def test_zero_fractions_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="above 0"):
        make_split(products(), (0.8, 0.2, 0.0), seed=0)


def write_products(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rows = [",id,product_name,category,product_description,price,location"]
    for i in range(n):
        root = ("Appliances / Kettles", "Home & Garden / Sofas")[i % 2]
        rows.append(
            f'{i},p{i},"Item {i} | in Leeds, West Yorkshire | Gumtree",{root},Thing number {i},£{i + 5}.00,"Leeds, West Yorkshire"'
        )
    (folder / "Products.csv").write_text("\n".join(rows) + "\n")
    (folder / "Images.csv").write_text(",id,product_id,image_ref,create_time\n")
    return folder


def test_prepare_on_the_smallest_dataset_works(tmp_path: Path) -> None:
    from fbmarket.config import Settings
    from fbmarket.prepare import prepare_data

    data = write_products(tmp_path / "four", 4)
    prepared = prepare_data(Settings(data_dir=data, out_dir=tmp_path / "out"), show_progress=False)
    assert prepared.report.rows_out == 4
    assert prepared.products[S.SPLIT].value_counts().to_dict() == {"train": 2, "val": 1, "test": 1}


def test_prepare_on_three_listings_says_how_many_are_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fbmarket.cli import main

    data = write_products(tmp_path / "three", 3)
    code = main(["prepare", "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "fbmarket prepare: error: 3 listing(s) survived cleaning" in err and "needs at least 4" in err
    assert "Traceback" not in err and "n_samples" not in err


@pytest.mark.parametrize(("val", "test", "warned"), [(1, 1, 2), (0, 0, 2), (19, 25, 1), (25, 3, 1), (20, 20, 0)])
def test_held_out_splits_too_small_to_measure_are_warned_about(val: int, test: int, warned: int) -> None:
    warnings = measurement_warnings({"val": val, "test": test})
    assert len(warnings) == warned
    for warning in warnings:
        assert f"not meaningful below {MIN_LISTINGS_TO_MEASURE}" in warning and "listing(s)" in warning
    if val < MIN_LISTINGS_TO_MEASURE:
        assert f"validation split has {val} listing(s)" in warnings[0]


def test_a_four_listing_split_is_refused_nowhere_but_warned_about() -> None:
    """The README's smallest dataset (4 listings, split 2/1/1) is accepted; training says its
    figures mean nothing (training/train.py puts these warnings in the output and the reports)."""
    split = make_split(products(4, roots=1), (0.7, 0.15, 0.15), seed=0)
    sizes = split.value_counts().to_dict()
    assert sizes == {"train": 2, "val": 1, "test": 1}
    assert len(measurement_warnings(sizes)) == 2
