"""SQLAlchemy engines for the URLs a user gives (`--database`, FBMARKET_DATABASE_URL, `--data URL`).

A URL that does not parse, names a driver that is not installed or a connection option the
driver refuses, or a server that cannot be reached is the user's to fix: a `DataError` with the URL shown password-masked, which the
command line prints on one line, instead of SQLAlchemy's traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from fbmarket.config.secrets import mask_url_password
from fbmarket.errors import DataError


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """`sqlalchemy.create_engine(url, future=True, **kwargs)`; raises DataError for a bad URL."""
    try:
        return sa.create_engine(url, future=True, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as error:
        raise DataError(
            f"database URL {mask_url_password(url)} cannot be used ({error}); give a SQLAlchemy URL such as "
            "sqlite:////path/to/fbmarket.db or postgresql+psycopg://user:password@host/db"
        ) from None


@contextlib.contextmanager
def reachable(url: str) -> Iterator[None]:
    """Turn a failure to connect (server down, wrong host, bad password) into a DataError."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.ProgrammingError) as error:
        # OperationalError: the server; Interface/ProgrammingError at connect: the URL's own
        # options ('invalid connection option "token"', 'invalid dsn'), the user's to fix too
        reason = (str(error.orig or error).strip().splitlines() or [""])[0]
        raise DataError(f"cannot connect to the database {mask_url_password(url)}: {reason}") from None
