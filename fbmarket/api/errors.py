"""One JSON error shape for every failure, and the mapping from library errors to statuses.

A client's mistake (an `FbmarketError`, raised where it was detected) gets a 4xx or 503 whose
`detail` names the field and what is wrong with it; everything else is a bug: a 500 whose
traceback is logged and never sent.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fbmarket.errors import FbmarketError, ImageError, ModelUnavailableError, NotFoundError

log = logging.getLogger(__name__)

# ImageError.reason -> HTTP status. Anything not listed is a 422 (the file is unusable).
IMAGE_STATUS = {
    "too_large": 413,
    "not_an_image": 415,
}


class ApiError(FbmarketError):
    """A client mistake the HTTP layer itself detects (a form field, an upload), with its status."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        reason: str | None = None,
        field: str | None = None,
        location: str = "body",
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(detail, field=field, details=details)
        self.reason = reason  # type: ignore[assignment]  # None: the body has no reason
        self.status_code = status_code
        self.detail = detail
        self.location = location
        self.headers = headers


def status_of(exc: FbmarketError) -> int:
    """The one mapping from the error taxonomy (fbmarket/errors.py) to HTTP statuses."""
    if isinstance(exc, ApiError):
        return exc.status_code
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ModelUnavailableError):
        return 503  # the request is fine; this bundle cannot serve it
    if isinstance(exc, ImageError):
        return IMAGE_STATUS.get(exc.reason, 422)
    return 422  # BadRequestError and the rest: the request cannot be served as asked


def error_body(
    detail: str, errors: list[dict[str, Any]] | None = None, reason: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    if reason is not None:
        body["reason"] = reason
    return body


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """('query', 'k') -> 'k'; ('body', 'photos', 0) -> 'photos[0]'."""
    parts = [p for p in loc if p not in ("query", "body", "path", "header", "cookie", "form")]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "request"


def plain_message(message: str) -> str:
    """pydantic's "Value error, cannot read ..." -> "cannot read ...": the prefix names a
    Python exception, which means nothing to the person who typed the value."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    if message.startswith("Expected UploadFile"):  # FastAPI's words for a text value in a file field
        return "send a file here (a form part with a filename), not a text value"
    return message


def message_of(exc: BaseException) -> str:
    """The sentence of an error for people (an FbmarketError's message; else its first argument)."""
    if isinstance(exc, FbmarketError):
        return exc.message
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """JSON-safe copies of pydantic's errors (their `input`/`ctx` may hold bytes or exceptions)."""
    cleaned = []
    for error in exc.errors():
        item = {
            "loc": list(error.get("loc", ())),
            "msg": plain_message(str(error.get("msg", ""))),
            "type": str(error.get("type", "")),
        }
        item["field"] = field_name(item["loc"])
        cleaned.append(item)
    return cleaned


_HTTP_REASONS = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
# FastAPI's words when a body cannot be parsed at all (a multipart body cut short, no boundary):
# said with what to check, since the client cannot see which part broke.
_PARSE_FAILURE = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FbmarketError)
    async def client_error(request: Request, exc: FbmarketError) -> JSONResponse:
        errors = None
        if exc.field:  # where it is: GET parameters are in the query string, POST ones in the form
            location = exc.location if isinstance(exc, ApiError) else "query" if request.method == "GET" else "body"
            error = {"loc": [location, exc.field], "msg": exc.message, "type": exc.reason or "invalid"}
            error["field"] = exc.field
            errors = [error | exc.details]
        headers = exc.headers if isinstance(exc, ApiError) else None
        return JSONResponse(error_body(exc.message, errors, exc.reason), status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['msg']}" for e in errors) or "invalid request"
        return JSONResponse(error_body(detail, errors, "validation_error"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _HTTP_REASONS.get(exc.status_code)
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == _PARSE_FAILURE:
            detail = (
                "the request body could not be parsed as the form its Content-Type announces "
                "(a multipart body needs its boundary and every part complete)"
            )
        return JSONResponse(error_body(detail, reason=reason), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # a bug (ValueError and KeyError included): logged with its traceback, never shown
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal server error", reason="internal"), 500)
