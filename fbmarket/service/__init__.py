"""The marketplace facade the HTTP API and the command line call: `Marketplace` (marketplace.py)
and what it takes and gives (types.py). Its jobs live in their own modules, mixed into
`Marketplace`: search and feeds (search.py), listing writes (writes.py), duplicate checks
(duplicates.py) and price suggestions (prices.py)."""

from fbmarket.bundle.settings import load_bundle_settings
from fbmarket.service.marketplace import Marketplace, listing_catalogue
from fbmarket.service.types import (
    ListingInput,
    ListingResult,
    PriceSuggestion,
    SearchRequest,
    SearchResponse,
)

__all__ = [
    "ListingInput",
    "ListingResult",
    "Marketplace",
    "PriceSuggestion",
    "SearchRequest",
    "SearchResponse",
    "listing_catalogue",
    "load_bundle_settings",
]
