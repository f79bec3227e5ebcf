"""FastAPI dependencies: the loaded marketplace, the settings, and the API-key check for writes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from fbmarket.api.errors import ApiError
from fbmarket.api.schemas import MAX_ID_CHARS
from fbmarket.config import Settings
from fbmarket.errors import NotFoundError
from fbmarket.service import Marketplace

API_KEY_HEADER = "X-API-Key"
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Needed for POST/PUT/DELETE /listings; the server reads it from FBMARKET_API_KEY.",
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_marketplace(request: Request) -> Marketplace:
    """The loaded marketplace, or 503 while it loads (or when loading failed)."""
    state = request.app.state
    if state.marketplace is None:
        if state.load_error:
            raise ApiError(503, f"the service failed to load: {state.load_error}", "load_failed")
        raise ApiError(
            503, "the service is still loading; retry shortly", "loading", headers={"Retry-After": "5"}
        )
    return state.marketplace


def require_api_key(request: Request, key: Annotated[str | None, Security(api_key_scheme)] = None) -> None:
    """401 without a key, 403 with a wrong one; with no key configured, writes are refused (403)."""
    expected = get_settings(request).serve.api_key_value()
    if not expected:
        raise ApiError(
            403,
            "writes are disabled: the server has no API key configured (FBMARKET_API_KEY)",
            "writes_disabled",
        )
    if not key:
        raise ApiError(
            401, f"this request needs an API key in the {API_KEY_HEADER} header", "missing_api_key",
            headers={"WWW-Authenticate": "ApiKey"},
        )  # fmt: skip
    if not hmac.compare_digest(
        key.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise ApiError(
            403, f"the {API_KEY_HEADER} header does not match the server's API key", "wrong_api_key"
        )


def checked_id(product_id: str, what: str = "listing") -> str:
    """Ids no database row can have (too long, control characters) are 404 without a query."""
    if len(product_id) > MAX_ID_CHARS or any(ord(ch) < 32 for ch in product_id):
        raise NotFoundError(f"{what} {product_id[:80]!r} not found")
    return product_id


FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


# Form fields that may carry several values (one per uploaded photo); every other field is one value.
REPEATABLE_FORM_FIELDS = frozenset({"photos"})


async def require_form_body(request: Request) -> None:
    """415 for a request body that is not a form, 422 for a form that repeats a one-value field.

    The form routes read only form fields, so a JSON body would otherwise be parsed as no
    fields at all (a PUT then changed nothing and answered 200, a POST named the first missing
    field instead of the real mistake). A field sent twice (`title=a&title=b`) would silently
    keep the last value; it is refused naming the field instead. A request without a body
    passes (every field is optional on some of these routes).

    FastAPI has parsed the form before dependencies run, so `request.form()` here returns that
    cached parse and costs nothing.
    """
    has_body = request.headers.get("content-length", "0") not in ("", "0") or (
        "transfer-encoding" in request.headers
    )
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not has_body:
        return
    if media_type not in FORM_MEDIA_TYPES:
        raise ApiError(
            415,
            f"send the fields as a form ({' or '.join(FORM_MEDIA_TYPES)}), not "
            f"{media_type or 'a body without a Content-Type'}: see /docs for each field",
            "not_a_form",
        )
    form = await request.form()
    for name in dict.fromkeys(form.keys()):
        if name not in REPEATABLE_FORM_FIELDS and len(form.getlist(name)) > 1:
            raise ApiError(
                422,
                f"{name[:80]} was sent {len(form.getlist(name))} times; send it once",
                "repeated_field",
                field=name[:80],
                location="body",
            )


MarketplaceDep = Annotated[Marketplace, Depends(get_marketplace)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
WriteAccess = Depends(require_api_key)
FormBody = Depends(require_form_body)
