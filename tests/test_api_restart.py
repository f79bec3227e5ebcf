"""`fbmarket serve` as a real process: killed mid-write and started again, nothing acknowledged is lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_fixtures import ServeProcess, copy_bundle, free_port, jpeg_bytes

pytestmark = pytest.mark.slow


def stored_titles(bundle: Path) -> dict[str, str]:
    from fbmarket.config import Settings
    from fbmarket.data.store import Store

    settings = Settings()
    settings.out_dir = bundle
    store = Store(settings.db_url)
    try:
        frame = store.listings_frame()
    finally:
        store.close()
    return dict(zip(frame["title"], frame["product_id"], strict=True))


@pytest.fixture
def served_copy(api_bundle: Path, tmp_path: Path) -> Iterator[tuple[Path, int, str]]:
    bundle = copy_bundle(api_bundle, tmp_path / "bundle")
    yield bundle, free_port(), "restart-key"


def test_killed_mid_write_and_restarted_loses_nothing_acknowledged(served_copy, tmp_path: Path) -> None:
    bundle, port, key = served_copy
    headers = {"X-API-Key": key}
    server = ServeProcess(bundle, port, key, tmp_path / "server.log")
    try:
        server.wait_ready()
        word = "zk" + uuid.uuid4().hex[:10]
        acknowledged = httpx.post(
            f"{server.url}/listings",
            data={"title": f"Sturdy {word} shelf", "price": "15"},
            files={"photos": ("s.jpg", jpeg_bytes(), "image/jpeg")},
            headers=headers,
            timeout=60,
        )
        assert acknowledged.status_code == 201, acknowledged.text
        product_id = acknowledged.json()["product_id"]

        # A stream of writes, one of them cut off by SIGKILL.
        stop = threading.Event()
        in_flight_words: list[str] = []

        def keep_writing() -> None:
            while not stop.is_set():
                pending = "zp" + uuid.uuid4().hex[:10]
                in_flight_words.append(pending)
                try:
                    httpx.post(
                        f"{server.url}/listings",
                        data={"title": f"Pending {pending} mirror"},
                        files={"photos": ("m.jpg", jpeg_bytes(colour=(1, 2, 3)), "image/jpeg")},
                        headers=headers,
                        timeout=60,
                    )
                except httpx.TransportError:
                    return

        writer = threading.Thread(target=keep_writing)
        writer.start()
        time.sleep(1.5)
        server.kill()
        stop.set()
        writer.join(timeout=60)

        server = ServeProcess(bundle, port, key, tmp_path / "server.log")
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get(f"/listings/{product_id}").status_code == 200
            hits = client.get("/search", params={"q": word, "k": 10}).json()["results"]
            assert product_id in [h["product_id"] for h in hits], "the index has the acknowledged listing"
            stored = stored_titles(bundle)
            for pending in in_flight_words:  # landed wholly (database and search) or not at all
                hits = client.get("/search", params={"q": pending, "k": 10}).json()["results"]
                for hit in hits:
                    assert client.get(f"/listings/{hit['product_id']}").status_code == 200, (
                        "index ahead of database"
                    )
                in_db = stored.get(f"Pending {pending} mirror")
                if in_db is not None:
                    assert in_db in [h["product_id"] for h in hits], "database ahead of index"
                    assert client.get(f"/listings/{in_db}").json()["image_count"] == 1, (
                        "photo written with it"
                    )
    finally:
        server.kill()
