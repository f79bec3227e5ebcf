"""A listing typed into POST /listings is cleaned as the seller's own text (issue 14, kind 4).

`data.listing.clean_listing` (the batch rules on one row) needs only the settings, so it is
tested without a trained bundle or a server.
"""

from __future__ import annotations

import pandas as pd
import pytest

from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.listing import clean_listing as clean_seller_listing
from fbmarket.service import ListingInput


def clean_listing(**fields: object) -> pd.Series:
    listing = ListingInput(**({"title": "Lamp", "product_id": "live-1"} | fields))  # type: ignore[arg-type]
    product = clean_seller_listing(listing, "Home & Garden / Sofas", None, Settings().data)
    assert len(product) == 1
    return product.iloc[0]


@pytest.mark.parametrize(
    "title",
    [
        "Sofa | grey velvet | 3 seater",
        "Lamp | in Leeds, West Yorkshire | Gumtree",  # looks scraped, is still the seller's
    ],
)
def test_a_typed_title_is_kept_whole(title: str) -> None:
    row = clean_listing(title=title, location="")
    assert row[S.TITLE] == title
    assert row[S.LOCATION] == ""  # nothing read out of the seller's title


def test_typed_text_is_cleaned_like_scraped_text() -> None:
    row = clean_listing(
        title="Grey so\u200bfa &amp; footstool",
        description="Tom &amp;amp; Jerry<br>cushions",
        price=12.5,
    )
    assert row[S.TITLE] == "Grey sofa & footstool"
    assert row[S.DESCRIPTION] == "Tom & Jerry cushions"
    assert row[S.PRICE] == 12.5


def test_a_typed_description_is_cut_at_the_configured_limit() -> None:
    row = clean_listing(description="word " * 10_000)
    assert len(row[S.DESCRIPTION]) <= Settings().data.max_description_chars


def test_a_typed_location_with_a_postcode_is_placed_at_the_town() -> None:
    row = clean_listing(location="Leeds LS6 2AB, West Yorkshire")
    assert row[S.GEO_MATCH] == "town" and row[S.TOWN] == "Leeds"
    assert row[S.LOCATION] == "Leeds LS6 2AB, West Yorkshire"  # as the seller wrote it


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"location": "Xyzzyville Qwerty"}, "location", "location_not_placed"),
        ({"location": "Leeds, Nowhereshire Qwerty"}, None, None),  # the town alone places it
        ({"title": "   "}, "title", "missing_title"),
        ({"title": "\u200b\u200b"}, "title", "missing_title"),  # only invisible characters
    ],
)
def test_a_listing_that_cannot_be_stored_as_typed_names_the_field(
    fields: dict, field: str | None, reason: str | None
) -> None:
    """A location no gazetteer entry matches would drop out of every distance filter unseen;
    a title of blanks is no title: both are the seller's 422, naming the field."""
    from fbmarket.errors import BadRequestError

    if field is None:
        row = clean_listing(**fields)
        assert row[S.LATITUDE] == row[S.LATITUDE], "placed"
        return
    with pytest.raises(BadRequestError) as raised:
        clean_listing(**fields)
    assert raised.value.field == field and raised.value.reason == reason
    assert str(raised.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    ("price", "reason"),
    [("£40 per week", "periodic price"), ("£10 a month", "periodic price"), ("£5/hr", "periodic price"),
     ("£12.500", "ambiguous price"), ("£40.999", "ambiguous price")],
)  # fmt: skip
def test_a_typed_price_that_is_rent_or_ambiguous_is_a_422_on_price(price: str, reason: str) -> None:
    """The API's `price` is read by the batch parser: what cleaning refuses is the seller's 422 on `price`."""
    from pydantic import ValidationError

    from fbmarket.api.schemas import ListingChanges, ListingFields

    for form in (lambda: ListingFields(title="Lamp", price=price), lambda: ListingChanges(price=price)):
        with pytest.raises(ValidationError) as raised:
            form()
        (error,) = raised.value.errors()
        assert error["loc"] == ("price",) and f"({reason})" in error["msg"]


@pytest.mark.parametrize(
    ("price", "amount"), [("£40ono", 40.0), ("£40ea", 40.0), ("Giveaway", 0.0), ("swop", 0.0), ("FOC", 0.0)]
)
def test_a_typed_price_with_glued_or_free_wording_is_read(price: str, amount: float) -> None:
    from fbmarket.api.schemas import ListingFields

    assert ListingFields(title="Lamp", price=price).price == amount
