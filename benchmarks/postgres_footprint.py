"""Bytes per listing in PostgreSQL: the measured input of the database sizing in
docs/deployment.md.

Copies a bundle's listings, their photo rows and embeddings into a PostgreSQL database through
`Store` (the schema and indexes `fbmarket` itself creates, by its Alembic migrations), runs
VACUUM ANALYZE, and divides each table's `pg_total_relation_size` (heap + TOAST + indexes)
by the number of listings. The target database should be empty and throw-away (the tests'
`.ci/postgres.sh` server): the script writes into it.

    export URL=$(PGPORT_TEST=55871 bash .ci/postgres.sh)
    python benchmarks/postgres_footprint.py --bundle artifacts --database "$URL"

Results: benchmarks/results/postgres_footprint.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sqlalchemy as sa
from harness import store_for, write_result

TABLES = ("listings", "images", "embeddings")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--database", required=True, help="a throw-away PostgreSQL URL (written to)")
    args = parser.parse_args()

    from fbmarket.data.store import Store

    source = store_for(args.bundle, None)
    try:
        products = source.listings_frame()
        photos = source.images_frame()
        versions = source.embedding_versions()
        version = max(set(versions.values()), key=list(versions.values()).count) if versions else None
        ids, vectors = source.load_embeddings(version) if version else ([], None)
    finally:
        source.close()
    target = Store(args.database, root=args.bundle)  # photo paths stored relative, as a server stores them
    try:
        if target.dialect != "postgresql":
            parser.error("--database must be a PostgreSQL URL")
        target.upsert_listings(products, photos)
        if vectors is not None and len(ids):
            target.upsert_embeddings(ids, vectors, version)
        with target.engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
            sizes = {
                table: int(
                    connection.execute(
                        sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}
                    ).scalar()
                )
                for table in TABLES
            }
        counts = {table: target.count(table) for table in TABLES}
    finally:
        target.close()
    listings = max(counts["listings"], 1)
    payload = {
        "benchmark": "postgres_footprint",
        "bundle": str(args.bundle),
        "rows": counts,
        "embedding_dim": int(vectors.shape[1]) if vectors is not None else None,
        "bytes_total_by_table": sizes,
        "bytes_per_listing_by_table": {t: round(s / listings, 1) for t, s in sizes.items()},
        "bytes_per_listing": round(sum(sizes.values()) / listings, 1),
        "photos_per_listing": round(counts["images"] / listings, 3),
        "note": "pg_total_relation_size after VACUUM ANALYZE: heap + TOAST + indexes; no bloat from updates",
    }
    write_result("postgres_footprint", payload)
    print(payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
