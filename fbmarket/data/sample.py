"""The embedded synthetic marketplace (SPEC §4.2).

`python main.py` must run on a fresh offline machine, so the package writes its own
default dataset in exactly the Gumtree input format (SPEC §4.1): Products.csv and
Images.csv with an unnamed pandas index, images/<image id>.jpg, plus Users.csv and
Interactions.csv from the documented buyer model. The data is SYNTHETIC and says so
in the README it writes next to the tables.

Everything derives from one seed (numpy Generator; ids are uuids built from its bytes;
dates are fixed, never the wall clock), so a seed always yields byte-identical files.
The generator also plants the dirt real scraped data has, in known amounts, so the
cleaning code is exercised on every run: grayscale / CMYK / palette / RGBA-as-PNG
photos, EXIF-rotated photos, odd aspect ratios, truncated, empty and HTML "photos",
missing files, photos without a product, products without a photo, re-posted
duplicates, malformed prices, unknown locations and rows missing a category or title.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fbmarket import __version__
from fbmarket.data.sample_images import Look, encode_photo, make_noise_bank, product_look, render_photo
from fbmarket.data.sample_vocab import (
    ADJECTIVES,
    COLOURS,
    CONDITIONS,
    COUNTY_ONLY,
    EMOJI,
    GARBLED_LOCATIONS,
    GENERIC_PHRASES,
    MONTHS,
    ROOTS,
    SELLER_NAMES,
    TITLE_SUFFIXES,
    TOWNS,
    Root,
)
from fbmarket.data.schema import LATITUDE, LOCATION, LONGITUDE, PRICE, PRODUCT_ID, ROOT_CATEGORY, TITLE
from fbmarket.recommend.simulator import USER_CSV_COLUMNS, simulate_buyers, simulate_interactions

PRODUCT_CSV_COLUMNS = ("id", "product_name", "category", "product_description", "price", "location")
IMAGE_CSV_COLUMNS = ("id", "product_id", "image_ref", "create_time")
INTERACTION_CSV_COLUMNS = ("user_id", "product_id", "event", "timestamp", "query", "session_id")

LAST_DAY = date(2022, 2, 28)  # the "scrape date": listings appear over the LISTING_DAYS before it
LISTING_DAYS = 45
# Share of listings per root, close to the real data's (13 roots, fairly balanced).
ROOT_SHARES = (379, 288, 306, 477, 396, 472, 616, 442, 491, 397, 313, 352, 379)
PHOTO_COUNT_PROBS = (0.40, 0.35, 0.15, 0.10)  # 1, 2, 3, 4 photos (0 is planted separately)

# Dirt, as a share of rows; each kind appears at least once (so tiny samples carry it too).
ROW_DIRT = {
    "duplicate": 0.02,
    "no_photo": 0.03,
    "missing_category": 0.004,
    "messy_category": 0.005,
    "missing_title": 0.002,
    "price_malformed": 0.01,
    "price_missing": 0.005,
    "price_outlier": 0.006,
    "county_only": 0.015,
    "garbled_location": 0.005,
    "empty_description": 0.01,
    "emoji_description": 0.01,
}
PHOTO_DIRT = {
    "L": 0.05,
    "RGBA": 0.03,
    "P": 0.03,
    "CMYK": 0.01,
    "exif": 0.02,
    "truncated": 0.005,
    "empty": 0.005,
    "html": 0.002,
    "missing": 0.002,
}
ORPHAN_SHARE = 0.01  # Images.csv rows whose product does not exist
MALFORMED_PRICES = ("£ono", "free", "1.250,00", "£", "Swap", "POA", "£20 ono")  # missing ones are empty
OUTLIER_PRICES = ("£1,111,111.00", "£12,345.00", "£999,999.00", "£0.01", "£123,456,789.00", "£0.00")
ALL_EMOJI_DESCRIPTIONS = ("🔥🔥🔥", "✅✅✅ 📦", "😊👍", "💯💯💯💯", "✨⭐✨")
README_TITLE = "# SYNTHETIC marketplace data"
IMAGE_REF_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))


@dataclass
class _Listing:
    """One generated listing before it is written: the truth and the raw strings."""

    id: str
    root: int
    category: str  # full path
    title: str
    description: str
    price_value: float
    price: str | float  # raw string as written, or NaN
    town: str
    county: str
    latitude: float
    longitude: float
    location: str
    listed: date
    look_seed: int
    clean: bool = True  # usable by the buyer simulator (valid category, title, price, known town)
    duplicate_of: str | None = None


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _pick(rng: np.random.Generator, options: tuple | list) -> str:
    return options[int(rng.integers(len(options)))]


def _format_price(value: float) -> str:
    return f"£{value:,.2f}"


def _round_price(value: float, rng: np.random.Generator) -> float:
    """Asking prices are round numbers, mostly."""
    if value >= 20:
        value = float(round(value / 5) * 5) if rng.random() < 0.6 else float(round(value))
        return value - 0.01 if rng.random() < 0.08 else value
    return round(value * 2) / 2 if value >= 1 else round(value, 2)


def _fill(template: str, rng: np.random.Generator) -> str:
    """Numbers for a phrase: n small, m two-digit, a-b a short range (ages, months)."""
    low = int(rng.integers(1, 11))
    return template.format(
        a=low,
        b=low + int(rng.integers(1, 4)),
        n=int(rng.integers(2, 17)),
        m=int(rng.integers(10, 100)),
        colour=_pick(rng, COLOURS),
        rrp=int(rng.integers(2, 60)) * 10,
    )


def _location_string(town: str, county: str) -> str:
    return town if town == county or not county else f"{town}, {county}"


def _make_title(root: Root, leaf_index: int, rng: np.random.Generator) -> tuple[str, str, str]:
    """(title, noun, brand): brands and adjectives make titles informative but not unique."""
    leaf = root.leaves[leaf_index]
    noun = _pick(rng, leaf.nouns)
    brands = leaf.brands or root.brands
    brand = ""
    roll = rng.random()
    if roll < 0.08:  # a brand from another root: Samsung fridges, Bosch drills...
        brand = _pick(rng, ROOTS[int(rng.integers(len(ROOTS)))].brands)
    elif roll < 0.75 or leaf.brands:
        brand = _pick(rng, brands)
    adjective = _pick(rng, ADJECTIVES) if rng.random() < 0.45 else ""
    template = int(rng.integers(7))
    if template == 0:
        words = [brand, noun]
    elif template == 1:
        words = [adjective, brand, noun]
    elif template == 2:
        words = [adjective, noun]
    elif template == 3:
        letters = "".join(rng.choice(list("ABCDEFGHKMNPRSTVWXZ"), size=int(rng.integers(1, 4))))
        words = [brand, noun, f"{letters}{int(rng.integers(10, 9999))}"]
    elif template == 4:
        words = [adjective, noun, _pick(rng, TITLE_SUFFIXES)]
    elif template == 5:
        words = [brand, noun, "-", _pick(rng, CONDITIONS), "condition"]
    else:
        words = [noun, f"({brand})" if brand else ""]
    title = " ".join(w for w in words if w)
    style = rng.random()
    if style < 0.5:
        title = " ".join(w[:1].upper() + w[1:] for w in title.split())
    elif style < 0.8:
        title = title[:1].upper() + title[1:]
    elif style < 0.95:
        title = title.lower()
    else:
        title = title.upper()
    return title, noun, brand


def _make_description(
    root: Root, noun: str, brand: str, category: str, town: str, listed: date, rng: np.random.Generator
) -> str:
    """Run-on seller prose: item, details, boilerplate, emoji; sometimes a 'Posted by' footer."""
    item = f"{brand} {noun}".strip()
    opener = _pick(
        rng,
        (
            f"{item} in {_pick(rng, CONDITIONS)} condition",
            f"Selling my {item}",
            f"{item} for sale",
            f"{item}, {_fill(_pick(rng, root.details), rng)}",
            f"Hi, I have a {noun} for sale",
            f"{item}",
        ),
    )
    fragments = [opener]
    n_details = int(rng.integers(0, 4))
    fragments += [_fill(d, rng) for d in rng.choice(root.details, size=n_details, replace=False)]
    if rng.random() < 0.1:  # a word from another category: real sellers mention other things
        other = ROOTS[int(rng.integers(len(ROOTS)))]
        fragments.append(f"would suit {_pick(rng, _pick(rng, other.leaves).nouns)}")
    n_generic = int(rng.integers(0, 4))
    fragments += [_fill(g, rng) for g in rng.choice(GENERIC_PHRASES, size=n_generic, replace=False)]
    order = [0, *(1 + rng.permutation(len(fragments) - 1))]
    fragments = [fragments[i] for i in order]

    style = rng.random()  # run-on, one fragment per (bare CR) line, or punctuated
    text = fragments[0]
    for fragment in fragments[1:]:
        if style < 0.25:
            separator = _pick(rng, (" ", "", "  ", " \r "))
        elif style < 0.55:
            separator = _pick(rng, ("\r ", "\r", "\r ➤", "\r - "))
        else:
            separator = _pick(rng, (". ", "! ", ". ", "\r ", ", ", " - ", "!!! "))
        if rng.random() < 0.25:
            separator = f" {_pick(rng, EMOJI)}" + separator if separator.strip() else f" {_pick(rng, EMOJI)} "
        text += separator + fragment
    if rng.random() < 0.3:
        text = f"{_pick(rng, EMOJI)} {text} {_pick(rng, EMOJI) * int(rng.integers(1, 4))}"
    if rng.random() < 0.06:
        text = text.upper()
    if rng.random() < 0.3:
        text += " " * int(rng.integers(1, 3))  # trailing blanks, as scraped
    if rng.random() < 0.08:
        segments = category.split(" / ")
        where = f"{segments[-2]}, {segments[-1]}" if len(segments) >= 2 else segments[0]
        stamp = f"{listed.day} {MONTHS[listed.month - 1]} {listed.year}"
        text += f". Posted by {_pick(rng, SELLER_NAMES)} in {where} in {town}. {stamp}"
    return text


def _dirt_indices(
    n: int, rates: dict[str, float], rng: np.random.Generator, base: int | None = None
) -> dict[str, np.ndarray]:
    """Disjoint sets of the n rows per kind of dirt: round(rate * base) rows each (base
    defaults to n), at least one."""
    counts = {kind: max(1, int(round(rate * (base or n)))) for kind, rate in rates.items()}
    if sum(counts.values()) > n:
        raise ValueError(f"{n} rows are too few to plant every kind of dirt ({sum(counts.values())} needed)")
    order = rng.permutation(n)
    out, start = {}, 0
    for kind, count in counts.items():
        out[kind] = np.sort(order[start : start + count])
        start += count
    return out


def _town_weights(rng: np.random.Generator) -> np.ndarray:
    """A few big towns have many listings, most have few (Zipf-like, order from the seed)."""
    ranks = rng.permutation(len(TOWNS))
    weights = 1.0 / (ranks + 3.0) ** 0.9
    return weights / weights.sum()


def _make_listings(n: int, rng: np.random.Generator, town_weights: np.ndarray) -> list[_Listing]:
    shares = np.asarray(ROOT_SHARES, dtype=float) / sum(ROOT_SHARES)
    # every root at least once, so even a tiny sample has all 13 classes
    roots = np.concatenate([np.arange(len(ROOTS)), rng.choice(len(ROOTS), size=n - len(ROOTS), p=shares)])
    roots = roots[rng.permutation(n)]
    towns = rng.choice(len(TOWNS), size=n, p=town_weights)
    listings = []
    for i in range(n):
        root = ROOTS[int(roots[i])]
        leaf_index = int(rng.integers(len(root.leaves)))
        leaf = root.leaves[leaf_index]
        category = f"{root.name} / {leaf.path}"
        town, county, lat, lon = TOWNS[int(towns[i])]
        listed = LAST_DAY - timedelta(days=int(rng.integers(0, LISTING_DAYS)))
        title, noun, brand = _make_title(root, leaf_index, rng)
        value = root.price_median * leaf.price_mult * float(np.exp(rng.normal(0.0, root.price_sigma)))
        value = _round_price(value, rng)
        listings.append(
            _Listing(
                id=_uuid(rng),
                root=int(roots[i]),
                category=category,
                title=title,
                description=_make_description(root, noun, brand, category, town, listed, rng),
                price_value=value,
                price=_format_price(value),
                town=town,
                county=county,
                latitude=lat,
                longitude=lon,
                location=_location_string(town, county),
                listed=listed,
                look_seed=int(rng.integers(2**31)),
            )
        )
    return listings


def _plant_row_dirt(
    listings: list[_Listing], n_rows: int, rng: np.random.Generator
) -> tuple[list[_Listing], dict]:
    """Apply the row-level dirt (rates of the final `n_rows`); returns the shuffled rows,
    duplicates included, and which listings got what."""
    rates = {k: v for k, v in ROW_DIRT.items() if k != "no_photo"}
    dirt = _dirt_indices(len(listings), rates, rng, base=n_rows)
    for i in dirt["missing_category"]:
        listings[i].category, listings[i].clean = np.nan, False
    for i in dirt["messy_category"]:  # stray spaces and slashes a normaliser must undo
        listings[i].category = _pick(rng, ("  {} ", "{}")).format(listings[i].category.replace(" / ", "/", 1))
    for i in dirt["missing_title"]:
        listings[i].title, listings[i].clean = "", False
    for i in dirt["price_malformed"]:
        listings[i].price, listings[i].clean = _pick(rng, MALFORMED_PRICES), False
    for i in dirt["price_missing"]:
        listings[i].price, listings[i].clean = np.nan, False
    for k, i in enumerate(dirt["price_outlier"]):  # in turn, so the first is always absurdly high
        listings[i].price, listings[i].clean = OUTLIER_PRICES[k % len(OUTLIER_PRICES)], False
    for i in dirt["county_only"]:
        listings[i].location, listings[i].clean = _pick(rng, COUNTY_ONLY), False
    for i in dirt["garbled_location"]:
        listings[i].location, listings[i].clean = _pick(rng, GARBLED_LOCATIONS), False
    for i in dirt["empty_description"]:
        listings[i].description = ""
    for i in dirt["emoji_description"]:
        listings[i].description = _pick(rng, ALL_EMOJI_DESCRIPTIONS)

    duplicates = []
    for i in dirt["duplicate"]:  # re-posted a few days later under a new id, maybe cheaper
        original = listings[i]
        price = original.price
        if isinstance(price, str) and original.clean and rng.random() < 0.3:
            price = _format_price(_round_price(original.price_value * 0.9, rng))
        duplicates.append(
            _Listing(
                **{
                    **original.__dict__,
                    "id": _uuid(rng),
                    "price": price,
                    "listed": min(LAST_DAY, original.listed + timedelta(days=int(rng.integers(1, 8)))),
                    "clean": False,
                    "duplicate_of": original.id,
                }
            )
        )
    rows = listings + duplicates
    return [rows[i] for i in rng.permutation(len(rows))], dirt


def _image_ref(rng: np.random.Generator) -> str:
    """Marketplace image keys look like 'koQAAOSwhZRiE5dD'."""
    chars = rng.choice(IMAGE_REF_ALPHABET, size=11)
    return "".join(chars[:3]) + "AAOSw" + "".join(chars[3:])


def write_sample(
    out_dir: Path,
    n_products: int = 2000,
    seed: int = 42,
    show_progress: bool = True,
    *,
    n_users: int | None = None,
    sessions_per_user: int = 6,
) -> dict:
    """Write the synthetic marketplace to `out_dir`; returns counts of what was written.

    `n_products` counts Products.csv rows (duplicates included). `n_users` defaults to
    one buyer per five products.
    """
    if n_products < 40:
        raise ValueError(f"n_products must be at least 40 to carry every kind of dirt, got {n_products}")
    out_dir = Path(out_dir)
    readme = out_dir / "README.md"
    if (out_dir / "Products.csv").exists() and not (
        readme.is_file() and readme.read_text(errors="replace").startswith(README_TITLE)
    ):
        raise FileExistsError(
            f"{out_dir} already holds a dataset that this generator did not write; "
            "refusing to overwrite it: choose an empty or new folder"
        )
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in image_dir.glob("*.jpg"):  # rewriting an earlier sample: its old photos must go
        stale.unlink()
    n_users = max(10, n_products // 5) if n_users is None else n_users
    listing_seq, photo_seq, buyer_seq, session_seq = np.random.SeedSequence(seed).spawn(4)
    rng = np.random.default_rng(listing_seq)

    # --- products ---
    n_duplicates = max(1, int(round(ROW_DIRT["duplicate"] * n_products)))
    town_weights = _town_weights(rng)
    listings = _make_listings(n_products - n_duplicates, rng, town_weights)
    rows, _ = _plant_row_dirt(listings, n_products, rng)
    products = pd.DataFrame(
        {
            "id": [r.id for r in rows],
            "product_name": [f"{r.title} | in {r.location} | Gumtree" if r.title else np.nan for r in rows],
            "category": [r.category for r in rows],
            "product_description": [r.description for r in rows],
            "price": [r.price for r in rows],
            "location": [r.location for r in rows],
        },
        columns=list(PRODUCT_CSV_COLUMNS),
    )

    # --- photos: how many per product, which products have none, orphans, file kinds ---
    photo_rng = np.random.default_rng(photo_seq)
    no_photo = set(
        _dirt_indices(len(rows), {"no_photo": ROW_DIRT["no_photo"]}, photo_rng)["no_photo"].tolist()
    )
    counts_by_id: dict[str, int] = {}
    image_rows: list[dict] = []
    looks: list[tuple[int, int]] = []  # (root, look seed) per image row
    for i, row in enumerate(rows):
        if i in no_photo:
            continue
        key = row.duplicate_of or row.id  # a re-post shows the same item
        count = counts_by_id.setdefault(key, 1 + int(photo_rng.choice(4, p=PHOTO_COUNT_PROBS)))
        for _ in range(count):
            create = row.listed + timedelta(days=int(photo_rng.integers(0, 2)))
            image_rows.append(
                {
                    "id": _uuid(photo_rng),
                    "product_id": row.id,
                    "image_ref": _image_ref(photo_rng),
                    "create_time": min(create, LAST_DAY).strftime("%d/%m/%Y"),
                }
            )
            looks.append((row.root, row.look_seed))
    n_orphans = max(1, int(round(ORPHAN_SHARE * len(image_rows))))
    for _ in range(n_orphans):  # photos of listings that were deleted before the products export
        position = int(photo_rng.integers(len(image_rows) + 1))
        listed = LAST_DAY - timedelta(days=int(photo_rng.integers(0, LISTING_DAYS)))
        orphan = {
            "id": _uuid(photo_rng),
            "product_id": _uuid(photo_rng),
            "image_ref": _image_ref(photo_rng),
            "create_time": listed.strftime("%d/%m/%Y"),
        }
        image_rows.insert(position, orphan)
        looks.insert(position, (int(photo_rng.integers(len(ROOTS))), int(photo_rng.integers(2**31))))
    kinds = np.array(["jpeg"] * len(image_rows), dtype=object)
    for kind, idx in _dirt_indices(len(image_rows), PHOTO_DIRT, photo_rng).items():
        kinds[idx] = kind
    images = pd.DataFrame(image_rows, columns=list(IMAGE_CSV_COLUMNS))

    # --- render and write photo files ---
    noise_bank = make_noise_bank(photo_rng)
    render_seeds = photo_rng.integers(2**63, size=len(image_rows))
    product_looks: dict[int, Look] = {}
    iterator = zip(image_rows, looks, kinds, render_seeds, strict=True)
    for image, (root, look_seed), kind, render_seed in tqdm(
        iterator, total=len(image_rows), desc="sample photos", disable=not show_progress
    ):
        if kind == "missing":  # listed in Images.csv, never downloaded
            continue
        look = product_looks.get(look_seed)
        if look is None:
            look = product_looks[look_seed] = product_look(root, np.random.default_rng(look_seed))
        render_rng = np.random.default_rng(int(render_seed))
        if kind in ("empty", "html"):
            data = encode_photo(None, None, kind, render_rng)
        else:
            picture, mask = render_photo(look, render_rng, noise_bank)
            data = encode_photo(picture, mask, kind, render_rng)
        (image_dir / f"{image['id']}.jpg").write_bytes(data)

    # --- buyers and their sessions, over the listings a buyer could act on ---
    towns = pd.DataFrame(
        {
            LOCATION: [_location_string(t, c) for t, c, _, _ in TOWNS],
            LATITUDE: [lat for _, _, lat, _ in TOWNS],
            LONGITUDE: [lon for _, _, _, lon in TOWNS],
            "weight": town_weights,
        }
    )
    buyers = simulate_buyers(n_users, towns, seed=int(buyer_seq.generate_state(1)[0]))
    usable = [r for r in rows if r.clean]
    catalogue = pd.DataFrame(
        {
            PRODUCT_ID: [r.id for r in usable],
            TITLE: [r.title for r in usable],
            ROOT_CATEGORY: [ROOTS[r.root].name for r in usable],
            PRICE: [r.price_value for r in usable],
            LATITUDE: [r.latitude for r in usable],
            LONGITUDE: [r.longitude for r in usable],
            "created": [r.listed.isoformat() for r in usable],
        }
    )
    interactions = simulate_interactions(
        buyers,
        catalogue,
        seed=int(session_seq.generate_state(1)[0]),
        sessions_per_buyer=sessions_per_user,
        show_progress=show_progress,
    )

    # --- write tables (pandas index as the unnamed first column, like the real exports) ---
    products.to_csv(out_dir / "Products.csv", lineterminator="\n")
    images.to_csv(out_dir / "Images.csv", lineterminator="\n")
    buyers[list(USER_CSV_COLUMNS)].to_csv(out_dir / "Users.csv", lineterminator="\n")
    interactions[list(INTERACTION_CSV_COLUMNS)].to_csv(out_dir / "Interactions.csv", lineterminator="\n")

    kind_counts = {k: int((kinds == k).sum()) for k in ("jpeg", *PHOTO_DIRT)}
    summary = {
        "synthetic": True,
        "seed": seed,
        "products": len(products),
        "images": len(images),
        "image_files": len(images) - kind_counts["missing"],
        "corrupt_files": kind_counts["truncated"] + kind_counts["empty"] + kind_counts["html"],
        "zero_byte_files": kind_counts["empty"],
        "missing_files": kind_counts["missing"],
        "photo_kinds": kind_counts,
        "orphan_images": n_orphans,
        "products_without_images": len(no_photo),
        "duplicates": n_duplicates,
        "users": len(buyers),
        "interactions": len(interactions),
        "interaction_events": {
            e: int(c) for e, c in interactions["event"].value_counts().sort_index().items()
        },
    }
    (out_dir / "README.md").write_text(_readme(summary, n_products))
    return summary


def _readme(summary: dict, n_products: int) -> str:
    kinds = summary["photo_kinds"]
    return f"""{README_TITLE}

**This data is SYNTHETIC.** It was generated by fbmarket {__version__}
(`fbmarket.data.sample.write_sample`, seed {summary["seed"]}, {n_products} products). No row,
photo, buyer or interaction describes a real listing or person; place names are real UK
towns, used only as locations. The same seed always produces byte-identical files.

Format: the Gumtree input format (Products.csv, Images.csv, images/<image id>.jpg; the
first CSV column is an unnamed pandas index), plus Users.csv and Interactions.csv from
the buyer simulator described in docs/buyers.md of the fbmarket repository.
Descriptions contain bare carriage returns inside unquoted fields, as the real exports
do: read the CSVs with `lineterminator="\\n"`.

| file | rows |
|---|---|
| Products.csv | {summary["products"]} |
| Images.csv | {summary["images"]} ({summary["image_files"]} files in images/) |
| Users.csv | {summary["users"]} |
| Interactions.csv | {summary["interactions"]} |

Deliberate dirt, so cleaning code has something to do:

| what | count |
|---|---|
| re-posted duplicate listings (same title and description, new id) | {summary["duplicates"]} |
| products without any photo | {summary["products_without_images"]} |
| Images.csv rows whose product does not exist | {summary["orphan_images"]} |
| Images.csv rows whose file is missing | {summary["missing_files"]} |
| truncated JPEG files | {kinds["truncated"]} |
| zero-byte files | {kinds["empty"]} |
| HTML error pages saved as .jpg | {kinds["html"]} |
| grayscale (L) JPEGs | {kinds["L"]} |
| CMYK JPEGs | {kinds["CMYK"]} |
| JPEGs with EXIF orientation 6 (stored sideways) | {kinds["exif"]} |
| RGBA photos (PNG bytes under a .jpg name) | {kinds["RGBA"]} |
| palette (P) photos (PNG bytes under a .jpg name) | {kinds["P"]} |

Also: malformed, missing and absurd prices, county-only and unknown locations, rows
without a category or a title, category paths with stray spacing, empty and all-emoji
descriptions, and photos from 96 to 320 px with odd aspect ratios.
"""
