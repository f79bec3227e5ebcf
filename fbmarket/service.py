"""The marketplace as one object: what the CLI's `search` and the HTTP API call.

It joins the trained bundle (query encoder, category head), the FAISS index, BM25, the
ranker and the database. Every write goes to the database first and the index second,
so a failure half-way leaves the two agreeing (the index is rebuilt from the database's
embeddings on start when they disagree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


class NotFoundError(KeyError):
    """An id that does not exist (listing, buyer): HTTP 404."""


class BadRequestError(ValueError):
    """A request that cannot be served as asked (empty query, k out of range): HTTP 422."""


@dataclass
class BuyerQuery:
    """Who is searching: a known user id, or an inline buyer, or nobody (anonymous)."""

    user_id: str | None = None
    age: int | None = None
    gender: str | None = None
    location: str | None = None  # "Town, County", geocoded offline
    latitude: float | None = None
    longitude: float | None = None
    budget_gbp: float | None = None
    max_travel_km: float | None = None


@dataclass
class SearchRequest:
    query: str | None = None
    image: Image.Image | None = None
    buyer: BuyerQuery | None = None
    k: int = 10
    category: str | None = None  # root or full leaf path
    min_price: float | None = None
    max_price: float | None = None
    max_distance_km: float | None = None


@dataclass
class ListingResult:
    product_id: str
    title: str
    category: str
    root_category: str
    price: float | None
    location: str
    distance_km: float | None
    score: float
    factors: dict[str, float]  # contributions that add up to `score`
    image_count: int = 0


@dataclass
class SearchResponse:
    results: list[ListingResult]
    buyer_status: str  # "known" | "cold_start" (unknown or new user) | "anonymous" | "inline"
    mode: str  # "hybrid" | "lexical" | "semantic" | "feed" — what retrieval actually ran
    notes: list[str] = field(default_factory=list)  # e.g. "user u123 not found: cold-start buyer"


@dataclass
class ListingInput:
    """A listing as a seller submits it; category is predicted when missing."""

    title: str
    description: str = ""
    price: float | None = None
    location: str = ""
    category: str | None = None
    product_id: str | None = None  # generated when missing
    extra: dict[str, Any] = field(default_factory=dict)


class Marketplace:
    """The serving facade. Open it once per process; methods are safe to call from threads."""

    # Implemented in the following commits; the signatures are the contract the CLI and API use:
    # open(bundle_dir: Path, database_url: str | None = None) -> Marketplace
    # ready() -> dict[str, bool]                      bundle / index / database loaded
    # search(request: SearchRequest) -> SearchResponse
    # similar(product_id: str, k: int = 10) -> list[ListingResult]
    # recommend(user_id: str, k: int = 10) -> SearchResponse
    # predict_category(text: str | None, image: Image | None, top: int = 3) -> list[tuple[str, float]]
    # get_listing(product_id: str) -> dict            listing fields + "images": [image ids]
    # image_path(product_id: str, n: int) -> Path     the cleaned photo n of a listing
    # create_listing(listing: ListingInput, photos: list[bytes]) -> dict
    # update_listing(product_id: str, listing: ListingInput, photos: list[bytes] | None) -> dict
    # delete_listing(product_id: str) -> None
    # close() -> None
