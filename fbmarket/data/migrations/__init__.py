"""Alembic migrations of the listing database (fbmarket/data/store.py), shipped in the package.

`Store` upgrades every database it opens to the newest revision (`migrate`), so a
PostgreSQL database that outlives a release gets the release's schema. New revision:

    alembic -c fbmarket/data/migrations/alembic.ini revision -m "what changes"

then write its `upgrade` by hand (autogenerate can draft it: add `--autogenerate` and set
`sqlalchemy.url`). Revisions never import the live table definitions: they freeze the schema
they move from and to, so they mean the same thing however store.py changes later.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fbmarket.data.engine import create_engine, reachable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent

HEAD_TABLE = "listings"  # present in every schema since the first: marks a pre-Alembic database


@functools.cache
def _alembic_head() -> str:
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(_migrations_dir())).get_current_head())


def _migrations_dir() -> Path:
    return MIGRATIONS_DIR


def migrate(url: str) -> str | None:
    """Upgrade the database at `url` to the newest revision; returns the revision it was at.

    A fresh database gets every revision; one made before migrations (tables, but no
    `alembic_version`) is stamped with the initial revision, whose schema it has, and then
    upgraded. A database already at the head costs one read. An upgrade runs in one
    transaction that holds the database's write lock (PostgreSQL: an advisory lock; SQLite:
    BEGIN IMMEDIATE), so processes opening a database together migrate it once, and a failed
    upgrade leaves it as it was. SQLite migrates with foreign keys off: copying a table to
    change it must not cascade deletes to its photos.
    """
    quiet_alembic()  # before alembic's import: it logs its plugins then
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    head = _alembic_head()
    engine = create_engine(url)  # no pragmas: SQLite's foreign keys stay off
    try:
        with reachable(url), engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    if current == head:
        return current
    engine = _migration_engine(url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            current = MigrationContext.configure(connection).get_current_revision()  # another may have
            if current == head:
                return current
            config = Config()
            config.set_main_option("script_location", str(_migrations_dir()))
            config.attributes["connection"] = connection
            was = current or "empty"
            if current is None and sa.inspect(connection).has_table(HEAD_TABLE):
                command.stamp(config, "0001_initial")
                log.info("database from before migrations: stamped 0001_initial")
                was = "0001_initial"
            command.upgrade(config, "head")
            log.info("database upgraded from %s to %s", was, head)
            return current
    finally:
        engine.dispose()


def _migration_engine(url: str) -> sa.Engine:
    """An engine whose transactions hold the write lock from their start (SQLite: pysqlite's own
    transaction handling off, BEGIN IMMEDIATE instead, so DDL is transactional too)."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, future=True)
    engine = sa.create_engine(url, future=True, connect_args={"timeout": MIGRATION_WAIT_S})

    @sa.event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


MIGRATION_WAIT_S = 600  # SQLite: how long a second process waits for one migrating the file


_LOCK_KEY = 0x0FB3A2CE7  # pg_advisory_xact_lock key of fbmarket's schema migrations


def quiet_alembic() -> None:
    """Alembic logs its plugin set-up and SQL dialect at INFO on every open, even with nothing to
    migrate; fbmarket says itself when it upgrades. Left alone when someone configured it."""
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)
