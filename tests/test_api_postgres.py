"""The API over PostgreSQL: the same server, with the bundle's database moved to a real PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from api_fixtures import copy_bundle, jpeg_bytes, run_server, serve_settings

from fbmarket.config import Settings
from fbmarket.data import store as db


def copy_database(source_url: str, target_url: str) -> int:
    """Every table, row for row (what `--database URL` would hold had the pipeline written there)."""
    source, target = db.Store(source_url), db.Store(target_url)
    copied = 0
    try:
        for table in db.metadata.sorted_tables:
            with source.engine.connect() as connection:
                rows = [dict(row) for row in connection.execute(sa.select(table)).mappings()]
            if table.name == "interactions":
                rows = [
                    {k: v for k, v in row.items() if k != "id"} for row in rows
                ]  # the target numbers them
            if rows:
                with target.engine.begin() as connection:
                    connection.execute(sa.insert(table), rows)
            copied += len(rows)
    finally:
        source.close()
        target.close()
    return copied


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_search_and_writes_over_postgresql(api_bundle: Path, database_url: str, tmp_path: Path) -> None:
    from fbmarket.api.app import create_app
    from fbmarket.service import Marketplace

    bundle = copy_bundle(api_bundle, tmp_path / "bundle")
    sqlite = Settings()
    sqlite.out_dir = bundle
    assert copy_database(sqlite.db_url, database_url) > 0
    (bundle / "fbmarket.db").unlink()  # nothing may be read from SQLite now

    market = Marketplace.open(bundle, database_url)
    assert market.store.dialect == "postgresql"
    key = "pg-key"
    try:
        with (
            run_server(create_app(market, serve_settings(key))) as url,
            httpx.Client(base_url=url, timeout=60) as api,
        ):
            assert api.get("/ready").status_code == 200
            listings = market.store.listings_frame()
            some_id = str(listings["product_id"].iloc[0])
            assert api.get(f"/listings/{some_id}").json()["title"] == listings["title"].iloc[0]
            assert api.get("/search", params={"q": listings["title"].iloc[0]}).json()["results"]

            word = "zg" + uuid.uuid4().hex[:10]
            created = api.post(
                "/listings",
                data={"title": f"Cast iron {word} pan", "price": "18", "location": "York, North Yorkshire"},
                files={"photos": ("p.jpg", jpeg_bytes(), "image/jpeg")},
                headers={"X-API-Key": key},
            )
            assert created.status_code == 201, created.text
            product_id = created.json()["product_id"]
            hits = api.get("/search", params={"q": word}).json()["results"]
            assert product_id in [h["product_id"] for h in hits]
            assert api.get(f"/listings/{product_id}/images/0").status_code == 200
            changed = api.put(f"/listings/{product_id}", data={"price": "9.5"}, headers={"X-API-Key": key})
            assert changed.status_code == 200 and changed.json()["price"] == 9.5
            assert api.delete(f"/listings/{product_id}", headers={"X-API-Key": key}).status_code == 204
            assert api.get(f"/listings/{product_id}").status_code == 404
            hostile = api.get("/listings/x'; DROP TABLE listings; --")
            assert hostile.status_code == 404
            assert api.get("/search", params={"q": "nul\x00"}).status_code == 422, (
                "NUL never reaches PostgreSQL"
            )
        assert market.store.count("listings") == len(listings)
    finally:
        market.close()
