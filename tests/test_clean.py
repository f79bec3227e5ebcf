"""Cleaning hand-made messy rows: prices, text, titles, categories, duplicates, the report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fbmarket.data import schema as S
from fbmarket.data.categories import CategoryEncoder
from fbmarket.data.clean import (
    attach_created,
    clean_products,
    clean_text,
    parse_price,
    read_price,
    split_title,
)
from fbmarket.search.lexical import tokenize


@given(st.decimals(min_value=0, max_value=10_000_000, places=2, allow_nan=False, allow_infinity=False))
def test_price_round_trips_through_gumtree_formatting(amount) -> None:
    text = f"£{amount:,.2f}"
    assert parse_price(text) == pytest.approx(float(amount))


@given(st.text())
def test_price_parser_never_raises_and_is_non_negative(text: str) -> None:
    value = parse_price(text)
    assert value is None or (value >= 0 and math.isfinite(value))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("£1,250.00", 1250.0),
        (" £ 20 ", 20.0),
        ("450", 450.0),
        ("£0.00", 0.0),
        ("£ono", None),
        ("-£5.00", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_price_examples(raw, expected) -> None:
    assert parse_price(raw) == expected


# Issue 14, kind 1: the example values and their variants.
@pytest.mark.parametrize(
    ("raw", "amount", "flags"),
    [
        # a comma is a decimal comma only where it is one
        ("£12,50", 12.5, ("decimal_comma",)),
        ("£1,250", 1250.0, ()),
        ("£12,5", 12.5, ("decimal_comma",)),
        ("1.250,00", 1250.0, ("decimal_comma",)),
        ("£1.250,00", 1250.0, ("decimal_comma",)),
        ("£1 234,56", 1234.56, ("decimal_comma",)),
        ("£5,000.50", 5000.5, ()),
        # free and swap wording is £0, flagged
        ("Free", 0.0, ("free",)),
        ("FREE to collector", 0.0, ("free",)),
        ("£free", 0.0, ("free",)),
        ("Swap", 0.0, ("swap",)),
        ("swaps considered", 0.0, ("swap",)),
        ("Swap for PS4", 0.0, ("swap",)),  # digits that are not money
        ("free 2 chairs", 0.0, ("free",)),
        ("£20 or swap", 20.0, ()),
        ("free delivery £20", 20.0, ()),
        # multipliers and pence
        ("£1.2k", 1200.0, ("k_suffix",)),
        ("£3K", 3000.0, ("k_suffix",)),
        ("2.5k", 2500.0, ("k_suffix",)),
        ("£1.5m", 1_500_000.0, ("m_suffix",)),
        ("50p", 0.5, ("pence",)),
        # negotiation and unit wording
        ("£20 ono", 20.0, ("negotiable",)),
        ("£20 o.n.o", 20.0, ("negotiable",)),
        ("£20 O.N.O.", 20.0, ("negotiable",)),
        ("£20 ovno", 20.0, ("negotiable",)),
        ("£20 o.v.n.o.", 20.0, ("negotiable",)),
        ("£20 or nearest offer", 20.0, ("negotiable",)),
        ("£20 or near offer", 20.0, ("negotiable",)),
        ("£100 OIRO", 100.0, ("negotiable",)),
        ("offers over £100", 100.0, ("negotiable",)),
        ("£20 neg", 20.0, ("negotiable",)),
        ("£5 each", 5.0, ("each",)),
        ("£5 ea", 5.0, ("each",)),
        ("£5/each", 5.0, ("each",)),
        ("£5 per item", 5.0, ("each",)),
        # ranges: the low end
        ("£10-£20", 10.0, ("range",)),
        ("£10 to 20", 10.0, ("range",)),
        ("£10 – £20", 10.0, ("range",)),
        ("10-20", 10.0, ("range",)),
        ("between £10 and £20", 10.0, ("range",)),
        ("£5-£10 each", 5.0, ("each", "range")),
        ("£1,2k", 1200.0, ("decimal_comma", "k_suffix")),
        ("£1.2 k ono", 1200.0, ("negotiable", "k_suffix")),
        # pounds however written
        ("GBP 40", 40.0, ()),
        ("40 pounds", 40.0, ()),
        ("Â£5.00", 5.0, ()),  # the mojibake of a cp1252 re-decode
        ("£.50", 0.5, ()),
        ("20 collection only Leeds", 20.0, ()),  # "Le" is a currency, Leeds is not
    ],
)
def test_price_wording_is_understood_and_flagged(raw: str, amount: float, flags: tuple[str, ...]) -> None:
    reading = read_price(raw)
    assert reading.amount == pytest.approx(amount) and reading.reason is None
    assert reading.flags == flags and reading.currency == "GBP"


@pytest.mark.parametrize(
    ("raw", "reason", "currency"),
    [
        ("$40", "foreign_currency", "$"),
        ("US$40", "foreign_currency", "US$"),
        ("1.250,00 €", "foreign_currency", "€"),
        ("€12,50", "foreign_currency", "€"),
        ("EUR 20", "foreign_currency", "EUR"),
        ("20 euros", "foreign_currency", "euros"),
        ("100 kr", "foreign_currency", "kr"),
        ("-£5.00", "negative_price", "GBP"),
        ("£-5.00", "negative_price", "GBP"),
        ("POA", "price_on_request", "GBP"),
        ("Offers", "price_on_request", "GBP"),
        ("£ono", "price_on_request", "GBP"),
        ("2 for £10", "ambiguous_price", "GBP"),
        ("was £50 now £30", "ambiguous_price", "GBP"),
        ("£20-10", "ambiguous_price", "GBP"),
        ("£1,2345", "ambiguous_price", "GBP"),
        ("£0.001", "ambiguous_price", "GBP"),  # price-parser read it as £1
        (".001", "ambiguous_price", "GBP"),
        ("call me", "price_on_request", "GBP"),
        ("tbc", "unparseable_price", "GBP"),
        ("  ", "missing_price", "GBP"),
    ],
)
def test_prices_refused_with_a_precise_reason(raw: str, reason: str, currency: str) -> None:
    reading = read_price(raw)
    assert reading.amount is None and parse_price(raw) is None
    assert reading.reason == reason and reading.currency == currency


# A dot and exactly three digits: £12.50 with three decimals, or 12,500 with a thousands dot.
@pytest.mark.parametrize(
    "raw",
    ["£12.500", "£40.999", "12.500", "£1.500", "£1.000", "£0.500", "£1,234.567", "£40.999ea",
     "£12.500 ono", "12.500 GBP", "£12.500k", "£10.000-£20.000"],
)  # fmt: skip
def test_a_dot_before_three_digits_is_ambiguous(raw: str) -> None:
    reading = read_price(raw)
    assert reading.amount is None and reading.reason == "ambiguous_price"


@pytest.mark.parametrize(
    ("raw", "amount"),
    [("£1.250.000", 1_250_000.0), ("£1.500,00", 1500.0), ("£12.500,50", 12500.5), ("£12,500", 12500.0),
     ("£1,500.00", 1500.0), ("£12.50", 12.5), ("£12.5", 12.5)],
)  # fmt: skip
def test_separators_with_one_reading_stay_read(raw: str, amount: float) -> None:
    """Two thousands dots, a decimal comma after the dot, or a comma group: only one reading."""
    assert read_price(raw).amount == pytest.approx(amount)


@pytest.mark.parametrize(
    ("raw", "flag"),
    [("Giveaway", "free"), ("Give away", "free"), ("give-away", "free"), ("giving away", "free"),
     ("Freecycle", "free"), ("freebies", "free"), ("nil", "free"), ("£nil", "free"), ("FOC", "free"),
     ("f.o.c", "free"), ("F.O.C.", "free"), ("for nothing", "free"), ("free to collector", "free"),
     ("no charge", "free"), ("swop", "swap"), ("Swops considered", "swap"), ("swopping", "swap")],
)  # fmt: skip
def test_free_and_swap_wording_in_all_its_spellings(raw: str, flag: str) -> None:
    reading = read_price(raw)
    assert reading.amount == 0.0 and reading.reason is None and reading.flags == (flag,)


@pytest.mark.parametrize(
    ("raw", "flags"),
    [("£40ea", ("each",)), ("£40each", ("each",)), ("£5ea.", ("each",)), ("40ea", ("each",)),
     ("£40ono", ("negotiable",)), ("£40o.n.o", ("negotiable",)), ("£40ovno", ("negotiable",)),
     ("£40obo", ("negotiable",)), ("£40neg", ("negotiable",)), ("£40NEG.", ("negotiable",)),
     ("£40ONO", ("negotiable",)), ("£1.2kono", ("negotiable", "k_suffix"))],
)  # fmt: skip
def test_suffixes_glued_to_the_number_are_read_as_when_spaced(raw: str, flags: tuple[str, ...]) -> None:
    reading = read_price(raw)
    expected = 1200.0 if "k_suffix" in flags else (5.0 if raw.startswith("£5") else 40.0)
    assert reading.amount == pytest.approx(expected) and reading.flags == flags


def test_suffix_letters_inside_a_word_are_not_a_suffix() -> None:
    assert read_price("£40 mono").flags == ()  # "ono" inside a word
    assert read_price("£40 area").flags == ()  # "ea" inside a word


@pytest.mark.parametrize(
    "raw",
    ["£10 a month", "£40 per week", "£40 pcm", "£40pcm", "£40 p.c.m.", "£40/hr", "£40/hrs", "£5 per hour",
     "£10 an hour", "£30 p/w", "£30pw", "£30 p/m", "£30 p/h", "£40 per day", "£40/day", "£40 a night",
     "£40 per annum", "£40 p.a.", "£40/yr", "£40 per calendar month", "£40 weekly", "£40 Monthly",
     "£40 hourly", "40 pounds per week", "£40 ono per week", "£40 per week ono", "£20 each week",
     "£1.2k per month", "£5-£10 per hour", "£25 a day or £150 a week", "£40/month", "£40 / wk",
     "£50 a wk", "£50 per wk", "£5 per hr", "£7.50 per hr", "£40 per mth", "£50 pwk", "£5 an hr",
     "£15 p.h.", "£12 per diem", "£30 rental", "£25 hire", "hire £25", "to rent £30", "£500 to let"],
)  # fmt: skip
def test_rent_and_hire_prices_are_refused_as_periodic(raw: str) -> None:
    reading = read_price(raw)
    assert reading.amount is None and reading.reason == "periodic_price"


@pytest.mark.parametrize(
    ("raw", "amount"),
    [("£20 collect within a week", 20.0), ("free, collect within a week", 0.0), ("£5 each", 5.0),
     ("£1.5m", 1_500_000.0)],
)  # fmt: skip
def test_period_words_away_from_the_amount_are_not_rent(raw: str, amount: float) -> None:
    assert read_price(raw).amount == pytest.approx(amount)


def test_periodic_and_glued_prices_reach_the_report() -> None:
    raw = raw_rows(
        [
            {"id": "rent", "price": "£40 pcm"},
            {"id": "hire", "price": "£5/hr", "product_description": "a"},
            {"id": "dot", "price": "£12.500", "product_description": "b"},
            {"id": "ea", "price": "£40ea", "product_description": "c"},
            {"id": "ono", "price": "£40ono", "product_description": "d"},
            {"id": "give", "price": "Giveaway", "product_description": "e"},
            {"id": "swop", "price": "swop", "product_description": "f"},
        ]
    )
    clean, report = clean_products(raw, min_price=0, max_price=20_000)
    assert clean.set_index(S.PRODUCT_ID)[S.PRICE].to_dict() == {"ea": 40.0, "ono": 40.0, "give": 0.0, "swop": 0.0}
    assert dict(report.dropped) == {"periodic_price": 2, "ambiguous_price": 1}
    assert report.examples["periodic_price"] == ["rent", "hire"]
    for note in ("price_each", "price_negotiable", "price_free", "price_swap"):
        assert report.notes[note] == 1, note
    _, notes = clean_products(raw, min_price=0, max_price=20_000, strict=False)
    assert notes.notes["periodic_price_kept_as_nan"] == 2


def test_price_reasons_and_flags_reach_the_report() -> None:
    raw = raw_rows(
        [
            {"id": "comma", "price": "£12,50"},
            {"id": "free", "price": "Free", "product_description": "a"},
            {"id": "k", "price": "£1.2k", "product_description": "b"},
            {"id": "range", "price": "£10-£20", "product_description": "c"},
            {"id": "ono", "price": "£20 ono", "product_description": "d"},
            {"id": "zero", "price": "£0.00", "product_description": "e"},
            {"id": "dollar", "price": "$40"},
            {"id": "euro", "price": "1.250,00 €"},
            {"id": "poa", "price": "POA"},
        ]
    )
    clean, report = clean_products(raw, min_price=0, max_price=20_000)
    prices = clean.set_index(S.PRODUCT_ID)[S.PRICE].to_dict()
    assert prices == {"comma": 12.5, "free": 0.0, "k": 1200.0, "range": 10.0, "ono": 20.0, "zero": 0.0}
    assert dict(report.dropped) == {"foreign_currency": 2, "price_on_request": 1}
    assert report.examples["foreign_currency"] == ["dollar", "euro"]
    for note in ("price_decimal_comma", "price_free", "price_k_suffix", "price_range", "price_negotiable"):
        assert report.notes[note] == 1, note
    # live listings keep the row, with no price, and say why
    lenient, notes = clean_products(raw, min_price=0, max_price=20_000, strict=False)
    assert len(lenient) == 9 and lenient[S.PRICE].isna().sum() == 3
    assert notes.notes["foreign_currency_kept_as_nan"] == 2
    assert notes.notes["price_on_request_kept_as_nan"] == 1


def test_clean_text_strips_emoji_controls_and_folds_space() -> None:
    assert (
        clean_text("New\u00a0sofa 👉 Factory\x00 price 🚚\r\nDelivery  ") == "New sofa Factory price Delivery"
    )
    assert clean_text("🙂🙂🙂") == ""
    assert clean_text(None) == ""
    assert clean_text("ｆｕｌｌ width") == "full width"  # NFKC


# Issue 14, kind 4: entities, tags, format characters and whole titles.
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("Tom &amp;amp; Jerry", "Tom & Jerry"),  # escaped twice
        ("&quot;Vintage&quot; lamp", '"Vintage" lamp'),
        ("caf&eacute; &#163;5 &#x2013; &#x27;ok&#39;", "café £5 – 'ok'"),
        ("Line one<br>line two<br/>line three", "Line one line two line three"),
        ("<b>Bold</b> <i>claim</i>", "Bold claim"),
        ("<b>So</b>fa", "Sofa"),
        ("&lt;br&gt;escaped tag", "escaped tag"),
        ("<p>para</p><p>graph</p>", "para graph"),
        ("B&Q, M&S, Black&Decker &nothing", "B&Q, M&S, Black&Decker &nothing"),  # bare ampersands stay
        ("3 < 5 and 7 > 2", "3 < 5 and 7 > 2"),  # not tags
        ("so\u200bfa", "sofa"),  # zero-width space
        ("so\u200dfa", "sofa"),  # zero-width joiner
        ("so\u00adfa", "sofa"),  # soft hyphen
        ("\ufeffsofa", "sofa"),  # byte-order mark
        ("\u200esofa\u200f", "sofa"),  # bidi marks
        ("\u202asofa\u202c \u2060bed", "sofa bed"),  # embedding, word joiner
        ("tab\tand\x00nul", "tab and nul"),  # other controls still separate words
        ("so\ufe0ffa caf\u034fe", "sofa cafe"),  # variation selector, combining grapheme joiner
        ("Sofa<script>alert(1)</script> <STYLE>p {}</STYLE>bed", "Sofa bed"),  # code is not text
        ("&amp;nbsp;x&nbsp;y", "x y"),
    ],
)
def test_clean_text_entities_tags_and_format_characters(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("Sun loungers | in Skegness, Lincolnshire | Gumtree", "Sun loungers"),
        ("Sofa | grey velvet | 3 seater | in Leeds, West Yorkshire | Gumtree", "Sofa | grey velvet | 3 seater"),
        ("Digital Piano (Gear4Music) | 88 Weighted Keys | Pedal | in Wimbledon, London | Gumtree",
         "Digital Piano (Gear4Music) | 88 Weighted Keys | Pedal"),
        ("SMUG| Pink Satin Eye Mask. | in Croydon, London | Gumtree", "SMUG| Pink Satin Eye Mask."),
        ("Kettle | in Leeds, West Yorkshire |", "Kettle"),  # no site name
        ("Kettle | Gumtree", "Kettle"),
        ("Sofa | grey velvet | 3 seater", "Sofa | grey velvet | 3 seater"),  # not scraped: whole
        ("No bars at all", "No bars at all"),
        ("Tom &amp; Jerry DVD | in Leeds, West Yorkshire | Gumtree", "Tom & Jerry DVD"),
        ("Sofa | in great condition | in Leeds, West Yorkshire | Gumtree", "Sofa | in great condition"),
    ],
)  # fmt: skip
def test_split_title_removes_only_the_scraped_suffix(name: str, title: str) -> None:
    assert split_title(name) == title
    assert split_title(float("nan")) == ""


# The scraper's suffix however the page escaped or drew its bars.
@pytest.mark.parametrize(
    "name",
    ["Sofa &#124; in Leeds &#124; Gumtree", "Sofa &#x7C; in Leeds &vert; Gumtree",
     "Sofa &amp;#124; in Leeds &amp;#124; Gumtree", "Sofa \uff5c in Leeds \uff5c Gumtree",
     "Sofa&nbsp;|&nbsp;in Leeds | Gumtree", "Sofa\u00a0|\u00a0in Leeds\u00a0|\u00a0Gumtree",
     "Sofa || in Leeds || Gumtree", "Sofa | | in Leeds | | Gumtree", "Sofa \u00a6 in Leeds \u00a6 Gumtree",
     "Sofa \u2502 in Leeds \u2502 Gumtree", "Sofa |\u200b in Leeds | Gumtree", "Sofa <b>|</b> in Leeds | Gumtree"],
)  # fmt: skip
def test_split_title_finds_the_suffix_after_decoding_and_normalising_bars(name: str) -> None:
    assert split_title(name) == "Sofa"
    raw = raw_rows([{"id": "a", "location": np.nan, "product_name": name}])
    clean, _ = clean_products(raw, 0, 20_000)
    assert clean.loc[0, S.TITLE] == "Sofa" and clean.loc[0, S.LOCATION] == "Leeds"


def test_split_title_still_keeps_the_sellers_own_bars_when_escaped() -> None:
    assert split_title("Sofa &#124; grey | in Leeds | Gumtree") == "Sofa | grey"
    assert split_title("Sofa &#124; grey") == "Sofa | grey"
    # the seller's "||" (as in the dev data) is the seller's: only the suffix's bars are folded
    assert split_title("PLUSH VELVET || CORNER SOFA | in Leeds | Gumtree") == "PLUSH VELVET || CORNER SOFA"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("<!-- comment -->Chair", "Chair"), ("Chair<!-- a\nmulti-line comment -->s", "Chairs"),
     ("<!---->Chair", "Chair"), ("<!-->Chair", "Chair"), ("<!-- <b>x</b> <script>y</script> -->Chair", "Chair"),
     ("&lt;!-- escaped --&gt;Chair", "Chair"), ("<!DOCTYPE html>Chair", "Chair"),
     ('<?xml version="1.0"?>Chair', "Chair"), ("<![CDATA[Chair]]>", "Chair"),
     ("Chair <!-- never closed", "Chair <!-- never closed")],  # nothing after a stray "<!--" is lost
)  # fmt: skip
def test_html_comments_and_declarations_are_not_text(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("&amp;amp;amp;amp;", "&"), ("&amp;amp;amp;amp;amp;amp;amp;amp;lt;b&gt;Chair", "Chair"),
     ("Tom " + "&amp;" + "amp;" * 12 + " Jerry", "Tom & Jerry"), ("&amp;amp;amp;#163;5", "£5")],
)  # fmt: skip
def test_entities_escaped_any_number_of_times_are_decoded_until_stable(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


def test_the_location_in_a_title_is_the_scrapers_last_segment() -> None:
    raw = raw_rows([{"id": "a", "location": np.nan,
                     "product_name": "Sofa | in great condition | in Leeds, West Yorkshire | Gumtree"}])  # fmt: skip
    clean, report = clean_products(raw, 0, 20_000)
    assert clean.loc[0, S.LOCATION] == "Leeds, West Yorkshire"
    assert clean.loc[0, S.TITLE] == "Sofa | in great condition" and report.notes["location_from_title"] == 1


def test_zero_width_space_no_longer_splits_a_searchable_word() -> None:
    raw = raw_rows([{"id": "a", "product_name": "Grey so\u200bfa | in Leeds, West Yorkshire | Gumtree",
                     "product_description": "Comfy so\u200bfa, Tom &amp; Jerry cushions<br>collect only"}])  # fmt: skip
    clean, _ = clean_products(raw, 0, 20_000)
    assert clean.loc[0, S.TITLE] == "Grey sofa"
    assert clean.loc[0, S.DESCRIPTION] == "Comfy sofa, Tom & Jerry cushions collect only"
    # what the BM25 index and the display both read: one word, found by "sofa"
    terms = tokenize(f"{clean.loc[0, S.TITLE]} {clean.loc[0, S.DESCRIPTION]}")
    assert terms.count("sofa") == 2 and "so" not in terms and "fa" not in terms


def test_seller_typed_titles_are_kept_whole() -> None:
    typed = raw_rows([{"id": "a", "product_name": "Sofa | grey velvet | 3 seater", "location": ""}])
    clean, report = clean_products(typed, 0, 20_000, strict=False, titles="seller")
    assert clean.loc[0, S.TITLE] == "Sofa | grey velvet | 3 seater"
    # a seller's title that looks scraped is still the seller's: kept, and no location read from it
    looks_scraped = raw_rows([{"id": "b", "product_name": "Lamp | in Leeds, West Yorkshire | Gumtree",
                               "location": ""}])  # fmt: skip
    clean, report = clean_products(looks_scraped, 0, 20_000, strict=False, titles="seller")
    assert clean.loc[0, S.TITLE] == "Lamp | in Leeds, West Yorkshire | Gumtree"
    assert clean.loc[0, S.LOCATION] == "" and "location_from_title" not in report.notes


def test_long_text_is_truncated_to_the_limits_and_counted() -> None:
    raw = raw_rows(
        [
            {"id": "long", "product_description": "word " * 30_000, "product_name": "T" * 500 + " | in X | Gumtree",
             "location": "Leeds, " * 300_000},  # 2 MB: was kept whole in the database
            {"id": "short", "product_description": "fine"},
        ]
    )  # fmt: skip
    clean, report = clean_products(
        raw, 0, 20_000, max_title_chars=300, max_description_chars=20_000, max_location_chars=200
    )
    row = clean.set_index(S.PRODUCT_ID).loc["long"]
    assert len(row[S.DESCRIPTION]) <= 20_000 and row[S.DESCRIPTION].endswith("word")
    assert len(row[S.TITLE]) == 300
    assert 0 < len(row[S.LOCATION]) <= 200
    assert report.notes["description_truncated"] == 1 and report.notes["title_truncated"] == 1
    assert report.notes["location_truncated"] == 1
    assert clean.set_index(S.PRODUCT_ID).loc["short", S.DESCRIPTION] == "fine"


def raw_rows(rows: list[dict]) -> pd.DataFrame:
    base = {
        "id": "x",
        "product_name": "Kettle | in Leeds, West Yorkshire | Gumtree",
        "category": "Appliances / Small Appliances / Kettles",
        "product_description": "Works 👍",
        "price": "£5.00",
        "location": "Leeds, West Yorkshire",
    }
    return pd.DataFrame([base | row for row in rows]).astype("str")


def test_clean_products_drops_with_reasons_and_keeps_the_rest() -> None:
    raw = raw_rows(
        [
            {"id": "ok"},
            {"id": "nocat", "category": np.nan},
            {"id": "notitle", "product_name": " | in Leeds, West Yorkshire | Gumtree"},
            {"id": "noprice", "price": np.nan},
            {"id": "badprice", "price": "tbc"},
            {"id": "huge", "price": "£1,233,333.00"},
            {"id": "ok", "product_description": "same id again"},
            {"id": "dupe"},  # same listing as "ok" under another id
            {
                "id": "other",
                "product_name": "Toaster | in Leeds, West Yorkshire | Gumtree",
                "location": np.nan,
            },
        ]
    )
    clean, report = clean_products(raw, min_price=0, max_price=20_000)
    assert list(clean[S.PRODUCT_ID]) == ["ok", "other"]
    assert dict(report.dropped) == {
        "missing_category": 1,
        "missing_title": 1,
        "missing_price": 1,
        "unparseable_price": 1,
        "price_outlier": 1,
        "duplicate_id": 1,
        "duplicate_listing": 1,
    }
    assert report.rows_in == 9 and report.rows_out == 2
    row = clean.set_index(S.PRODUCT_ID).loc["ok"]
    assert row[S.TITLE] == "Kettle" and row[S.DESCRIPTION] == "Works"
    assert row[S.ROOT_CATEGORY] == "Appliances" and row[S.LEAF_NAME] == "Kettles"
    assert row[S.LEAF_CATEGORY] == "Appliances / Small Appliances / Kettles"
    assert row[S.PRICE] == 5.0
    # a missing location column value is recovered from the title
    assert clean.set_index(S.PRODUCT_ID).loc["other", S.LOCATION] == "Leeds, West Yorkshire"
    assert report.to_json()["dropped_total"] == 7


def test_lenient_mode_keeps_listings_with_bad_prices() -> None:
    raw = raw_rows([{"id": "a", "price": "tbc"}, {"id": "b", "price": "£99,999.00"}, {"id": "c"}])
    clean, report = clean_products(raw, min_price=0, max_price=20_000, strict=False)
    assert list(clean[S.PRODUCT_ID]) == ["a", "b", "c"]
    assert clean[S.PRICE].isna().tolist() == [True, True, False]
    assert report.notes["unparseable_price_kept_as_nan"] == 1
    assert report.notes["price_outlier_kept_as_nan"] == 1


def test_category_normalisation() -> None:
    raw = raw_rows([{"id": "a", "category": "Home & Garden/  Sofas /"}])
    clean, _ = clean_products(raw, 0, 20_000)
    assert clean.loc[0, S.CATEGORY] == "Home & Garden / Sofas"


def test_missing_column_is_named() -> None:
    with pytest.raises(S.SchemaError, match="price"):
        clean_products(raw_rows([{}]).drop(columns=["price"]), 0, 1)


def test_created_date_is_earliest_photo() -> None:
    products = pd.DataFrame({S.PRODUCT_ID: ["a", "b"]})
    images = pd.DataFrame({"product_id": ["a", "a"], "create_time": ["26/02/2022", "24/02/2022"]})
    assert attach_created(products, images)[S.CREATED].tolist() == ["2022-02-24", None]


def test_category_encoder_round_trip_and_unseen(tmp_path) -> None:
    encoder = CategoryEncoder.fit(pd.Series(["b", "a", "b", None]))
    assert encoder.classes == ["a", "b"]
    encoder.save(tmp_path / "c.json")
    loaded = CategoryEncoder.load(tmp_path / "c.json")
    assert loaded.transform(["b", "a"]).tolist() == [1, 0]
    assert loaded.inverse_transform([1]) == ["b"]
    with pytest.raises(ValueError, match="unseen category: zzz"):
        loaded.transform(["zzz"])
    assert loaded.transform(["zzz"], unknown="mark").tolist() == [-1]
