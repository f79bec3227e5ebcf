"""Location strings -> the keys the gazetteer matches on (`data/geo.py`).

Gumtree locations are free text ("Stoke-on-Trent, Staffordshire", "Leeds LS6 2AB, West
Yorkshire", "St. Albans, Hertfordshire"): before matching, accents, case, punctuation
and wrappers such as "County" or "City of" are taken out, "saint" and "upon" spelt one
way, and postcode fragments removed, so that the same place always gives the same key.
"""

from __future__ import annotations

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
