"""Two `fbmarket serve` processes over one PostgreSQL database and one Milvus (milvus-lite's
server on loopback): a write acknowledged by either is what the next search on both finds.

Creates, updates and deletes are spread over the two processes from several threads; every
create is searched for on BOTH processes right after its 201 (no sleep, no restart), every
update read back on both, every delete gone from both. A duplicate create of one id sent to
the two at once gives exactly one 201 and one refusal (422, reason already_exists: the API's
answer for a taken id, tests/test_api.py), decided by the database's primary key.
"""

from __future__ import annotations

import random
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from api_fixtures import ServeProcess, copy_bundle, free_port, jpeg_bytes
from milvus_fixtures import milvus_lite_server
from test_api_postgres import copy_database

from fbmarket.config import Settings

pytestmark = pytest.mark.slow

WRITERS = 4
CREATES_PER_WRITER = 4
KEY = "replica-key"


@pytest.fixture
def replicas(api_bundle: Path, database_url: str, tmp_path: Path):
    """Two serve processes sharing PostgreSQL (a fresh schema) and a milvus-lite server."""
    pytest.importorskip("milvus_lite", reason="milvus-lite is in requirements.txt")
    pytest.importorskip(
        "fbmarket.search.milvus", reason="the Milvus retrieval backend (issue 11, item 1) is not there yet"
    )
    bundle = copy_bundle(api_bundle, tmp_path / "bundle")
    sqlite = Settings()
    sqlite.out_dir = bundle
    assert copy_database(sqlite.db_url, database_url) > 0
    (bundle / "fbmarket.db").unlink()  # nothing may be read from SQLite now
    with milvus_lite_server(tmp_path) as uri:
        # the two ways an operator names the engine: FBMARKET_INDEX_URI, and serve's --index-uri
        ways = [{"env": {"FBMARKET_INDEX_URI": uri}}, {"args": ["--index-uri", uri]}]
        servers = []
        try:
            for n in range(2):  # the first fills Milvus from the database; the second finds it full
                server = ServeProcess(
                    bundle, free_port(), KEY, tmp_path / f"server{n}.log", database_url=database_url, **ways[n]
                )
                servers.append(server)
                server.wait_ready()
            yield servers
        finally:
            for server in servers:
                server.stop()


def found(client: httpx.Client, word: str, product_id: str) -> bool:
    response = client.get("/search", params={"q": word, "k": 10})
    response.raise_for_status()
    return product_id in [hit["product_id"] for hit in response.json()["results"]]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_serve_one_catalogue(replicas) -> None:
    a, b = replicas
    headers = {"X-API-Key": KEY}
    lock = threading.Lock()
    errors: list[str] = []
    created: dict[str, str] = {}  # product_id -> its unique word
    deleted: set[str] = set()
    not_seen: list[str] = []  # acknowledged creates the next search on some process missed

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        clients = [httpx.Client(base_url=s.url, timeout=120, headers=headers) for s in (a, b)]
        try:
            for n in range(CREATES_PER_WRITER):
                word = "zr" + uuid.uuid4().hex[:10]
                writer_side = clients[(seed + n) % 2]
                response = writer_side.post(
                    "/listings",
                    data={"title": f"Replica {word} lamp", "price": "7"},
                    files={
                        "photos": (
                            "p.jpg",
                            jpeg_bytes(colour=(seed * 40 % 255, n * 50 % 255, 9)),
                            "image/jpeg",
                        )
                    },
                )
                if response.status_code != 201:
                    with lock:
                        errors.append(f"create -> {response.status_code} {response.text[:200]}")
                    continue
                product_id = response.json()["product_id"]
                with lock:
                    created[product_id] = word
                for side, client in zip("ab", clients, strict=True):  # the very next request, both
                    if not found(client, word, product_id):
                        with lock:
                            not_seen.append(f"{product_id} on {side}")
                other = clients[(seed + n + 1) % 2]
                if rng.random() < 0.5:  # an update on the other process, read back on both
                    changed = other.put(f"/listings/{product_id}", data={"price": "11.5"})
                    if changed.status_code != 200:
                        with lock:
                            errors.append(f"update -> {changed.status_code} {changed.text[:200]}")
                    for client in clients:
                        if client.get(f"/listings/{product_id}").json().get("price") != 11.5:
                            with lock:
                                errors.append(f"update of {product_id} not read back on {client.base_url}")
                if rng.random() < 0.3:  # a delete on the other process, gone from both
                    gone = other.delete(f"/listings/{product_id}")
                    if gone.status_code != 204:
                        with lock:
                            errors.append(f"delete -> {gone.status_code} {gone.text[:200]}")
                        continue
                    with lock:
                        deleted.add(product_id)
                    for client in clients:
                        if client.get(f"/listings/{product_id}").status_code != 404 or found(
                            client, word, product_id
                        ):
                            with lock:
                                errors.append(f"deleted {product_id} still there on {client.base_url}")
        except httpx.TransportError as exc:
            with lock:
                errors.append(f"transport error: {exc!r}")
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors[:5]
    assert len(created) == WRITERS * CREATES_PER_WRITER
    assert not not_seen, f"acknowledged creates not found by the next search: {not_seen[:5]}"

    # Afterwards: nothing acknowledged is lost, no delete comes back, on either process.
    with httpx.Client(base_url=a.url, timeout=60) as ca, httpx.Client(base_url=b.url, timeout=60) as cb:
        for product_id, word in created.items():
            for client in (ca, cb):
                listed = client.get(f"/listings/{product_id}").status_code == 200
                searchable = found(client, word, product_id)
                if product_id in deleted:
                    assert not listed and not searchable, f"deleted {product_id} is back on {client.base_url}"
                else:
                    assert listed and searchable, f"acknowledged {product_id} lost on {client.base_url}"

        # One id created on both processes at once: the database's primary key picks one.
        statuses: list[tuple[int, str | None]] = []
        barrier = threading.Barrier(2)

        def create_twin(url: str) -> None:
            with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
                barrier.wait()
                response = client.post("/listings", data={"title": "Twin brass lamp", "product_id": "twin-9"})
                with lock:
                    statuses.append((response.status_code, response.json().get("reason")))

        twins = [threading.Thread(target=create_twin, args=(s.url,)) for s in (a, b)]
        for thread in twins:
            thread.start()
        for thread in twins:
            thread.join(timeout=300)
        assert sorted(statuses) == [(201, None), (422, "already_exists")], statuses
        for client in (ca, cb):
            assert client.get("/listings/twin-9").json()["title"] == "Twin brass lamp"
        for client in (ca, cb):  # the engine's count is the database's, seen from either
            assert client.get("/ready").status_code == 200, client.get("/ready").text
