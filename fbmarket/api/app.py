"""The FastAPI application and `serve`, which runs it under uvicorn.

`create_app` takes an opened `Marketplace` (tests, embedding) or a loader that opens
one; with a loader the server answers /health at once and /ready turns 200 when the
bundle, index and database are loaded, so an orchestrator never routes to a cold process.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fbmarket import __version__
from fbmarket.api.errors import install_error_handlers
from fbmarket.api.middleware import (
    BodyLimitMiddleware,
    Metrics,
    MetricsMiddleware,
    MultipartEndMiddleware,
    Scope,
)
from fbmarket.api.routes import router as api_router
from fbmarket.api.routes import status_router
from fbmarket.api.sell import router as sell_router
from fbmarket.api.web import STATIC_DIR
from fbmarket.api.web import router as web_router
from fbmarket.bundle.files import check_files
from fbmarket.bundle.settings import load_bundle_settings
from fbmarket.config import Settings, install_log_redaction, read_environment
from fbmarket.errors import DataError
from fbmarket.layout import BundleLayout
from fbmarket.search.backend import parse_index_uri
from fbmarket.service import Marketplace

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 1024 * 1024  # form fields and part headers around the photos

DESCRIPTION = """
Multimodal marketplace search: category prediction from text and photos, personalised
search (words, photo or both; demographic- and location-aware ranking with the factors
of every score), similar listings, home feeds, and live listing writes.

Writes (POST/PUT/DELETE `/listings`) need the server's API key in the `X-API-Key` header.
Errors are JSON `{"detail": ..., "errors": [...], "reason": ...}`; `detail` names the field.
"""


def largest_body(settings: Settings) -> int:
    """The largest body any route takes (a listing write with every photo), in bytes."""
    return settings.serve.max_upload_bytes * settings.serve.max_photos_per_listing + MULTIPART_OVERHEAD


def body_limit(settings: Settings) -> Callable[[Scope], int]:
    """Listing writes may carry several photos; every other form carries at most one."""
    one = settings.serve.max_upload_bytes + MULTIPART_OVERHEAD
    many = largest_body(settings)

    def limit_for(scope: Scope) -> int:
        return many if str(scope.get("path", "")).startswith("/listings") else one

    return limit_for


def create_app(
    marketplace: Marketplace | None = None,
    settings: Settings | None = None,
    *,
    loader: Callable[[], Marketplace] | None = None,
) -> FastAPI:
    """The app over an opened `marketplace`, or over one that `loader` opens in the background.

    A marketplace passed in stays the caller's to close; one opened by `loader` is
    closed when the server shuts down.
    """
    if (marketplace is None) == (loader is None):
        raise ValueError("give either an opened marketplace or a loader, not both or neither")
    settings = settings or Settings()
    install_log_redaction()  # pymilvus / SQLAlchemy log the URLs they fail to reach, credentials and all

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = None
        if loader is not None:
            thread = threading.Thread(target=_load, args=(app, loader), name="fbmarket-load", daemon=True)
            thread.start()
        try:
            yield
        finally:
            if thread is not None:
                thread.join(timeout=60)
                if app.state.marketplace is not None:
                    app.state.marketplace.close()

    app = FastAPI(
        title="fbmarket",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # a text field may be as large as the body the limit above lets in, so an over-long
        # description reaches validation and is refused naming its field (422), not as an
        # unnamed "Field exceeded maximum size of 1024KB" 400 from the form parser
        form_limits={"max_part_size": largest_body(settings)},
        openapi_tags=[
            {"name": "search", "description": "search, recommendations"},
            {"name": "listings", "description": "read and write listings and their photos"},
            {"name": "predict", "description": "category prediction"},
            {"name": "status", "description": "health, readiness, metrics"},
            {"name": "web", "description": "the HTML page"},
        ],
    )
    app.state.settings = settings
    app.state.marketplace = marketplace
    app.state.load_error = None
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(status_router)
    app.include_router(api_router)
    app.include_router(web_router)
    app.include_router(sell_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    note = f" (photos up to {settings.serve.max_upload_bytes:,} bytes each)"
    app.add_middleware(MultipartEndMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit(settings), note=note)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: sees every status
    return app


def _load(app: FastAPI, loader: Callable[[], Marketplace]) -> None:
    try:
        app.state.marketplace = loader()
        log.info("marketplace loaded: %s", app.state.marketplace.ready())
    except Exception as exc:  # the server stays up to say why in /ready
        # a driver's message may quote the database URL: secrets are masked in /ready and the log
        settings: Settings = app.state.settings
        app.state.load_error = settings.redact(f"{type(exc).__name__}: {exc}")
        trace = settings.redact("".join(traceback.format_exception(exc)))
        log.error("loading the marketplace failed: %s\n%s", app.state.load_error, trace)


def app_from_environment() -> FastAPI:
    """The app for uvicorn's factory mode, where each worker process builds its own:

        FBMARKET_BUNDLE=artifacts uvicorn --factory fbmarket.api.app:app_from_environment \
            --host 127.0.0.1 --port 8000 --workers 4

    The bundle is FBMARKET_BUNDLE; the database, API key and the rest come from the FBMARKET_*
    environment as for `fbmarket serve`. Several workers serve one catalogue only over a shared
    database and retrieval engine (README, "Several API processes"): with the embedded FAISS
    index and catalogue each worker would keep its own, and never see the others' writes.
    Raises DataError when FBMARKET_BUNDLE is unset or names no bundle.
    """
    environment = read_environment()
    if not environment.bundle:
        raise DataError("FBMARKET_BUNDLE is not set: the app factory serves the bundle it names")
    bundle_dir = Path(environment.bundle)
    if not bundle_dir.is_dir():
        raise DataError(f"FBMARKET_BUNDLE: bundle folder {bundle_dir} does not exist")
    settings = load_bundle_settings(bundle_dir).with_environment()
    return create_app(settings=settings, loader=lambda: Marketplace.open(bundle_dir, settings.database_url, index_uri=settings.index_uri))


def serve(settings: Settings, bundle_dir: Path) -> None:
    """Run the API and web page on settings.serve.host:port until interrupted."""
    import uvicorn

    from fbmarket.service import Marketplace

    bundle_dir = Path(bundle_dir)
    if settings.serve.faiss_threads:
        import faiss

        # Requests already run in parallel threads; FAISS's OpenMP threads on top of them
        # only contend for the cores (measured: 59 -> 33 ms per search on a busy 2-core box).
        faiss.omp_set_num_threads(settings.serve.faiss_threads)
    if not bundle_dir.is_dir():
        raise FileNotFoundError(
            f"bundle folder {bundle_dir.absolute()} does not exist (train one with `fbmarket train` "
            "or `python main.py`)"
        )
    # Not a bundle (no settings.json), or a damaged one (a file empty, cut short or another
    # program's), is known now: say so and stop, rather than listen and answer 503 forever.
    load_bundle_settings(bundle_dir)
    check_files(BundleLayout(bundle_dir))
    parse_index_uri(settings.index_uri)  # a bad --index-uri is one line now, not a 503 later
    if not 1 <= settings.serve.port <= 65535:
        raise DataError(f"port must be from 1 to 65535, got {settings.serve.port}")
    app = create_app(
        settings=settings,
        loader=lambda: Marketplace.open(bundle_dir, settings.database_url, index_uri=settings.index_uri),
    )
    if not settings.serve.api_key:
        log.warning("no API key configured (FBMARKET_API_KEY): listing writes are disabled")
    uvicorn.run(
        app,
        host=settings.serve.host,
        port=settings.serve.port,
        log_level=settings.serve.log_level,
        access_log=settings.serve.access_log,
    )
