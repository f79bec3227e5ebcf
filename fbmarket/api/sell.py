"""The Sell page: a seller's form with live advice (category, price range, possible duplicates).

Server-rendered like the search page and usable without JavaScript (a "Check" button
renders the advice, "Publish" creates the listing with the write key typed into the
form). With JavaScript (static/sell.js) the advice fragment is re-rendered as the seller
types or adds a photo (`POST /sell/advice`), and publishing goes to `POST /sell/publish`
with the key in the `X-API-Key` header, the key kept in the tab's sessionStorage only.
Both paths run the same functions below, so what the page shows is what the JSON API
(`/predict/category`, `/predict/price`, `/predict/duplicates`, `POST /listings`) returns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from fbmarket.api.deps import API_KEY_HEADER, require_api_key
from fbmarket.api.errors import ApiError, field_name, message_of, plain_message
from fbmarket.api.schemas import DuplicateOut, ListingFields, ListingOut, PriceOut
from fbmarket.api.uploads import Photo, read_photos
from fbmarket.api.web import render_page, templates
from fbmarket.errors import BadRequestError, ImageError
from fbmarket.price.model import PriceModelError
from fbmarket.service import Marketplace

log = logging.getLogger(__name__)

router = APIRouter(tags=["web"], include_in_schema=False)

SELL_FIELDS = ("title", "description", "price", "location", "category")
KEY_MESSAGES = {  # the API's wording is about headers; a seller typed a key into a form
    "missing_api_key": "write key: enter the write key to publish",
    "wrong_api_key": "write key: that is not this server's write key (FBMARKET_API_KEY)",
    "writes_disabled": "write key: this server takes no new listings (it has no FBMARKET_API_KEY)",
}
TOP_CATEGORIES = 3


@dataclass
class Advice:
    """What the page shows beside the form; every part is optional (the seller is still typing)."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)  # form field -> message
    categories: list[tuple[str, float]] = field(default_factory=list)
    price: PriceOut | None = None
    price_note: str | None = None
    duplicates: list[DuplicateOut] = field(default_factory=list)
    published: ListingOut | None = None
    status: int = 200

    def refuse(self, field_at_fault: str, message: str, status: int = 422) -> None:
        self.errors.setdefault(field_at_fault, message)
        self.status = max(self.status, status)

    def context(self) -> dict[str, Any]:
        return {"form": self.values, "advice": self}


def _error_field(exc: BaseException) -> str:
    """The form field an error is about (`photos[1]` -> `photos`), or "form" when none is named."""
    name = getattr(exc, "field", None) or "form"
    return name.split("[", 1)[0]


def _validated(values: dict[str, str], advice: Advice, need_title: bool) -> ListingFields | None:
    """The form through the API's own model (same limits, same price reading), errors per field.

    Advice goes on without the refused fields (a price the model cannot read does not stop
    the location being checked or the price being suggested); publishing does not (None).
    """
    given = {k: v for k, v in values.items() if v.strip()}
    if not need_title and "title" not in given:
        given["title"] = "untitled"  # checks the other fields while the seller has not typed a title
    try:
        return ListingFields.model_validate(given)
    except ValidationError as exc:
        for error in exc.errors():
            name = field_name(error["loc"])
            advice.refuse(name, f"{name}: {plain_message(error['msg'])}")
    if need_title:
        return None
    rest = {k: v for k, v in given.items() if k not in advice.errors}
    rest.setdefault("title", "untitled")
    try:
        return ListingFields.model_validate(rest)
    except ValidationError:
        return None


def advise(market: Marketplace, values: dict[str, str], photos: list[Photo]) -> Advice:
    """Category, price and duplicate advice for a draft; nothing is written."""
    advice = Advice(values)
    fields = _validated(values, advice, need_title=False)
    title = values.get("title", "").strip()
    text = " ".join(v for v in (title, values.get("description", "").strip()) if v)
    image = photos[0].image if photos else None
    if text or image is not None:
        try:
            advice.categories = market.predict_category(text or None, image, top=TOP_CATEGORIES, field="title")
        except BadRequestError as exc:
            advice.refuse(_error_field(exc), message_of(exc))
    if fields is None or not title:
        advice.price_note = "Add a title to get a price suggestion and a duplicate check."
        return advice
    draft = fields.to_input()
    data = [p.data for p in photos]
    try:
        advice.price = PriceOut.of(market.suggest_price(draft, data))
        _offer_full_path(advice)
    except PriceModelError as exc:
        advice.price_note = message_of(exc)
    except (BadRequestError, ImageError) as exc:
        advice.refuse(_error_field(exc), message_of(exc))
    try:
        matches = market.find_duplicates(draft, data)
        advice.duplicates = [DuplicateOut.of(card) for card in market.duplicate_cards(matches)]
    except (BadRequestError, ImageError) as exc:
        advice.refuse(_error_field(exc), message_of(exc))
    return advice


def _offer_full_path(advice: Advice) -> None:
    """The category model names roots; the price was worked out under the leaf the fusion
    model's leaf head picked in the top root. Offer that full path, so a click on the
    suggestion keeps what the price used (a root alone is a coarser category for it)."""
    price = advice.price
    if price is None or price.category_source != "predicted" or not advice.categories:
        return
    root, probability = advice.categories[0]
    if price.category.split("/")[0].strip() == root and "/" in price.category:
        advice.categories[0] = (price.category, probability)


def publish(market: Marketplace, values: dict[str, str], photos: list[Photo]) -> Advice:
    """Create the listing (the caller has checked the key); refused fields leave nothing written."""
    advice = Advice(values)
    fields = _validated(values, advice, need_title=True)
    if fields is None:
        return advice
    try:
        created = market.create_listing(fields.to_input(), [p.data for p in photos])
    except (BadRequestError, ImageError) as exc:
        advice.refuse(_error_field(exc), message_of(exc))
        return advice
    advice.published = ListingOut.of(created)
    advice.duplicates = list(advice.published.possible_duplicates)
    advice.status = 201
    return advice


async def _read_form(request: Request) -> tuple[dict[str, str], list[UploadFile], FormData]:
    settings = request.app.state.settings
    # room for more files than allowed, so read_photos can say how many (a 422 naming `photos`)
    form = await request.form(
        max_files=2 * settings.serve.max_photos_per_listing + 1, max_fields=2 * len(SELL_FIELDS) + 4
    )
    values = {k: v for k, v in form.items() if isinstance(v, str) and k in SELL_FIELDS}
    uploads = [u for u in form.getlist("photos") if isinstance(u, UploadFile) and (u.filename or u.size)]
    return values, uploads, form


async def _handle(request: Request, action: str | None = None, header_key: str | None = None) -> Advice:
    """Read the form and its photos, then advise or publish; client mistakes become field errors.

    `action` None means the browser posted the form itself: the action (check / publish)
    and the key are then form fields.
    """
    market: Marketplace | None = request.app.state.marketplace
    try:
        values, uploads, form = await _read_form(request)
    except HTTPException as exc:  # starlette's refusal of the multipart body (too many parts, no boundary)
        advice = Advice({})
        name = "photos" if "files" in str(exc.detail).lower() else "form"
        most = request.app.state.settings.serve.max_photos_per_listing
        message = f"photos: at most {most} photos per listing" if name == "photos" else f"form: {exc.detail}"
        advice.refuse(name, message)
        return advice
    try:
        key = header_key
        if action is None:
            action = str(form.get("action") or "check")
            typed = form.get("api_key")
            key = typed if isinstance(typed, str) and typed else None
        advice = Advice(values)
        if market is None:
            advice.refuse("form", "the service is still loading; try again in a moment", 503)
            return advice
        refused_key: ApiError | None = None
        if action == "publish":
            try:
                require_api_key(request, key)
            except ApiError as exc:
                refused_key = exc
        try:
            photos = await run_in_threadpool(read_photos, uploads, request.app.state.settings)
        except ApiError as exc:
            advice.refuse(_error_field(exc), exc.detail, exc.status_code)
            return advice
        if refused_key is not None:  # nothing is published; the advice stays on the page
            advice = await run_in_threadpool(advise, market, values, photos)
            advice.refuse("api_key", KEY_MESSAGES.get(refused_key.reason or "", refused_key.detail), 200)
            advice.status = refused_key.status_code
            return advice
        job = publish if action == "publish" else advise
        return await run_in_threadpool(job, market, values, photos)
    finally:
        await form.close()


def _fragment(request: Request, advice: Advice) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "_sell_advice.html", advice.context(), status_code=advice.status
    )


@router.get("/sell", response_class=HTMLResponse)
def sell_page(request: Request) -> HTMLResponse:
    return render_page(request, "sell.html", **Advice({}).context())


@router.post("/sell", response_class=HTMLResponse)
async def sell_without_script(request: Request) -> HTMLResponse:
    """The form posted by the browser itself: `action` is check or publish, the key a form field."""
    advice = await _handle(request)
    return render_page(request, "sell.html", advice.status, **advice.context())


@router.post("/sell/advice", response_class=HTMLResponse)
async def sell_advice(request: Request) -> HTMLResponse:
    """The advice fragment the script swaps in as the seller types."""
    return _fragment(request, await _handle(request, "check", None))


@router.post("/sell/publish", response_class=HTMLResponse)
async def sell_publish(request: Request) -> HTMLResponse:
    """Publish from the script: the key comes in the X-API-Key header, never in the page."""
    advice = await _handle(request, "publish", request.headers.get(API_KEY_HEADER) or None)
    return _fragment(request, advice)
