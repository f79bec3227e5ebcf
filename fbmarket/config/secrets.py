"""Database URLs hold passwords: find them, mask them for files and messages.

settings.json and every report are written with a URL's password replaced by *** (`Settings.to_json`),
and messages that may quote a secret go through `Settings.redact`.
"""

from __future__ import annotations

import re

MASK = "***"  # what a masked password reads as (SQLAlchemy's hide_password form)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<password>[^@]*)@")


def url_password(url: str) -> str | None:
    """The password inside a database URL ("postgresql://user:pw@host/db" -> "pw"), if any."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except (ArgumentError, ValueError, TypeError):
        match = _USERINFO.search(url)  # not a URL SQLAlchemy reads: still never leak its userinfo
        password = match.group("password") if match else None
    return str(password) if password else None


def mask_url_password(url: str) -> str:
    """A URL safe to write or show: its password replaced by ***; anything else is unchanged."""
    if "://" not in url or not url_password(url):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def url_password_masked(url: str) -> bool:
    """Whether `url` is one read back from settings.json (its password is ***)."""
    return url_password(url) == MASK
