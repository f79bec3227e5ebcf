"""FastAPI dependencies: the loaded marketplace, the settings, and the API-key check for writes."""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

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
    """415 for a request body that is not a form, 422 for a form that repeats a one-value field
    or sends one the route does not read.

    The form routes read only form fields, so a JSON body would otherwise be parsed as no
    fields at all (a PUT then changed nothing and answered 200, a POST named the first missing
    field instead of the real mistake). A field sent twice (`title=a&title=b`) would silently
    keep the last value; it is refused naming the field instead, and so is a field the route
    does not read (`qury=bike`: a typo that would change nothing). A request without a body
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
    route = request.scope.get("route")
    accepted = accepted_names(route, "body") if isinstance(route, APIRoute) else None
    for name in dict.fromkeys(form.keys()):
        if accepted is not None and name not in accepted:
            raise unknown_parameter(name, accepted, "body")
        if name not in REPEATABLE_FORM_FIELDS and len(form.getlist(name)) > 1:
            raise repeated_field(name, len(form.getlist(name)), "body")


def _shown(name: str) -> str:
    """A client's parameter name as a message can show it: `=sofa` has an empty one, and a name
    may hold control characters; either is quoted so the message says what was sent."""
    name = name[:80]
    return name if name and name.isprintable() and name.strip() == name else repr(name)


def repeated_field(name: str, times: int, location: str) -> ApiError:
    """A one-value field sent more than once: keeping either value would hide the mistake."""
    return ApiError(
        422, f"{_shown(name)} was sent {times} times; send it once", "repeated_field",
        field=_shown(name), location=location,
    )  # fmt: skip


def unknown_parameter(name: str, accepted: frozenset[str], location: str) -> ApiError:
    """A parameter the route does not read (a typo such as `limt`): ignoring it would answer as
    if it had not been sent, so the client would never learn the filter did nothing."""
    where = "query parameter" if location == "query" else "form field"
    shown = _shown(name)
    if accepted:
        said = f"{shown}: unknown {where}; this route accepts: {', '.join(sorted(accepted))}"
    else:
        said = f"{shown}: unknown {where}; this route takes no {where}s"
    return ApiError(
        422,
        said,
        "unknown_parameter",
        field=shown,
        location=location,
        details={"accepted": sorted(accepted)},
    )


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


# (route path, methods, location) -> accepted names: a route's parameters are fixed once the
# app is built, so the walk runs once per route, not per request (routes are not hashable).
_ACCEPTED: dict[tuple[str, frozenset[str], str], frozenset[str]] = {}


def accepted_names(route: APIRoute, location: Literal["query", "body"]) -> frozenset[str]:
    """The query parameters or form fields a route (and its dependencies) reads, by the names a
    client sends: a parameter model (`SearchParams`) contributes each of its fields.

    The check is here rather than `extra="forbid"` on the request models: FastAPI hands a form
    model every part the route does not bind by name, so "forbid" would refuse the route's own
    `photo` / `photos` file parts as extra inputs."""
    key = (route.path, frozenset(route.methods or ()), location)
    if key not in _ACCEPTED:
        _ACCEPTED[key] = _walk_names(route, location)
    return _ACCEPTED[key]


def _walk_names(route: APIRoute, location: Literal["query", "body"]) -> frozenset[str]:
    names: set[str] = set()
    pending: list[Dependant] = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        for field in dependant.query_params if location == "query" else dependant.body_params:
            model = _model_of(field.field_info.annotation)
            if model is None:
                names.add(field.alias)
            else:
                names.update(info.alias or name for name, info in model.model_fields.items())
    return frozenset(names)


def require_known_query(request: Request) -> None:
    """422 for a query parameter the route does not read (`limt=5`) or one sent twice (`k=5&k=50`):
    otherwise the first is ignored and the second keeps one value, and either way the answer
    looks right while the request was not what the client meant."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    accepted = accepted_names(route, "query")
    params = request.query_params
    for name in dict.fromkeys(params.keys()):
        if name not in accepted:
            raise unknown_parameter(name, accepted, "query")
        if len(params.getlist(name)) > 1:
            raise repeated_field(name, len(params.getlist(name)), "query")


MarketplaceDep = Annotated[Marketplace, Depends(get_marketplace)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
WriteAccess = Depends(require_api_key)
FormBody = Depends(require_form_body)
KnownQuery = Depends(require_known_query)
