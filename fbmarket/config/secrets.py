"""URLs hold credentials: find them, mask them for files, messages and logs.

A credential sits in a URL's userinfo ("postgresql://user:pw@host/db") or in a query parameter
whose name says it is one ("?password=...", "&sslpassword=...", "?token=...", "?api_key=...":
`SECRET_PARAMETER`). settings.json and every report are written with both replaced by ***
(`Settings.to_json`), messages that may quote a secret go through `Settings.redact`, and
`install_log_redaction` masks them in every log record, third-party loggers' included
(pymilvus logs the URL it failed to reach, password and all).
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import unquote_plus

MASK = "***"  # what a masked password reads as (SQLAlchemy's hide_password form)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<password>[^@]*)@")
# In free text (a log line) the password cannot run over spaces or a path: "a://u:p@h" only.
_USERINFO_IN_TEXT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s/]*)@"
)
# A query parameter's name that says its value is a credential: password, passwd, pwd, pass,
# sslpassword, passphrase, secret, client_secret, token, access_token, api_key / apikey,
# access_key, private_key, credential(s), auth, sig / signature, key.
SECRET_PARAMETER = re.compile(
    r"pass|pwd|secret|token|api[-_.]?key|access[-_.]?key|private[-_.]?key|credential|signature|^auth$|^sig$|^key$",
    re.IGNORECASE,
)
_PARAMETER = re.compile(r"(?P<lead>[?&;](?P<name>[^=&;#?\s]+)=)(?P<value>[^&;#\s'\"]*)")


def _query_secrets(url: str) -> list[str]:
    """Values of the credential-named query parameters, as written and decoded (masked ones too)."""
    found: list[str] = []
    for match in _PARAMETER.finditer(url):
        if match["value"] and SECRET_PARAMETER.search(match["name"]):
            found += [match["value"], unquote_plus(match["value"])]
    return list(dict.fromkeys(found))


def _mask_query(text: str) -> str:
    """`text` with every credential-named query parameter's value replaced by ***."""

    def hide(match: re.Match[str]) -> str:
        if match["value"] and SECRET_PARAMETER.search(match["name"]):
            return match["lead"] + MASK
        return match[0]

    return _PARAMETER.sub(hide, text) if "=" in text else text


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


def url_secrets(url: str) -> list[str]:
    """Every credential a URL holds: its userinfo password and its credential-named query
    values, as written and decoded (for redacting free text that may quote either form)."""
    found: list[str] = []
    if password := url_password(url):
        found.append(password)
        if (raw := _USERINFO.search(url)) and raw["password"] != password:
            found.append(raw["password"])  # as written: percent-encoded
    found += _query_secrets(url)
    return [secret for secret in dict.fromkeys(found) if secret and secret != MASK]


def mask_url_password(url: str) -> str:
    """A URL safe to write or show: its password and credential query values replaced by ***;
    anything else is unchanged."""
    if "://" not in url:
        return url
    if url_password(url):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError, TypeError):
            url = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)
    return _mask_query(url)


def url_password_masked(url: str) -> bool:
    """Whether `url` is one read back from settings.json (a password or credential query value is ***)."""
    return url_password(url) == MASK or MASK in _query_secrets(url)


def mask_secrets_in_text(text: str) -> str:
    """Free text (a log line, an exception message) with the credentials of every URL in it
    masked: "http://admin:pw@host" -> "http://admin:***@host", "?password=x" -> "?password=***"."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO_IN_TEXT.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _mask_query(text)


_installed = threading.Lock()
_INSTALLED: list[bool] = []


def install_log_redaction() -> None:
    """Mask URL credentials in every log record from now on, whichever logger made it.

    A logging.Filter would have to sit on every handler, including those a library configures
    itself (pymilvus's dictConfig gives its loggers their own stderr handler); the record
    factory is the one place every record passes through, so the message (and a formatted
    traceback) is masked before any handler sees it. Idempotent; records without "://" or "="
    in their message cost one format.
    """
    with _installed:
        if _INSTALLED:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: the handler reports it as it always did
                return record
            masked = mask_secrets_in_text(message)
            if masked != message:
                record.msg, record.args = masked, None
            if record.exc_info and record.exc_info[1] is not None:
                shown = "".join(logging.Formatter().formatException(record.exc_info))
                hidden = mask_secrets_in_text(shown)
                if hidden != shown:
                    record.exc_text = hidden  # formatters use exc_text when it is set
            return record

        logging.setLogRecordFactory(factory)
        _INSTALLED.append(True)
