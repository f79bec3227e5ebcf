"""Fixtures for the API and web tests: a tiny trained bundle, real uvicorn servers on loopback,
and a real headless Chromium (Debian's) driven by Playwright.

Registered from tests/conftest.py (`pytest_plugins`), so the bundle is trained once per
session however many test modules use it.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from fbmarket.config import Settings

API_SAMPLE_PRODUCTS = 160


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def run_server(app: Any, timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` with a real uvicorn server in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)


REPO = Path(__file__).resolve().parents[1]


class ServeProcess:
    """`fbmarket serve` as a real process (as an operator starts it), from `cwd` if given."""

    def __init__(
        self,
        bundle: Path,
        port: int,
        key: str,
        log: Path,
        cwd: Path | None = None,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ):
        """`args`: more `fbmarket serve` flags (e.g. ["--index-uri", uri])."""
        self.url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "fbmarket.cli",
            "serve",
            "--bundle",
            str(bundle),
            "--port",
            str(port),
        ]
        if database_url:
            command += ["--database", database_url]
        command += args or []
        env = {**os.environ, "FBMARKET_API_KEY": key, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        if cwd is not None:  # the package must still import from this checkout
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.log = log
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                command, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd
            )

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited early:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after 60 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class LiveServer:
    url: str
    api_key: str
    settings: Settings
    bundle: Path
    marketplace: Any

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)

    @property
    def write_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


def build_bundle(out_dir: Path, products: int = API_SAMPLE_PRODUCTS) -> Settings:
    """Train the quick pipeline on the synthetic marketplace into `out_dir`."""
    from fbmarket.workflow import run

    settings = Settings().apply_quick()
    settings.data.sample_products = products
    settings.out_dir = out_dir
    run(settings, show_progress=False)
    return settings


@pytest.fixture(scope="session")
def api_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained bundle (models, FAISS index, SQLite database) over a tiny synthetic marketplace."""
    pytest.importorskip(
        "fbmarket.bundle", reason="the model bundle module (fbmarket/bundle/) is not there yet"
    )
    out_dir = tmp_path_factory.mktemp("api") / "bundle"
    build_bundle(out_dir)
    return out_dir


def copy_bundle(bundle: Path, destination: Path) -> Path:
    """An independent copy, for tests that write or kill servers without touching the shared one."""
    shutil.copytree(bundle, destination)
    return destination


@pytest.fixture(scope="session")
def api_marketplace(api_bundle: Path) -> Iterator[Any]:
    from fbmarket.service import Marketplace

    market = Marketplace.open(api_bundle)
    yield market
    market.close()


def serve_settings(api_key: str | None) -> Settings:
    settings = Settings()
    settings.serve.api_key = api_key
    return settings


BACKENDS = ("embedded", "milvus")  # what `live_server` serves over (an indirect parameter)


@pytest.fixture(scope="session")
def live_server(
    request: pytest.FixtureRequest, api_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The API and web page over the shared marketplace, with a random API key.

    Embedded by default (FAISS + BM25 and the in-memory catalogue, the shared `api_marketplace`).
    A test parametrised with `@pytest.mark.parametrize("live_server", BACKENDS, indirect=True)`
    also runs against "milvus": a copy of the bundle served over a milvus-lite file (the Milvus
    backend and the shared listing source, as `--index-uri` gives), filled from the database
    on open. One server per backend for the session."""
    from fbmarket.api.app import create_app

    backend = getattr(request, "param", "embedded")
    key = secrets.token_urlsafe(16)
    settings = serve_settings(key)
    if backend == "embedded":
        market = request.getfixturevalue("api_marketplace")
        bundle = api_bundle
    else:
        pytest.importorskip("milvus_lite", reason="milvus-lite is in requirements.txt")
        from fbmarket.service import Marketplace

        bundle = copy_bundle(api_bundle, tmp_path_factory.mktemp("milvus") / "bundle")
        market = Marketplace.open(bundle, index_uri=str(bundle.parent / "api_milvus.db"))
    try:
        with run_server(create_app(market, settings)) as url:
            yield LiveServer(url, key, settings, bundle, market)
    finally:
        if backend != "embedded":
            market.close()


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client() as client:
        yield client


@pytest.fixture(scope="session")
def catalogue(api_bundle: Path) -> dict[str, Any]:
    """Ids that exist in the bundle's database: listings with photos, buyers."""
    import sqlalchemy as sa

    from fbmarket.data import store as db

    settings = Settings()
    settings.out_dir = api_bundle
    store = db.Store(settings.db_url)
    try:
        listings = store.listings_frame()
        photos = store.images_frame()
        with store.engine.connect() as connection:
            users = [row[0] for row in connection.execute(sa.select(db.users.c.user_id).limit(20))]
    finally:
        store.close()
    with_photos = [pid for pid in listings["product_id"] if pid in set(photos["product_id"])]
    return {"listings": listings, "with_photos": with_photos, "users": users}


def jpeg_bytes(size: tuple[int, int] = (96, 72), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def chromium_path() -> str | None:
    """Debian's chromium, which the browser tests drive (CI installs it; elsewhere they may skip)."""
    for candidate in (os.environ.get("FBMARKET_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


# ------------------------------------------------------------------ browser (Debian chromium)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        message = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def common_word(catalogue: dict) -> str:
    """A word from the most common title word, so a text search surely has hits."""
    words = catalogue["listings"]["title"].str.lower().str.split().explode()
    words = words[words.str.len() > 3]
    return str(words.value_counts().index[0])
