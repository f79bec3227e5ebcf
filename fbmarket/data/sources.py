"""Read raw listing tables from a dataset folder or a SQL database (SPEC §4.1).

Raw tables are returned as all-string DataFrames, exactly as given, plus a count of
what could not be read. Interpretation (prices, categories, locations) belongs to
`clean`; this module only gets rows off disk without losing or inventing any.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from fbmarket.data.schema import (
    RAW_IMAGE_COLUMNS,
    RAW_INTERACTION_COLUMNS,
    RAW_PRODUCT_COLUMNS,
    RAW_USER_COLUMNS,
    SchemaError,
    require_columns,
)

PRODUCTS_FILE = "Products.csv"
IMAGES_FILE = "Images.csv"
USERS_FILE = "Users.csv"
INTERACTIONS_FILE = "Interactions.csv"
IMAGES_DIR = "images"


@dataclass
class ReadIssues:
    """What reading could not take as given: malformed rows and undecodable bytes, per file."""

    malformed_rows: dict[str, int] = field(default_factory=dict)
    malformed_examples: dict[str, list[str]] = field(default_factory=dict)
    non_utf8_files: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "malformed_rows": self.malformed_rows,
            "malformed_examples": self.malformed_examples,
            "non_utf8_files": self.non_utf8_files,
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


def _decode(raw: bytes, name: str, issues: ReadIssues) -> str:
    """UTF-8 when it is; otherwise keep every row by decoding as cp1252 (what old exports use)."""
    text: str
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        issues.non_utf8_files.append(name)
        text = raw.decode("cp1252", errors="replace")
    # Descriptions scraped from the web carry bare carriage returns inside unquoted fields;
    # as line breaks they would split one listing into several rows.
    return text.replace("\r\n", "\n").replace("\r", " ")


def read_csv_table(path: Path, required: tuple[str, ...], issues: ReadIssues) -> pd.DataFrame:
    """Read one CSV as strings; a row with the wrong number of fields is counted, not fatal."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a dataset folder needs {path.name}")
    text = _decode(path.read_bytes(), path.name, issues)
    bad: list[list[str]] = []

    def on_bad_line(fields: list[str]) -> None:
        bad.append(fields)
        return None

    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            engine="python",
            index_col=False,  # never guess an index from a row with extra fields
            on_bad_lines=on_bad_line,
        )
    except pd.errors.EmptyDataError as error:
        raise SchemaError(f"{path.name} is empty: expected columns {', '.join(required)}") from error
    first = str(frame.columns[0]) if len(frame.columns) else ""
    if first == "" or first.startswith("Unnamed"):
        frame = frame.drop(columns=frame.columns[0])  # the pandas index the exporter wrote
    frame.columns = [str(c).strip() for c in frame.columns]
    require_columns(frame, required, path.name)
    if bad:
        issues.malformed_rows[path.name] = len(bad)
        issues.malformed_examples[path.name] = [",".join(f)[:200] for f in bad[:5]]
    return frame.reset_index(drop=True)


def read_folder(folder: Path) -> RawTables:
    """Read a dataset folder in the Gumtree input format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    issues = ReadIssues()
    products = read_csv_table(folder / PRODUCTS_FILE, RAW_PRODUCT_COLUMNS, issues)
    images = read_csv_table(folder / IMAGES_FILE, RAW_IMAGE_COLUMNS, issues)
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
    engine = sa.create_engine(url)
    try:
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
