"""Which listings a search may return (`Filters`), and how category paths compare.

Category filters match a path or any prefix of it, ignoring case, spacing around " / " and
"and" for "&" ("home & garden", "Home and Garden/Furniture"). A category no listing has (a
typo) is an `UnknownCategoryError` naming the valid roots and the nearest spelling, so a
caller can refuse it instead of returning nothing. Bounds no listing could meet (a minimum
price above the maximum, half a distance filter) are refused as the requester's mistake.

Filters are applied to the service's listing catalogue (fbmarket/catalogue.py), read through
one `CatalogueView` per query (`filter_mask`): whatever a write does meanwhile, a query sees
one version. What is derived from a view (category keys, the listed categories) is cached on
it, so it is computed once per catalogue version.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, fields

import numpy as np

from fbmarket.catalogue import CatalogueView
from fbmarket.data import schema as S
from fbmarket.data.geo import haversine_km
from fbmarket.errors import BadRequestError

KM_PER_DEGREE_LAT = 111.2


@dataclass(frozen=True)
class Filters:
    """Which listings may be returned. Every field is optional; given fields all apply.

    `category` is a category path or any prefix of it ("Home & Garden",
    "Home & Garden / Furniture", or a full leaf path), matched ignoring case, spacing
    around "/" and "and" for "&" (`category_key`); `root_category` and `leaf_category`
    match a whole root or leaf the same way. A price bound excludes listings without a
    price; a distance limit excludes listings whose location is unknown.
    """

    category: str | None = None
    root_category: str | None = None
    leaf_category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    max_km: float | None = None

    def __post_init__(self) -> None:
        """Bounds no listing could meet are the requester's mistake (BadRequestError), said now."""
        for name in ("min_price", "max_price", "max_km", "latitude", "longitude"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value)
            ):
                raise BadRequestError(f"{name} must be a finite number, got {value!r}")
        if self.min_price is not None and self.min_price < 0:
            raise BadRequestError(f"min_price must not be negative, got {self.min_price}")
        if self.max_price is not None and self.max_price < 0:
            raise BadRequestError(f"max_price must not be negative, got {self.max_price}")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise BadRequestError(f"min_price ({self.min_price}) is above max_price ({self.max_price})")
        geo = (self.latitude, self.longitude, self.max_km)
        if any(v is not None for v in geo) and any(v is None for v in geo):
            raise BadRequestError("a distance filter needs latitude, longitude and max_km together")
        if self.max_km is not None and self.max_km <= 0:
            raise BadRequestError(f"max_km must be positive, got {self.max_km}")
        if self.latitude is not None and not -90 <= self.latitude <= 90:
            raise BadRequestError(f"latitude must be within [-90, 90], got {self.latitude}")
        if self.longitude is not None and not -180 <= self.longitude <= 180:
            raise BadRequestError(f"longitude must be within [-180, 180], got {self.longitude}")
        for name in ("category", "root_category", "leaf_category"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadRequestError(f"{name} must be non-empty text, got {value!r}")

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


_SLASH = re.compile(r"\s*/\s*")
# "and" as a word or "&" with or without spaces: "Home And Garden", "HOME AND GARDEN",
# "Home&Garden" and "Home & Garden" are one category. Applied after case-folding, so any case.
_AND = re.compile(r"\s*&\s*|\s+and\s+")
_COMMA = re.compile(r"\s*,\s*")  # "Sports,Leisure" and "Sports , Leisure" are "Sports, Leisure"


def category_key(path: str) -> str:
    """How category paths compare: case-folded, spaces collapsed, " / " between levels, " & " for
    "and" or "&" however spaced, ", " for a comma however spaced ("Sports,Leisure & Travel"). Every category match goes through this one key (filters, the
    canonical spelling a listing is stored in, Milvus's stored keys)."""
    folded = " ".join(path.casefold().split())
    return _COMMA.sub(", ", _AND.sub(" & ", _SLASH.sub(" / ", folded))).strip()


def is_under(path_key: str, prefix_key: str) -> bool:
    return path_key == prefix_key or path_key.startswith(prefix_key + " / ")


class UnknownCategoryError(BadRequestError):
    """A category filter that names no category of the catalogue (a typo, another marketplace's name)."""

    def __init__(self, category: str, roots: list[str], suggestion: str | None):
        self.category = category
        self.roots = roots
        self.suggestion = suggestion
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"unknown category {category!r}.{hint} A category is a root or a path under one "
            f'("Root / Sub / Leaf", any case); the roots are: {"; ".join(roots)}',
            field="category",
            reason="unknown_category",
            details={"valid_roots": roots},
        )


def filter_mask(view: CatalogueView, filters: Filters | None) -> np.ndarray:
    """Boolean mask over the view's rows: listed, and passing every filter."""
    keep = view.alive.copy()
    if filters is None:
        return keep
    if filters.category is not None:
        keep &= _category_rows(view, S.CATEGORY, filters.category.strip(), prefix=True)
    if filters.root_category is not None:
        keep &= _category_rows(view, S.ROOT_CATEGORY, filters.root_category.strip())
    if filters.leaf_category is not None:
        keep &= _category_rows(view, S.LEAF_CATEGORY, filters.leaf_category.strip())
    with np.errstate(invalid="ignore"):
        if filters.min_price is not None:
            keep &= view.price >= filters.min_price
        if filters.max_price is not None:
            keep &= view.price <= filters.max_price
    if filters.max_km is not None:
        keep &= _within(view, filters.latitude, filters.longitude, filters.max_km, keep)
    return keep


def _category_keys(view: CatalogueView, column: str) -> list[str]:
    """`category_key` of every category the column's dictionary holds, by code (once per view)."""
    return view.derived(("category_keys", column), lambda: [category_key(v) for v in view.values(column)])


def _category_rows(view: CatalogueView, column: str, value: str, prefix: bool = False) -> np.ndarray:
    """Rows whose category in `column` is `value` (or, with `prefix`, under it), as filters match."""
    wanted = category_key(value)
    keys = _category_keys(view, column)
    codes = [i for i, key in enumerate(keys) if (is_under(key, wanted) if prefix else key == wanted)]
    return np.isin(view.codes(column), codes)


def live_values(view: CatalogueView, column: str) -> list[str]:
    """The values of a category column some listed row has, in code order."""

    def compute() -> list[str]:
        codes = view.codes(column)[view.alive]
        present = np.unique(codes[codes >= 0])
        values = view.values(column)
        return [values[code] for code in present.tolist()]

    return view.derived(("live_values", column), compute)


def category_prefixes(view: CatalogueView) -> dict[str, str]:
    """category_key -> as written, for every category path of a listed row and every prefix of one."""

    def compute() -> dict[str, str]:
        prefixes: dict[str, str] = {}
        for column in (S.CATEGORY, S.ROOT_CATEGORY):
            for path in live_values(view, column):
                parts = [part.strip() for part in path.split(" / ")]
                for depth in range(1, len(parts) + 1):
                    written = " / ".join(parts[:depth])
                    prefixes.setdefault(category_key(written), written)
        return prefixes

    return view.derived("category_prefixes", compute)


def _within(view: CatalogueView, lat: float, lon: float, max_km: float, keep: np.ndarray) -> np.ndarray:
    # a cheap latitude band first, the exact great-circle distance on what is left
    with np.errstate(invalid="ignore"):
        near = keep & (np.abs(view.latitude - lat) <= max_km / KM_PER_DEGREE_LAT + 1e-9)
    rows = np.flatnonzero(near)
    within = np.zeros(view.n_rows, dtype=bool)
    if len(rows):
        km = np.asarray(haversine_km(lat, lon, view.latitude[rows], view.longitude[rows]), dtype=float)
        within[rows] = km <= max_km  # NaN (unknown location) compares False
    return within
