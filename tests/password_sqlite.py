"""A SQLite dialect whose URLs may carry a user and password, registered as "sqlitepw".

SQLite refuses URLs with credentials, and the tests have no PostgreSQL server, so this
stand-in lets a real command run with a database URL that holds a password (which is
what compose.yaml passes), to check that the password is never written or printed.
Import it before the URL is used: `sqlitepw://user:password@//absolute/path.db`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL


class PasswordSQLiteDialect(SQLiteDialect_pysqlite):
    supports_statement_cache = True

    def create_connect_args(self, url: URL) -> Any:
        plain = URL.create("sqlite", database=url.database, query=url.query)  # credentials dropped
        return super().create_connect_args(plain)


registry.register("sqlitepw", __name__, "PasswordSQLiteDialect")
