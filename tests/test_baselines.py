"""Baselines: metrics JSON on a hand-made separable marketplace, edge cases, and the real dev data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

from fbmarket.baselines import precision_at_k, run_baselines
from fbmarket.data import schema as S

ROOTS = {
    "Home & Garden": (["sofa", "armchair", "cushion", "rug", "lamp"], 300.0, (200, 40, 40)),
    "Phones": (["iphone", "samsung", "charger", "handset", "sim"], 120.0, (40, 200, 40)),
    "DIY Tools": (["drill", "hammer", "saw", "spanner", "chisel"], 30.0, (40, 40, 200)),
}
FILLER = ["good", "condition", "collection", "only", "cash", "please", "thanks"]


def toy_marketplace(
    folder: Path, n_per_root: int = 30, without_photo: int = 2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three roots with disjoint vocabularies, price levels and photo colours: every baseline can separate them."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    products, images = [], []
    for r, (root, (words, price, colour)) in enumerate(ROOTS.items()):
        for i in range(n_per_root):
            pid = f"p{r}-{i:03d}"
            leaf = f"{root} / Sub / Leaf{i % 2}"
            title = " ".join(rng.choice(words, 2)) + f" {words[i % 2]}"
            description = " ".join(list(rng.choice(words, 4)) + list(rng.choice(FILLER, 4)))
            split = "train" if i < 0.6 * n_per_root else ("val" if i < 0.8 * n_per_root else "test")
            products.append(
                {
                    S.PRODUCT_ID: pid,
                    S.TITLE: title,
                    S.DESCRIPTION: description,
                    S.CATEGORY: leaf,
                    S.ROOT_CATEGORY: root,
                    S.LEAF_CATEGORY: leaf,
                    S.LEAF_NAME: leaf.rsplit(" / ", 1)[-1],
                    S.PRICE: float(price * rng.uniform(0.8, 1.25)),
                    S.SPLIT: split,
                }
            )
            if i < without_photo:
                continue
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
            path = folder / f"{pid}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            images.append(
                {
                    S.IMAGE_ID: f"img-{pid}",
                    S.PRODUCT_ID: pid,
                    S.IMAGE_PATH: str(path),
                    S.WIDTH: 24,
                    S.HEIGHT: 24,
                    S.ASPECT: 1.0,
                    S.ORIGINAL_MODE: "RGB",
                }
            )
    return pd.DataFrame(products), pd.DataFrame(images)


def without_seconds(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


def test_separable_toy_set_scores_near_perfect_and_writes_json(tmp_path: Path) -> None:
    products, images = toy_marketplace(tmp_path / "photos")
    out = tmp_path / "reports" / "baselines.json"
    metrics = run_baselines(products, images, out, seed=3, show_progress=False)

    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(metrics))  # the file is the returned dict
    assert {
        "data",
        "price_regression",
        "category_text",
        "category_pixels",
        "similar_listings",
        "seconds",
    } <= set(saved)
    assert saved["data"]["test"] == (products[S.SPLIT] == "test").sum()

    text = saved["category_text"]
    assert text["accuracy"] >= 0.95 and text["macro_f1"] >= 0.95
    assert text["n_test"] == (products[S.SPLIT] == "test").sum()

    pixels = saved["category_pixels"]
    assert pixels["accuracy"] >= 0.9
    without = products[~products[S.PRODUCT_ID].isin(images[S.PRODUCT_ID])]
    assert sum(pixels["excluded_without_photo"].values()) == len(without)
    assert pixels["excluded_without_photo"]["train"] == (without[S.SPLIT] == "train").sum()
    assert pixels["unreadable_photos"] == 0

    price = saved["price_regression"]
    assert price["r2"] > 0.5 and price["rmse_gbp"] < price["train_median_baseline"]["rmse_gbp"]
    assert price["original_project_rmse_gbp"] == 167.6 and "167.6" in price["notes"]

    similar = saved["similar_listings"]
    for pool in ("catalogue", "test_only"):
        assert similar[pool]["k"] == 10
        assert 0.0 <= similar[pool]["precision_at_k_leaf"] <= similar[pool]["precision_at_k_root"]
    assert similar["catalogue"]["precision_at_k_root"] >= 0.9
    # 6 test listings per root: at most 5 of a query's 10 test-only neighbours can share its root.
    assert similar["test_only"]["precision_at_k_root"] >= 0.45
    assert similar["catalogue"]["pool_size"] == len(products)


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    products, images = toy_marketplace(tmp_path / "photos", n_per_root=15)
    first = run_baselines(products, images, tmp_path / "a.json", seed=7, show_progress=False)
    second = run_baselines(products, images, tmp_path / "b.json", seed=7, show_progress=False)
    assert without_seconds(first) == without_seconds(second)


def test_no_photos_skips_pixels_and_counts_every_product(tmp_path: Path) -> None:
    products, _ = toy_marketplace(tmp_path / "photos", n_per_root=12)
    no_images = pd.DataFrame(columns=list(S.CLEAN_IMAGE_COLUMNS))
    metrics = run_baselines(products, no_images, tmp_path / "m.json", seed=0, show_progress=False)
    pixels = metrics["category_pixels"]
    assert "skipped" in pixels
    assert pixels["excluded_without_photo"] == products[S.SPLIT].value_counts().to_dict()
    assert metrics["category_text"]["accuracy"] >= 0.9  # the rest still runs


def test_unreadable_photo_is_counted_not_fatal(tmp_path: Path) -> None:
    products, images = toy_marketplace(tmp_path / "photos", n_per_root=12, without_photo=0)
    broken = Path(images.loc[0, S.IMAGE_PATH])
    broken.write_bytes(b"not a jpeg")
    metrics = run_baselines(products, images, tmp_path / "m.json", seed=0, show_progress=False)
    assert metrics["category_pixels"]["unreadable_photos"] == 1
    split_of_broken = products.loc[products[S.PRODUCT_ID] == images.loc[0, S.PRODUCT_ID], S.SPLIT].item()
    assert metrics["category_pixels"]["excluded_without_photo"][split_of_broken] == 1


def test_single_training_root_is_skipped_with_a_reason(tmp_path: Path) -> None:
    products, images = toy_marketplace(tmp_path / "photos", n_per_root=10)
    first_root = next(iter(ROOTS))
    products.loc[(products[S.SPLIT] == "train") & (products[S.ROOT_CATEGORY] != first_root), S.SPLIT] = "val"
    metrics = run_baselines(products, images, tmp_path / "m.json", seed=0, show_progress=False)
    assert "single root category" in metrics["category_text"]["skipped"]
    assert "single root category" in metrics["category_pixels"]["skipped"]
    assert math.isfinite(metrics["price_regression"]["rmse_gbp"])


def test_missing_test_split_or_column_is_a_clear_error(tmp_path: Path) -> None:
    products, images = toy_marketplace(tmp_path / "photos", n_per_root=6)
    no_test = products.assign(**{S.SPLIT: "train"})
    with pytest.raises(ValueError, match="train and test"):
        run_baselines(no_test, images, tmp_path / "m.json", seed=0, show_progress=False)
    with pytest.raises(S.SchemaError, match=S.PRICE):
        run_baselines(
            products.drop(columns=[S.PRICE]), images, tmp_path / "m.json", seed=0, show_progress=False
        )


def test_precision_at_k_counts_label_matches_and_excludes_self() -> None:
    # Items 0,1 point one way, 2,3 another; item 1 shares 0's root but not its leaf.
    vectors = sparse.csr_matrix(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]))
    leaf = np.array(["a", "b", "c", "c"])
    root = np.array(["x", "x", "y", "y"])
    labels = {"leaf": leaf, "root": root}
    result = precision_at_k(vectors, vectors, labels, labels, np.arange(4), k=1)
    assert result == {"leaf": 0.5, "root": 1.0}


@pytest.mark.slow
def test_real_dev_data_baselines(real_data_dir: Path, tmp_path: Path) -> None:
    """The full pipeline on the real listings: the text baseline lands near the documented ~81%."""
    from fbmarket.config import Settings
    from fbmarket.prepare import prepare_data

    settings = Settings(data_dir=real_data_dir, out_dir=tmp_path / "artifacts")
    settings.data.image_size = 32  # the pixel baseline reads 16x16; a small cache keeps this test quicker
    prepared = prepare_data(settings, show_progress=False, store=False)
    metrics = run_baselines(
        prepared.products, prepared.images, tmp_path / "b.json", seed=42, show_progress=False
    )
    assert 0.75 <= metrics["category_text"]["accuracy"] <= 0.9
    pixels = metrics["category_pixels"]
    assert pixels["accuracy"] > pixels["majority_accuracy"]
    assert metrics["similar_listings"]["catalogue"]["precision_at_k_leaf"] > 0.3
    assert metrics["price_regression"]["r2_log"] > 0.3
