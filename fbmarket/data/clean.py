"""Raw product rows -> clean listings (step 2 of docs/architecture.md's data flow), with every dropped row counted by reason.

Two modes: `strict=True` (training) drops rows whose price is missing, unparseable or
unreasonable, as the spec asks; `strict=False` (evaluation, live listings) keeps them
with `price = NaN`, because a listing's category does not depend on its price tag.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import emoji
import numpy as np
import pandas as pd

from fbmarket.data import schema as S
from fbmarket.data.prices import PRICE_REASONS, read_price
from fbmarket.data.prices import parse_price as parse_price  # re-exported: the historical home

# Whose titles a table holds: "scraped" (Products.csv: "<title> | in Town, County | Gumtree")
# or "seller" (typed into the API or the Sell page, kept whole). The one difference between
# the two ways a listing is cleaned.
TitleRule = Literal["scraped", "seller"]

_SPACES = re.compile(r"\s+")
# The scraper's suffix: "<title> | in Town, County | Gumtree" (the site name may be absent);
# the last "| in ... |" is the location ("Sofa | in great condition | in Leeds | Gumtree").
# Vertical bars a page may separate them with: ASCII, fullwidth (NFKC makes it ASCII), broken,
# box-drawing, divides, dental click, light vertical; a run of them ("||", "| |") is one
# separator. The seller's own bars before the suffix are kept as written.
_BARS = "|\uff5c\u00a6\u2502\u2503\u2223\u01c0\u2758\u23d0\uffe8"
_BAR_RUN = f"[{_BARS}](?:\\s*[{_BARS}])*"
_SCRAPED_SUFFIX = re.compile(
    rf"\s*{_BAR_RUN}\s*in\s+(?P<location>[^{_BARS}]*?)\s*{_BAR_RUN}[^{_BARS}]*$", re.IGNORECASE
)
_SITE_SUFFIX = re.compile(rf"\s*{_BAR_RUN}\s*gumtree(?:\.com)?\s*$", re.IGNORECASE)
# Character references need their ';': HTML5 also reads "&not" in "&nothing" or "&para" in
# "&paragraph", and free text is full of bare ampersands ("B&Q", "M&S", "Black&Decker").
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_TAG = re.compile(r"</?(?P<name>[A-Za-z][A-Za-z0-9]*)(?:\s[^<>]*)?/?>")
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)  # code, not text
# Markup that is never text: comments ("<!-- x -->", also "<!-->" and "<!--->"), declarations
# ("<!DOCTYPE html>") and processing instructions ("<?xml ...?>"). A comment that never closes
# is left as written: dropping everything after a stray "<!--" would lose the listing's text.
_COMMENT = re.compile(r"<!--(?:-?>|.*?--!?>)", re.DOTALL)
_DECLARATION = re.compile(r"<![A-Za-z][^<>]*>|<\?[^<>]*\?>")
_CDATA = re.compile(r"<!\[CDATA\[(?P<text>.*?)\]\]>", re.DOTALL)  # its content is text: kept
# Enough passes for any escaping a pipeline plausibly adds ("&amp;amp;amp;amp;" takes four);
# every pass that changes the text shortens it, so the loop ends well before this anyway.
_MAX_UNESCAPE_PASSES = 32
# Invisible marks outside Cf that also split words: variation selectors, combining grapheme joiner.
_INVISIBLE = re.compile("[\u034f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Tags inside a word ("<b>So</b>fa") vanish; the others (br, p, li, div, ...) separate words.
_INLINE_TAGS = frozenset(
    {"a", "b", "i", "u", "s", "em", "strong", "span", "font", "small", "big", "sub", "sup"}
)


def _unescape(text: str) -> str:
    """Decode HTML character references until none is left, so text escaped by several
    pipelines in turn ("&amp;amp;amp;" -> "&") reads as typed."""
    for _ in range(_MAX_UNESCAPE_PASSES):
        decoded = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
        if decoded == text:
            break
        text = decoded
    return text


def _strip_tags(text: str) -> str:
    """Comments, declarations, scripts and styles go whole; tags go, leaving their text."""
    # A comment renders as nothing ("Chair<!-- x -->s" reads "Chairs"); a declaration sits between blocks.
    text = _CDATA.sub(lambda m: m.group("text"), _DECLARATION.sub(" ", _COMMENT.sub("", text)))
    text = _SCRIPT.sub(" ", text)
    return _TAG.sub(lambda m: "" if m.group("name").lower() in _INLINE_TAGS else " ", text)


def _character(ch: str) -> str:
    """Format characters (Cf: zero-width space/joiner, soft hyphen, BOM, bidi marks) sit inside
    words, so they go without a trace; other controls, private use and pictographs become spaces."""
    category = unicodedata.category(ch)
    if category == "Cf":
        return ""
    return " " if category[0] == "C" or category == "So" else ch


def clean_text(value: object) -> str:
    """HTML entities decoded and tags stripped, emoji and control characters out, unicode
    compatibility-normalised, whitespace folded."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = _strip_tags(_unescape(str(value)))
    text = emoji.replace_emoji(unicodedata.normalize("NFKC", text), replace=" ")
    # Symbols ("So") cover pictographs the emoji table lacks; "C*" are control/format/private-use.
    text = "".join(map(_character, _INVISIBLE.sub("", text)))
    return _SPACES.sub(" ", text).strip()


def _separated(product_name: str) -> str:
    """The name with entities decoded, markup and invisible characters out and unicode
    normalised (as `clean_text` will anyway), so the scraper's suffix is found however the page
    escaped it: "Sofa &#124; in Leeds", "Sofa&nbsp;|&nbsp;in Leeds", "Sofa ｜ in Leeds"."""
    text = unicodedata.normalize("NFKC", _strip_tags(_unescape(product_name)))
    return "".join(ch for ch in _INVISIBLE.sub("", text) if unicodedata.category(ch) != "Cf")


def split_title(product_name: object) -> str:
    """A scraped name "Sofa | grey velvet | in Leeds, West Yorkshire | Gumtree" -> "Sofa | grey velvet".

    Only the scraper's trailing "| in Town, County | Site" goes: bars before it are the
    seller's own ("Digital Piano | 88 Weighted Keys | Pedal"). The suffix is looked for after
    entities are decoded (`_separated`), not in the raw string, and any bar or run of bars
    ("｜", "¦", "||") separates it.
    """
    if not isinstance(product_name, str):
        return ""
    name = _separated(product_name)
    title = _SCRAPED_SUFFIX.sub("", name)
    if title == name:
        title = _SITE_SUFFIX.sub("", name)
    return clean_text(title)


def truncate(text: str, limit: int | None) -> str:
    """At most `limit` characters, cut at the last space before the limit when there is one."""
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.8 else cut).rstrip()


def location_from_title(product_name: object) -> str | None:
    if not isinstance(product_name, str):
        return None
    match = _SCRAPED_SUFFIX.search(_separated(product_name))
    return (clean_text(match.group("location")) or None) if match else None


def normalise_category(path: object) -> str | None:
    """'Home & Garden/ Sofas ' -> 'Home & Garden / Sofas'; empty -> None."""
    if not isinstance(path, str):
        return None
    parts = [clean_text(p) for p in path.split("/")]
    parts = [p for p in parts if p]
    return " / ".join(parts) if parts else None


@dataclass
class CleaningReport:
    """Rows in, rows out, and why each dropped row went. Written as JSON next to the data."""

    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # kept rows that were repaired
    examples: dict[str, list[str]] = field(default_factory=dict)
    read_issues: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    geocoding: dict = field(default_factory=dict)

    unread: int = 0  # data rows of the file the reader could not take (malformed), also in rows_in

    def count_unread(self, rows: int, reason: str = "malformed_row") -> None:
        """Rows the CSV reader counted as malformed: part of rows_in, and dropped with a reason,
        so rows_in is always the file's number of data rows and rows_in = rows_out + dropped."""
        if rows:
            self.unread += rows
            self.dropped[reason] += rows

    def drop(self, reason: str, ids: pd.Series) -> None:
        if len(ids):
            self.dropped[reason] += len(ids)
            self.examples.setdefault(reason, []).extend(map(str, ids.head(5)))

    def to_json(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "repaired": dict(self.notes),
            "examples": self.examples,
            "read_issues": self.read_issues,
            "images": self.images,
            "geocoding": self.geocoding,
        }


def clean_products(
    raw: pd.DataFrame,
    min_price: float,
    max_price: float,
    strict: bool = True,
    report: CleaningReport | None = None,
    titles: TitleRule = "scraped",
    max_title_chars: int | None = None,
    max_description_chars: int | None = None,
    max_location_chars: int | None = None,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Raw Products.csv rows -> the clean product table of `schema.CLEAN_PRODUCT_COLUMNS` (no geo yet).

    One set of rules for a scraped CSV row and a seller's listing (fbmarket/data/listing.py);
    `titles` is the one difference: "scraped" titles lose the scraper's "| in Town | Gumtree"
    suffix and lend their town to a row without a location; "seller" titles (typed by a seller,
    the API) are kept whole and no location is read out of them. Titles, descriptions and
    locations longer than the limits are cut (counted as `title_truncated` /
    `description_truncated` / `location_truncated`), so one pasted novel cannot dominate the
    models' inputs or the database.
    """
    S.require_columns(raw, S.RAW_PRODUCT_COLUMNS, "Products.csv")
    report = report or CleaningReport()
    report.rows_in = len(raw) + report.unread
    if titles not in ("scraped", "seller"):
        raise ValueError(f"titles must be 'scraped' or 'seller', got {titles!r}")
    scraped_titles = titles == "scraped"
    titles_read = raw["product_name"].map(split_title if scraped_titles else clean_text)
    descriptions = raw["product_description"].map(clean_text)
    locations = raw["location"].map(clean_text)
    readings = raw["price"].map(read_price)
    frame = pd.DataFrame(
        {
            S.PRODUCT_ID: raw["id"].astype("str").str.strip(),
            "_product_name": raw["product_name"],
            S.TITLE: titles_read.map(lambda text: truncate(text, max_title_chars)),
            S.DESCRIPTION: descriptions.map(lambda text: truncate(text, max_description_chars)),
            S.CATEGORY: raw["category"].map(normalise_category),
            "_price_raw": raw["price"],
            S.LOCATION: locations.map(lambda text: truncate(text, max_location_chars)),
            S.PRICE: readings.map(lambda reading: reading.amount).astype(float),
            "_price_reason": readings.map(lambda reading: reading.reason),
            "_price_flags": readings.map(lambda reading: reading.flags),
        }
    )
    frame["_title_cut"] = titles_read.str.len() > frame[S.TITLE].str.len()
    frame["_description_cut"] = descriptions.str.len() > frame[S.DESCRIPTION].str.len()
    frame["_location_cut"] = locations.str.len() > frame[S.LOCATION].str.len()

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal frame
        report.drop(reason, frame.loc[mask, S.PRODUCT_ID])
        frame = frame.loc[~mask]

    drop(frame[S.PRODUCT_ID].isna() | (frame[S.PRODUCT_ID].fillna("") == ""), "missing_id")
    drop(frame[S.TITLE] == "", "missing_title")
    drop(frame[S.CATEGORY].isna(), "missing_category")

    outlier = frame[S.PRICE].notna() & ((frame[S.PRICE] < min_price) | (frame[S.PRICE] > max_price))
    if strict:
        for reason in PRICE_REASONS:  # missing, unparseable, foreign currency, negative, ...
            drop(frame["_price_reason"] == reason, reason)
        drop(outlier.reindex(frame.index), "price_outlier")
    else:
        for reason, count in frame["_price_reason"].value_counts().items():
            report.notes[f"{reason}_kept_as_nan"] += int(count)
        if outlier.any():
            report.notes["price_outlier_kept_as_nan"] += int(outlier.sum())
        frame.loc[outlier, S.PRICE] = np.nan

    drop(frame[S.PRODUCT_ID].duplicated(keep="first"), "duplicate_id")
    listing_key = [S.TITLE, S.DESCRIPTION, S.CATEGORY, S.LOCATION, "_price_raw"]
    drop(frame.duplicated(subset=listing_key, keep="first"), "duplicate_listing")

    no_location = frame[S.LOCATION] == ""
    if scraped_titles and no_location.any():
        recovered = frame.loc[no_location, "_product_name"].map(location_from_title)
        frame.loc[no_location, S.LOCATION] = recovered.fillna("")
        report.notes["location_from_title"] += int(recovered.notna().sum())

    # How kept rows were read: "price_free", "price_range", ... and truncations.
    flags = Counter(flag for row_flags in frame["_price_flags"] for flag in row_flags)
    for flag, count in flags.items():
        report.notes[f"price_{flag}"] += count
    cuts = (("_title_cut", "title_truncated"), ("_description_cut", "description_truncated"),
            ("_location_cut", "location_truncated"))  # fmt: skip
    for column, note in cuts:
        if frame[column].any():
            report.notes[note] += int(frame[column].sum())

    parts = frame[S.CATEGORY].str.split(" / ")
    frame[S.ROOT_CATEGORY] = parts.str[0]
    frame[S.LEAF_CATEGORY] = frame[S.CATEGORY]
    frame[S.LEAF_NAME] = parts.str[-1]
    hidden = [
        "_product_name",
        "_price_raw",
        "_price_reason",
        "_price_flags",
        "_title_cut",
        "_description_cut",
        "_location_cut",
    ]
    frame = frame.drop(columns=hidden).reset_index(drop=True)
    report.rows_out = len(frame)
    return frame, report


def attach_created(products: pd.DataFrame, raw_images: pd.DataFrame) -> pd.DataFrame:
    """A listing's date is its earliest photo's create_time (dd/mm/yyyy); None when unknown."""
    products = products.copy()
    if "create_time" not in raw_images.columns:
        products[S.CREATED] = None
        return products
    dates = pd.to_datetime(raw_images["create_time"], format="%d/%m/%Y", errors="coerce")
    first = dates.groupby(raw_images["product_id"].astype("str").str.strip()).min()  # ids as cleaned
    # reindex, not map: pandas cannot map through an empty datetime table (an Images.csv with no rows)
    created = pd.Series(first.reindex(products[S.PRODUCT_ID]).to_numpy(), index=products.index)
    products[S.CREATED] = created.dt.strftime("%Y-%m-%d").astype(object).where(created.notna(), None)
    return products


def attach_geo(products: pd.DataFrame, report: CleaningReport) -> pd.DataFrame:
    """Offline geocoding of 'Town, County'; unknown places stay, with NaN coordinates."""
    from fbmarket.data.geo import Gazetteer

    gazetteer = Gazetteer.load()
    geo = gazetteer.geocode(products[S.LOCATION])
    products = products.copy()
    for column in (S.TOWN, S.COUNTY, S.LATITUDE, S.LONGITUDE, S.GEO_MATCH):
        products[column] = geo[column].to_numpy()
    report.geocoding = gazetteer.match_rate(geo)
    return products
