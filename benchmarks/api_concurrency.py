"""Searches while listings are created, updated and deleted (a quality bar): 0 errors, nothing lost.

Runs `fbmarket serve` on a copy of a bundle. Search threads query without pause while
writer threads create listings (each with a photo and a unique word in its title),
update some and delete some. Each writer also searches for its new listing right after
the 201 (visible to the very next request). At the end, and again after a clean
restart, every acknowledged write is checked: created listings exist and are found by
their word, deleted ones are gone from the database and from search.

    python benchmarks/api_concurrency.py --bundle /tmp/fbmarket-load/bundle --duration 60
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from harness import (
    ServerProcess,
    build_bundle,
    copy_bundle,
    count_listings,
    jpeg,
    latency_stats,
    model_version,
    sample_queries,
    write_result,
)


@dataclass
class Ledger:
    """What the server acknowledged, and everything that went wrong."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[str, str] = field(default_factory=dict)  # product_id -> unique word
    deleted: dict[str, str] = field(default_factory=dict)
    updated: int = 0
    searches: int = 0
    search_latencies: list[float] = field(default_factory=list)
    write_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    not_visible_at_once: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        with self.lock:
            if len(self.errors) < 50:
                print("ERROR", message)
            self.errors.append(message)


def searcher(
    url: str, queries: list[str], users: list[str], stop: threading.Event, ledger: Ledger, seed: int
) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            params: dict[str, str | int] = {"q": rng.choice(queries), "k": 10}
            if users and rng.random() < 0.5:
                params["user_id"] = rng.choice(users)
            started = time.perf_counter()
            try:
                response = client.get("/search", params=params)
                if response.status_code != 200:
                    ledger.error(f"search {params} -> {response.status_code} {response.text[:200]}")
            except httpx.TransportError as exc:
                ledger.error(f"search transport error: {exc!r}")
                continue
            with ledger.lock:
                ledger.searches += 1
                ledger.search_latencies.append(time.perf_counter() - started)


def found(client: httpx.Client, word: str, product_id: str) -> bool:
    results = client.get("/search", params={"q": word, "k": 10}).json()["results"]
    return product_id in [r["product_id"] for r in results]


def writer(url: str, key: str, stop: threading.Event, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        n = 0
        while not stop.is_set():
            n += 1
            word = f"cc{uuid.uuid4().hex[:10]}"
            form = {"title": f"Concurrent {word} widget", "description": "Benchmark listing.", "price": "12"}
            started = time.perf_counter()
            try:
                response = client.post(
                    "/listings", data=form, files={"photos": ("p.jpg", jpeg(seed * 100_000 + n))}
                )
            except httpx.TransportError as exc:
                ledger.error(f"create transport error: {exc!r}")
                continue
            if response.status_code != 201:
                ledger.error(f"create -> {response.status_code} {response.text[:200]}")
                continue
            product_id = response.json()["product_id"]
            with ledger.lock:
                ledger.created[product_id] = word
                ledger.write_latencies.append(time.perf_counter() - started)
            if not found(client, word, product_id):
                ledger.not_visible_at_once.append(product_id)
            roll = rng.random()
            if roll < 0.35:
                response = client.delete(f"/listings/{product_id}")
                if response.status_code == 204:
                    with ledger.lock:
                        ledger.deleted[product_id] = word
                else:
                    ledger.error(f"delete -> {response.status_code} {response.text[:200]}")
            elif roll < 0.55:
                response = client.put(f"/listings/{product_id}", data={"price": str(rng.randint(1, 99))})
                if response.status_code == 200:
                    with ledger.lock:
                        ledger.updated += 1
                else:
                    ledger.error(f"update -> {response.status_code} {response.text[:200]}")


def verify(url: str, ledger: Ledger) -> dict[str, int]:
    """Every acknowledged create is there and searchable; every acknowledged delete is gone."""
    lost, resurrected = 0, 0
    with httpx.Client(base_url=url, timeout=60) as client:
        for product_id, word in ledger.created.items():
            status = client.get(f"/listings/{product_id}").status_code
            searchable = found(client, word, product_id)
            if product_id in ledger.deleted:
                if status != 404 or searchable:
                    resurrected += 1
                    print(f"deleted listing {product_id} still there (GET {status}, in search: {searchable})")
            elif status != 200 or not searchable:
                lost += 1
                print(f"acknowledged listing {product_id} lost (GET {status}, in search: {searchable})")
    return {"lost": lost, "deleted_but_present": resurrected}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="a bundle to copy (default: build one in --work)")
    parser.add_argument("--products", type=int, default=2000, help="listings in the built bundle")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--searchers", type=int, default=8)
    parser.add_argument("--writers", type=int, default=2)
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="fbmarket-concurrency-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.bundle or build_bundle(work / "bundle", args.products)
    bundle = copy_bundle(source, work / "copy")
    sample = sample_queries(bundle, None)
    server = ServerProcess(bundle, log_path=work / "server.log").start()
    print(
        f"server ready at {server.url}; {args.searchers} searchers, {args.writers} writers, {args.duration} s"
    )
    ledger = Ledger()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=searcher, args=(server.url, sample["queries"], sample["users"], stop, ledger, i)
        )
        for i in range(args.searchers)
    ] + [
        threading.Thread(target=writer, args=(server.url, server.api_key, stop, ledger, 1000 + i))
        for i in range(args.writers)
    ]
    try:
        for thread in threads:
            thread.start()
        time.sleep(args.duration)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        live = verify(server.url, ledger)
        server.stop()
        server = ServerProcess(bundle, log_path=work / "server.log", port=server.port).start()
        restarted = verify(server.url, ledger)
    finally:
        server.stop()
    passed = not ledger.errors and not any(live.values()) and not any(restarted.values())
    passed = passed and not ledger.not_visible_at_once
    payload = {
        "benchmark": "api_concurrency",
        "bundle": str(source),
        "model_version": model_version(source, None),
        "listings_at_start": count_listings(source, None),
        "duration_s": args.duration,
        "searchers": args.searchers,
        "writers": args.writers,
        "searches": ledger.searches,
        "searches_per_s": round(ledger.searches / args.duration, 1),
        "search_latency_ms": {
            **latency_stats([s * 1000 for s in ledger.search_latencies], ("p50", "p99"), digits=1),
        },
        "create_latency_ms": {
            **latency_stats([s * 1000 for s in ledger.write_latencies], ("p50", "p99"), digits=1),
        },
        "created": len(ledger.created),
        "updated": ledger.updated,
        "deleted": len(ledger.deleted),
        "errors": len(ledger.errors),
        "error_samples": ledger.errors[:10],
        "created_not_visible_to_next_request": len(ledger.not_visible_at_once),
        "check_live": live,
        "check_after_restart": restarted,
        "bar": "0 errors; every acknowledged write visible afterwards (nothing lost)",
        "passed": passed,
    }
    write_result("api_concurrency", payload)
    print(
        f"{ledger.searches:,} searches ({payload['searches_per_s']}/s, p99 {payload['search_latency_ms']['p99']} ms) "
        f"while {len(ledger.created)} created / {ledger.updated} updated / {len(ledger.deleted)} deleted; "
        f"errors {len(ledger.errors)}, lost {live['lost']}+{restarted['lost']} -> {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
