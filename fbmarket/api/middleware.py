"""ASGI middleware: request-body size limits, cut-short multipart bodies, Prometheus metrics.

The size limit acts on the byte stream, before FastAPI parses a form, so an oversized
upload is refused without ever being held in memory or spooled to disk. The multipart check
also watches the stream: the parser (python-multipart) accepts a body that stops before its
closing boundary and returns the parts it finished, so a cut-short upload would otherwise
arrive as a form with fields silently missing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException

from fbmarket.files import dumps_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(send: Send, status: int, body: dict[str, Any], close: bool = False) -> None:
    payload = dumps_json(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """Refuse request bodies over `limit_for(scope)` bytes with 413.

    A declared Content-Length over the limit is refused before reading anything; a
    chunked body is counted as it streams and cut off once it passes the limit. The
    server (uvicorn) discards whatever the client still sends after the response.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int], note: str = ""):
        self.app = app
        self.limit_for = limit_for
        self.note = note  # appended to the 413 message, e.g. the per-photo limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, {"detail": "Content-Length is not a number"}, close=True)
                return
            if size > limit:
                await _send_json(send, 413, _too_large(size, limit, self.note), close=True)
                return

        received = 0
        response_started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit, self.note)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if response_started:
                raise
            await _send_json(send, 413, _too_large(None, limit, self.note), close=True)


class _BodyTooLarge(HTTPException):
    """An HTTPException so FastAPI's body parsing passes it on (it turns other errors into 400s)."""

    def __init__(self, limit: int, note: str):
        super().__init__(413, _too_large(None, limit, note)["detail"])


def _too_large(size: int | None, limit: int, note: str = "") -> dict[str, Any]:
    said = f"{size:,} bytes" if size is not None else "over the limit"
    detail = f"request body is {said}; the limit here is {limit:,} bytes{note}"
    return {"detail": detail, "reason": "too_large"}


class MultipartEndMiddleware:
    """Refuse (400) a multipart body that ends without its closing boundary (`--boundary--`).

    Only the last bytes of the stream are kept, so the check costs nothing per request. An
    epilogue after the closing boundary (RFC 2046 section 5.1.1 allows one) up to
    `EPILOGUE_BYTES` is accepted.
    """

    EPILOGUE_BYTES = 256

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        boundary = _multipart_boundary(scope) if scope["type"] == "http" else None
        if boundary is None:
            await self.app(scope, receive, send)
            return
        closing = b"--" + boundary + b"--"
        keep = len(closing) + self.EPILOGUE_BYTES
        tail = b""

        async def watched_receive() -> Message:
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request":
                tail = (tail + message.get("body", b""))[-keep:]
                if not message.get("more_body", False) and closing not in tail:
                    raise _CutShort()
            return message

        await self.app(scope, watched_receive, send)


class _CutShort(HTTPException):
    """An HTTPException so FastAPI's body parsing passes it on (it turns other errors into 400s)."""

    def __init__(self) -> None:
        super().__init__(
            400,
            "the multipart body ended before its closing boundary: the upload was cut short or "
            "built by hand without the final --boundary-- line; nothing was read from it",
        )


def _multipart_boundary(scope: Scope) -> bytes | None:
    """The boundary of a multipart/form-data request (RFC 7578), None for anything else."""
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    media_type, _, params = content_type.partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    return None  # no boundary: the parser itself refuses it ("Missing boundary")


class Metrics:
    """Per-app Prometheus registry (so several apps in one process never share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fbmarket_http_requests",
            "HTTP requests served, by route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fbmarket_http_request_duration_seconds",
            "Time from request to the end of the response, by route template",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "fbmarket_http_requests_in_progress", "Requests being served now", registry=self.registry
        )
        self.ready = Gauge(
            "fbmarket_ready", "1 when bundle, index and database are loaded", registry=self.registry
        )


class MetricsMiddleware:
    """Count and time every HTTP request, labelled by route template (bounded label values)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_progress.dec()
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)


_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
