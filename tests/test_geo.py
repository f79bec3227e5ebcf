"""Offline geocoding of "Town, County" strings, distances and the UK outline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point

from fbmarket.data import geo
from fbmarket.data import schema as S
from fbmarket.data.geo import Gazetteer, haversine_km, normalise, region_key, split_location, uk_outline

DEV_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gumtree-dev"
LONDON = (51.5074, -0.1278)
MANCHESTER = (53.4808, -2.2426)


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return Gazetteer.load()


def locate(gazetteer: Gazetteer, location: object) -> pd.Series:
    return gazetteer.geocode(pd.Series([location]), details=True).iloc[0]


def km_from(row: pd.Series, lat: float, lon: float) -> float:
    return float(haversine_km(row[S.LATITUDE], row[S.LONGITUDE], lat, lon))


# ---- normalisation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("St. Albans", "Saint Albans"),
        ("St Albans", "st albans"),
        ("Stoke-upon-Trent", "Stoke on Trent"),
        ("Brighton & Hove", "Brighton and Hove"),
        ("Ynys Môn", "ynys mon"),
        ("The Wirral", "Wirral"),
        ("King's Lynn", "Kings Lynn"),
        ("  Houghton-le-Spring ", "Houghton Le Spring"),
    ],
)
def test_normalise_equates_spellings(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


def test_normalise_keeps_different_places_apart_and_survives_non_strings() -> None:
    assert normalise("Newcastle") != normalise("Newcastle-under-Lyme")
    assert normalise("The") == "the"  # a lone "the" is not stripped to nothing
    assert normalise(np.nan) == normalise(None) == normalise(12) == ""


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("County Durham", "durham"),
        ("Sir Powys", "powys"),
        ("City and County of Swansea", "swansea"),
        ("Caerphilly County Borough", "caerphilly"),
        ("Aberdeen City", "aberdeen"),
        ("The Scottish Borders", "scottish borders"),
        ("Metropolitan Borough of Wirral", "wirral"),
        ("Down District", "down"),
    ],
)
def test_region_key_strips_admin_wrappers(raw: str, key: str) -> None:
    assert region_key(raw) == key


def test_split_location() -> None:
    assert split_location("Delph, Manchester") == ("Delph", "Manchester")
    assert split_location("Shenley Church End, Buckinghamshire") == ("Shenley Church End", "Buckinghamshire")
    assert split_location("Aberdeen") == ("Aberdeen", "")
    assert split_location(np.nan) == ("", "")


# ---- towns ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("location", "lat", "lon"),
    [
        ("Southampton, Hampshire", 50.904, -1.404),
        ("Inverness, Highland", 57.479, -4.224),
        ("Delph, Manchester", 53.567, -2.017),
        ("Croydon, London", 51.372, -0.101),
        ("Paisley, Renfrewshire", 55.832, -4.433),
    ],
)
def test_exact_towns(gazetteer: Gazetteer, location: str, lat: float, lon: float) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town"
    assert km_from(row, lat, lon) < 5
    assert row[S.TOWN] == location.split(",")[0]
    assert row[S.COUNTY] == location.split(", ")[1]


@pytest.mark.parametrize(
    ("location", "lat", "lon"),
    [
        ("Bangor, County Down", 54.66, -5.67),
        ("Bangor, Gwynedd", 53.23, -4.13),
        ("Richmond, London", 51.46, -0.31),
        ("Richmond, North Yorkshire", 54.40, -1.73),
        ("Ashford, Kent", 51.15, 0.87),
        ("Ashford, Surrey", 51.43, -0.46),
        ("Newport, Isle of Wight", 50.70, -1.29),
        ("Newport, Newport", 51.59, -3.00),
    ],
)
def test_county_disambiguates_homonyms(gazetteer: Gazetteer, location: str, lat: float, lon: float) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town"
    assert km_from(row, lat, lon) < 5


def test_gumtree_region_names_resolve_through_aliases(gazetteer: Gazetteer) -> None:
    # Bolton is its own borough; "Manchester" is Gumtree's name for Greater Manchester.
    bolton = locate(gazetteer, "Bolton, Manchester")
    assert bolton[S.GEO_MATCH] == "town" and km_from(bolton, 53.58, -2.43) < 5
    # Not Newcastle in County Down nor Newcastle-under-Lyme.
    newcastle = locate(gazetteer, "Newcastle, Tyne and Wear")
    assert newcastle[S.GEO_MATCH] == "town" and km_from(newcastle, 54.97, -1.61) < 5
    antrim = gazetteer.region("County Antrim")
    assert antrim is not None and "ballymena" in antrim.members


@pytest.mark.parametrize(
    ("location", "lat", "lon"),
    [
        ("stoke-on-trent, staffordshire", 53.00, -2.18),
        ("STOKE ON TRENT, Staffordshire", 53.00, -2.18),
        ("Burton-on-Trent, Staffordshire", 52.81, -1.64),
        ("Saint Albans, Hertfordshire", 51.75, -0.34),
        ("St. Albans, Hertfordshire", 51.75, -0.34),
        ("Hull, East Yorkshire", 53.74, -0.33),
        ("Birmingham City Centre, West Midlands", 52.48, -1.90),
        ("Lee-on-the-Solent, Hampshire", 50.80, -1.20),
    ],
)
def test_normalised_and_alternate_spellings_match_towns(
    gazetteer: Gazetteer, location: str, lat: float, lon: float
) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town"
    assert km_from(row, lat, lon) < 5


def test_homonym_far_from_the_county_is_rejected(gazetteer: Gazetteer) -> None:
    # The only "Clapham" places in the gazetteer are outside London: fall back to London.
    row = locate(gazetteer, "Clapham, London")
    assert row[S.GEO_MATCH] == "county"
    assert km_from(row, *LONDON) < 10


# ---- fallbacks ----------------------------------------------------------------------------------
def test_unknown_town_falls_back_to_county_centroid(gazetteer: Gazetteer) -> None:
    row = locate(gazetteer, "Nowheresville, Kent")
    assert row[S.GEO_MATCH] == "county"
    assert 50.9 < row[S.LATITUDE] < 51.5 and 0.0 < row[S.LONGITUDE] < 1.5
    bristol = locate(gazetteer, "Downend, Bristol")
    assert bristol[S.GEO_MATCH] == "county" and km_from(bristol, 51.45, -2.59) < 10
    east_london = locate(gazetteer, "East London, London")
    assert east_london[S.GEO_MATCH] == "county" and km_from(east_london, *LONDON) < 10


def test_bare_names_are_towns_or_counties(gazetteer: Gazetteer) -> None:
    aberdeen = locate(gazetteer, "Aberdeen")
    assert aberdeen[S.GEO_MATCH] == "town" and aberdeen[S.TOWN] == "Aberdeen"
    assert km_from(aberdeen, 57.15, -2.10) < 5
    oxfordshire = locate(gazetteer, "Oxfordshire")
    assert oxfordshire[S.GEO_MATCH] == "county"
    assert oxfordshire[S.COUNTY] == "Oxfordshire" and oxfordshire[S.TOWN] is None
    antrim = locate(gazetteer, "County Antrim")
    assert antrim[S.GEO_MATCH] == "county" and 54.0 < antrim[S.LATITUDE] < 55.3


def test_unknown_county_still_finds_a_unique_town(gazetteer: Gazetteer) -> None:
    row = locate(gazetteer, "Inverness, Narnia")
    assert row[S.GEO_MATCH] == "town" and km_from(row, 57.48, -4.22) < 5


def test_garbage_never_crashes(gazetteer: Gazetteer) -> None:
    raw = pd.Series(
        [np.nan, None, "", "   ", ",", "!!!", 42, "Xyzzy, Qwerty", "London"], index=list("abcdefghi")
    )
    out = gazetteer.geocode(raw)
    assert list(out.columns) == [S.TOWN, S.COUNTY, S.LATITUDE, S.LONGITUDE, S.GEO_MATCH]
    assert list(out.index) == list("abcdefghi")
    assert out[S.GEO_MATCH].tolist() == ["unknown"] * 8 + ["town"]
    assert out[S.LATITUDE].iloc[:8].isna().all() and out[S.LONGITUDE].iloc[:8].isna().all()
    assert out[S.LATITUDE].dtype == np.float64


def test_geocode_keeps_index_and_handles_empty(gazetteer: Gazetteer) -> None:
    series = pd.Series(["Leeds, West Yorkshire", "Leeds, West Yorkshire"], index=[10, 3])
    out = gazetteer.geocode(series)
    assert list(out.index) == [10, 3]
    assert out[S.LATITUDE].nunique() == 1
    strings = gazetteer.geocode(pd.Series(["Leeds, West Yorkshire", pd.NA], dtype="string"))
    assert strings[S.GEO_MATCH].tolist() == ["town", "unknown"]
    empty = gazetteer.geocode(pd.Series([], dtype=object))
    assert empty.empty
    assert Gazetteer.match_rate(empty) == {"town": 0.0, "county": 0.0, "unknown": 0.0, "matched": 0.0}


def test_match_rate(gazetteer: Gazetteer) -> None:
    out = gazetteer.geocode(pd.Series(["Leeds, West Yorkshire", "Nowhere, Kent", "??", "Leeds"]))
    rates = gazetteer.match_rate(out)
    assert rates == {"town": 0.5, "county": 0.25, "unknown": 0.25, "matched": 0.75}


def test_tiny_gazetteer_from_a_table() -> None:
    places = pd.DataFrame(
        {
            "name": ["Middleton", "Middleton", "Leeds", "Rochdale"],
            "alternates": ["", "", "Loidis", ""],
            "latitude": [53.55, 53.75, 53.80, 53.61],
            "longitude": [-2.20, -1.55, -1.55, -2.16],
            "population": [40000, 0, 450000, 100000],
            "admin1": ["England"] * 4,
            "admin2": ["Borough of Rochdale", "City and Borough of Leeds", "City and Borough of Leeds",
                       "Borough of Rochdale"],
        }
    )  # fmt: skip
    small = Gazetteer(places)
    out = small.geocode(
        pd.Series(["Middleton, West Yorkshire", "Middleton, Manchester", "Middleton", "Loidis"])
    )
    assert out[S.LATITUDE].tolist() == [53.75, 53.55, 53.55, 53.80]  # no county: most populous
    assert out[S.GEO_MATCH].tolist() == ["town"] * 4


def test_load_is_cached_and_bundled_file_is_small(gazetteer: Gazetteer) -> None:
    assert Gazetteer.load() is gazetteer
    assert geo.GB_PLACES_FILE.stat().st_size < 500_000
    places = gazetteer.places
    assert len(places) > 5000
    assert places["latitude"].between(49, 61.5).all() and places["longitude"].between(-9, 2.5).all()
    assert (places["admin2"] != "").all()


# ---- issue 14, kind 8: postcodes, sub-areas, Ireland -----------------------------------------------
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Leeds LS6 2AB, West Yorkshire", "Leeds, West Yorkshire"),
        ("Leeds LS62AB, West Yorkshire", "Leeds, West Yorkshire"),
        ("Leeds LS6, West Yorkshire", "Leeds, West Yorkshire"),
        ("Leeds ls6, West Yorkshire", "Leeds, West Yorkshire"),
        ("Leeds 2AB, West Yorkshire", "Leeds, West Yorkshire"),
        ("LS6 2AB Leeds, West Yorkshire", "Leeds, West Yorkshire"),
        ("Leeds (LS6), West Yorkshire", "Leeds, West Yorkshire"),
        ("Leeds, LS6 2AB, West Yorkshire", "Leeds, West Yorkshire"),
        ("London SW1A 1AA", "London"),
        ("Dublin 6W, Dublin", "Dublin, Dublin"),
        ("Dublin D04 X285", "Dublin"),
        ("3rd Avenue, London", "3rd Avenue, London"),  # ordinals are not inward codes
        ("Stoke-on-Trent, Staffordshire", "Stoke-on-Trent, Staffordshire"),
    ],
)
def test_postcode_fragments_are_stripped(raw: str, clean: str) -> None:
    assert geo.strip_postcodes(raw) == clean


@pytest.mark.parametrize(
    "location",
    [
        "Leeds LS6 2AB, West Yorkshire",
        "Leeds LS6, West Yorkshire",
        "Leeds 2AB, West Yorkshire",
        "LS6 2AB Leeds, West Yorkshire",
        "Leeds (LS6 2AB), West Yorkshire",
    ],
)
def test_postcodes_no_longer_push_a_town_to_its_county(gazetteer: Gazetteer, location: str) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town" and row[S.TOWN] == "Leeds" and row[S.COUNTY] == "West Yorkshire"
    assert km_from(row, 53.80, -1.55) < 5


def test_a_postcode_alone_is_unknown_not_an_error(gazetteer: Gazetteer) -> None:
    assert locate(gazetteer, "LS6 2AB")[S.GEO_MATCH] == "unknown"
    assert locate(gazetteer, "LS6 2AB, West Yorkshire")[S.GEO_MATCH] == "county"


@pytest.mark.parametrize(
    ("location", "town", "lat", "lon"),
    [
        ("Headingley, Leeds, West Yorkshire", "Leeds", 53.80, -1.55),  # Headingley is not in the table
        ("Delph, Saddleworth, Manchester", "Delph", 53.567, -2.017),  # the most local part first
        ("Somewhere New, Bolton, Manchester", "Bolton", 53.58, -2.43),
    ],
)
def test_sub_areas_are_tried_part_by_part(
    gazetteer: Gazetteer, location: str, town: str, lat: float, lon: float
) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town" and row[S.TOWN] == town
    assert km_from(row, lat, lon) < 5


@pytest.mark.parametrize(
    ("location", "lat", "lon"),
    [
        ("Dublin", 53.35, -6.26),
        ("Dublin, Dublin", 53.35, -6.26),
        ("Dublin 4, Dublin", 53.35, -6.26),
        ("Dublin, County Dublin", 53.35, -6.26),
        ("Swords, Co. Dublin", 53.46, -6.22),
        ("Cork", 51.90, -8.47),
        ("Cork, County Cork", 51.90, -8.47),
        ("Galway, County Galway", 53.27, -9.05),
        ("Limerick", 52.66, -8.63),
        ("Dundalk, County Louth", 54.00, -6.40),  # not Louth in Lincolnshire
        ("Navan, Meath", 53.65, -6.68),  # Meath is "An Mhi" in GeoNames
    ],
)
def test_irish_places_are_placed(gazetteer: Gazetteer, location: str, lat: float, lon: float) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town", row.to_dict()
    assert km_from(row, lat, lon) < 8


def test_ireland_does_not_take_over_gb_answers(gazetteer: Gazetteer) -> None:
    # a GB county region keeps its county-level answer rather than an Irish homonym
    assert locate(gazetteer, "Clapham, London")[S.GEO_MATCH] == "county"
    newry = locate(gazetteer, "Newry, County Down")  # Northern Ireland is in the GB table
    assert newry[S.GEO_MATCH] == "town" and km_from(newry, 54.18, -6.34) < 5
    county = locate(gazetteer, "Ballsbridge, Dublin")  # an Irish county, town unknown
    assert county[S.GEO_MATCH] == "county" and km_from(county, 53.35, -6.26) < 15
    rates = gazetteer.match_rate(gazetteer.geocode(pd.Series(["Dublin", "Leeds LS6, West Yorkshire", "??"])))
    assert rates == {"town": 2 / 3, "county": 0.0, "unknown": 1 / 3, "matched": 2 / 3}


def test_the_irish_table_is_small_and_in_ireland(gazetteer: Gazetteer) -> None:
    assert geo.IE_PLACES_FILE.stat().st_size < 100_000
    ireland = gazetteer.neighbour
    assert ireland is not None and ireland.neighbour is None
    assert ireland.places["latitude"].between(51.3, 55.5).all()
    assert region_key("Co. Cork") == region_key("County Cork") == "cork"
    assert region_key("Co Durham") == "durham"


# ---- distances and outline ------------------------------------------------------------------
def test_haversine_known_distances() -> None:
    assert haversine_km(*LONDON, *MANCHESTER) == pytest.approx(262, abs=3)
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.2, abs=0.2)
    assert haversine_km(*LONDON, *LONDON) == 0.0
    assert isinstance(haversine_km(*LONDON, *MANCHESTER), float)


def test_haversine_is_vectorised_and_propagates_nan() -> None:
    lats = np.array([LONDON[0], MANCHESTER[0], np.nan])
    lons = np.array([LONDON[1], MANCHESTER[1], 0.0])
    distance = haversine_km(LONDON[0], LONDON[1], lats, lons)
    assert distance.shape == (3,)
    assert distance[0] == 0.0 and distance[1] == pytest.approx(262, abs=3) and np.isnan(distance[2])
    assert np.allclose(haversine_km(lats[:2], lons[:2], lats[:2][::-1], lons[:2][::-1]), distance[1])


def test_uk_outline_contains_london() -> None:
    outline = uk_outline()
    assert not outline.empty and outline.crs.to_epsg() == 4326
    assert set(outline["name"]) == {"United Kingdom", "Ireland"}
    uk = outline.loc[outline["name"] == "United Kingdom", "geometry"].iloc[0]
    assert uk.contains(Point(LONDON[1], LONDON[0]))
    assert not uk.contains(Point(2.35, 48.86))  # Paris
    assert set(uk_outline(include_ireland=False)["name"]) == {"United Kingdom"}


def test_uk_outline_falls_back_to_gazetteer_hull(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geo, "_package_dir", lambda package: None)  # as if pyogrio shipped no fixture
    outline = uk_outline()
    assert len(outline) == 1 and outline.geometry.iloc[0].contains(Point(LONDON[1], LONDON[0]))


# ---- real data ----------------------------------------------------------------------------------
@pytest.mark.skipif(not (DEV_DATA / "Products.csv").exists(), reason=f"real dev data absent: {DEV_DATA}")
def test_real_dev_locations_match_rate(gazetteer: Gazetteer) -> None:
    products = pd.read_csv(DEV_DATA / "Products.csv", index_col=0, lineterminator="\n")
    locations = products["location"]
    by_product = gazetteer.match_rate(gazetteer.geocode(locations))
    by_location = gazetteer.match_rate(gazetteer.geocode(pd.Series(locations.unique())))
    assert by_product["matched"] >= 0.95
    assert by_location["matched"] >= 0.95
    assert by_location["town"] >= 0.6  # most strings name a town the gazetteer knows


# ---- foreign places, ambiguous names, separators, former counties ------------------------------
@pytest.mark.parametrize(
    "location",
    [
        "Perth, Australia",
        "Perth, Western Australia",
        "Boston, Massachusetts",
        "Boston, MA, USA",
        "Boston, United States of America",
        "London, Ontario",
        "London, Canada",
        "Douglas, Isle of Man",
        "St Helier, Jersey",
        "Melbourne, Australia",
        "Melbourne, Victoria",
        "Hamilton, New Zealand",
        "Hamilton, Waikato",
        "Christchurch, Canterbury",  # New Zealand: Canterbury, Kent is far from Christchurch, Dorset
        "Seattle, Washington",  # Washington, Tyne and Wear is far from any Seattle
        "Richmond, Virginia",
        "Cambridge, Massachusetts",
        "Windsor, Ontario",
        "Paris, France",
        "Stratford / Ontario",
        # state and province abbreviations in capitals
        "Richmond, VA",
        "Cambridge, MA",
        "Newport, RI",
        "Kingston, ON",
        "London, ON",
        "Windsor, NSW",
        "Windsor, N.S.W.",
        "Austin, TX",
    ],
)
def test_a_foreign_country_or_state_is_not_placed_at_a_uk_namesake(gazetteer: Gazetteer, location: str) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "unknown" and np.isnan(row[S.LATITUDE]), location


@pytest.mark.parametrize(
    ("location", "lat", "lon"),
    [
        ("Leeds, Headingley", 53.80, -1.55),  # an unknown sub-area is not a foreign country
        ("Perth, Scotland", 56.40, -3.43),
        ("Cardiff, UK", 51.48, -3.18),
        ("Leeds, United Kingdom", 53.80, -1.55),
        ("Leeds, England", 53.80, -1.55),
        ("Bury, Manchester", 53.59, -2.30),  # also a Jamaican parish: a British region wins
        ("Telford, Wellington", 52.68, -2.45),  # the Shropshire town, not New Zealand's region
        ("Whitstable, Canterbury", 51.36, 1.03),
        ("Dublin, Ireland", 53.33, -6.25),  # the Republic is in the offline gazetteer
        ("Cork, Republic of Ireland", 51.90, -8.47),
        ("Newcastle, Wicklow", 53.07, -6.07),  # an Irish county: Ireland's table, not a GB Newcastle
        ("Belfast, Ireland", 54.58, -5.93),  # the island: Northern Ireland too
        ("Belfast, Northern Ireland", 54.58, -5.93),
        ("Warrington, WA", 53.39, -2.58),  # a UK postcode area before Washington State
        ("Wakefield, WY", 53.68, -1.50),  # West Yorkshire before Wyoming
    ],
)
def test_british_and_irish_last_parts_still_place(
    gazetteer: Gazetteer, location: str, lat: float, lon: float
) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town" and km_from(row, lat, lon) < 10, location


@pytest.mark.parametrize(
    ("location", "lat", "lon"),
    [
        ("Newcastle", 54.97, -1.61),  # Newcastle upon Tyne (300k), not Newcastle, County Down (7k)
        ("Stoke", 53.00, -2.19),  # Stoke-on-Trent
        ("Perth", 56.40, -3.43),
        ("Boston", 52.98, -0.03),
        ("Newcastle, Tyne and Wear", 54.97, -1.61),
        ("Newcastle, County Down", 54.22, -5.89),  # a county still decides
    ],
)
def test_ambiguous_bare_names_resolve_to_the_most_populous_place(
    gazetteer: Gazetteer, location: str, lat: float, lon: float
) -> None:
    row = locate(gazetteer, location)
    assert row[S.GEO_MATCH] == "town" and km_from(row, lat, lon) < 5, location


@pytest.mark.parametrize("separator", [", ", "/", " / ", " - ", " \u2013 ", ";", "; ", " | ", "|"])
def test_common_separators_work_like_commas(gazetteer: Gazetteer, separator: str) -> None:
    row = locate(gazetteer, f"Leeds{separator}West Yorkshire")
    assert row[S.GEO_MATCH] == "town" and row[S.TOWN] == "Leeds" and row[S.COUNTY] == "West Yorkshire"
    assert km_from(row, 53.80, -1.55) < 5
    hyphenated = locate(gazetteer, f"Stoke-on-Trent{separator}Staffordshire")  # a name's own hyphens stay
    assert hyphenated[S.GEO_MATCH] == "town" and km_from(hyphenated, 53.00, -2.19) < 5


@pytest.mark.parametrize(
    ("county", "lat", "lon"),
    [
        ("Greater Manchester", 53.48, -2.24),
        ("Greater London", *LONDON),
        ("Merseyside", 53.41, -2.98),
        ("South Yorkshire", 53.45, -1.35),
        ("Tyne and Wear", 54.95, -1.55),
        ("West Midlands", 52.48, -1.90),
        ("West Yorkshire", 53.75, -1.65),
        ("Middlesex", *LONDON),
        ("Avon", 51.45, -2.59),
        ("Cleveland", 54.57, -1.23),
        ("Humberside", 53.74, -0.34),
        ("Gwent", 51.65, -3.0),
        ("West Glamorgan", 51.65, -3.85),
        ("Strathclyde", 55.86, -4.25),
        ("Lothian", 55.95, -3.19),
        ("Lanarkshire", 55.80, -3.95),
    ],
)
def test_metropolitan_and_former_counties_are_regions(
    gazetteer: Gazetteer, county: str, lat: float, lon: float
) -> None:
    row = locate(gazetteer, county)
    assert row[S.GEO_MATCH] == "county" and km_from(row, lat, lon) < 40, county
    town = locate(gazetteer, f"Nowhere Special, {county}")
    assert town[S.GEO_MATCH] == "county"


def test_every_region_alias_member_is_a_gazetteer_area(gazetteer: Gazetteer) -> None:
    """A misspelt member would silently shrink its region (and a region of none is unknown)."""
    areas = set(gazetteer._admin2) | {region_key(a) for a in gazetteer.places["admin1"]}
    for name, members in geo.REGION_ALIASES.items():
        missing = set(members) - areas
        assert not missing, f"{name}: {sorted(missing)}"


@pytest.mark.parametrize(
    "location", ["Leeds!", "St. Albans, Hertfordshire", "King's Lynn", "Bishops Stortford", "Stoke on Trent!!"]
)
def test_punctuation_in_names_does_not_matter(gazetteer: Gazetteer, location: str) -> None:
    assert locate(gazetteer, location)[S.GEO_MATCH] == "town", location
