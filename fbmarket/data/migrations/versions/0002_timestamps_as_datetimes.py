"""Timestamps as real date-times: `listings.created` and `interactions.timestamp`.

Both were strings (an ISO date, an ISO date-time). They become `DateTime(timezone=True)`
(`timestamptz` on PostgreSQL; SQLAlchemy's date-time text on SQLite), each value converted in
Python by the same rule on both databases: ISO 8601 (else what pandas reads, as training does),
a value without an offset is UTC, and one that is no date becomes NULL (`created`) or is dropped
with a count in the log (`timestamp`, which may not be NULL: such an event has no place in time).

Revision ID: 0002_timestamps_as_datetimes
Revises: 0001_initial
Create Date: 2026-12-02
"""

from __future__ import annotations

import logging
import warnings
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from alembic import op

revision = "0002_timestamps_as_datetimes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

# (table, key, column, nullable, the table's other columns after the change: SQLite copies the
# table into this shape, so the declared type changes without a CAST that would ruin the text)
CHANGES = ("listings", "product_id", "created", True), ("interactions", "id", "timestamp", False)


def to_utc(value: object) -> datetime | None:
    """A stored string as an aware UTC date-time (no offset: UTC): ISO 8601, else what pandas
    reads (as training's `load_interactions` does); None if it is no date."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip() if value is not None else ""
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            if text.lower() in ("now", "today"):  # pandas would read the current moment
                return None
            with warnings.catch_warnings():  # "could be day-first", once per value otherwise
                warnings.simplefilter("ignore", UserWarning)
                moment = pd.to_datetime(text, errors="coerce")
            if moment is pd.NaT:
                return None
            parsed = moment.to_pydatetime()
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _converted(table: str, key: str, column: str) -> tuple[list[dict[str, object]], list[object]]:
    """(rows with their new value, keys of rows whose value does not parse)."""
    rows = op.get_bind().execute(sa.text(f'SELECT "{key}", "{column}" FROM "{table}"')).all()
    values = [{"k": k, "v": to_utc(v)} for k, v in rows if v is not None]
    return [row for row in values if row["v"] is not None], [row["k"] for row in values if row["v"] is None]


def _drop_unparsed(table: str, key: str, column: str, bad: list[object], nullable: bool) -> None:
    if not bad:
        return
    log.warning("%s.%s: %d value(s) are no date-time (%s)", table, column, len(bad),
                "set to NULL" if nullable else "rows dropped")  # fmt: skip
    statement = (
        sa.text(f'UPDATE "{table}" SET "{column}" = NULL WHERE "{key}" = :k')
        if nullable
        else sa.text(f'DELETE FROM "{table}" WHERE "{key}" = :k')
    )
    op.get_bind().execute(statement, [{"k": k} for k in bad])


def _write(table: str, key: str, column: str, rows: list[dict[str, object]]) -> None:
    """Write date-times through SQLAlchemy's DateTime type (its storage format on SQLite)."""
    if not rows:
        return
    target = sa.table(table, sa.column(key), sa.column(column, sa.DateTime(timezone=True)))
    statement = (
        sa.update(target).where(target.c[key] == sa.bindparam("k")).values({column: sa.bindparam("v")})
    )
    op.get_bind().execute(statement, rows)


def _sqlite_copy_shape(table: str, column: str) -> sa.Table:
    """The table as SQLite recreates it: reflected, with `column` declared a date-time."""
    reflected = sa.Table(table, sa.MetaData(), autoload_with=op.get_bind())
    reflected.c[column].type = sa.DateTime(timezone=True)
    return reflected


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, key, column, nullable in CHANGES:
        rows, bad = _converted(table, key, column)
        _drop_unparsed(table, key, column, bad, nullable)
        if sqlite:
            # typeless columns: rewrite the values in place, then copy the table into its new
            # declared shape (migrations.migrate runs this with foreign keys off: no cascades)
            _write(table, key, column, rows)
            with op.batch_alter_table(table, recreate="always", copy_from=_sqlite_copy_shape(table, column)):
                pass
            continue
        # a typed column: the date-times go into a new column that then takes the old one's place
        # (PostgreSQL drops uq_interaction with the old column; it is made again below)
        new = f"{column}_new"
        op.add_column(table, sa.Column(new, sa.DateTime(timezone=True), nullable=True))
        _write(table, key, new, rows)
        op.drop_column(table, column)
        op.alter_column(table, new, new_column_name=column, nullable=nullable)
    if not sqlite:
        op.create_unique_constraint(
            "uq_interaction", "interactions", ["user_id", "product_id", "event", "timestamp"]
        )


def downgrade() -> None:
    raise NotImplementedError("timestamps are not turned back into strings; restore a backup instead")
