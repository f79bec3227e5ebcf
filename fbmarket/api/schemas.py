"""Pydantic models of the HTTP API: what requests may contain and what responses promise.

They are the OpenAPI document at /docs, so the limits here (lengths, ranges) are the
API's published contract; the service layer's dataclasses stay free of HTTP concerns.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, computed_field

from fbmarket.data.prices import read_price
from fbmarket.limits import MAX_DISTANCE_KM, MAX_PRICE_GBP
from fbmarket.limits import MAX_RESULTS as MAX_K
from fbmarket.service.types import ListingInput, ListingResult, PriceSuggestion, SearchResponse

MAX_QUERY_CHARS = 500
MAX_ID_CHARS = 64  # the database's id columns
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # ids a seller may choose: URL- and file-name-safe


def _printable(value: str | None) -> str | None:
    """Refuse control characters: NUL breaks PostgreSQL and none belongs in a listing or query."""
    if value is not None and any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _blank_to_none(value: str | None) -> str | None:
    """HTML forms send empty fields as ''; they mean 'not given'."""
    if value is None:
        return None
    value = value.strip()
    return value or None


SHOWN_CHARS = 60  # how much of a refused value an error message quotes

# What to do instead, where the general advice would not help the seller.
_PRICE_ADVICE = {
    "periodic_price": "a listing's price is what the item sells for, not rent or hire per hour, week or "
    "month; give the sale price such as 25 or £25, or 'free'",
    "ambiguous_price": "give one amount in pounds with at most two decimals, such as 12.50 or 12,500",
}


def _seller_price(value: object) -> object:
    """A price as a seller types it ("25", "£25", "£1,250", "free", "£20 ono") -> pounds.

    Read by the same `read_price` as the batch pipeline, so a form and a CSV agree; what it
    refuses (no number, another currency, "POA", a negative) is the client's 422 on `price`.
    Numbers (JSON, tests) pass through for the range check.
    """
    if value is None or isinstance(value, int | float) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text:
        return None
    reading = read_price(text)
    if reading.amount is None:
        why = (reading.reason or "unparseable_price").replace("_", " ")
        advice = _PRICE_ADVICE.get(reading.reason or "", "give pounds such as 25 or £25, or 'free'")
        shown = text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…"  # not 2 MB echoed back, twice
        raise ValueError(f"cannot read a price from {shown!r} ({why}): {advice}")
    return reading.amount


Text = Annotated[str, AfterValidator(_printable)]
SellerPrice = Annotated[float | None, BeforeValidator(_seller_price)]
PRICE_HELP = 'GBP, as a number or as typed: "£25", "£1,250", "£20 ono", "free" (= 0)'

OptionalText = Annotated[str | None, AfterValidator(_printable), AfterValidator(_blank_to_none)]


def _at_most(n: int) -> AfterValidator:
    """A length limit that also holds for a form field: FastAPI's Form(max_length=...) runs after
    the blank-to-None step, where a field of spaces is None and has no length (a 500)."""

    def check(value: str | None) -> str | None:
        if value is not None and len(value) > n:
            raise ValueError(f"at most {n:,} characters, got {len(value):,}")
        return value

    return AfterValidator(check)


PREDICT_TEXT_CHARS = 10_000
PredictText = Annotated[
    str | None, AfterValidator(_printable), _at_most(PREDICT_TEXT_CHARS), AfterValidator(_blank_to_none)
]


# ----------------------------------------------------------------------------- requests


class SearchParams(BaseModel):
    """Who searches for what, with which filters (query string of GET /search, form of POST)."""

    model_config = ConfigDict(allow_inf_nan=False)

    q: OptionalText = Field(None, max_length=MAX_QUERY_CHARS, description="words to search for")
    user_id: OptionalText = Field(
        None,
        max_length=MAX_ID_CHARS,
        description="a known buyer; an unknown id is searched as a cold-start buyer",
    )
    age: int | None = Field(None, ge=13, le=120, description="inline buyer: age in years")
    gender: OptionalText = Field(None, max_length=16, description="inline buyer: female, male or other")
    location: OptionalText = Field(None, max_length=200, description='inline buyer: "Town" or "Town, County"')
    lat: float | None = Field(None, ge=-90, le=90, description="inline buyer: latitude (with lon)")
    lon: float | None = Field(None, ge=-180, le=180, description="inline buyer: longitude (with lat)")
    budget: float | None = Field(None, ge=0, le=MAX_PRICE_GBP, description="inline buyer: typical spend in GBP")
    max_distance_km: float | None = Field(
        None, gt=0, le=MAX_DISTANCE_KM, description="only listings this close to the buyer"
    )
    min_price: float | None = Field(None, ge=0, le=MAX_PRICE_GBP, description="GBP")
    max_price: float | None = Field(None, ge=0, le=MAX_PRICE_GBP, description="GBP")
    category: OptionalText = Field(
        None,
        max_length=200,
        description='a root category or a path under one ("Root / Sub / Leaf" or any prefix), any case; '
        "an unknown category is a 422 that lists the roots",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="number of results")


class ListingFields(BaseModel):
    """A new listing's fields (form of POST /listings); category is predicted when missing."""

    model_config = ConfigDict(allow_inf_nan=False)

    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=10_000)
    price: SellerPrice = Field(None, ge=0, le=MAX_PRICE_GBP, description=PRICE_HELP)
    location: Text = Field("", max_length=200, description='"Town, County"')
    category: OptionalText = Field(None, max_length=200, description='full path "Root / Sub / Leaf"')
    product_id: OptionalText = Field(None, pattern=ID_PATTERN, description="generated when missing")

    def to_input(self) -> ListingInput:
        """The facade's listing: one place maps the form's fields (POST /listings, drafts, /sell)."""
        return ListingInput(
            title=self.title,
            description=self.description,
            price=self.price,
            location=self.location,
            category=self.category,
            product_id=self.product_id,
        )


class DraftFields(ListingFields):
    """A listing not yet posted (form of POST /predict/duplicates): the fields of POST /listings."""

    product_id: OptionalText = Field(
        None,
        pattern=ID_PATTERN,
        description="when the draft edits a stored listing: that listing is never its own duplicate",
    )
class PriceFields(BaseModel):
    """A draft listing to price (form of POST /predict/price); category is predicted when missing."""

    model_config = ConfigDict(allow_inf_nan=False)

    title: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=10_000)
    category: OptionalText = Field(
        None, max_length=200, description='full path "Root / Sub / Leaf" (or a root); predicted when missing'
    )
    location: Text = Field("", max_length=200, description='"Town, County"')


class ListingChanges(BaseModel):
    """Fields of PUT /listings/{id}: those given replace the stored ones, the rest are kept."""

    model_config = ConfigDict(allow_inf_nan=False)

    title: OptionalText = Field(None, min_length=1, max_length=200)
    description: Annotated[str | None, AfterValidator(_printable)] = Field(None, max_length=10_000)
    price: SellerPrice = Field(None, ge=0, le=MAX_PRICE_GBP, description=PRICE_HELP)
    location: Annotated[str | None, AfterValidator(_printable)] = Field(None, max_length=200)
    category: OptionalText = Field(None, max_length=200, description='full path "Root / Sub / Leaf"')


# ---------------------------------------------------------------------------- responses


class ErrorOut(BaseModel):
    """Every error response: a sentence for people, and the per-field details for programs."""

    detail: str
    errors: list[dict[str, Any]] | None = None
    reason: str | None = Field(None, description="machine-readable cause, e.g. not_an_image")


class HealthOut(BaseModel):
    status: str = "ok"


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, bool]
    detail: str | None = None
    model: dict[str, str] | None = Field(
        default=None, description="the bundle serving: version, image backbone and its weights, the category model"
    )


class CategoryPrediction(BaseModel):
    category: str
    probability: float


class PredictOut(BaseModel):
    predictions: list[CategoryPrediction]
    inputs: list[str] = Field(description='what the prediction used: "text", "photo"')


class ListingCard(ListingResult):
    """One ranked listing (the facade's `ListingResult`, the same fields) with its links."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return listing_url(self.product_id)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def image_url(self) -> str | None:
        return image_url(self.product_id, 0) if self.image_count else None

    @classmethod
    def of(cls, result: ListingResult) -> ListingCard:
        return cls.model_validate(result, from_attributes=True)


class SearchOut(BaseModel):
    results: list[ListingCard]
    buyer_status: str = Field(description="known | cold_start | anonymous | inline")
    mode: str = Field(
        description="hybrid | lexical | semantic | photo | photo+words | feed | none: the retrieval "
        "that ran; none = the query has no word the catalogue or the search model knows, so nothing "
        "was searched (no results, a note says so)"
    )
    notes: list[str]

    @classmethod
    def of(cls, response: SearchResponse) -> SearchOut:
        return cls(
            results=[ListingCard.of(r) for r in response.results],
            buyer_status=response.buyer_status,
            mode=response.mode,
            notes=list(response.notes),
        )


class PriceOut(BaseModel):
    """A suggested price: the median and the calibrated `interval` range (GBP), P(free), the
    category priced in, and the nearest priced listings in the catalogue as evidence
    (`score` = cosine similarity of the fusion embeddings)."""

    median: float = Field(description="GBP; the price if the item is not given away")
    low: float = Field(description="GBP; lower end of the range")
    high: float = Field(description="GBP; upper end of the range")
    interval: float = Field(description="nominal share of real prices inside [low, high] (0.8)")
    currency: str = "GBP"
    free_probability: float = Field(description='probability that a listing like this is "free" (£0)')
    category: str
    category_source: str = Field(description="given | predicted")
    evidence: list[ListingCard]
    model: str

    @classmethod
    def of(cls, suggestion: PriceSuggestion) -> PriceOut:
        return cls(
            median=suggestion.median,
            low=suggestion.low,
            high=suggestion.high,
            interval=suggestion.interval,
            free_probability=suggestion.free_probability,
            category=suggestion.category,
            category_source=suggestion.category_source,
            evidence=[ListingCard.of(result) for result in suggestion.evidence],
            model=suggestion.model,
        )


class SimilarOut(BaseModel):
    product_id: str
    results: list[ListingCard]


class DuplicateOut(BaseModel):
    """A stored listing that may be the same as the one checked (a re-post), with the evidence."""

    product_id: str
    title: str
    price: float | None
    category: str
    location: str
    image_count: int
    url: str
    image_url: str | None
    score: float = Field(description="0..1; listed at or above the duplicate rule's threshold")
    photo_similarity: float | None = Field(
        description="cosine of the two listings' pooled photo features; null unless both have photos"
    )
    text_similarity: float = Field(description="mean of the title and description similarities, 0..1")
    reasons: list[str] = Field(description='e.g. "same photo (cosine 0.98)", "near-identical title (0.93)"')

    @classmethod
    def of(cls, card: dict[str, Any]) -> DuplicateOut:
        """From `Marketplace.duplicate_cards`."""
        product_id = str(card["product_id"])
        count = int(card.get("image_count") or 0)
        photo = card.get("photo_similarity")
        return cls(
            product_id=product_id,
            title=str(card["title"]),
            price=_finite(card.get("price")),
            category=str(card.get("category") or ""),
            location=str(card.get("location") or ""),
            image_count=count,
            url=listing_url(product_id),
            image_url=image_url(product_id, 0) if count else None,
            score=float(card["score"]),
            photo_similarity=None if photo is None else float(photo),
            text_similarity=float(card["text_similarity"]),
            reasons=list(card.get("reasons") or []),
        )


class DuplicatesOut(BaseModel):
    product_id: str
    duplicates: list[DuplicateOut]


class DraftDuplicatesOut(BaseModel):
    duplicates: list[DuplicateOut]


class ListingOut(BaseModel):
    """A stored listing with links to its cleaned photos."""

    model_config = ConfigDict(extra="ignore")

    product_id: str
    title: str
    description: str = ""
    category: str
    root_category: str
    leaf_name: str | None = None
    price: float | None = None
    location: str = ""
    town: str | None = None
    county: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    created: str | None = None
    updated_at: datetime | None = None
    image_count: int
    image_urls: list[str]
    url: str
    possible_duplicates: list[DuplicateOut] = Field(
        default_factory=list,
        description="POST and PUT: stored listings this one may duplicate (it is saved all the same)",
    )

    @classmethod
    def of(cls, listing: dict[str, Any]) -> ListingOut:
        product_id = str(listing["product_id"])
        photos = list(listing.get("images") or [])
        skip = ("images", "image_count", "image_urls", "url", "possible_duplicates")
        fields = {k: v for k, v in listing.items() if k not in skip}
        fields["possible_duplicates"] = [DuplicateOut.of(c) for c in listing.get("possible_duplicates") or []]
        for key in ("price", "latitude", "longitude"):
            fields[key] = _finite(fields.get(key))
        for key in ("description", "location"):
            fields[key] = fields.get(key) or ""
        return cls(
            **fields,
            image_count=len(photos),
            image_urls=[image_url(product_id, n) for n in range(len(photos))],
            url=listing_url(product_id),
        )


def listing_url(product_id: str) -> str:
    from urllib.parse import quote

    return f"/listings/{quote(product_id, safe='')}"


def image_url(product_id: str, n: int) -> str:
    return f"{listing_url(product_id)}/images/{n}"


def _finite(value: Any) -> float | None:
    """NaN/inf from pandas are 'unknown' in JSON (which has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None
