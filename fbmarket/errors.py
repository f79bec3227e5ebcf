"""The problems a client (a buyer, a seller, an operator at the command line) can cause or meet.

Each is raised where the problem is detected, carrying what a person needs to fix it: a
sentence, the request field at fault when there is one, a machine-readable `reason` and any
structured help in `details`. The HTTP API maps them once to its JSON error shape and status
codes (fbmarket/api/errors.py); the CLI prints their message on one line.

Everything else (`ValueError`, `KeyError`, ...) means a bug: a 500 with a logged traceback
from the API, a traceback from the CLI with `--verbose`. That is why none of these classes
derives from ValueError or KeyError: an `except ValueError` meant for a bug must never
swallow a client's mistake, and a bug must never be shown to a client as their mistake.

This module imports nothing from fbmarket, so every layer can raise these.
"""

from __future__ import annotations

from typing import Any


class FbmarketError(Exception):
    """A problem the person who asked can act on; `message` is written for them."""

    reason = "error"  # the default machine-readable cause of this class

    def __init__(
        self,
        message: str,
        field: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or type(self).reason
        self.details = dict(details or {})

    def __str__(self) -> str:
        return self.message


class NotFoundError(FbmarketError):
    """An id that does not exist (listing, buyer, photo): HTTP 404."""

    reason = "not_found"


class BadRequestError(FbmarketError):
    """A request that cannot be served as asked (empty query, k out of range, a category no
    listing has, a location that cannot be placed): HTTP 422, naming `field` when there is one."""

    reason = "bad_request"


class AlreadyExistsError(BadRequestError):
    """A create with the id of a stored listing. HTTP 422 (as it always was), not 409: the id is
    a form field the seller can change, and the answer names it like any other field error."""

    reason = "already_exists"


class ModelUnavailableError(FbmarketError):
    """The bundle lacks the model a request needs (e.g. no price model): HTTP 503, since the
    request is fine and a retrained bundle would serve it."""

    reason = "model_unavailable"


class DataError(FbmarketError):
    """Input data or a setting that cannot be used as given: a table without the columns
    training needs, too few listings left to split, no listing left after cleaning, image
    weights that cannot be had offline. The command line prints it on one line (exit 2)."""

    reason = "bad_data"


class ImageError(FbmarketError):
    """A photo that cannot be used; `reason` is a short code for reports and HTTP errors
    (too_large, not_an_image, truncated, unreadable, empty_file, missing_file, too_many_pixels)."""

    reason = "unreadable"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
