"""Alembic migrations of the listing database (fbmarket/data/store.py), shipped in the package.

`Store` upgrades every database it opens to the newest revision (`store.migrate`), so a
PostgreSQL database that outlives a release gets the release's schema. New revision:

    alembic -c fbmarket/data/migrations/alembic.ini revision -m "what changes"

then write its `upgrade` by hand (autogenerate can draft it: add `--autogenerate` and set
`sqlalchemy.url`). Revisions never import the live table definitions: they freeze the schema
they move from and to, so they mean the same thing however store.py changes later.
"""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent
