"""Shared fixtures: the real dev data (skipped when absent) and a tiny synthetic marketplace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The API/web fixtures (a tiny trained bundle, live uvicorn servers) live in their own module.
pytest_plugins = ["api_fixtures", "milvus_fixtures"]

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gumtree-dev"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "Products.csv").is_file():
        pytest.skip(f"real dev data not found at {REAL_DATA} (it lives beside the repo in ../shared)")
    return REAL_DATA


def _postgres_url() -> str | None:
    return os.environ.get("FBMARKET_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, real database: a SQLite file, and PostgreSQL when a server is configured.

    CI starts a PostgreSQL server and sets FBMARKET_TEST_POSTGRES_URL; there a missing
    server is a failure, elsewhere the PostgreSQL half is skipped with a message.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fbmarket.db'}"
    url = _postgres_url()
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide PostgreSQL: FBMARKET_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server configured (set FBMARKET_TEST_POSTGRES_URL)")
    import sqlalchemy as sa

    schema_name = f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = sa.create_engine(url)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema_name}"'))
    request.addfinalizer(lambda: _drop_schema(admin, schema_name))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema_name}"


def _drop_schema(engine, schema_name: str) -> None:
    import sqlalchemy as sa

    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema_name}" CASCADE'))
    engine.dispose()
