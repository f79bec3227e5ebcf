"""Schema migrations: a database made before Alembic is upgraded in place, on SQLite and PostgreSQL.

`database_url` (conftest.py) gives a real SQLite file and, when FBMARKET_TEST_POSTGRES_URL is set,
a fresh PostgreSQL schema (skipped with a message otherwise).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql

from fbmarket.data import migrations as migrations_module
from fbmarket.data.migrations import MIGRATIONS_DIR, migrate
from fbmarket.data.store import Store
from fbmarket.data.tables import interactions, listings, metadata


def old_metadata() -> sa.MetaData:
    """The tables exactly as `metadata.create_all` made them before migrations (string timestamps)."""
    old = sa.MetaData()
    sa.Table(
        "listings", old,
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, default=""),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("root_category", sa.Text, nullable=False, index=True),
        sa.Column("leaf_category", sa.Text, nullable=False),
        sa.Column("leaf_name", sa.Text, nullable=False),
        sa.Column("price", sa.Float, nullable=True),
        sa.Column("location", sa.Text, nullable=False, default=""),
        sa.Column("town", sa.Text, nullable=True),
        sa.Column("county", sa.Text, nullable=True),
        sa.Column("latitude", sa.Float, nullable=True),
        sa.Column("longitude", sa.Float, nullable=True),
        sa.Column("geo_match", sa.String(16), nullable=False, default="unknown"),
        sa.Column("created", sa.String(10), nullable=True),
        sa.Column("split", sa.String(8), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )  # fmt: skip
    sa.Table(
        "images", old,
        sa.Column("image_id", sa.String(64), primary_key=True),
        sa.Column("product_id", sa.String(64), sa.ForeignKey("listings.product_id", ondelete="CASCADE"), index=True),
        sa.Column("position", sa.Integer, nullable=False, default=0),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("aspect", sa.Float, nullable=False),
        sa.Column("original_mode", sa.String(16), nullable=False),
    )  # fmt: skip
    sa.Table(
        "embeddings", old,
        sa.Column("product_id", sa.String(64), sa.ForeignKey("listings.product_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )  # fmt: skip
    sa.Table(
        "users", old,
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("age", sa.Integer, nullable=True),
        sa.Column("gender", sa.String(16), nullable=True),
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("latitude", sa.Float, nullable=True),
        sa.Column("longitude", sa.Float, nullable=True),
        sa.Column("extra", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
    )  # fmt: skip
    sa.Table(
        "interactions", old,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(64), nullable=False, index=True),
        sa.Column("product_id", sa.String(64), nullable=False, index=True),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("timestamp", sa.String(32), nullable=False),
        sa.Column("query", sa.Text, nullable=True),
        sa.UniqueConstraint("user_id", "product_id", "event", "timestamp", name="uq_interaction"),
    )  # fmt: skip
    return old


def listing(product_id: str, created: str | None) -> dict[str, object]:
    return {
        "product_id": product_id, "title": f"Kettle {product_id}", "description": "", "category": "Appliances",
        "root_category": "Appliances", "leaf_category": "Appliances", "leaf_name": "Appliances",
        "price": 5.0, "location": "Leeds", "geo_match": "town", "created": created, "split": "train",
        "updated_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }  # fmt: skip


def make_old_database(url: str) -> None:
    old = old_metadata()
    engine = sa.create_engine(url)
    try:
        old.create_all(engine)
        t = old.tables
        with engine.begin() as connection:
            connection.execute(t["listings"].insert(), [listing("a", "2022-02-24"), listing("b", None),
                                                       listing("c", "not a date")])  # fmt: skip
            connection.execute(t["images"].insert(), [
                {"image_id": "i1", "product_id": "a", "position": 0, "path": "cache/images_64/i1.jpg",
                 "width": 64, "height": 48, "aspect": 1.33, "original_mode": "RGB"},
            ])  # fmt: skip
            connection.execute(t["embeddings"].insert(), [
                {"product_id": "a", "model_version": "v1", "dim": 2, "vector": np.ones(2, "<f4").tobytes()},
            ])  # fmt: skip
            connection.execute(t["users"].insert(), [{"user_id": "u1", "age": 34, "extra": {"budget": "120"}}])
            connection.execute(t["interactions"].insert(), [
                {"user_id": "u1", "product_id": "a", "event": "view", "timestamp": "2022-02-25T10:00:00"},
                {"user_id": "u1", "product_id": "a", "event": "save", "timestamp": "2022-02-25T11:30:00+01:00"},
                {"user_id": "u1", "product_id": "b", "event": "view", "timestamp": "yesterday"},
                {"user_id": "u1", "product_id": "b", "event": "click", "timestamp": "26/02/2022 09:15"},
            ])  # fmt: skip
    finally:
        engine.dispose()


def schema_differences(url: str, metadata: sa.MetaData) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return [d for d in compare_metadata(context, metadata) if not _is_alembic_version(d)]
    finally:
        engine.dispose()


def _is_alembic_version(difference: object) -> bool:
    return isinstance(difference, tuple) and "alembic_version" in repr(difference)


def aware(value: datetime) -> datetime:
    """SQLite gives back naive UTC date-times, PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_an_old_database_is_upgraded_and_its_rows_survive(database_url: str) -> None:
    make_old_database(database_url)
    store = Store(database_url)
    try:
        with store.engine.connect() as connection:
            created = dict(connection.execute(sa.select(listings.c.product_id, listings.c.created)).all())
            stamps = connection.execute(
                sa.select(interactions.c.event, interactions.c.timestamp).order_by(interactions.c.id)
            ).all()
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == migrations_module._alembic_head()
        assert isinstance(created["a"], datetime) and aware(created["a"]) == datetime(2022, 2, 24, tzinfo=UTC)
        assert created["b"] is None and created["c"] is None  # "not a date" was never a date
        assert [(event, aware(moment)) for event, moment in stamps] == [
            ("view", datetime(2022, 2, 25, 10, 0, tzinfo=UTC)),
            ("save", datetime(2022, 2, 25, 10, 30, tzinfo=UTC)),  # its +01:00 offset kept the moment
            ("click", datetime(2022, 2, 26, 9, 15, tzinfo=UTC)),  # read as training reads it
        ]  # the event whose timestamp was "yesterday" has no place in time: dropped
        # nothing else was lost: photos and embeddings survived the table copy (no cascade)
        assert store.count("listings") == 3 and store.count("images") == 1 and store.count("embeddings") == 1
        assert store.load_embeddings("v1")[0] == ["a"]
        assert store.get_listing("a")["created"] == "2022-02-24"  # the API's ISO date, as before
        shown = store.listings_frame()["created"]
        assert [day if shown.notna()[k] else None for k, day in enumerate(shown)] == ["2022-02-24", None, None]
        assert store.get_listing("a")["updated_at"] is not None
        # the constraint that keeps re-ingesting idempotent is back, on the date-time
        again = {"user_id": ["u1"], "product_id": ["a"], "event": ["view"], "timestamp": ["2022-02-25 10:00:00Z"]}
        assert store.add_interactions(pd.DataFrame(again | {"query": [None]})) == 0
        assert store.add_interactions(pd.DataFrame(again | {"event": ["click"], "query": [None]})) == 1
    finally:
        store.close()
    assert schema_differences(database_url, metadata) == []  # as a fresh database
    assert migrate(database_url) == migrations_module._alembic_head()  # at the head: nothing to do


def test_a_fresh_database_gets_todays_schema(database_url: str) -> None:
    Store(database_url).close()
    assert schema_differences(database_url, metadata) == []


def test_the_initial_revision_is_the_schema_create_all_made(database_url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001_initial")
    finally:
        engine.dispose()
    assert schema_differences(database_url, old_metadata()) == []


@pytest.mark.parametrize("revision", ["0001_initial", "0002_timestamps_as_datetimes"])
def test_revisions_form_one_line_to_the_head(revision: str) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert script.get_heads() == [migrations_module._alembic_head()]
    assert script.get_revision(revision) is not None


def test_a_failed_upgrade_leaves_the_database_as_it_was(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_old_database(database_url)
    real_upgrade = command.upgrade

    def upgrade_then_crash(config: Config, revision: str) -> None:
        real_upgrade(config, revision)  # every table copied and converted ...
        raise RuntimeError("power cut")  # ... and then the process dies before the commit

    monkeypatch.setattr(command, "upgrade", upgrade_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        migrate(database_url)
    monkeypatch.undo()
    assert schema_differences(database_url, old_metadata()) == []  # the old schema, whole
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert not sa.inspect(connection).has_table("alembic_version")
            assert connection.execute(sa.text("SELECT count(*) FROM images")).scalar_one() == 1
    finally:
        engine.dispose()
    Store(database_url).close()  # the next start migrates it
    assert schema_differences(database_url, metadata) == []


def test_processes_opening_a_database_together_migrate_it_once(database_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    make_old_database(database_url)
    with ThreadPoolExecutor(4) as pool:
        before = list(pool.map(lambda _: migrate(database_url), range(4)))
    head = migrations_module._alembic_head()
    assert sorted(before, key=str) == sorted([None, head, head, head], key=str)  # one did the work
    assert schema_differences(database_url, metadata) == []
