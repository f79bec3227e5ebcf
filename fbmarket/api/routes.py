"""The JSON API: status, predictions for a draft listing (category, price, duplicates), search,
listings (read and write), recommendations."""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fbmarket.api.deps import FormBody, KnownQuery, MarketplaceDep, SettingsDep, WriteAccess, checked_id
from fbmarket.api.errors import ApiError
from fbmarket.api.schemas import (
    MAX_K,
    CategoryPrediction,
    DraftDuplicatesOut,
    DraftFields,
    DuplicateOut,
    DuplicatesOut,
    ErrorOut,
    HealthOut,
    ListingCard,
    ListingChanges,
    ListingFields,
    ListingOut,
    PredictOut,
    PredictText,
    PriceFields,
    PriceOut,
    ReadyOut,
    SearchOut,
    SearchParams,
    SimilarOut,
    listing_url,
)
from fbmarket.api.uploads import read_photo, read_photos
from fbmarket.errors import NotFoundError
from fbmarket.service import Marketplace
from fbmarket.service.types import ListingInput, SearchRequest

# Every JSON route refuses query parameters it does not read and one-value parameters sent twice;
# the probes do not: load balancers and monitors add their own query strings to them.
router = APIRouter(dependencies=[KnownQuery])
status_router = APIRouter()

ERRORS = {
    404: {"model": ErrorOut, "description": "unknown id"},
    422: {"model": ErrorOut, "description": "invalid parameter (the message names the field)"},
}
UPLOAD_ERRORS = {
    413: {"model": ErrorOut, "description": "photo over the size limit"},
    415: {"model": ErrorOut, "description": "not an image, or a body that is not a form"},
    422: {"model": ErrorOut, "description": "invalid field, corrupt photo or decompression bomb"},
}
WRITE_ERRORS = {
    401: {"model": ErrorOut, "description": "no API key"},
    403: {"model": ErrorOut, "description": "wrong API key, or writes disabled"},
    **UPLOAD_ERRORS,
}
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of results")]


# ------------------------------------------------------------------------------ status


@status_router.get("/health", response_model=HealthOut, tags=["status"], summary="Liveness: the process answers")
def health() -> HealthOut:
    return HealthOut()


@status_router.get(
    "/ready",
    response_model=ReadyOut,
    tags=["status"],
    summary="Readiness: bundle, index and database loaded",
    responses={503: {"model": ReadyOut, "description": "not ready (yet)"}},
)
def ready(request: Request) -> JSONResponse | ReadyOut:
    state = request.app.state
    market: Marketplace | None = state.marketplace
    if market is None:
        checks = {"bundle": False, "index": False, "database": False}
        detail = f"failed to load: {state.load_error}" if state.load_error else "loading"
        state.metrics.ready.set(0)
        return JSONResponse(ReadyOut(ready=False, checks=checks, detail=detail).model_dump(), 503)
    readiness = market.readiness()
    checks = {name: bool(ok) for name, (ok, _) in readiness.items()}
    ok = all(checks.values())
    state.metrics.ready.set(int(ok))
    model = market.model.model_info
    if not ok:
        # What is missing and the command that fixes it: "not ready" alone leaves an operator guessing.
        detail = "; ".join(f"{name}: {text}" for name, (good, text) in readiness.items() if not good)
        return JSONResponse(
            ReadyOut(ready=False, checks=checks, detail=detail, model=model).model_dump(), 503
        )
    return ReadyOut(ready=True, checks=checks, model=model)


@status_router.get(
    "/metrics",
    tags=["status"],
    summary="Prometheus metrics: request counts and latencies by route",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------------- predict


@router.post(
    "/predict/category",
    response_model=PredictOut,
    tags=["predict"],
    summary="Top categories for a listing's text and/or photo",
    responses=UPLOAD_ERRORS,
    dependencies=[FormBody],
)
def predict_category(
    market: MarketplaceDep,
    settings: SettingsDep,
    text: Annotated[PredictText, Form(description="title and description")] = None,
    photo: Annotated[UploadFile | None, File(description="a photo of the item")] = None,
    top: Annotated[int, Form(ge=1, le=20, description="how many categories")] = 3,
) -> PredictOut:
    image = read_photo(photo, settings).image if photo is not None else None
    if text is None and image is None:
        raise ApiError(422, "text: give some text or a photo (or both)", "missing_input", "text")
    ranked = market.predict_category(text, image, top=top)
    inputs = [name for name, value in (("text", text), ("photo", image)) if value is not None]
    return PredictOut(
        predictions=[CategoryPrediction(category=c, probability=float(p)) for c, p in ranked], inputs=inputs
    )


@router.post(
    "/predict/price",
    response_model=PriceOut,
    tags=["predict"],
    summary="A fair price range for a listing not yet posted, with the nearest priced listings",
    responses={
        **UPLOAD_ERRORS,
        503: {"model": ErrorOut, "description": "this bundle has no price model (retrain with fbmarket train)"},
    },
    dependencies=[FormBody],
)
def predict_price(
    market: MarketplaceDep,
    settings: SettingsDep,
    fields: Annotated[PriceFields, Form()],
    photos: Annotated[list[UploadFile] | None, File(description="photos of the item")] = None,
) -> PriceOut:
    checked = read_photos(photos, settings)
    draft = ListingInput(
        title=fields.title, description=fields.description, location=fields.location, category=fields.category
    )
    return PriceOut.of(market.suggest_price(draft, [p.image for p in checked]))


@router.post(
    "/predict/duplicates",
    response_model=DraftDuplicatesOut,
    tags=["predict"],
    summary="Stored listings a draft would duplicate (form of POST /listings; no key, nothing saved)",
    responses=UPLOAD_ERRORS,
    dependencies=[FormBody],
)
def predict_duplicates(
    market: MarketplaceDep,
    settings: SettingsDep,
    fields: Annotated[DraftFields, Form()],
    photos: Annotated[list[UploadFile] | None, File(description="photos of the item")] = None,
) -> DraftDuplicatesOut:
    checked = read_photos(photos, settings)
    draft = fields.to_input()
    matches = market.find_duplicates(draft, [p.data for p in checked])
    return DraftDuplicatesOut(duplicates=[DuplicateOut.of(c) for c in market.duplicate_cards(matches)])


# ----------------------------------------------------------------------------- search


def search_request(params: SearchParams, image: Image.Image | None, location: str) -> SearchRequest:
    """API parameters -> the facade's request, checking what one field alone cannot."""
    if (params.lat is None) != (params.lon is None):
        missing = "lon" if params.lon is None else "lat"
        raise ApiError(422, f"{missing}: lat and lon must be given together", "invalid", missing, location)
    if params.min_price is not None and params.max_price is not None and params.max_price < params.min_price:
        raise ApiError(422, "max_price: must not be below min_price", "invalid", "max_price", location)
    return SearchRequest.build(
        query=params.q,
        image=image,
        k=params.k,
        user_id=params.user_id,
        category=params.category,
        min_price=params.min_price,
        max_price=params.max_price,
        max_distance_km=params.max_distance_km,
        age=params.age,
        gender=params.gender,
        location=params.location,
        latitude=params.lat,
        longitude=params.lon,
        budget_gbp=params.budget,
    )


@router.get(
    "/search",
    response_model=SearchOut,
    tags=["search"],
    summary="Personalised search by words (POST to add a photo)",
    responses={422: ERRORS[422]},
)
def search(market: MarketplaceDep, params: Annotated[SearchParams, Query()]) -> SearchOut:
    return SearchOut.of(market.search(search_request(params, None, "query")))


@router.post(
    "/search",
    response_model=SearchOut,
    tags=["search"],
    summary="Personalised search by photo and/or words (multipart form)",
    responses=UPLOAD_ERRORS,
    dependencies=[FormBody],
)
def search_with_photo(
    market: MarketplaceDep,
    settings: SettingsDep,
    params: Annotated[SearchParams, Form()],
    photo: Annotated[UploadFile | None, File(description="find listings that look like this")] = None,
) -> SearchOut:
    image = read_photo(photo, settings).image if photo is not None else None
    return SearchOut.of(market.search(search_request(params, image, "body")))


@router.get(
    "/users/{user_id}/recommendations",
    response_model=SearchOut,
    tags=["search"],
    summary="A known buyer's home feed",
    responses=ERRORS,
)
def recommendations(market: MarketplaceDep, user_id: Annotated[str, Path()], k: K = 10) -> SearchOut:
    return SearchOut.of(market.recommend(checked_id(user_id, "user"), k=k))


# --------------------------------------------------------------------------- listings


@router.get("/listings/{product_id}", response_model=ListingOut, tags=["listings"], responses=ERRORS)
def get_listing(market: MarketplaceDep, product_id: str) -> ListingOut:
    return ListingOut.of(market.get_listing(checked_id(product_id)))


@router.get(
    "/listings/{product_id}/similar",
    response_model=SimilarOut,
    tags=["listings"],
    summary="Listings like this one",
    responses=ERRORS,
)
def similar(market: MarketplaceDep, product_id: str, k: K = 10) -> SimilarOut:
    results = market.similar(checked_id(product_id), k=k)
    return SimilarOut(product_id=product_id, results=[ListingCard.of(r) for r in results])


@router.get(
    "/listings/{product_id}/duplicates",
    response_model=DuplicatesOut,
    tags=["listings"],
    summary="Stored listings that may be the same as this one (re-posts), with scores and reasons",
    responses=ERRORS,
)
def duplicates(market: MarketplaceDep, product_id: str) -> DuplicatesOut:
    matches = market.duplicates_of(checked_id(product_id))
    return DuplicatesOut(
        product_id=product_id, duplicates=[DuplicateOut.of(c) for c in market.duplicate_cards(matches)]
    )


@router.get(
    "/listings/{product_id}/images/{n}",
    tags=["listings"],
    summary="Photo n (from 0) of a listing, as cleaned for the models",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}, **ERRORS},
)
def listing_image(
    market: MarketplaceDep, product_id: str, n: Annotated[int, Path(ge=0, le=10_000)]
) -> FileResponse:
    path = market.image_path(checked_id(product_id), n)
    if not path.is_file():
        raise NotFoundError(f"photo {n} of listing {product_id!r} is missing")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=300"})


@router.post(
    "/listings",
    response_model=ListingOut,
    status_code=201,
    tags=["listings"],
    summary="Add a listing (searchable by the next request); category predicted when missing",
    dependencies=[WriteAccess, FormBody],
    responses=WRITE_ERRORS,
)
def create_listing(
    market: MarketplaceDep,
    settings: SettingsDep,
    response: Response,
    fields: Annotated[ListingFields, Form()],
    photos: Annotated[list[UploadFile] | None, File(description="photos of the item")] = None,
) -> ListingOut:
    checked = read_photos(photos, settings)
    listing = fields.to_input()
    created = ListingOut.of(market.create_listing(listing, [p.data for p in checked]))
    response.headers["Location"] = listing_url(created.product_id)
    return created


@router.put(
    "/listings/{product_id}",
    response_model=ListingOut,
    tags=["listings"],
    summary="Change a listing: fields given replace the stored ones; photos given replace all photos",
    dependencies=[WriteAccess, FormBody],
    responses={**WRITE_ERRORS, 404: ERRORS[404]},
)
def update_listing(
    market: MarketplaceDep,
    settings: SettingsDep,
    product_id: str,
    changes: Annotated[ListingChanges, Form()],
    photos: Annotated[list[UploadFile] | None, File(description="new photos (replace the old ones)")] = None,
) -> ListingOut:
    current = market.get_listing(checked_id(product_id))
    checked = read_photos(photos, settings)
    if "title" in changes.model_fields_set and changes.title is None:
        raise ApiError(422, "title: a listing needs a title; leave the field out to keep the stored one",
                       "blank", "title", "body")  # fmt: skip
    if not changes.model_fields_set and not checked:
        raise ApiError(
            422,
            "nothing to change: give at least one field (title, description, price, location, "
            "category) or photos",
            "empty_update",
        )

    def pick(name: str) -> object:
        value = getattr(changes, name)
        return current.get(name) if value is None else value

    listing = ListingInput(
        title=str(pick("title")),
        description=str(pick("description") or ""),
        price=pick("price"),  # type: ignore[arg-type]
        location=str(pick("location") or ""),
        category=pick("category"),  # type: ignore[arg-type]
        product_id=product_id,
    )
    new_photos = [p.data for p in checked] if checked else None
    return ListingOut.of(market.update_listing(product_id, listing, new_photos))


@router.delete(
    "/listings/{product_id}",
    status_code=204,
    response_class=Response,
    tags=["listings"],
    summary="Remove a listing from the database and the index",
    dependencies=[WriteAccess],
    responses={401: WRITE_ERRORS[401], 403: WRITE_ERRORS[403], 404: ERRORS[404]},
)
def delete_listing(market: MarketplaceDep, product_id: str) -> Response:
    market.delete_listing(checked_id(product_id))
    return Response(status_code=204)
