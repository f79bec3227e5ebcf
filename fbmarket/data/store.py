"""The listing database: clean listings, photos, embeddings, buyers and interactions.

SQLite file by default, PostgreSQL by URL (SQLAlchemy 2 Core). Writes are upserts keyed
by id that only touch a row when a value actually changed, so ingesting the same
folder twice leaves the database exactly as it was.

The schema is migrated, not just created: opening a `Store` upgrades the database to the
newest Alembic revision in fbmarket/data/migrations (`migrations.migrate`; the tables are in data/tables.py), so a database that outlives a
release (compose's PostgreSQL) gets every column added since. Timestamps are real date-times
(`DateTime(timezone=True)`, UTC); strings given for them are read by `to_utc` (no offset: UTC).
A listing's `created` is a day: it is read back as its ISO date ("2022-02-24"), as the API
has always shown it.

Photo paths are stored relative to the model bundle they belong to (`Store(url, root=bundle)`),
so a bundle copied or moved elsewhere, or shared by API processes that see it at different
places, finds its photos. Databases written before that hold paths relative to the directory
training ran in, or absolute ones; `rebase_photo_paths` migrates them (see `rebased_photo_path`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fbmarket.data import schema as S
from fbmarket.data.migrations import migrate
from fbmarket.data.tables import embeddings, images, interactions, listings, metadata, users
from fbmarket.errors import AlreadyExistsError, DataError, NotFoundError

log = logging.getLogger(__name__)

IMAGE_COUNT = "image_count"  # photos of a listing, as the catalogue names the column
ROW_CHUNK = 500  # ids per IN (...) query: under every database's bound-parameter limit
LISTING_FIELDS = [c.name for c in listings.columns if c.name != "updated_at"]
IMAGE_FIELDS = [c.name for c in images.columns]


# `<anything>/cache/images_<size>/<file>` (clean_images) or `.../cache/uploads_<size>/<file>`
# (live listings): where every photo path a bundle writes points.
CACHE_DIR_NAME = "cache"
_CACHE_FOLDER = re.compile(r"^(images|uploads)_\d+$")


def _cache_tail(parts: Sequence[str]) -> tuple[str, ...] | None:
    """`cache/<images_N|uploads_N>/<file>`, the end of a path into a photo cache, or None."""
    if (
        len(parts) >= 3
        and parts[-3] == CACHE_DIR_NAME
        and _CACHE_FOLDER.match(parts[-2])
        and parts[-1] not in ("", ".", "..")
    ):
        return tuple(parts[-3:])
    return None


def _split(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.replace("\\", "/").split("/") if part)


def stored_photo_path(path: str, root: Path) -> str:
    """How a photo path is written: relative to the bundle `root` (POSIX separators) when the
    file lies inside it, else absolute. A relative input is relative to the process's cwd."""
    absolute = os.path.abspath(path)
    if not _inside(absolute, root):
        return absolute
    return Path(os.path.relpath(absolute, os.path.abspath(root))).as_posix()


def _inside(absolute: str, root: Path) -> bool:
    base = os.path.abspath(root)
    try:
        return os.path.commonpath([absolute, base]) == base
    except ValueError:  # another drive (Windows)
        return False


def rebased_photo_path(path: str, root: Path) -> str:
    """A stored photo path as the bundle at `root` reads it (relative to `root`, or absolute).

    Relative paths are bundle-relative, except those of databases written before paths were:
    relative to the directory training ran in (`artifacts/cache/images_128/x.jpg`). Such a
    path, or an absolute one, that points into `<anything>/cache/images_N|uploads_N/<file>` is
    re-based onto this bundle's cache (`cache/images_128/x.jpg`), which is where a bundle that
    was copied or moved keeps its photos. An absolute path elsewhere stays as it is.
    """
    parts = _split(path)
    tail = _cache_tail(parts)
    if not os.path.isabs(path):
        return "/".join(tail) if tail is not None else "/".join(parts)
    if _inside(os.path.abspath(path), root):
        return stored_photo_path(path, root)
    return "/".join(tail) if tail is not None else path


def _only_old_copy_exists(old: str, new: Path) -> bool:
    """An absolute old path that still opens while the re-based one does not: keep the old."""
    return os.path.isabs(old) and not new.is_file() and os.path.isfile(old)


def readable_photo_path(path: str, root: Path) -> str:
    """An openable (absolute) path for a stored photo path of the bundle at `root`."""
    rebased = rebased_photo_path(path, root)
    if os.path.isabs(rebased):
        return rebased
    inside = os.path.join(os.path.abspath(root), rebased)
    return path if _only_old_copy_exists(path, Path(inside)) else inside


def _plain(value: Any) -> Any:
    """numpy/pandas scalars -> Python values a DB driver accepts; NaN -> NULL."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(frame: pd.DataFrame, fields: Sequence[str]) -> list[dict[str, Any]]:
    present = [f for f in fields if f in frame.columns]
    return [
        {f: _plain(v) for f, v in zip(present, row, strict=True)}
        for row in frame[present].itertuples(index=False)
    ]


def _listing_rows(products: pd.DataFrame) -> list[dict[str, Any]]:
    """Listing rows as the listings table stores them: stamped `updated_at` now, defaults for
    the optional text columns, creation dates in UTC (one shape for an upsert and an insert)."""
    now = datetime.now(UTC)
    rows = _records(products, LISTING_FIELDS)
    for row in rows:
        row["updated_at"] = now
        row.setdefault("description", "")
        row.setdefault("geo_match", "unknown")
        if S.CREATED in row:
            row[S.CREATED] = to_utc(row[S.CREATED])
    return rows


class Store:
    """One database; create it with `Store(url, root=bundle)`, which creates or upgrades its schema.

    `root` is the model bundle whose photo cache the stored photo paths point into: paths are
    written relative to it and read back absolute. Without it paths are stored and returned
    as given (tests of the database alone).
    """

    def __init__(self, url: str, root: Path | str | None = None, create_folder: bool = False):
        """`create_folder`: create a SQLite file's missing folder (training, which writes a new
        bundle); otherwise a missing folder is a DataError naming it: a mistyped --database must
        not leave a new empty folder and database behind.

        Raises DataError for a SQLite file in a folder that does not exist (without
        `create_folder`), and as `migrate` does for a database that cannot be reached.
        """
        self.root = Path(os.path.abspath(root)) if root is not None else None
        if url.startswith("sqlite:///"):
            folder = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).parent
            if create_folder:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                raise DataError(
                    f"the SQLite database's folder {folder} does not exist: check --database / "
                    "FBMARKET_DATABASE_URL (or create the folder)"
                )
        migrate(url)
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def _upsert(
        self,
        connection: sa.Connection,
        table: sa.Table,
        rows: list[dict[str, Any]],
        keys: Sequence[str],
        touch: str | None = None,
    ) -> int:
        """Insert or update by key; returns how many rows were inserted or actually changed."""
        if not rows:
            return 0
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
        columns = [c for c in rows[0] if c not in keys and c != touch]
        changed = (
            sa.or_(*(table.c[c].is_distinct_from(insert.excluded[c]) for c in columns)) if columns else None
        )
        set_ = {c: insert.excluded[c] for c in columns}
        if touch:
            set_[touch] = insert.excluded[touch]
        statement = insert.on_conflict_do_update(index_elements=list(keys), set_=set_, where=changed)
        return _count_written(connection, statement.returning(table.c[keys[0]]), rows)

    # --- listings and photos ---
    def upsert_listings(self, products: pd.DataFrame, photos: pd.DataFrame | None = None) -> int:
        """Write clean listings (and their photos); returns rows inserted or changed."""
        with self.engine.begin() as connection:
            return self._write_listings(connection, products, photos)

    def _write_listings(
        self, connection: sa.Connection, products: pd.DataFrame, photos: pd.DataFrame | None
    ) -> int:
        rows = _listing_rows(products)
        changed = self._upsert(connection, listings, rows, ["product_id"], touch="updated_at")
        if photos is not None and len(photos):
            photos = photos[photos[S.PRODUCT_ID].isin(products[S.PRODUCT_ID])].copy()
            photos["position"] = photos.groupby(S.PRODUCT_ID).cumcount()
            if self.root is not None:
                root = self.root
                photos[S.IMAGE_PATH] = photos[S.IMAGE_PATH].map(lambda p: stored_photo_path(str(p), root))
            changed += self._upsert(connection, images, _records(photos, IMAGE_FIELDS), ["image_id"])
        return changed

    def save_listing(
        self,
        product: pd.DataFrame,
        photos: pd.DataFrame | None,
        vector: np.ndarray | None,
        model_version: str,
        replace_photos: bool = False,
        expect: str | None = None,
    ) -> None:
        """One live listing, its photos and its embedding in a single transaction: all or nothing.

        `expect` lets the database decide a race between processes that share it: "new" inserts
        the listing row first and raises AlreadyExistsError when its id is taken (the primary
        key decides: a second create never overwrites the first, whichever process made it);
        "existing" locks the row (SELECT ... FOR UPDATE on PostgreSQL) and raises NotFoundError
        when there is none (an edit never brings back a listing deleted meanwhile). None: an
        upsert (one process owns the decision, as the embedded service does under its lock).
        """
        ids = product[S.PRODUCT_ID].astype(str).tolist()
        with self.engine.begin() as connection:
            if expect == "new":
                self._insert_new(connection, product)
            elif expect == "existing":
                locked = connection.execute(
                    sa.select(listings.c.product_id).where(listings.c.product_id.in_(ids)).with_for_update()
                ).all()
                if len(locked) != len(set(ids)):
                    raise NotFoundError(f"listing {ids[0]!r} not found")
            elif expect is not None:
                raise ValueError(f"expect must be 'new', 'existing' or None, got {expect!r}")
            if replace_photos:
                connection.execute(sa.delete(images).where(images.c.product_id.in_(ids)))
            self._write_listings(connection, product, photos)
            if vector is not None:
                self._write_embeddings(connection, ids, vector, model_version)

    def _insert_new(self, connection: sa.Connection, product: pd.DataFrame) -> None:
        """Insert listing rows that must not exist yet (INSERT ... ON CONFLICT DO NOTHING
        RETURNING): AlreadyExistsError, and the transaction rolled back, when one does."""
        rows = _listing_rows(product)
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(listings)
        statement = insert.on_conflict_do_nothing(index_elements=["product_id"]).returning(
            listings.c.product_id
        )
        inserted = {str(row[0]) for row in connection.execute(statement, rows).all()}
        for row in rows:
            if str(row["product_id"]) not in inserted:
                raise AlreadyExistsError(
                    f"product_id: listing {row['product_id']!r} already exists: use PUT to change it",
                    field="product_id",
                )

    def listing_ids(self) -> list[str]:
        """Every listing's product id (one column: what a retrieval engine is compared with)."""
        with self.engine.connect() as connection:
            return [str(pid) for (pid,) in connection.execute(sa.select(listings.c.product_id))]

    def has_listing(self, product_id: str) -> bool:
        """Whether the database holds this listing (the truth every API process shares)."""
        query = sa.select(listings.c.product_id).where(listings.c.product_id == product_id)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def listing_rows(self, product_ids: Sequence[str] | None, texts: bool = True) -> pd.DataFrame:
        """The listings with these ids (any order; absent ids: no row) with their photo count
        (IMAGE_COUNT column), in one query: what a request ranks and shows, read per request
        by a service that keeps no catalogue of its own. Ids in chunks of ROW_CHUNK; None:
        every listing (a batch job's read, O(catalogue))."""
        if product_ids is None:
            return self._rows(sa.true(), order=(listings.c.product_id,), texts=texts)
        frames = []
        for start in range(0, len(product_ids), ROW_CHUNK):
            chunk = list(product_ids[start : start + ROW_CHUNK])
            frames.append(self._rows(listings.c.product_id.in_(chunk), texts=texts))
        if not frames:
            return self._rows(sa.false(), texts=texts)
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def recent_listings(
        self,
        column: str | None = None,
        value: str | None = None,
        limit: int = 100,
        prefix: bool = False,
        min_price: float | None = None,
        max_price: float | None = None,
        latitude_band: tuple[float, float] | None = None,
    ) -> pd.DataFrame:
        """The `limit` newest listings (by `created`, then id) whose `column` is `value` (or,
        with `prefix`, `value` or a path under it: "Home & Garden" finds "Home & Garden /
        Sofas"), within price bounds and a latitude band (degrees) when given; with their
        photo count. A home feed's bounded pool when no process holds the whole catalogue."""
        condition = sa.true()
        if column is not None and value is not None:
            field = listings.c[column]
            condition = field == value
            if prefix:
                condition = sa.or_(field == value, field.startswith(f"{value} / ", autoescape=True))
        if min_price is not None:
            condition = sa.and_(condition, listings.c.price >= min_price)
        if max_price is not None:
            condition = sa.and_(condition, listings.c.price <= max_price)
        if latitude_band is not None:
            condition = sa.and_(condition, listings.c.latitude.between(*latitude_band))
        order = (listings.c.created.desc().nulls_last(), listings.c.product_id)
        return self._rows(condition, order=order, limit=limit, texts=False)

    def _rows(
        self, condition: Any, order: Sequence[Any] = (), limit: int | None = None, texts: bool = True
    ) -> pd.DataFrame:
        """Listing rows with their IMAGE_COUNT. `created` is a naive UTC midnight datetime64 (the
        day a listing shows, as `listings_frame` gives it as text); `texts=False` leaves out
        the description (ranking and results never read it; it may be 20,000 characters)."""
        # a correlated count: the images index answers it per listing, never a scan of all photos
        count = (
            sa.select(sa.func.count())
            .where(images.c.product_id == listings.c.product_id)
            .correlate(listings)
            .scalar_subquery()
            .label(IMAGE_COUNT)
        )
        columns = [c for c in listings.columns if texts or c.name != S.DESCRIPTION]
        query = sa.select(*columns, count).where(condition).order_by(*order)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            result = connection.execute(query)
            frame = pd.DataFrame(result.all(), columns=list(result.keys()))
        created = pd.to_datetime(frame[S.CREATED], utc=True, errors="coerce")
        frame[S.CREATED] = created.dt.tz_localize(None).dt.normalize().to_numpy("datetime64[ns]")
        return frame

    def category_paths(self) -> list[str]:
        """The distinct category paths of the stored listings (the root categories included)."""
        query = sa.union(sa.select(listings.c.category), sa.select(listings.c.root_category))
        with self.engine.connect() as connection:
            return sorted({str(row[0]) for row in connection.execute(query) if row[0]})

    def has_user(self, user_id: str) -> bool:
        with self.engine.connect() as connection:
            return (
                connection.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id)).first()
                is not None
            )

    def delete_listing(self, product_id: str) -> bool:
        with self.engine.begin() as connection:
            for table in (embeddings, images):
                connection.execute(sa.delete(table).where(table.c.product_id == product_id))
            result = connection.execute(sa.delete(listings).where(listings.c.product_id == product_id))
        return bool(result.rowcount)

    def get_listing(self, product_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = (
                connection.execute(sa.select(listings).where(listings.c.product_id == product_id))
                .mappings()
                .first()
            )
        return _listing_out(dict(row)) if row else None

    def listings_frame(self, product_ids: Iterable[str] | None = None) -> pd.DataFrame:
        query = sa.select(listings)
        if product_ids is not None:
            query = query.where(listings.c.product_id.in_(list(product_ids)))
        with self.engine.connect() as connection:
            frame = pd.read_sql(query.order_by(listings.c.product_id), connection)
        frame[S.CREATED] = [_iso_day(value) for value in frame[S.CREATED]]
        return frame

    def images_frame(self, product_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Photo rows in order; with a `root`, `path` is absolute (openable from any cwd)."""
        query = sa.select(images)
        if product_ids is not None:
            query = query.where(images.c.product_id.in_(list(product_ids)))
        with self.engine.connect() as connection:
            frame = pd.read_sql(query.order_by(images.c.product_id, images.c.position), connection)
        if self.root is not None and len(frame):
            root = self.root
            frame[S.IMAGE_PATH] = frame[S.IMAGE_PATH].map(lambda p: readable_photo_path(str(p), root))
        return frame

    def rebase_photo_paths(self) -> int:
        """Migrate photo paths to bundle-relative ones (see `rebased_photo_path`); returns how
        many rows changed. Idempotent and cheap once done: rows already under `cache/` are
        not read. An absolute path whose file exists while the bundle has no copy of it is
        left alone (a bundle moved without its cache still shows its photos)."""
        if self.root is None:
            return 0
        query = sa.select(images.c.image_id, images.c.path).where(
            sa.not_(images.c.path.startswith(f"{CACHE_DIR_NAME}/"))
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        updates = []
        for image_id, path in rows:
            new = rebased_photo_path(str(path), self.root)
            if new == path or _only_old_copy_exists(str(path), self.root / new):
                continue
            updates.append({"key": image_id, "new_path": new})
        if updates:
            statement = (
                sa.update(images)
                .where(images.c.image_id == sa.bindparam("key"))
                .values(path=sa.bindparam("new_path"))
            )
            with self.engine.begin() as connection:
                connection.execute(statement, updates)
        return len(updates)

    def photo_counts(self, product_ids: Sequence[str] | None = None) -> dict[str, int]:
        """product id -> how many photos it has (ids without any are absent); all listings by default."""
        query = sa.select(images.c.product_id, sa.func.count()).group_by(images.c.product_id)
        if product_ids is not None:
            query = query.where(images.c.product_id.in_(list(product_ids)))
        with self.engine.connect() as connection:
            return {str(pid): int(n) for pid, n in connection.execute(query)}

    def user_ids(self) -> set[str]:
        """Every stored buyer's id."""
        with self.engine.connect() as connection:
            return {str(row[0]) for row in connection.execute(sa.select(users.c.user_id))}

    def buyers(self, limit: int) -> list[dict[str, Any]]:
        """The first `limit` buyers by id (user_id, age, gender, location): the web page's picker."""
        query = (
            sa.select(users.c.user_id, users.c.age, users.c.gender, users.c.location)
            .order_by(users.c.user_id)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def root_categories(self) -> list[str]:
        """The distinct root categories of the stored listings, sorted."""
        query = sa.select(listings.c.root_category).distinct().order_by(listings.c.root_category)
        with self.engine.connect() as connection:
            return [row[0] for row in connection.execute(query) if row[0]]

    def count(self, table: str) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(metadata.tables[table])
                ).scalar_one()
            )

    # --- embeddings ---
    def upsert_embeddings(self, product_ids: Sequence[str], vectors: np.ndarray, model_version: str) -> int:
        with self.engine.begin() as connection:
            return self._write_embeddings(connection, product_ids, vectors, model_version)

    def _write_embeddings(
        self, connection: sa.Connection, product_ids: Sequence[str], vectors: np.ndarray, model_version: str
    ) -> int:
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype="<f4")
        rows = [
            {
                "product_id": pid,
                "model_version": model_version,
                "dim": int(vectors.shape[1]),
                "vector": v.tobytes(),
            }
            for pid, v in zip(product_ids, vectors, strict=True)
        ]
        return self._upsert(connection, embeddings, rows, ["product_id"])

    def embedding_versions(self) -> dict[str, str]:
        """product id -> the model version its stored embedding came from."""
        query = sa.select(embeddings.c.product_id, embeddings.c.model_version)
        with self.engine.connect() as connection:
            return {str(pid): str(version) for pid, version in connection.execute(query)}

    def load_embeddings(self, model_version: str | None = None) -> tuple[list[str], np.ndarray]:
        query = sa.select(embeddings).order_by(embeddings.c.product_id)
        if model_version:
            query = query.where(embeddings.c.model_version == model_version)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        vectors = np.stack([np.frombuffer(r.vector, dtype="<f4") for r in rows]).astype(np.float32)
        return [r.product_id for r in rows], vectors

    # --- buyers and interactions ---
    def upsert_users(self, frame: pd.DataFrame) -> int:
        frame = frame.copy()
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce").astype("Int64")
        for column in ("latitude", "longitude"):
            if column in frame.columns:
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
        base = [c.name for c in users.columns if c.name != "extra"]
        extra_columns = [c for c in frame.columns if c not in base]
        rows = _records(frame, base)
        for row, extra in zip(rows, _records(frame, extra_columns), strict=True):
            row["extra"] = extra or None
        with self.engine.begin() as connection:
            return self._upsert(connection, users, rows, ["user_id"])

    def add_interactions(self, frame: pd.DataFrame) -> int:
        rows = _records(frame, ["user_id", "product_id", "event", "timestamp", "query"])
        for row in rows:
            row["timestamp"] = to_utc(row["timestamp"])
        if unparsed := sum(row["timestamp"] is None for row in rows):
            log.warning("%d interaction(s) whose timestamp is no date: not stored", unparsed)
            rows = [row for row in rows if row["timestamp"] is not None]
        if not rows:
            return 0
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(interactions)
        statement = insert.on_conflict_do_nothing(
            index_elements=["user_id", "product_id", "event", "timestamp"]
        )
        with self.engine.begin() as connection:
            return _count_written(connection, statement.returning(interactions.c.id), rows)


def to_utc(value: Any) -> datetime | None:
    """A timestamp as an aware UTC date-time (no offset: UTC), from a datetime, a pandas Timestamp
    or text: ISO 8601, else whatever pandas reads (as `load_interactions` does, so the store keeps
    the events training would use); None for a missing value or text that is no date."""
    value = _plain(value)
    if value is None:
        return None
    if not isinstance(value, datetime):
        text = str(value).strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            if text.lower() in _RELATIVE:
                return None
            with warnings.catch_warnings():  # "could be day-first": one warning per event otherwise
                warnings.simplefilter("ignore", UserWarning)
                value = pd.to_datetime(text, errors="coerce")
            if value is pd.NaT:
                return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_RELATIVE = {"now", "today"}  # pandas reads these as the current moment: no stored event's date


def _iso_day(value: Any) -> str | None:
    """A stored `created` date-time as the ISO date a listing shows ("2022-02-24")."""
    moment = to_utc(value)
    return moment.date().isoformat() if moment is not None else None


def _listing_out(row: dict[str, Any]) -> dict[str, Any]:
    row[S.CREATED] = _iso_day(row.get(S.CREATED))
    return row


def _count_written(connection: sa.Connection, statement: sa.Executable, rows: list[dict[str, Any]]) -> int:
    """Rows an upsert actually wrote: RETURNING skips conflicts left alone (rowcount is -1 on psycopg)."""
    written = 0
    for start in range(0, len(rows), 500):
        written += len(connection.execute(statement, rows[start : start + 500]).all())
    return written


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
