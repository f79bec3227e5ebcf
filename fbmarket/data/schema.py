"""Column contracts between the pipeline stages.

Raw tables follow the Gumtree input format (README, "Input format"); clean tables are what every
later stage (features, models, search, API) reads. Changing a name here is a change
of contract: grep for the constant, not the string.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from fbmarket.errors import DataError

# --- raw input (Products.csv / Images.csv / Users.csv / Interactions.csv) ---
RAW_PRODUCT_COLUMNS = ("id", "product_name", "category", "product_description", "price", "location")
RAW_IMAGE_COLUMNS = ("id", "product_id")  # image_ref, create_time are optional
RAW_USER_COLUMNS = ("user_id", "age", "gender", "location")
RAW_INTERACTION_COLUMNS = ("user_id", "product_id", "event", "timestamp")
INTERACTION_EVENTS = ("view", "click", "save", "message")

# --- clean products (one row per listing kept) ---
PRODUCT_ID = "product_id"
TITLE = "title"  # product_name before the first "|", cleaned
DESCRIPTION = "description"  # cleaned: no emoji, normalised unicode and whitespace
CATEGORY = "category"  # full path "Root / Sub / Leaf", normalised spacing
ROOT_CATEGORY = "root_category"
LEAF_CATEGORY = "leaf_category"  # identity of the leaf = the full path (leaf names repeat across roots)
LEAF_NAME = "leaf_name"  # last path segment, for display
PRICE = "price"  # float, GBP
LOCATION = "location"  # "Town, County" as given
TOWN = "town"
COUNTY = "county"
LATITUDE = "latitude"
LONGITUDE = "longitude"
GEO_MATCH = "geo_match"  # "town" | "county" | "unknown"
CREATED = "created"  # earliest photo create_time (ISO date) or NaN
CLEAN_PRODUCT_COLUMNS = (
    PRODUCT_ID, TITLE, DESCRIPTION, CATEGORY, ROOT_CATEGORY, LEAF_CATEGORY, LEAF_NAME,
    PRICE, LOCATION, TOWN, COUNTY, LATITUDE, LONGITUDE, GEO_MATCH, CREATED,
)  # fmt: skip

# --- clean images (one row per photo that decoded) ---
IMAGE_ID = "image_id"
IMAGE_PATH = "path"  # cleaned, letterboxed RGB copy in the cache
WIDTH = "width"  # of the original photo
HEIGHT = "height"
ASPECT = "aspect"  # width / height of the original
ORIGINAL_MODE = "original_mode"  # PIL mode before conversion to RGB
CLEAN_IMAGE_COLUMNS = (IMAGE_ID, PRODUCT_ID, IMAGE_PATH, WIDTH, HEIGHT, ASPECT, ORIGINAL_MODE)

# --- split ---
SPLIT = "split"  # "train" | "val" | "test"
SPLITS = ("train", "val", "test")


class SchemaError(DataError):
    """A table lacks columns the pipeline needs; the message names them."""


# How much of the columns found a missing-column message quotes: a file read wrongly (one
# header "column" holding the whole file) must not put megabytes into an error message.
_SHOWN_COLUMNS = 20
_SHOWN_NAME_CHARS = 60


def _shown(name: object) -> str:
    text = str(name)
    return text if len(text) <= _SHOWN_NAME_CHARS else f"{text[:_SHOWN_NAME_CHARS]}... ({len(text):,} characters)"


def require_columns(frame: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    """Stop with a message naming the missing columns and (briefly) the columns found."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [_shown(c) for c in list(frame.columns)[:_SHOWN_COLUMNS]]
        if len(frame.columns) > _SHOWN_COLUMNS:
            found.append(f"... {len(frame.columns) - _SHOWN_COLUMNS} more")
        raise SchemaError(
            f"{table} is missing required column(s): {', '.join(missing)} (found: {', '.join(found)})"
        )
