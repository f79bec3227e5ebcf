"""Read raw listing tables from a dataset folder or a SQL database (the Gumtree input format, README "Input format").

Raw tables are returned as all-string DataFrames, exactly as given, plus a count of
what could not be read. Interpretation (prices, categories, locations) belongs to
`clean`; this module only gets rows off disk without losing or inventing any.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fbmarket.data.engine import create_engine, reachable
from fbmarket.data.schema import (
    RAW_IMAGE_COLUMNS,
    RAW_INTERACTION_COLUMNS,
    RAW_PRODUCT_COLUMNS,
    RAW_USER_COLUMNS,
    SchemaError,
    require_columns,
)
from fbmarket.errors import DataError

PRODUCTS_FILE = "Products.csv"
IMAGES_FILE = "Images.csv"
USERS_FILE = "Users.csv"
INTERACTIONS_FILE = "Interactions.csv"
IMAGES_DIR = "images"


@dataclass
class ReadIssues:
    """What reading could not take as given, per file.

    `data_rows` is every record after the header (kept + malformed). Malformed rows are
    counted by reason (`too_many_fields`, `unterminated_quote`, `stray_quote`); rows with too few fields
    are kept, padded with empty values, and counted in `padded_rows`. Bytes that are not
    UTF-8 are read as cp1252 one by one, so only the fields holding them change: such a
    file is listed in `non_utf8_files`, and the fields and rows repaired are counted. A file
    whose lines end in a bare carriage return (classic Mac OS, some Excel "CSV (Macintosh)"
    exports) is read line by line as any other and listed in `cr_line_ending_files`.
    """

    malformed_rows: dict[str, int] = field(default_factory=dict)
    malformed_examples: dict[str, list[str]] = field(default_factory=dict)
    malformed_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    padded_rows: dict[str, int] = field(default_factory=dict)
    data_rows: dict[str, int] = field(default_factory=dict)
    non_utf8_files: list[str] = field(default_factory=list)
    cp1252_fields: dict[str, int] = field(default_factory=dict)
    cp1252_rows: dict[str, int] = field(default_factory=dict)
    cr_line_ending_files: list[str] = field(default_factory=list)

    def malformed(self, name: str, reason: str, line: int, fields: list[str]) -> None:
        self.malformed_rows[name] = self.malformed_rows.get(name, 0) + 1
        reasons = self.malformed_reasons.setdefault(name, {})
        reasons[reason] = reasons.get(reason, 0) + 1
        examples = self.malformed_examples.setdefault(name, [])
        if len(examples) < 5:
            examples.append(f"line {line} ({reason}): " + ",".join(fields)[:200])

    def to_json(self) -> dict:
        return {
            "data_rows": self.data_rows,
            "malformed_rows": self.malformed_rows,
            "malformed_reasons": self.malformed_reasons,
            "malformed_examples": self.malformed_examples,
            "padded_rows": self.padded_rows,
            "non_utf8_files": self.non_utf8_files,
            "cp1252_repaired_fields": self.cp1252_fields,
            "cp1252_repaired_rows": self.cp1252_rows,
            "cr_line_ending_files": self.cr_line_ending_files,
        }


@dataclass
class RawTables:
    """A dataset as read: products, images, optional buyers and interactions."""

    products: pd.DataFrame
    images: pd.DataFrame
    image_dir: Path | None
    users: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    issues: ReadIssues = field(default_factory=ReadIssues)
    origin: str = ""


# The header line ends in a bare carriage return: the file's lines end in CR alone (a header
# holds no quoted line break, and its first line break is its end).
_CR_HEADER = re.compile(r"[^\r\n]*\r")
# Bytes that were not UTF-8, as `surrogateescape` keeps them: one lone surrogate per byte.
_UNDECODED = re.compile("[\udc80-\udcff]+")
# The csv module refuses fields over 131,072 characters by default, and pandas' python
# engine then loses the row without a word. A field can be as long as the file.
_CSV_LIMIT_LOCK = threading.Lock()


def _decode(raw: bytes, name: str, issues: ReadIssues) -> str:
    """UTF-8, keeping any byte that is not as a lone surrogate for `_repair` to read as cp1252.

    Decoding a whole file as cp1252 because of one stray byte would turn every "£" of
    the rest into "Â£"; this way only the fields holding the stray bytes change.
    """
    text: str
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        issues.non_utf8_files.append(name)
        text = raw.decode("utf-8-sig", errors="surrogateescape")
    text = text.replace("\r\n", "\n")
    if _CR_HEADER.match(text):
        # Every line ends in a bare CR (no header is that long, or holds a line break): read
        # as one header row holding the whole file, it named no required column.
        issues.cr_line_ending_files.append(name)
        return text.replace("\r", "\n")
    # Descriptions scraped from the web carry bare carriage returns inside unquoted fields;
    # as line breaks they would split one listing into several rows.
    return text.replace("\r", " ")


def _as_cp1252(match: re.Match[str]) -> str:
    raw = match.group(0).encode("utf-8", errors="surrogateescape")
    return raw.decode("cp1252", errors="replace")  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: U+FFFD


def _repair(fields: list[str]) -> tuple[list[str], int]:
    """Read the undecoded bytes of each field as cp1252; returns the fields and how many changed."""
    repaired = 0
    for i, value in enumerate(fields):
        if _UNDECODED.search(value):
            fields[i] = _UNDECODED.sub(_as_cp1252, value)
            repaired += 1
    return fields, repaired


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Raise the csv module's (process-wide) field size limit for one read, then restore it."""
    with _CSV_LIMIT_LOCK:
        previous = csv.field_size_limit()
        csv.field_size_limit(max(previous, min(limit, 2**31 - 1)))
        try:
            yield
        finally:
            csv.field_size_limit(previous)


def _is_blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def _unterminated(lines: list[str]) -> bool:
    """True when these lines end inside a quoted field (a quote opened and never closed)."""
    try:
        for _ in csv.reader(lines, strict=True):
            pass
    except csv.Error as error:
        return "unexpected end of data" in str(error)
    return False


# A closing quote followed by blanks before the delimiter ('"Leeds" ,'): harmless padding, the
# csv module drops nothing there, so the stray-quote check ignores it.
_BLANKS_AFTER_QUOTE = re.compile(r'"[ \t]+(?=,|\n|$)')


def _stray_quote(lines: list[str]) -> bool:
    """True when a record's quotes do not pair up as CSV quotes: text right after a closing quote.

    The csv module (not strict) reads `,"£280.00,"Croydon, London"` as the fields
    `£280.00,Croydon` and ` London"` without a word: a stray quote opened a field that the next
    quote "closed", and everything after was glued on. Strict CSV refuses exactly that shape
    (',' expected after '"'); a quote inside an unquoted field ('a 5" TV') stays allowed.
    """
    if not any('"' in line for line in lines):
        return False
    try:
        for _ in csv.reader([_BLANKS_AFTER_QUOTE.sub('"', line) for line in lines], strict=True):
            pass
    except csv.Error as error:
        return "expected after" in str(error)
    return False


def _records(text: str) -> Iterator[tuple[int, list[str], bool, list[str]]]:
    """(first line number, fields, complete, its lines) for every CSV record, blank ones included.

    A quote that opens and never closes makes the csv module read on into the next lines
    (to the end of the file, or to the next row's quote), silently merging rows. A record
    that spans lines yet has the wrong number of fields, or that ends the file inside a
    quote, is such a merge: it comes as (line, [that first line], False), and reading
    starts again on the next line. Quoted line breaks in a row of the right width stay.
    """
    lines = io.StringIO(text).readlines()
    width: int | None = None
    start = 0
    while start < len(lines):
        reader = csv.reader(lines[start:])
        begin = 0  # where the current record starts, within lines[start:]
        restart = None
        for record in reader:
            end = reader.line_num
            first = start + begin
            if width is None:
                width = None if _is_blank(record) else len(record)  # the header
            elif (end - begin > 1 and len(record) != width) or (
                start + end == len(lines) and _unterminated(lines[first : start + end])
            ):
                restart = first
                break
            yield first + 1, record, True, lines[first : start + end]
            begin = end
        if restart is None:
            return
        yield restart + 1, [lines[restart].rstrip("\n")], False, lines[restart : restart + 1]
        start = restart + 1


def _header(record: list[str]) -> list[str]:
    """Column names as pandas would give them: blanks become "Unnamed: i", repeats get ".1", ".2"."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, raw_name in enumerate(record):
        name = raw_name.strip() or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        else:
            seen[name] = 0
        names.append(name)
    return names


def read_csv_table(path: Path, required: tuple[str, ...], issues: ReadIssues) -> pd.DataFrame:
    """Read one CSV as strings, giving an account of every record after the header.

    Each record is kept (fields of any length; too few fields are padded with empty
    values) or counted as malformed with a reason (too many fields, a quote that never
    closes, a stray quote that glued fields together), so `issues.data_rows[name]` = rows
    returned + `issues.malformed_rows[name]`.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a dataset folder needs {path.name}")
    name = path.name
    text = _decode(path.read_bytes(), name, issues)
    damaged = name in issues.non_utf8_files
    columns: list[str] | None = None
    rows: list[list[str]] = []
    data_rows = padded = repaired_fields = repaired_rows = 0
    with _csv_field_limit(len(text) + 1):
        for line, record, complete, source in _records(text):
            if complete and _is_blank(record):
                continue
            if damaged:
                record, repaired = _repair(record)
                if repaired and complete and columns is not None:
                    repaired_fields += repaired
                    repaired_rows += 1
            if columns is None:
                if not complete:
                    raise SchemaError(f"{name}: the header (line {line}) has a quote that never closes")
                columns = _header(record)
                continue
            data_rows += 1
            if not complete:
                issues.malformed(name, "unterminated_quote", line, record)
            elif _stray_quote(source):  # fields shifted or glued together: not a row to guess at
                issues.malformed(name, "stray_quote", line, [" ".join(raw.rstrip("\n") for raw in source)])
            elif len(record) > len(columns):
                issues.malformed(name, "too_many_fields", line, record)
            else:
                if len(record) < len(columns):
                    padded += 1
                    record = record + [""] * (len(columns) - len(record))
                rows.append(record)
    if columns is None:
        raise SchemaError(f"{name} is empty: expected columns {', '.join(required)}")
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    frame = frame.where(frame != "", np.nan).astype(str)
    if columns[0].startswith("Unnamed"):
        frame = frame.drop(columns=columns[0])  # the pandas index the exporter wrote
    require_columns(frame, required, name)
    issues.data_rows[name] = data_rows
    if padded:
        issues.padded_rows[name] = padded
    if repaired_fields:
        issues.cp1252_fields[name] = repaired_fields
        issues.cp1252_rows[name] = repaired_rows
    return frame.reset_index(drop=True)


def read_folder(folder: Path) -> RawTables:
    """Read a dataset folder in the Gumtree input format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    issues = ReadIssues()
    products = read_csv_table(folder / PRODUCTS_FILE, RAW_PRODUCT_COLUMNS, issues)
    images = read_csv_table(folder / IMAGES_FILE, RAW_IMAGE_COLUMNS, issues)
    if not issues.data_rows.get(PRODUCTS_FILE):  # else "0 listings" flows on into every stage
        raise DataError(f"{folder / PRODUCTS_FILE} has no rows: only a header, no listing to read")
    users = interactions = None
    if (folder / USERS_FILE).is_file():
        users = read_csv_table(folder / USERS_FILE, RAW_USER_COLUMNS, issues)
    if (folder / INTERACTIONS_FILE).is_file():
        interactions = read_csv_table(folder / INTERACTIONS_FILE, RAW_INTERACTION_COLUMNS, issues)
    image_dir = folder / IMAGES_DIR
    return RawTables(
        products=products,
        images=images,
        image_dir=image_dir if image_dir.is_dir() else None,
        users=users,
        interactions=interactions,
        issues=issues,
        origin=str(folder),
    )


def read_sql(
    url: str,
    image_dir: Path | None = None,
    products_table: str = "products",
    images_table: str = "images",
    users_table: str = "users",
    interactions_table: str = "interactions",
) -> RawTables:
    """Read the same tables from a database (the original system kept them in PostgreSQL)."""
    engine = create_engine(url)
    try:
        with reachable(url):
            names = set(sa.inspect(engine).get_table_names())
        for table in (products_table, images_table):
            if table not in names:
                raise SchemaError(f"database {engine.url.render_as_string()} has no table {table!r}")

        def read(table: str, required: tuple[str, ...]) -> pd.DataFrame:
            with engine.connect() as connection:
                frame = pd.read_sql_table(table, connection)
            frame = frame.drop(columns=[c for c in frame.columns if str(c).startswith(("Unnamed", "index"))])
            require_columns(frame, required, f"table {table}")
            return frame.astype("str")  # the same all-string shape the CSV reader gives

        products = read(products_table, RAW_PRODUCT_COLUMNS)
        if products.empty:
            raise DataError(
                f"table {products_table!r} of database {engine.url.render_as_string()} has no rows: no listing to read"
            )
        images = read(images_table, RAW_IMAGE_COLUMNS)
        users = read(users_table, RAW_USER_COLUMNS) if users_table in names else None
        interactions = (
            read(interactions_table, RAW_INTERACTION_COLUMNS) if interactions_table in names else None
        )
    finally:
        engine.dispose()
    return RawTables(
        products=products,
        images=images,
        image_dir=image_dir,
        users=users,
        interactions=interactions,
        origin=sa.make_url(url).render_as_string(hide_password=True),
    )


def read_source(data: str | Path, image_dir: Path | None = None) -> RawTables:
    """A folder path or a SQLAlchemy URL (anything with '://')."""
    text = str(data)
    if "://" in text:
        return read_sql(text, image_dir=image_dir)
    return read_folder(Path(text))
