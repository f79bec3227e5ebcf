"""One seller's listing -> the clean row and photos the batch pipeline would make of it.

A live listing (POST /listings, the Sell page, a draft to price or check for duplicates) goes
through the batch rules themselves (`clean_products`, `attach_geo`, `add_features`) as a
one-row table, so a listing typed by a seller and one scraped into Products.csv are cleaned by
the same code; `titles="seller"` is the one explicit difference (a seller's title is kept
whole). What the batch rules would silently repair or drop (a price over the limit, a place the
gazetteer cannot find, a missing title) is refused instead, naming the field, because a seller
is there to correct it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from PIL import Image

from fbmarket.config import DataSettings
from fbmarket.data import schema as S
from fbmarket.data.clean import CleaningReport, attach_geo, clean_products, clean_text
from fbmarket.data.features import add_features
from fbmarket.data.images import clean_image
from fbmarket.data.split import hash_split
from fbmarket.errors import BadRequestError

log = logging.getLogger(__name__)

# A seller's listing refused by the cleaning rules -> the form field at fault (HTTP 422 names it).
FIELD_OF_DROP_REASON = {
    "missing_title": "title",
    "missing_category": "category",
    "duplicate_id": "product_id",
    "missing_id": "product_id",
}


@dataclass
class PreparedListing:
    """A listing cleaned and encoded, not yet saved."""

    product: pd.DataFrame  # one clean row
    cleaned_photos: pd.DataFrame | None  # its photos (new copies, or the stored ones)
    written: pd.DataFrame | None  # the new photo copies on disk (removed if the write fails)
    encoded: Any  # bundle.EncodedListings


class SellerListing(Protocol):
    """The fields of a seller's listing this module reads (the facade's `ListingInput`)."""

    product_id: str | None
    title: str
    description: str
    price: float | None
    location: str


def clean_listing(
    listing: SellerListing, category: str, photos: pd.DataFrame | None, limits: DataSettings
) -> pd.DataFrame:
    """The listing as one clean, geocoded, featured row of the catalogue, in `category` (given
    by the seller or predicted). BadRequestError names the field the rules refuse."""
    raw = pd.DataFrame(
        {
            "id": [listing.product_id],
            "product_name": [listing.title],
            "category": [category],
            "product_description": [listing.description or ""],
            "price": [None if listing.price is None else f"{float(listing.price):.2f}"],
            "location": [listing.location or ""],
        }
    ).astype("str")
    if listing.price is not None and float(listing.price) > limits.max_price:
        # The batch rules would keep the row and drop the price (an outlier): a seller who
        # typed it must hear so, not find the listing stored without a price.
        raise BadRequestError(
            f"price: £{float(listing.price):,.2f} is above this marketplace's limit of "
            f"£{limits.max_price:,.0f} (data.max_price); check for a typo",
            field="price",
            reason="price_outlier",
        )
    product, report = clean_products(
        raw,
        limits.min_price,
        limits.max_price,
        strict=False,
        report=CleaningReport(),
        titles="seller",
        max_title_chars=limits.max_title_chars,
        max_description_chars=limits.max_description_chars,
        max_location_chars=limits.max_location_chars,
    )
    if product.empty:
        reasons = list(report.dropped) or ["invalid_fields"]
        field_at_fault = next((f for r in reasons if (f := FIELD_OF_DROP_REASON.get(r))), None)
        message = f"listing rejected: {', '.join(reasons)}"
        raise BadRequestError(
            f"{field_at_fault}: {message}" if field_at_fault else message,
            field=field_at_fault,
            reason=reasons[0],
        )
    product[S.CREATED] = datetime.now(UTC).strftime("%Y-%m-%d")
    product = attach_geo(product, report)
    if product[S.LOCATION].iloc[0] and pd.isna(product[S.LATITUDE].iloc[0]):
        # Stored without coordinates it would silently drop out of every distance filter
        # and every "near me" ranking: the seller must hear about it now, not never.
        raise BadRequestError(
            f"location: {listing.location!r} could not be placed (no UK town or county of that "
            'name in the offline gazetteer); give a known town ("Leeds" or "Leeds, West Yorkshire") '
            "or leave it empty",
            field="location",
            reason="location_not_placed",
        )
    product = add_features(product, photos if photos is not None else no_photos())
    product[S.SPLIT] = hash_split(str(listing.product_id), limits.split_fractions)
    return product


def clean_photos(product_id: str, photos: list[bytes], folder: Path, limits: DataSettings) -> pd.DataFrame:
    """The photo table of a listing's uploads, their cleaned copies written to `folder`.

    Every photo must decode (an ImageError names the bad one); on any failure the copies
    already written are removed, so a refused upload leaves no file behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for position, data in enumerate(photos):
        try:
            cleaned = clean_image(data, limits.image_size, limits.max_image_pixels, limits.max_image_bytes)
            image_id = f"{product_id}-{position}-{uuid.uuid4().hex[:8]}"
            path = folder / f"{image_id}.jpg"
            cleaned.image.save(path, format="JPEG", quality=90)
        except BaseException:
            remove_photo_files(pd.DataFrame(rows, columns=[S.IMAGE_PATH]))  # the ones before it
            raise
        rows.append(
            {
                S.IMAGE_ID: image_id,
                S.PRODUCT_ID: product_id,
                S.IMAGE_PATH: str(path),
                S.WIDTH: cleaned.width,
                S.HEIGHT: cleaned.height,
                S.ASPECT: cleaned.width / max(cleaned.height, 1),
                S.ORIGINAL_MODE: cleaned.original_mode,
            }
        )
    return pd.DataFrame(rows, columns=list(S.CLEAN_IMAGE_COLUMNS))


def require_title(title: str | None) -> str:
    """The title as typed (stripped), or the client's 422 on `title` when it has nothing a
    buyer could read: blanks, control or zero-width characters only (the cleaning rules'
    `clean_text`, so the check and the stored title agree)."""
    if not clean_text(title or ""):
        raise BadRequestError(
            "title: a listing needs a title with letters, digits or symbols in it",
            field="title",
            reason="missing_title",
        )
    return str(title).strip()


def no_photos() -> pd.DataFrame:
    return pd.DataFrame(columns=list(S.CLEAN_IMAGE_COLUMNS))


def remove_photo_files(photos: pd.DataFrame | None) -> None:
    """Delete the cleaned copies a refused write had already made (no database row names them)."""
    if photos is None or photos.empty:
        return
    for path in photos[S.IMAGE_PATH]:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove %s: %s", path, error)


def first_image(photos: pd.DataFrame | None) -> Image.Image | None:
    """The listing's first photo that opens. A cached copy that has gone missing must not turn an
    edit of the price into a server error: the listing is then embedded from what remains."""
    if photos is None or photos.empty:
        return None
    for path in photos[S.IMAGE_PATH]:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as error:  # missing or unreadable cached copy
            log.warning("photo %s unusable: %s", path, error)
    return None
