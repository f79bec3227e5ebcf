"""The web page: a search form (words, photo, buyer, filters), result cards, listing pages.

Server-rendered with Jinja2 from the same facade calls as the JSON API; the little
JavaScript in static/app.js only improves it (photo preview, bookmarkable text searches).
"""

from __future__ import annotations

import base64
import io
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from PIL import Image
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from fbmarket.api.deps import checked_id
from fbmarket.api.errors import ApiError, field_name, message_of
from fbmarket.api.schemas import ListingCard, ListingOut, SearchOut, SearchParams
from fbmarket.errors import BadRequestError, ImageError, NotFoundError
from fbmarket.service import Marketplace

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["quote"] = lambda value: quote(str(value), safe="")
FORM_FIELDS = tuple(SearchParams.model_fields)
PICKER_SIZE = 40  # buyers offered in the picker
CHOICES_TTL_S = 60.0

router = APIRouter(tags=["web"], include_in_schema=False)


def _market(request: Request) -> Marketplace | None:
    return request.app.state.marketplace


def _choices(request: Request) -> dict[str, Any]:
    """Buyers and root categories for the pickers, refreshed at most once a minute.

    The marketplace's own listing methods are used when it has them, else its store;
    the pickers are a convenience, so a failure leaves free-text inputs in their place.
    """
    state = request.app.state
    cached = getattr(state, "page_choices", None)
    if cached is not None and time.monotonic() - cached[0] < CHOICES_TTL_S:
        return cached[1]
    market = state.marketplace
    choices: dict[str, Any] = {"buyers": [], "categories": []}
    if market is None:
        return choices
    try:
        if callable(list_buyers := getattr(market, "buyers", None)):
            choices["buyers"] = list(list_buyers(limit=PICKER_SIZE))
        if callable(list_categories := getattr(market, "categories", None)):
            choices["categories"] = list(list_categories())
        store = getattr(market, "store", None)
        if store is not None and not (choices["buyers"] and choices["categories"]):
            from_store = _choices_from_store(store)
            choices = {key: choices[key] or from_store[key] for key in choices}
    except Exception:
        log.exception("listing buyers/categories for the page failed")
    state.page_choices = (time.monotonic(), choices)
    return choices


def _choices_from_store(store: Any) -> dict[str, Any]:
    return {"buyers": store.buyers(PICKER_SIZE), "categories": store.root_categories()}


def _thumbnail(image: Image.Image, size: int = 160) -> str:
    """A small data: URL of the query photo, to show what was searched for."""
    copy = image.copy()
    copy.thumbnail((size, size))
    buffer = io.BytesIO()
    copy.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    market = _market(request)
    context.setdefault("loading", market is None)
    context.setdefault("model_info", market.model.model_info if market is not None else None)
    return templates.TemplateResponse(request, template, {**_choices(request), **context}, status_code=status)


async def _search_page(request: Request, values: dict[str, str], upload: UploadFile | None) -> HTMLResponse:
    from starlette.concurrency import run_in_threadpool

    from fbmarket.api.routes import search_request
    from fbmarket.api.uploads import read_photo

    market = _market(request)
    form = {k: v for k, v in values.items() if k in FORM_FIELDS}
    searched = any(v.strip() for key, v in form.items() if key != "k") or upload is not None
    context: dict[str, Any] = {"form": form, "response": None, "error": None, "photo_url": None}
    if market is None or not searched:
        return render_page(request, "index.html", **context)
    try:
        params = SearchParams.model_validate({k: v for k, v in form.items() if v.strip()})
        image = None
        if upload is not None:
            photo = await run_in_threadpool(read_photo, upload, request.app.state.settings)
            if photo is not None:
                image = photo.image
                context["photo_url"] = _thumbnail(image)
        search = search_request(params, image, "query")
        response = await run_in_threadpool(market.search, search)
        context["response"] = SearchOut.of(response)
    except ValidationError as exc:
        context["error"] = "; ".join(f"{field_name(e['loc'])}: {e['msg']}" for e in exc.errors())
        return render_page(request, "index.html", 422, **context)
    except ApiError as exc:
        return render_page(request, "index.html", exc.status_code, **{**context, "error": exc.detail})
    except (BadRequestError, ImageError) as exc:
        return render_page(request, "index.html", 422, **{**context, "error": message_of(exc)})
    return render_page(request, "index.html", **context)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    return await _search_page(request, dict(request.query_params), None)


@router.post("/", response_class=HTMLResponse)
async def index_with_photo(request: Request) -> HTMLResponse:
    settings = request.app.state.settings
    async with request.form(max_files=1, max_fields=len(FORM_FIELDS) + 4) as form:
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("photo")
        upload = upload if isinstance(upload, UploadFile) and (upload.filename or upload.size) else None
        if upload is not None and upload.size is not None and upload.size > settings.serve.max_upload_bytes:
            context = {"form": values, "response": None, "photo_url": None}
            limit = settings.serve.max_upload_bytes
            return render_page(request, "index.html", 413, **context, error=f"photo: over the {limit:,}-byte limit")
        return await _search_page(request, values, upload)


@router.get("/item/{product_id}", response_class=HTMLResponse)
def listing_page(request: Request, product_id: str) -> HTMLResponse:
    market = _market(request)
    if market is None:
        return render_page(
            request, "listing.html", 503, listing=None, similar=[], error="the service is still loading"
        )
    try:
        listing = ListingOut.of(market.get_listing(checked_id(product_id)))
        similar = [ListingCard.of(r) for r in market.similar(product_id, k=8)]
    except NotFoundError as exc:
        return render_page(request, "listing.html", 404, listing=None, similar=[], error=message_of(exc))
    return render_page(request, "listing.html", listing=listing, similar=similar, error=None)
