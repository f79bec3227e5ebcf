"""What the marketplace facade (fbmarket/service/marketplace.py) takes and gives: one shape per thing.

The CLI and the HTTP API both build a `SearchRequest` (with `SearchRequest.build`) and read a
`SearchResponse`; a ranked listing is a `ListingResult` everywhere (the API's `ListingCard`
is the same model plus its links); the buyer of a request is the ranker's own `Buyer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel

from fbmarket.errors import BadRequestError
from fbmarket.limits import MAX_RESULTS, check_k
from fbmarket.recommend.buyers import Buyer


def check_request_k(k: object) -> int:
    """`k` of a client's request (1 to `limits.MAX_RESULTS`), or the client's 422 (BadRequestError)."""
    return check_k(k, MAX_RESULTS, BadRequestError)


def plain(value: Any) -> Any:
    """A stored or computed value as plain JSON: numpy scalars unwrapped, NaN and inf as None."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class SearchRequest:
    query: str | None = None
    image: Image.Image | None = None
    buyer: Buyer | None = None  # who searches: a user id and/or inline fields; None = anonymous
    k: int = 10
    category: str | None = None  # root or full leaf path
    min_price: float | None = None
    max_price: float | None = None
    max_distance_km: float | None = None

    @classmethod
    def build(
        cls,
        query: str | None = None,
        image: Image.Image | None = None,
        k: int = 10,
        user_id: str | None = None,
        category: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
        max_distance_km: float | None = None,
        **buyer: Any,
    ) -> SearchRequest:
        """The one mapping from a client's flat parameters (API query string or form, CLI flags)
        to a request: a buyer only when a user id or any inline buyer field is given (`buyer`:
        Buyer's fields, e.g. age, gender, location, latitude, longitude, budget_gbp)."""
        given = {name: value for name, value in buyer.items() if value is not None}
        if isinstance(given.get("gender"), str):
            given["gender"] = given["gender"].lower()
        return cls(
            query=query,
            image=image,
            buyer=Buyer(user_id=user_id, **given) if user_id or given else None,
            k=k,
            category=category,
            min_price=min_price,
            max_price=max_price,
            max_distance_km=max_distance_km,
        )


class ListingResult(BaseModel):
    """One ranked listing; `factors` are the contributions that add up to `score` (why it ranked)."""

    product_id: str
    title: str
    category: str
    root_category: str
    price: float | None
    location: str
    distance_km: float | None
    score: float
    factors: dict[str, float]
    image_count: int = 0
    # a photo search whose photo is this listing's own (pooled photo cosine >=
    # SearchSettings.photo_match_cosine): kept first by the ranker whatever the buyer factors
    photo_match: bool = False


@dataclass
class SearchResponse:
    results: list[ListingResult]
    buyer_status: str  # "known" | "cold_start" (unknown or new user) | "anonymous" | "inline"
    # "hybrid" | "lexical" | "semantic" | "feed" | "none" — what retrieval actually ran ("none": the
    # query has no word the catalogue or the model knows, so nothing was searched; a note says so)
    mode: str
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


@dataclass
class PriceSuggestion:
    """A fair price for a draft listing (fbmarket/price/): the median and a calibrated range in
    GBP, P(free), the category it was priced in, and the nearest priced listings as evidence."""

    median: float
    low: float
    high: float
    free_probability: float
    category: str
    category_source: str  # "given" | "predicted"
    evidence: list[ListingResult]
    interval: float = 0.8  # nominal share of prices inside [low, high]
    model: str = "lightgbm-quantile"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (the CLI's --json)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {
            "evidence": [result.model_dump() for result in self.evidence]
        }
