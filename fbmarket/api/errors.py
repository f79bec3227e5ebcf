"""One JSON error shape for every failure, and the mapping from library errors to statuses.

A client's mistake gets a 4xx whose `detail` names the field and what is wrong with it;
only our own bugs are 500s, and those never leak a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fbmarket.data.images import ImageError
from fbmarket.price.model import PriceModelError
from fbmarket.service import BadRequestError, NotFoundError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client mistake with its status and message; rendered as ErrorOut JSON."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        reason: str | None = None,
        field: str | None = None,
        location: str = "body",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.reason = reason
        self.field = field
        self.location = location
        self.headers = headers


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
            return message[len(prefix) :]
    return message


def message_of(exc: BaseException) -> str:
    """KeyError's str() quotes its argument; the message itself is what people should read."""
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


_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        errors = None
        if exc.field:
            error = {"loc": [exc.location, exc.field], "msg": exc.detail, "type": exc.reason or "invalid"}
            errors = [error | {"field": exc.field}]
        return JSONResponse(error_body(exc.detail, errors, exc.reason), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['msg']}" for e in errors) or "invalid request"
        return JSONResponse(error_body(detail, errors, "validation_error"), 422)

    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(error_body(message_of(exc), reason="not_found"), 404)

    @app.exception_handler(BadRequestError)
    async def bad_request(request: Request, exc: BadRequestError) -> JSONResponse:
        message = message_of(exc)
        field = getattr(exc, "field", None)
        reason = getattr(exc, "reason", "bad_request")
        errors = None
        if field:  # where it is: GET parameters are in the query string, POST ones in the form
            location = "query" if request.method == "GET" else "body"
            error = {"loc": [location, field], "msg": message, "type": reason, "field": field}
            errors = [error | dict(getattr(exc, "details", {}))]
        return JSONResponse(error_body(message, errors, reason), 422)

    @app.exception_handler(PriceModelError)
    async def no_price_model(_request: Request, exc: PriceModelError) -> JSONResponse:
        return JSONResponse(error_body(message_of(exc), reason="no_price_model"), 503)

    @app.exception_handler(ImageError)
    async def bad_image(_request: Request, exc: ImageError) -> JSONResponse:
        from fbmarket.api.uploads import STATUS_FOR_REASON

        return JSONResponse(
            error_body(exc.message, reason=exc.reason), STATUS_FOR_REASON.get(exc.reason, 422)
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _HTTP_REASONS.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), reason=reason), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal server error", reason="internal"), 500)
