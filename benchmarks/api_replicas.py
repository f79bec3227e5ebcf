"""Two API processes over one PostgreSQL database and one Milvus (a quality bar of issue 11):
0 errors, 0 lost acknowledged writes, every create visible on both at once.

Part 1, the price of keeping no catalogue in the process: what a request pays to read its
candidates' fields from the database (`SharedListings.view`: one query by id + a small
catalogue view) and a home feed's bounded pool (`feed_view`), against the in-memory
catalogue's view (which costs nothing per request). Needs only PostgreSQL.

Part 2, the replicas: a milvus-lite server on 127.0.0.1 and two `fbmarket serve` processes
sharing it and the database. Writer threads create listings (a photo, a unique word in the
title) on alternating processes and search for each on BOTH right after the 201; some are
updated or deleted on the other process. Reader threads search both without pause. At the
end every acknowledged write is checked on both. Needs the Milvus retrieval backend
(fbmarket/search/milvus.py, issue 11 item 1); without it part 2 is reported as not run.

    export FBMARKET_TEST_POSTGRES_URL=$(PGPORT_TEST=55871 bash .ci/postgres.sh)
    python benchmarks/api_replicas.py --bundle /tmp/b --duration 20 --writers 2 --readers 2

Results: benchmarks/results/api_replicas.{json,md} (milvus-lite server, the machine it ran on).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import (
    REPO,
    RESULTS,
    ServerProcess,
    build_bundle,
    copy_bundle,
    copy_database,
    jpeg,
    latency_stats,
    sample_queries,
    write_result,
)

sys.path.insert(0, str(REPO / "tests"))


def fresh_schema(url: str, name: str) -> str:
    """A new empty schema on the PostgreSQL server; the URL that makes it the search path."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{name}"


def view_cost(database_url: str, bundle: Path, candidates: int, repeats: int, work: Path) -> dict:
    """Per-request cost (ms) of reading `candidates` listings' fields by id, and a feed pool.

    `engine_view` reads the same ids' fields from Milvus instead (`MilvusBackend.rows`, a
    milvus-lite server on 127.0.0.1 holding the same listings) and builds the same view: the
    alternative source of candidate rows for a service without a catalogue."""
    from milvus_fixtures import milvus_lite_server

    from fbmarket.catalogue import IMAGE_COUNT
    from fbmarket.config import Settings
    from fbmarket.data.store import Store
    from fbmarket.search.backend import parse_index_uri
    from fbmarket.search.milvus import MilvusBackend

    store = Store(database_url, root=bundle)
    with milvus_lite_server(work, name="rows.db") as uri:
        engine = MilvusBackend.open(parse_index_uri(uri), 8, None, "rows-cost", Settings().search)
        engine.upsert(store.listings_frame())
        try:
            return _view_cost(store, engine, candidates, repeats, IMAGE_COUNT)
        finally:
            engine.close()
            store.close()


def _view_cost(store: Any, engine: Any, candidates: int, repeats: int, image_count: str) -> dict:
    from fbmarket.config import Settings
    from fbmarket.service.listings import CategoryNames, LocalListings, SharedListings
    from fbmarket.service.marketplace import listing_catalogue

    products = store.listings_frame()
    ids = products["product_id"].astype(str).tolist()
    settings = Settings()
    shared = SharedListings(store, settings.rank.affinity_level)
    local = LocalListings(listing_catalogue(store, products, settings))
    names = CategoryNames(store.category_paths)
    roots = sorted(products["root_category"].unique().tolist())
    rng = random.Random(0)
    timings: dict[str, list[float]] = {
        "shared_view": [], "engine_view": [], "local_view": [], "shared_feed_pool": []
    }
    n = min(candidates, len(ids))
    for _ in range(repeats):
        chosen = rng.sample(ids, n)
        started = time.perf_counter()
        view = shared.view(chosen)
        timings["shared_view"].append((time.perf_counter() - started) * 1000)
        assert len(view) == n
        started = time.perf_counter()
        rows = engine.rows(chosen).rename(columns={"image_count": image_count})
        engine_view = shared.frame_view(rows)
        timings["engine_view"].append((time.perf_counter() - started) * 1000)
        assert len(engine_view) == n
        started = time.perf_counter()
        local_view = local.view(chosen)
        local_view.rows(chosen)
        timings["local_view"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        shared.feed_view(rng.sample(roots, min(4, len(roots))), 200, ids[:200], None, names.canonical)
        timings["shared_feed_pool"].append((time.perf_counter() - started) * 1000)
    return {
        "engine": "milvus-lite server on 127.0.0.1 (engine_view)",
        "listings": len(ids),
        "candidates_per_request": n,
        "repeats": repeats,
        **{name: latency_stats(values, ("p50", "p99", "mean")) for name, values in timings.items()},
    }


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    updated: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    not_visible: list[str] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"search": [], "create": [], "update": [], "delete": []}
    )

    def timed(self, kind: str, started: float) -> None:
        with self.lock:
            self.requests += 1
            self.latencies[kind].append((time.perf_counter() - started) * 1000)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def found(client: httpx.Client, word: str, product_id: str, ledger: Ledger) -> bool:
    started = time.perf_counter()
    response = client.get("/search", params={"q": word, "k": 10})
    ledger.timed("search", started)
    response.raise_for_status()
    return product_id in [hit["product_id"] for hit in response.json()["results"]]


def writer(urls: list[str], key: str, stop: threading.Event, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=url, timeout=120, headers={"X-API-Key": key}) for url in urls]
    n = 0
    try:
        while not stop.is_set():
            n += 1
            word = "zb" + uuid.uuid4().hex[:10]
            side = (seed + n) % 2
            started = time.perf_counter()
            try:
                response = clients[side].post(
                    "/listings",
                    data={"title": f"Replica {word} lamp", "price": "7"},
                    files={"photos": ("p.jpg", jpeg(seed * 100_000 + n))},
                )
                ledger.timed("create", started)
                if response.status_code != 201:
                    ledger.error(f"create -> {response.status_code} {response.text[:200]}")
                    continue
                product_id = response.json()["product_id"]
                with ledger.lock:
                    ledger.created[product_id] = word
                for name, client in zip("ab", clients, strict=True):
                    if not found(client, word, product_id, ledger):
                        with ledger.lock:
                            ledger.not_visible.append(f"{product_id} on {name}")
                other = clients[1 - side]
                if rng.random() < 0.3:
                    started = time.perf_counter()
                    changed = other.put(f"/listings/{product_id}", data={"price": "9"})
                    ledger.timed("update", started)
                    if changed.status_code != 200:
                        ledger.error(f"update -> {changed.status_code} {changed.text[:200]}")
                    else:
                        with ledger.lock:
                            ledger.updated += 1
                if rng.random() < 0.2:
                    started = time.perf_counter()
                    gone = other.delete(f"/listings/{product_id}")
                    ledger.timed("delete", started)
                    if gone.status_code != 204:
                        ledger.error(f"delete -> {gone.status_code} {gone.text[:200]}")
                    else:
                        with ledger.lock:
                            ledger.deleted.add(product_id)
            except httpx.TransportError as exc:
                ledger.error(f"transport error: {exc!r}")
    finally:
        for client in clients:
            client.close()


def reader(urls: list[str], queries: list[str], stop: threading.Event, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=url, timeout=60) for url in urls]
    try:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = rng.choice(clients).get("/search", params={"q": rng.choice(queries), "k": 10})
                ledger.timed("search", started)
                if response.status_code != 200:
                    ledger.error(f"search -> {response.status_code} {response.text[:200]}")
            except httpx.TransportError as exc:
                ledger.error(f"search transport error: {exc!r}")
    finally:
        for client in clients:
            client.close()


def verify(urls: list[str], ledger: Ledger) -> dict[str, int]:
    """Every acknowledged write, on both processes."""
    problems = {"lost_acknowledged": 0, "deleted_but_present": 0}
    for url in urls:
        with httpx.Client(base_url=url, timeout=60) as client:
            for product_id, word in ledger.created.items():
                listed = client.get(f"/listings/{product_id}").status_code == 200
                searchable = found(client, word, product_id, Ledger())
                if product_id in ledger.deleted:
                    problems["deleted_but_present"] += int(listed or searchable)
                else:
                    problems["lost_acknowledged"] += int(not (listed and searchable))
    return problems


def replicas(bundle: Path, database_url: str, work: Path, args: argparse.Namespace) -> dict:
    from milvus_fixtures import milvus_lite_server

    queries = sample_queries(bundle, database_url, n=100)["queries"]
    ledger = Ledger()
    with milvus_lite_server(work) as uri:
        servers: list[ServerProcess] = []
        try:
            started = time.perf_counter()
            for n in range(2):
                server = ServerProcess(
                    bundle,
                    database_url=database_url,
                    log_path=work / f"server{n}.log",
                    env={"FBMARKET_INDEX_URI": uri},
                )
                servers.append(server.start())
            ready_s = time.perf_counter() - started
            urls = [s.url for s in servers]
            # one warm-up create per process: the first photo encoding builds the model's graphs
            for i, url in enumerate(urls):
                with httpx.Client(base_url=url, timeout=300, headers={"X-API-Key": servers[i].api_key}) as c:
                    c.post("/listings", data={"title": "Warm up lamp"}, files={"photos": ("p.jpg", jpeg(i))})
            stop = threading.Event()
            threads = [
                threading.Thread(target=writer, args=(urls, servers[0].api_key, stop, ledger, i))
                for i in range(args.writers)
            ] + [
                threading.Thread(target=reader, args=(urls, queries, stop, ledger, 1000 + i))
                for i in range(args.readers)
            ]
            for thread in threads:
                thread.start()
            time.sleep(args.duration)
            stop.set()
            for thread in threads:
                thread.join(timeout=300)
            problems = verify(urls, ledger)
        finally:
            for server in servers:
                server.stop()
    return {
        "engine": f"milvus-lite server ({uri.split('://')[0]}, 127.0.0.1)",
        "processes": 2,
        "writers": args.writers,
        "readers": args.readers,
        "duration_s": args.duration,
        "both_ready_s": round(ready_s, 1),
        "requests": ledger.requests,
        "errors": len(ledger.errors),
        "error_samples": ledger.errors[:5],
        "acknowledged_creates": len(ledger.created),
        "acknowledged_updates": ledger.updated,
        "acknowledged_deletes": len(ledger.deleted),
        "creates_not_found_on_both_at_once": len(ledger.not_visible),
        **problems,
        "latency_ms": {
            kind: latency_stats(values, ("p50", "p99", "mean")) for kind, values in ledger.latencies.items()
        },
    }


def markdown(payload: dict) -> str:
    lines = [
        "# API replicas: two processes over PostgreSQL + Milvus",
        "",
        f"Machine: {payload['machine_note']}. Engine: milvus-lite server on 127.0.0.1 (not a Milvus cluster).",
        "",
        "## Per-request cost of keeping no catalogue in the process",
        "",
    ]
    cost = payload["view_cost"]
    lines += [
        f"{cost['listings']} listings in PostgreSQL, {cost['candidates_per_request']} candidates per request, "
        f"{cost['repeats']} repeats (ms):",
        "",
        "| read | p50 | p99 | mean |",
        "|---|---|---|---|",
    ]
    for name in ("shared_view", "engine_view", "shared_feed_pool", "local_view"):
        s = cost[name]
        lines.append(f"| {name} | {s['p50']} | {s['p99']} | {s['mean']} |")
    lines += ["", "## Two processes", ""]
    run = payload.get("replicas")
    if not run:
        lines.append(f"Not run: {payload.get('replicas_not_run')}")
    else:
        for key in (
            "requests",
            "errors",
            "acknowledged_creates",
            "acknowledged_updates",
            "acknowledged_deletes",
            "creates_not_found_on_both_at_once",
            "lost_acknowledged",
            "deleted_but_present",
        ):
            lines.append(f"- {key}: {run[key]}")
        lines += ["", "| request | p50 ms | p99 ms | mean ms |", "|---|---|---|---|"]
        for kind, s in run["latency_ms"].items():
            lines.append(f"| {kind} | {s['p50']} | {s['p99']} | {s['mean']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="a bundle to copy (default: build one in --work)")
    parser.add_argument("--products", type=int, default=300, help="listings in the built bundle")
    parser.add_argument(
        "--database", default=os.environ.get("FBMARKET_TEST_POSTGRES_URL"), help="PostgreSQL URL"
    )
    parser.add_argument("--work", type=Path)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument(
        "--candidates", type=int, default=200, help="ids per per-request read (SearchSettings.candidates)"
    )
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    if not args.database:
        parser.error("give --database or set FBMARKET_TEST_POSTGRES_URL (bash .ci/postgres.sh starts one)")

    work = args.work or Path(tempfile.mkdtemp(prefix="fbmarket-replicas-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.bundle or build_bundle(work / "bundle", args.products)
    bundle = copy_bundle(source, work / "copy")
    database_url = fresh_schema(args.database, f"replicas_{os.getpid()}")
    copy_database(f"sqlite:///{bundle / 'fbmarket.db'}", database_url)
    (bundle / "fbmarket.db").unlink()

    load_before = os.getloadavg()[0]
    payload: dict = {
        "benchmark": "api_replicas",
        "view_cost": view_cost(database_url, bundle, args.candidates, args.repeats, work),
    }
    payload["machine_note"] = (
        f"this {os.cpu_count()}-core machine, shared with other work; load average (1 min) "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after the per-request reads"
    )
    print(payload["view_cost"])
    try:
        import fbmarket.search.milvus  # noqa: F401  (the backend of issue 11, item 1)
    except ImportError as error:
        payload["replicas_not_run"] = f"no Milvus retrieval backend in this checkout ({error})"
    else:
        payload["replicas"] = replicas(bundle, database_url, work, args)
        print(payload["replicas"])
    run = payload.get("replicas")
    payload["passed"] = bool(run) and not (
        run["errors"]
        or run["lost_acknowledged"]
        or run["deleted_but_present"]
        or run["creates_not_found_on_both_at_once"]
    )
    write_result("api_replicas", payload)
    (RESULTS / "api_replicas.md").write_text(markdown(payload))
    return 0 if payload["passed"] or not run else 1


if __name__ == "__main__":
    raise SystemExit(main())
