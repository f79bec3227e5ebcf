"""Location strings -> the keys the gazetteer matches on (`data/geo.py`).

Gumtree locations are free text ("Stoke-on-Trent, Staffordshire", "Leeds LS6 2AB, West
Yorkshire", "St. Albans, Hertfordshire"): before matching, accents, case, punctuation
and wrappers such as "County" or "City of" are taken out, "saint" and "upon" spelt one
way, and postcode fragments removed, so that the same place always gives the same key.
"""

from __future__ import annotations

import functools
import re
import unicodedata

_REGION_PREFIXES = (
    "city and county of ", "city and borough of ", "metropolitan borough of ", "royal borough of ",
    "borough of ", "district of ", "county of ", "city of ", "county ", "co ", "sir ",
)  # fmt: skip
_REGION_SUFFIXES = (" county borough", " borough", " district", " city")
# "Stoke-on-Trent" -> "stoke": a shorter, lower-priority key (both for places and queries).
SHORT_FORM = re.compile(r"^(.+?) (?:on|under|in|by|le|next the) \w.*$")
QUERY_NOISE = re.compile(r" (?:city centre|town centre|centre|city)$")
# UK postcodes: whole ("LS6 2AB"), outward code alone ("LS6", "SW1A"), inward code alone ("2AB",
# not an ordinal such as "3rd"); Irish Eircodes ("D02 X285") and district numbers ("Dublin 6W").
_POSTCODE_PARTS = (
    re.compile(r"\b[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}\b", re.IGNORECASE),
    re.compile(r"\b[AC-FHKNPRTV-Y][0-9][0-9W] ?[0-9AC-FHKNPRTV-Y]{4}\b", re.IGNORECASE),
    re.compile(r"\b[A-Z]{1,2}[0-9][A-Z0-9]?\b", re.IGNORECASE),
    re.compile(r"\b[0-9](?!st\b|nd\b|rd\b|th\b)[A-Z]{2}\b", re.IGNORECASE),
    re.compile(r"\b[0-9]{1,3}W?\b", re.IGNORECASE),
)
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
# Separators people type between a town and its county instead of a comma: "Leeds / West
# Yorkshire", "Leeds - West Yorkshire" (a dash between spaces: "Stoke-on-Trent" keeps its own),
# "Leeds; West Yorkshire", "Leeds | West Yorkshire".
_SEPARATORS = re.compile(r"\s*[;|/\\]\s*|\s+[-\u2013\u2014]+\s+")
# Countries whose states / provinces / counties share many town names with Great Britain
# ("Perth, Western Australia", "Boston, Massachusetts", "London, Ontario", "Hamilton, Waikato"):
# their ISO 3166-2 subdivisions count as foreign regions. Other countries' subdivisions are not
# used: they include names such as "Central" or "Manchester" (a Jamaican parish) that a British
# location's last part may well be.
FOREIGN_SUBDIVISIONS = ("US", "CA", "AU", "NZ", "IE")
# Short forms ISO 3166 does not spell out; two-letter codes are never read ("NI", "WY" and "MA"
# are also British abbreviations).
_COUNTRY_SHORT_FORMS = {
    "usa": "US", "us": "US", "u s a": "US", "america": "US", "uae": "AE", "nz": "NZ",
    "republic of ireland": "IE", "roi": "IE", "eire": "IE", "southern ireland": "IE",
}  # fmt: skip


def normalise(text: object) -> str:
    """Comparable key: no accents/case/punctuation, "&" -> "and", "saint"/"st." -> "st", "upon" -> "on", no leading "the"."""
    if not isinstance(text, str):
        return ""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("&", " and ").replace("'", "").replace("\u2019", "")
    tokens = re.sub(r"[^0-9a-z]+", " ", text).split()
    tokens = ["st" if t == "saint" else "on" if t == "upon" else t for t in tokens]
    if len(tokens) > 1 and tokens[0] == "the":
        tokens = tokens[1:]
    return " ".join(tokens)


def region_key(text: object) -> str:
    """Key for admin areas and Gumtree counties: also drops "County"/"City of"/"Borough"/"Sir" wrappers."""
    key = normalise(text)
    changed = True
    while changed and key:
        changed = False
        for prefix in _REGION_PREFIXES:
            if key.startswith(prefix) and len(key) > len(prefix):
                key, changed = key[len(prefix) :], True
        for suffix in _REGION_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key, changed = key[: -len(suffix)], True
    return key


def short_form(key: str) -> str | None:
    """"stoke on trent" -> "stoke": a shorter, lower-priority key (places and queries alike)."""
    match = SHORT_FORM.match(key)
    return match.group(1) if match else None


def unify_separators(location: str) -> str:
    """'Leeds / West Yorkshire', 'Leeds - West Yorkshire', 'Leeds;West Yorkshire' -> 'Leeds, West
    Yorkshire': a location's parts are read the same whichever separator was typed."""
    return _SEPARATORS.sub(", ", location)


@functools.cache
def _foreign_names() -> dict[str, str]:
    """Normalised country / subdivision name -> ISO 3166-1 alpha-2 code, from `pycountry` (offline:
    the ISO tables ship inside the package). The United Kingdom itself is left out."""
    import pycountry

    names: dict[str, str] = {}
    for code in FOREIGN_SUBDIVISIONS:
        for subdivision in pycountry.subdivisions.get(country_code=code) or ():
            key = normalise(subdivision.name)
            names.setdefault(key, code)
            if key.startswith("greater "):  # NZ's "Greater Wellington" is "Wellington" too
                names.setdefault(key[len("greater ") :], code)
    for country in pycountry.countries:  # a country's name wins over a subdivision's
        for attribute in ("name", "official_name", "common_name"):
            value = getattr(country, attribute, None)
            if value:
                names[normalise(value)] = country.alpha_2
                names[normalise(value.split(",")[0])] = country.alpha_2  # "Korea, Republic of"
    names.update(_COUNTRY_SHORT_FORMS)
    return {key: code for key, code in names.items() if key and code != "GB"}


# State and province abbreviations written in capitals ("Richmond, VA", "Windsor, NSW",
# "Kingston, ON"; dots and spaces ignored: "N.S.W."). Left out: every code that is also a UK
# postcode area (AL, CA, CO, CT, DE, KY, LA, ME, NE, PA, TN, WA, WV; AB, PE, SK; SA) or a
# British abbreviation (WY: West Yorkshire), where the British reading stays.
_STATE_ABBREVIATIONS = {
    **dict.fromkeys(
        ["AK", "AZ", "AR", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "RI", "SC", "SD", "TX", "UT", "VT", "VA", "WI"],
        "US",
    ),
    **dict.fromkeys(["ON", "QC", "BC", "MB", "NS", "NB", "NL", "NU", "YT"], "CA"),
    **dict.fromkeys(["NSW", "VIC", "QLD", "TAS", "ACT"], "AU"),
}


def foreign_area(text: object) -> str | None:
    """The ISO country code when `text` names a country other than the UK, or a state / province /
    county of the countries in `FOREIGN_SUBDIVISIONS` ("Australia" -> "AU", "Ontario" -> "CA",
    "Isle of Man" -> "IM", "Republic of Ireland" -> "IE"; a state or province abbreviation in
    capitals: "VA" -> "US", "N.S.W." -> "AU"); None otherwise (British names, sub-areas
    such as "Headingley", anything unknown). Whether a British place of the same name is meant
    is the gazetteer's call (`Gazetteer.locate`)."""
    if isinstance(text, str):
        letters = re.sub(r"[.\s]", "", text)
        if letters.isupper() and letters in _STATE_ABBREVIATIONS:  # as typed: "va" may be a word
            return _STATE_ABBREVIATIONS[letters]
    key = normalise(text)
    return _foreign_names().get(key) if key else None


def split_location(location: object) -> tuple[str, str]:
    """'Town, County' -> (town, county) stripped; one part -> (part, ""); non-strings -> ("", "")."""
    if not isinstance(location, str):
        return "", ""
    town, sep, county = location.strip().rpartition(",")
    if not sep:
        return county.strip(), ""
    return town.strip(), county.strip()


def strip_postcodes(location: str) -> str:
    """'Leeds LS6 2AB, West Yorkshire' -> 'Leeds, West Yorkshire': no place name has digits,
    so postcodes (whole or in part) and district numbers only stop a town from matching."""
    for pattern in _POSTCODE_PARTS:
        location = pattern.sub(" ", location)
    location = _EMPTY_BRACKETS.sub(" ", location)
    parts = [" ".join(part.split()).strip(" -/") for part in location.split(",")]
    return ", ".join(part for part in parts if part)
