"""Alembic's entry point: runs the revisions on the connection `migrations.migrate` hands over.

From the `alembic` command line (no connection handed over) it connects to `sqlalchemy.url`
of alembic.ini or FBMARKET_DATABASE_URL itself; autogenerate compares with data/tables.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from fbmarket.config import read_environment
from fbmarket.data.tables import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters a table by copying it
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from_environment = read_environment().database_url
    url = from_environment.get_secret_value() if from_environment else config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url in alembic.ini or FBMARKET_DATABASE_URL")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as own:
            _run(own)
    finally:
        engine.dispose()
