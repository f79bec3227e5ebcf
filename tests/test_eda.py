"""EDA plots: real PNGs from hand-made listings and photos, empty inputs, determinism, real locations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fbmarket.data import schema as S
from fbmarket.eda import PLOT_NAMES, make_eda_plots

PLACES = [(51.5072, -0.1276), (53.4808, -2.2426), (55.9533, -3.1883), (54.5973, -5.9301), (np.nan, np.nan)]
ROOTS = ["Home & Garden", "Phones, Mobile Phones & Telecoms", "DIY Tools & Materials"]
WORDS = ["sofa", "iphone", "drill", "lamp", "charger", "hammer", "oak", "table", "cable", "saw"]


def listings(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        lat, lon = PLACES[i % len(PLACES)]
        root = ROOTS[i % len(ROOTS)]
        rows.append(
            {
                S.PRODUCT_ID: f"p{i:03d}",
                S.TITLE: " ".join(rng.choice(WORDS, 3)),
                S.DESCRIPTION: "collection only",
                S.CATEGORY: f"{root} / Sub / Leaf",
                S.ROOT_CATEGORY: root,
                S.LEAF_CATEGORY: f"{root} / Sub / Leaf",
                S.PRICE: 0.0 if i % 9 == 0 else float(rng.lognormal(4, 1.5)),
                S.LATITUDE: lat,
                S.LONGITUDE: lon,
            }
        )
    return pd.DataFrame(rows)


def photos(products: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Real image files of assorted original sizes and modes; a few listings get none."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, pid in enumerate(products[S.PRODUCT_ID]):
        for j in range(i % 4):  # 0-3 photos per listing
            width, height = 32 + 8 * (i % 5), 32 + 8 * (j % 3)
            path = folder / f"{pid}-{j}.jpg"
            Image.new("RGB", (16, 16), (i * 5 % 255, 90, 160)).save(path)
            rows.append(
                {
                    S.IMAGE_ID: f"{pid}-{j}",
                    S.PRODUCT_ID: pid,
                    S.IMAGE_PATH: str(path),
                    S.WIDTH: width,
                    S.HEIGHT: height,
                    S.ASPECT: width / height,
                    S.ORIGINAL_MODE: "RGB" if j else "L",
                }
            )
    return pd.DataFrame(rows)


def assert_valid_pngs(plots: dict[str, Path], out_dir: Path) -> None:
    assert set(plots) == set(PLOT_NAMES)
    for name, path in plots.items():
        assert path == out_dir / f"{name}.png" and path.is_file()
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            image.load()  # decodes fully: a truncated file fails here
        assert 400 <= width <= 2000 and 250 <= height <= 1600, (name, image.size)
        assert path.stat().st_size < 300_000, name


def test_every_plot_is_a_sensible_png(tmp_path: Path) -> None:
    products = listings()
    out = tmp_path / "plots"
    plots = make_eda_plots(products, photos(products, tmp_path / "photos"), out, synthetic=False)
    assert_valid_pngs(plots, out)


def test_plots_are_deterministic_and_marked_synthetic(tmp_path: Path) -> None:
    products = listings()
    images = photos(products, tmp_path / "photos")
    first = make_eda_plots(products, images, tmp_path / "a", synthetic=False)
    second = make_eda_plots(products, images, tmp_path / "b", synthetic=False)
    synthetic = make_eda_plots(products, images, tmp_path / "c", synthetic=True)
    for name in PLOT_NAMES:
        assert first[name].read_bytes() == second[name].read_bytes(), name
        # Only the title changes, so a differing image means the synthetic marker was drawn.
        assert first[name].read_bytes() != synthetic[name].read_bytes(), name


@pytest.mark.parametrize("images", [pd.DataFrame(columns=list(S.CLEAN_IMAGE_COLUMNS)), pd.DataFrame()])
def test_no_photos_still_draws_every_plot(tmp_path: Path, images: pd.DataFrame) -> None:
    out = tmp_path / "plots"
    assert_valid_pngs(make_eda_plots(listings(), images, out, synthetic=True), out)


def test_empty_listings_and_unknown_places(tmp_path: Path) -> None:
    empty = listings().iloc[0:0]
    out = tmp_path / "empty"
    assert_valid_pngs(make_eda_plots(empty, pd.DataFrame(), out, synthetic=False), out)

    nowhere = listings(6).assign(**{S.LATITUDE: np.nan, S.LONGITUDE: np.nan, S.TITLE: "a", S.PRICE: np.nan})
    out = tmp_path / "nowhere"
    assert_valid_pngs(make_eda_plots(nowhere, pd.DataFrame(), out, synthetic=False), out)


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(S.SchemaError, match=S.LATITUDE):
        make_eda_plots(listings().drop(columns=[S.LATITUDE]), pd.DataFrame(), tmp_path, synthetic=False)


def test_real_locations_on_the_map(real_data_dir: Path, tmp_path: Path) -> None:
    """Real listings, cleaned and geocoded (no photo cleaning, to stay quick): every plot but the photos'."""
    from fbmarket.data.clean import CleaningReport, attach_geo, clean_products
    from fbmarket.data.sources import read_source

    raw = read_source(real_data_dir)
    report = CleaningReport()
    products, report = clean_products(raw.products, 0.0, 20_000.0, report=report)
    products = attach_geo(products, report)
    assert products[S.LATITUDE].notna().mean() > 0.95
    out = tmp_path / "plots"
    assert_valid_pngs(make_eda_plots(products, pd.DataFrame(), out, synthetic=False), out)
