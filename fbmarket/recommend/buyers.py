"""Buyers and what their history says about them (docs/ranking.md).

A `Buyer` is whoever is being ranked for: a known user (Users.csv or the simulator), a
new user described inline, or an unknown id. `BuyerProfiles` is everything learned from
interactions that the ranker needs about buyers and listings:

* category affinity per user, event-weighted (view 1, click 2, save 3, message 4 by
  default) and smoothed towards the user's cohort, so two clicks do not make a taste;
* affinity per cohort (age band, gender, region) with back-off
  (band+gender+region -> band+gender -> band -> everyone), which is what a buyer without
  history (an unknown id, a new user) gets: the cold start;
* a budget per user: stated when given, else the median price of what they interacted
  with, else their cohort's median;
* listing popularity (event-weighted counts).

Profiles are saved as JSON, never pickled.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbmarket.config import RankSettings
from fbmarket.data import schema as S
from fbmarket.data.geo import split_location
from fbmarket.files import atomic_write_text, dumps_json

log = logging.getLogger(__name__)

USER_ID = "user_id"
AGE = "age"
GENDER = "gender"
BUDGET = "budget_gbp"
MAX_TRAVEL = "max_travel_km"
REGION = "region"
EVENT = "event"
TIMESTAMP = "timestamp"
QUERY = "query"
SESSION_ID = "session_id"
BUYER_COLUMNS = (USER_ID, AGE, GENDER, S.LOCATION, REGION, S.LATITUDE, S.LONGITUDE, BUDGET, MAX_TRAVEL)
UNKNOWN = "unknown"
PROFILE_FORMAT = 1
# `BuyerProfiles.budget` sources that say nothing about the buyer themselves
GENERIC_BUDGET_SOURCES = ("everyone", "default")

_GENDER_WORDS = {
    "f": "female", "female": "female", "woman": "female", "w": "female",
    "m": "male", "male": "male", "man": "male",
}  # fmt: skip


def normalise_gender(value: object) -> str:
    """'F', 'Female', 'woman' -> 'female'; other given values -> 'other'; missing -> 'unknown'."""
    if not isinstance(value, str) or not value.strip():
        return UNKNOWN
    text = value.strip().lower()
    if text in ("unknown", "nan", "none", "n/a", "prefer not to say"):
        return UNKNOWN
    return _GENDER_WORDS.get(text, "other")


def region_of(location: object) -> str:
    """The cohort region of a 'Town, County' string: its county (or the one part given), else 'unknown'."""
    town, county = split_location(location)
    name = (county or town).strip()
    return " ".join(name.split()).title() if name else UNKNOWN


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Buyer:
    """Who a ranking is for. Missing fields are None; `known` = has a record in the profiles."""

    user_id: str | None = None
    age: float | None = None
    gender: str | None = None
    location: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    budget_gbp: float | None = None
    max_travel_km: float | None = None
    known: bool = False
    region: str | None = None  # county, for the cohort; derived from `location` when missing

    def __post_init__(self) -> None:
        self.age = _finite(self.age)
        self.latitude = _finite(self.latitude)
        self.longitude = _finite(self.longitude)
        self.budget_gbp = _finite(self.budget_gbp)
        self.max_travel_km = _finite(self.max_travel_km)
        if self.budget_gbp is not None and self.budget_gbp < 0:
            self.budget_gbp = None
        if self.max_travel_km is not None and self.max_travel_km <= 0:
            self.max_travel_km = None
        if self.region is None and self.location:
            self.region = region_of(self.location)

    @property
    def has_location(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def age_band(age: float | None, edges: Sequence[int]) -> str:
    """'25-34' style band of an age for band lower `edges`; below the first edge -> first band."""
    if age is None or not math.isfinite(age):
        return UNKNOWN
    edges = list(edges)
    index = max(0, int(np.searchsorted(edges, age, side="right")) - 1)
    if index == len(edges) - 1:
        return f"{edges[-1]}+"
    return f"{edges[index]}-{edges[index + 1] - 1}"


def cohort(buyer: Buyer, settings: RankSettings | None = None) -> tuple[str, str, str]:
    """(age band, gender, region) of a buyer; each part is 'unknown' when the buyer did not say."""
    edges = (settings or RankSettings()).age_band_edges
    return (
        age_band(buyer.age, edges),
        normalise_gender(buyer.gender),
        buyer.region or (region_of(buyer.location) if buyer.location else UNKNOWN),
    )


def _cohort_levels(key: tuple[str, str, str]) -> list[str]:
    """Cohort keys from the broadest to the most specific: '', 'band', 'band|gender', 'band|gender|region'."""
    return ["", key[0], f"{key[0]}|{key[1]}", "|".join(key)]


# ---- loaders --------------------------------------------------------------------------------------


def load_buyers(users: pd.DataFrame, geocode: bool = True) -> pd.DataFrame:
    """A Users.csv frame (real or simulated) -> one clean row per user with BUYER_COLUMNS.

    Needs user_id, age, gender, location; budget_gbp, max_travel_km, latitude, longitude are
    optional. Coordinates missing for a row are geocoded offline from its location (rows that
    do not geocode keep NaN: distance is then neutral). Rows without a user id are dropped,
    duplicated ids keep their last row; both are logged with counts.
    """
    S.require_columns(users, S.RAW_USER_COLUMNS, "users")
    frame = users.copy()
    frame[USER_ID] = frame[USER_ID].astype("string").str.strip()
    missing_id = frame[USER_ID].isna() | (frame[USER_ID] == "")
    duplicated = frame[USER_ID].duplicated(keep="last") & ~missing_id
    if missing_id.any() or duplicated.any():
        log.warning(
            "users: dropped %d row(s) without user_id and %d duplicated id(s)",
            int(missing_id.sum()),
            int(duplicated.sum()),
        )
    frame = frame[~missing_id & ~duplicated].reset_index(drop=True)
    frame[AGE] = pd.to_numeric(frame[AGE], errors="coerce")
    frame[GENDER] = [normalise_gender(g) for g in frame[GENDER].astype(object)]
    frame[S.LOCATION] = frame[S.LOCATION].astype(object).where(frame[S.LOCATION].notna(), None)
    for column in (S.LATITUDE, S.LONGITUDE, BUDGET, MAX_TRAVEL):
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else np.nan
    need = frame[S.LATITUDE].isna() | frame[S.LONGITUDE].isna()
    if geocode and need.any():
        from fbmarket.data.geo import Gazetteer

        geo = Gazetteer.load().geocode(frame.loc[need, S.LOCATION])
        frame.loc[need, S.LATITUDE] = geo[S.LATITUDE].to_numpy()
        frame.loc[need, S.LONGITUDE] = geo[S.LONGITUDE].to_numpy()
    frame[REGION] = [region_of(v) for v in frame[S.LOCATION]]
    frame[USER_ID] = frame[USER_ID].astype(str)
    return frame[list(BUYER_COLUMNS)]


def load_interactions(
    interactions: pd.DataFrame, events: Iterable[str] = S.INTERACTION_EVENTS
) -> pd.DataFrame:
    """An Interactions.csv frame -> validated events sorted by time.

    Needs user_id, product_id, event, timestamp; `query` and `session_id` are optional (a
    missing session id becomes one session per user and day). Events are lower-cased; rows
    with an unknown event, a missing id or an unparseable timestamp are dropped and counted
    in `frame.attrs["skipped"]`.
    """
    S.require_columns(interactions, S.RAW_INTERACTION_COLUMNS, "interactions")
    frame = interactions.copy()
    for column in (USER_ID, S.PRODUCT_ID):
        frame[column] = frame[column].astype("string").str.strip()
    frame[EVENT] = frame[EVENT].astype("string").str.strip().str.lower()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], errors="coerce", format="mixed")
    known_events = set(events)
    problems = {
        "missing_id": frame[USER_ID].isna() | (frame[USER_ID] == "") | frame[S.PRODUCT_ID].isna(),
        "unknown_event": ~frame[EVENT].isin(known_events).fillna(False),
        "bad_timestamp": frame[TIMESTAMP].isna(),
    }
    bad = np.zeros(len(frame), dtype=bool)
    skipped: dict[str, int] = {}
    for reason, mask in problems.items():
        mask = mask.to_numpy(bool) & ~bad
        if mask.any():
            skipped[reason] = int(mask.sum())
        bad |= mask
    if skipped:
        log.warning("interactions: skipped %s", skipped)
    frame = frame[~bad].copy()
    frame[QUERY] = frame[QUERY].fillna("").astype(str) if QUERY in frame else ""
    if SESSION_ID not in frame:
        frame[SESSION_ID] = frame[USER_ID] + "@" + frame[TIMESTAMP].dt.strftime("%Y-%m-%d")
    frame[SESSION_ID] = frame[SESSION_ID].astype(str)
    for column in (USER_ID, S.PRODUCT_ID, EVENT):
        frame[column] = frame[column].astype(str)
    frame = frame.sort_values([TIMESTAMP, SESSION_ID], kind="stable").reset_index(drop=True)
    frame = frame[[USER_ID, S.PRODUCT_ID, EVENT, TIMESTAMP, QUERY, SESSION_ID]]
    frame.attrs["skipped"] = skipped
    return frame


# ---- profiles -------------------------------------------------------------------------------------


def _smooth(counts: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    """Posterior mean of a Dirichlet(strength * prior) after `counts`: shrinks small histories."""
    return (counts + strength * prior) / (counts.sum() + strength)


@dataclass
class BuyerProfiles:
    """Learned buyer and listing statistics; see the module docstring."""

    categories: list[str]
    level: str  # product column the categories come from
    user_affinity: dict[str, list[float]]  # user -> distribution over categories
    cohort_affinity: dict[str, list[float]]  # cohort key ('' = everyone) -> distribution
    user_budget: dict[str, float]  # median price of a user's interacted listings
    cohort_budget: dict[str, float]  # cohort key -> median budget of its users
    user_events: dict[str, int]  # number of events per user (history size)
    popularity: dict[str, float]  # product -> event-weighted count
    buyers: dict[str, dict[str, Any]] = field(default_factory=dict)  # user -> Buyer fields
    settings: RankSettings = field(default_factory=RankSettings)

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        buyers: pd.DataFrame | None,
        interactions: pd.DataFrame,
        products: pd.DataFrame,
        settings: RankSettings | None = None,
    ) -> BuyerProfiles:
        """Profiles from clean buyers (`load_buyers`, may be None), interactions (`load_interactions`)
        and clean products. Interactions with listings not in `products` are ignored for
        affinity and budget (their category and price are unknown) but count for popularity."""
        settings = settings or RankSettings()
        level = settings.affinity_level
        S.require_columns(products, (S.PRODUCT_ID, level, S.PRICE), "products")
        S.require_columns(interactions, (USER_ID, S.PRODUCT_ID, EVENT), "interactions")
        categories = sorted(products[level].dropna().astype(str).unique().tolist())
        if not categories:
            raise ValueError(f"products have no value in {level!r}: nothing to have an affinity for")
        cat_index = {c: i for i, c in enumerate(categories)}

        weights = interactions[EVENT].map(settings.event_weights).fillna(0.0).to_numpy(float)
        events = pd.DataFrame(
            {
                USER_ID: interactions[USER_ID].astype(str).to_numpy(),
                "pid": interactions[S.PRODUCT_ID].astype(str).to_numpy(),
                EVENT: interactions[EVENT].astype(str).to_numpy(),
                "w": weights,
            }
        )
        popularity = events.groupby("pid")["w"].sum()
        item = products.drop_duplicates(S.PRODUCT_ID, keep="last")
        item = item.set_index(item[S.PRODUCT_ID].astype(str))
        events["cat"] = events["pid"].map(item[level].astype(str).map(cat_index))
        events["price"] = events["pid"].map(pd.to_numeric(item[S.PRICE], errors="coerce"))
        listed = events.dropna(subset=["cat"])

        # Per-user category counts.
        matrix = listed.pivot_table(index=USER_ID, columns="cat", values="w", aggfunc="sum", fill_value=0.0)
        matrix = matrix.reindex(columns=range(len(categories)), fill_value=0.0)
        user_counts = {
            u: row for u, row in zip(matrix.index.astype(str), matrix.to_numpy(float), strict=True)
        }

        buyer_rows: dict[str, Buyer] = {}
        if buyers is not None:
            for record in buyers.to_dict("records"):
                uid = str(record[USER_ID])
                buyer_rows[uid] = Buyer(
                    user_id=uid,
                    age=record.get(AGE),
                    gender=record.get(GENDER),
                    location=record.get(S.LOCATION) if isinstance(record.get(S.LOCATION), str) else None,
                    latitude=record.get(S.LATITUDE),
                    longitude=record.get(S.LONGITUDE),
                    budget_gbp=record.get(BUDGET),
                    max_travel_km=record.get(MAX_TRAVEL),
                    known=True,
                    region=record.get(REGION) if isinstance(record.get(REGION), str) else None,
                )
        for uid in user_counts:  # users seen only in interactions are known too, without demographics
            buyer_rows.setdefault(uid, Buyer(user_id=uid, known=True))

        # Budget from history: prefer what the user engaged with (click and beyond) over mere views.
        positive = set(settings.positive_events)
        priced = events[events["price"].notna()]
        engaged = priced[priced[EVENT].isin(positive)]
        budget = priced.groupby(USER_ID)["price"].median()
        budget.update(engaged.groupby(USER_ID)["price"].median())
        user_budget = {str(u): float(v) for u, v in budget.items()}

        # Cohort affinity, broad to specific, each level smoothed towards its parent.
        keys = {uid: _cohort_levels(cohort(b, settings)) for uid, b in buyer_rows.items()}
        n = len(categories)
        level_counts: dict[str, np.ndarray] = {"": np.zeros(n)}
        for uid, counts in user_counts.items():
            for key in keys[uid]:
                level_counts[key] = level_counts.get(key, np.zeros(n)) + counts
        cohort_affinity = {"": _smooth(level_counts[""], np.full(n, 1.0 / n), n)}
        for depth in (1, 2, 3):
            for key in sorted({k[depth] for k in keys.values()}):
                parent = key.rsplit("|", 1)[0] if depth > 1 else ""
                counts = level_counts.get(key)
                if counts is not None:
                    cohort_affinity[key] = _smooth(
                        counts, cohort_affinity[parent], settings.cohort_prior_strength
                    )

        # Cohort budget: median of its users' stated-or-inferred budgets.
        budgets = {
            uid: b.budget_gbp if b.budget_gbp is not None else user_budget.get(uid)
            for uid, b in buyer_rows.items()
        }
        by_key: dict[str, list[float]] = {}
        for uid, value in budgets.items():
            if value is not None:
                for key in keys[uid]:
                    by_key.setdefault(key, []).append(value)
        cohort_budget = {k: float(np.median(v)) for k, v in by_key.items()}
        if "" not in cohort_budget:
            prices = pd.to_numeric(products[S.PRICE], errors="coerce").dropna()
            cohort_budget[""] = float(prices.median()) if len(prices) else 50.0

        profiles = cls(
            categories=categories,
            level=level,
            user_affinity={},
            cohort_affinity={k: v.tolist() for k, v in cohort_affinity.items()},
            user_budget=user_budget,
            cohort_budget=cohort_budget,
            user_events={str(u): int(c) for u, c in events.groupby(USER_ID).size().items()},
            popularity={str(p): float(w) for p, w in popularity.items()},
            buyers={uid: b.to_json() for uid, b in buyer_rows.items()},
            settings=settings,
        )
        for uid, counts in user_counts.items():
            prior, _ = profiles.cohort_affinity_of(buyer_rows[uid])
            profiles.user_affinity[uid] = _smooth(counts, prior, settings.user_prior_strength).tolist()
        return profiles

    # ---- lookups ----------------------------------------------------------------------------------
    def buyer(self, user_id: str | None) -> Buyer:
        """The known buyer with this id, or a cold-start `Buyer(known=False)` for an unknown id."""
        if user_id is not None and str(user_id) in self.buyers:
            return Buyer(**self.buyers[str(user_id)])
        return Buyer(user_id=None if user_id is None else str(user_id), known=False)

    def has_history(self, buyer: Buyer) -> bool:
        return buyer.user_id is not None and buyer.user_id in self.user_affinity

    def cohort_affinity_of(self, buyer: Buyer) -> tuple[np.ndarray, str]:
        """Affinity of the most specific cohort of `buyer` that has data, and which cohort it was."""
        for key in reversed(_cohort_levels(cohort(buyer, self.settings))):
            if key in self.cohort_affinity:
                return np.asarray(self.cohort_affinity[key]), f"cohort:{key}" if key else "everyone"
        n = len(self.categories)
        return np.full(n, 1.0 / n), "uniform"

    def affinity(self, buyer: Buyer) -> tuple[np.ndarray, str]:
        """(distribution over `categories`, source): the user's own when they have history, else the cohort's."""
        if self.has_history(buyer):
            return np.asarray(self.user_affinity[buyer.user_id]), "user"  # type: ignore[index]
        return self.cohort_affinity_of(buyer)

    def budget(self, buyer: Buyer) -> tuple[float, str]:
        """(budget in GBP, source): stated, else from the user's history, else their cohort's median."""
        if buyer.budget_gbp is not None:
            return buyer.budget_gbp, "stated"
        if buyer.user_id is not None and buyer.user_id in self.user_budget:
            return self.user_budget[buyer.user_id], "history"
        for key in reversed(_cohort_levels(cohort(buyer, self.settings))):
            if key in self.cohort_budget:
                return self.cohort_budget[key], f"cohort:{key}" if key else "everyone"
        return 50.0, "default"

    def max_travel(self, buyer: Buyer) -> float:
        return buyer.max_travel_km if buyer.max_travel_km is not None else self.settings.default_travel_km

    @functools.cached_property
    def _popularity(self) -> pd.Series:
        return pd.Series(self.popularity, dtype=float)

    def popularity_of(self, product_ids: Iterable[str]) -> np.ndarray:
        """Event-weighted popularity of each id (0 for listings nobody interacted with)."""
        ids = (
            pd.Index([str(p) for p in product_ids])
            if not isinstance(product_ids, np.ndarray)
            else product_ids
        )
        return self._popularity.reindex(ids).fillna(0.0).to_numpy(float)

    # ---- persistence ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["settings"] = asdict(self.settings)
        payload["format"] = PROFILE_FORMAT
        return payload

    def save(self, path: Path) -> Path:
        """Write atomically so a reader never sees half a file."""
        path = Path(path)
        atomic_write_text(path, dumps_json(self.to_json()))
        return path

    @classmethod
    def load(cls, path: Path) -> BuyerProfiles:
        payload = json.loads(Path(path).read_text())
        if payload.pop("format", None) != PROFILE_FORMAT:
            raise ValueError(f"{path} is not a buyer-profile file of format {PROFILE_FORMAT}")
        known = {f.name for f in RankSettings.__dataclass_fields__.values()}
        payload["settings"] = RankSettings(**{k: v for k, v in payload["settings"].items() if k in known})
        return cls(**payload)


def resolve_buyer(
    profiles: BuyerProfiles,
    user_id: str | None = None,
    **fields: Any,
) -> tuple[Buyer, str, list[str]]:
    """The buyer a request is for, its status and notes (the serving contract).

    status: "known" (user id in the profiles; inline fields override theirs), "cold_start"
    (an id the profiles do not know: ranked with its cohort's tastes), "inline" (no id, but
    demographics given) or "anonymous". Inline `location` without coordinates is geocoded.
    """
    given = {k: v for k, v in fields.items() if v is not None}
    unknown = set(given) - set(Buyer.__dataclass_fields__) - {"known"}
    if unknown:
        raise ValueError(f"unknown buyer field(s): {', '.join(sorted(unknown))}")
    notes: list[str] = []
    base = profiles.buyer(user_id)
    if base.known:
        status = "known"
    elif user_id is not None:
        status = "cold_start"
        notes.append(f"user {user_id!r} not found: treated as a cold-start buyer (tastes of similar buyers)")
    else:
        status = "inline" if given else "anonymous"
    merged = base.to_json() | given
    if "location" in given and "latitude" not in given:
        merged["latitude"] = merged["longitude"] = None
        merged["region"] = None
    buyer = Buyer(**merged)
    if buyer.location and not buyer.has_location:
        from fbmarket.data.geo import Gazetteer

        geo = Gazetteer.load().geocode(pd.Series([buyer.location]))
        buyer.latitude = _finite(geo[S.LATITUDE].iloc[0])
        buyer.longitude = _finite(geo[S.LONGITUDE].iloc[0])
        if not buyer.has_location:
            notes.append(f"location {buyer.location!r} not recognised: distance is not used")
    if status != "known" or not profiles.has_history(buyer):
        _, source = profiles.affinity(buyer)
        band, gender, region = cohort(buyer, profiles.settings)
        notes.append(f"category tastes from {source} (age band {band}, gender {gender}, region {region})")
    return buyer, status, notes
