"""Price strings as sellers type them -> an amount in pounds, or a precise reason why not.

Gumtree's own export is tidy (`"£1,250.00"`), but datasets people bring, and sellers
typing into a form, write "£12,50", "1.250,00 €", "Free", "£1.2k", "£20 ono", "£5 each"
or "£10-£20". Reading those with one strict regex drops good listings ("Free") and
misreads others ("£12,50" as 1250, "$40" as £40). Here the number itself is read by the
maintained `price-parser` package (thousands vs decimal separators, continental
formats); the wording around it is handled explicitly:

- free / swap wording without a number is £0, flagged `free` / `swap` ("Free", "giveaway",
  "freecycle", "FOC", "nil", "for nothing"; "swap", "swop", "exchange");
- "ono", "o.n.o", "ovno", "or nearest offer", "neg" ... are dropped, flagged `negotiable`;
- "each", "ea", "per item" are dropped, flagged `each` (the amount is the unit price);
  both are recognised glued to the number too ("£40ono", "£40ea"), as sellers type them;
- a "k" suffix multiplies by 1,000 (`k_suffix`), an "m" by a million (`m_suffix`);
  "50p" is £0.50 (`pence`);
- a range "£10-£20" / "£10 to 20" / "between £10 and £20" is read as its low end, flagged `range`;
- a decimal comma ("£12,50" = 12.50) is flagged `decimal_comma`.

Refused with a reason (never silently relabelled or guessed): `missing_price`,
`foreign_currency` ("$40", "1.250,00 €": the listing's price is in another currency and
the catalogue is in pounds), `negative_price`, `price_on_request` ("POA", "offers"),
`ambiguous_price` (several numbers that are not a range: "2 for £10", "was £50 now £30";
or one number whose separators can be read two ways: "£12.500" is £12.50 typed with three
decimals or 12,500 with a continental thousands dot, and "0.001", "1,2345" are neither),
`periodic_price` (rent or hire by the hour, day, week, month or year: "£40 pcm",
"£10 a month", "£5/hr", "£50 a wk", "£15 p.h.", or said in words: "£30 rental", "hire £25":
not what the thing sells for) and `unparseable_price` (no number at all).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from price_parser import Price

GBP = "GBP"
# Reasons a price is refused; each becomes a drop reason (strict) or a kept-as-NaN note.
PRICE_REASONS = (
    "missing_price",
    "unparseable_price",
    "foreign_currency",
    "negative_price",
    "price_on_request",
    "ambiguous_price",
    "periodic_price",
)
# How a kept price was read; each is counted in the cleaning report as `price_<flag>`.
PRICE_FLAGS = (
    "free", "swap", "negotiable", "each", "k_suffix", "m_suffix", "pence", "range", "decimal_comma",
)  # fmt: skip

_GBP_MARKER = re.compile(r"£|\bgbp\b|\bpounds?\b|\bquid\b|\bstg\b", re.IGNORECASE)
_GBP_SYMBOLS = frozenset({"£", "GBP", "gbp", "Gbp", "£GBP"})
_FOREIGN_WORD = re.compile(r"\b(?:dollars?|usd|euros?|eur|cents?)\b", re.IGNORECASE)
_WORD_PUNCTUATION = "()[]{},;:!?\"'*"
# Upper-case English words that are also ISO 4217 codes ("50 for ALL" is not Albanian lek).
_CODE_LOOKALIKES = frozenset({"ALL", "TOP", "CUP", "PEN", "MOP", "TRY", "SOS", "MAD", "BOB", "GEL"})
# A letter may not come right before a suffix ("mono" is no "ono"), a digit may ("£40ono"), and
# so may the "k" of an amount ("£1.2kono").
_NOT_AFTER_LETTER = r"(?:(?<![^\W\d_])|(?<=[0-9][kK]))"
_FREE = re.compile(
    r"\b(?:free(?:bies?|cycle)?|gratis|no charge|nil|for nothing|give[\s-]?aways?|giving away"
    r"|f\.?\s?o\.?\s?c\b\.?)",
    re.IGNORECASE,
)
_SWAP = re.compile(r"\b(?:sw[ao]ps?|sw[ao]pp(?:ing|ed)|exchange|trade)\b", re.IGNORECASE)
_ON_REQUEST = re.compile(
    r"\b(?:p\.?o\.?a\b\.?|price on (?:application|request)|on request|call|phone|contact|ask|"
    r"message|offers?|make (?:me )?an offer)",
    re.IGNORECASE,
)
# "ono", "o.n.o.", "o n o", "ovno", "o.v.n.o", "obo", "oiro", "or nearest offer", "neg" ...
_NEGOTIABLE = re.compile(
    rf"{_NOT_AFTER_LETTER}(?:o[.\s]?(?:v[.\s]?)?n[.\s]?o|o[.\s]?b[.\s]?o|o[.\s]?i[.\s]?r[.\s]?o)\b\.?"
    r"|\bor (?:near(?:est)?|best|any reasonable|reasonable|sensible) offers?\b"
    r"|\bor (?:any )?offers?(?: (?:over|around|above))?\b|\boffers? (?:over|around|above|in the region of)\b"
    rf"|{_NOT_AFTER_LETTER}neg(?:otiable)?\b\.?",
    re.IGNORECASE,
)
_EACH = re.compile(
    rf"(?:/\s*)?{_NOT_AFTER_LETTER}(?:each|ea|apiece|per (?:item|piece|unit|one|pair))\b\.?", re.IGNORECASE
)
# Rent or hire: a price per period right after the amount ("£40 pcm", "£10 a month", "£5/hr",
# "£30 p/w", "£40 weekly"). Only right after a number, so "free, collect within a week" is not one.
_PERIOD_WORDS = r"(?:hour|hr|day|night|week|wk|fortnight|month|mth|mnth|year|yr|annum|calendar month)s?"
_PERIODIC = re.compile(
    rf"(?:\s?k\b)?\s*(?:pounds?\b|quid\b|gbp\b)?\s*(?:"
    rf"(?:(?:per|a|an|every|each)\s+|/\s*){_PERIOD_WORDS}\b|per\s+diem\b"
    r"|(?:/|p\s*/)\s*(?:hrs?|wks?|mths?|mo|yrs?|h|d|w|m|y|a)\b"
    rf"|{_NOT_AFTER_LETTER}(?:p\.?c\.?m|p\.?w\.?(?:k\b)?|p\.?h|hourly|daily|nightly|weekly|fortnightly|monthly|yearly"
    r"|annually)\b|p\.a\.)",
    re.IGNORECASE,
)
# Rent or hire said in words anywhere in the price ("£30 rental", "hire £25", "to rent £30",
# "£500 to let"): the price of using the thing, not of buying it.
_HIRE = re.compile(r"\b(?:rent(?:al|ing)?|hire|to let|lease)\b", re.IGNORECASE)
# A number: digits with ',', '.' or "'" separators, or a space before an exact group of three.
_NUMBER = re.compile(r"(?<![0-9])\.?[0-9]+(?:(?:[.,']|[ \u00a0\u202f](?=[0-9]{3}(?![0-9])))[0-9]+)*")
_K_SUFFIX = re.compile(r"\s?k\b", re.IGNORECASE)
_M_SUFFIX = re.compile(r"\s?(?:m|mil|million)\b", re.IGNORECASE)
_P_SUFFIX = re.compile(r"\s?p\b", re.IGNORECASE)
_RANGE_JOIN = re.compile(r"^\s*(?:[-\u2010-\u2015]|to)\s*$", re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\b", re.IGNORECASE)  # "between £10 and £20"
_AND = re.compile(r"\s*(?:and|&)\s*", re.IGNORECASE)
# What comes before the number of a negative price: "-£5", "£-5", "- 5".
_NEGATIVE = re.compile(r"\s*(?:£|gbp)?\s*[-\u2212\u2012\u2013]\s*(?:£|gbp)?\s*", re.IGNORECASE)
_DECIMAL_COMMA = re.compile(r",[0-9]{1,2}$")
_LONG_FRACTION = re.compile(r"[0-9][.,'][0-9]{4,}$")  # "1,2345": neither decimals nor a thousands group
# "0.001", ".001": a thousands group never follows a lone 0 (or nothing), so these are three
# decimals, which no pound amount has (price-parser reads "0.001" as 1)
_SUB_PENNY = re.compile(r"^(?:0+)?[.,'][0-9]{3}$")
# "12.500", "40.999", "1,234.567": one dot and three digits after it, the last in the number.
# As a decimal point that is three decimals (no pound amount has them); as a continental
# thousands dot it is 12,500. Either reading may be the seller's, so neither is guessed.
# Two dots ("1.250.000") or a decimal comma after ("1.500,00") can only be thousands dots.
_DOT_THREE = re.compile(r"^[^.]*[0-9]\.[0-9]{3}$")


def _ambiguous_number(token: str) -> bool:
    """A number whose separators allow two readings, or that has more decimals than a price."""
    return bool(_LONG_FRACTION.search(token) or _SUB_PENNY.match(token) or _DOT_THREE.match(token))


@dataclass(frozen=True)
class PriceReading:
    """One price string as read: the amount in pounds, or None and the reason it was refused."""

    amount: float | None
    reason: str | None = None  # one of PRICE_REASONS when amount is None
    flags: tuple[str, ...] = ()  # PRICE_FLAGS that applied
    currency: str = GBP  # the currency as written when it was not pounds ("$", "€", "EUR")


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()


def _is_currency(word: str) -> bool:
    """A whole word price-parser knows as a currency symbol or code ("$", "€", "EUR", "kr")."""
    word = word.strip(_WORD_PUNCTUATION)
    return bool(word) and word not in _CODE_LOOKALIKES and Price.fromstring(word).currency == word


def _foreign_currency(text: str, number: re.Match[str]) -> str | None:
    """The currency a price is written in when it is plainly not pounds; None for pounds or none.

    Only the words touching the number count: price-parser searched over the whole string
    finds "Le" in "Leeds" and the lek ("ALL") in "50 for ALL".
    """
    if _GBP_MARKER.search(text):
        return None
    word = _FOREIGN_WORD.search(text)
    if word:
        return word.group(0)
    before = text[: number.start()].rstrip().rsplit(None, 1)
    after = text[number.end() :].lstrip().split(None, 1)
    for candidate in (before[-1] if before else "", after[0] if after else ""):
        if _is_currency(candidate):
            return candidate.strip(_WORD_PUNCTUATION)
    return None


def _amount(token: str) -> tuple[float | None, bool]:
    """A number token -> (value, read with a decimal comma); price-parser decides the separators."""
    if _ambiguous_number(token):
        return None, False
    parsed = Price.fromstring(token).amount
    if parsed is None:
        return None, False
    value = float(parsed)
    return (value if math.isfinite(value) else None), bool(_DECIMAL_COMMA.search(token))


def read_price(value: object) -> PriceReading:
    """Read one price string; never raises. See the module docstring for what is understood."""
    if _is_missing(value):
        return PriceReading(None, "missing_price")
    text = unicodedata.normalize("NFKC", str(value)).replace("Â£", "£").strip()
    flags: list[str] = []
    numbers = list(_NUMBER.finditer(text))
    # "Swap for PS4", "Free, 2 chairs": free/swap wording whose digits are not money.
    wording_only = not _GBP_MARKER.search(text) and (not numbers or numbers[0].start() > 0)
    if not numbers or (wording_only and (_FREE.search(text) or _SWAP.search(text))):
        if _FREE.search(text):
            return PriceReading(0.0, flags=("free",))
        if _SWAP.search(text):
            return PriceReading(0.0, flags=("swap",))
        asks = _ON_REQUEST.search(text) or _NEGOTIABLE.search(text)  # "POA", "offers", "£ono"
        reason = "price_on_request" if asks else "unparseable_price"
        return PriceReading(None, reason)
    foreign = _foreign_currency(text, numbers[0])
    if foreign is not None:
        return PriceReading(None, "foreign_currency", currency=foreign)
    if _NEGATIVE.fullmatch(text[: numbers[0].start()]):
        return PriceReading(None, "negative_price")

    stripped, n_negotiable = _NEGOTIABLE.subn(" ", text)
    # Before "each" goes: "£20 each week" is rent, not a unit price.
    if _HIRE.search(stripped) or any(_PERIODIC.match(stripped, n.end()) for n in _NUMBER.finditer(stripped)):
        return PriceReading(None, "periodic_price")  # rent or hire, not a sale price
    stripped, n_each = _EACH.subn(" ", stripped)
    if n_negotiable:
        flags.append("negotiable")
    if n_each:
        flags.append("each")
    numbers = list(_NUMBER.finditer(stripped))
    high: float | None = None
    joiner = _GBP_MARKER.sub("", stripped[numbers[0].end() : numbers[1].start()]) if len(numbers) == 2 else ""
    between = _BETWEEN.search(stripped[: numbers[0].start()]) and _AND.fullmatch(joiner)
    if len(numbers) == 2 and (_RANGE_JOIN.match(joiner) or between):
        flags.append("range")  # read as its low end: "items from £10"
        high, _ = _amount(numbers[1].group(0))
    elif len(numbers) != 1:
        return PriceReading(None, "ambiguous_price")

    first = numbers[0]
    amount, decimal_comma = _amount(first.group(0))
    if amount is None:
        reason = "ambiguous_price" if _ambiguous_number(first.group(0)) else "unparseable_price"
        return PriceReading(None, reason)
    if decimal_comma:
        flags.append("decimal_comma")
    after = stripped[first.end() :]
    if _K_SUFFIX.match(after):
        amount *= 1000.0
        flags.append("k_suffix")
    elif _M_SUFFIX.match(after):
        amount *= 1_000_000.0
        flags.append("m_suffix")
    elif _P_SUFFIX.match(after) and not _GBP_MARKER.search(stripped):
        amount /= 100.0
        flags.append("pence")
    if high is not None and high < amount:
        return PriceReading(None, "ambiguous_price")  # "£20-10": not a range we can read
    if not math.isfinite(amount):
        return PriceReading(None, "unparseable_price")
    return PriceReading(round(amount, 2), flags=tuple(flags))


def parse_price(value: object) -> float | None:
    """The amount in pounds, or None when the price is missing, refused or not in pounds."""
    return read_price(value).amount
