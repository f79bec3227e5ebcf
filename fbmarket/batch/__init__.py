"""Offline batch jobs over a whole catalogue (`fbmarket embed`), in-process or as Ray Data jobs.

Above the bundle (they run its models) and beside the service (they write the same database
tables, never through a running `Marketplace`).
"""

from fbmarket.batch.embed import (
    EMBEDDING_SCHEMA,
    EmbedReport,
    load_parquet_into_index,
    run_embed,
)

__all__ = ["EMBEDDING_SCHEMA", "EmbedReport", "load_parquet_into_index", "run_embed"]
