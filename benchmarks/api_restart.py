"""Kill the server mid-write, start it again (a quality bar): database and index agree, nothing acknowledged lost.

Runs `fbmarket serve` on a copy of a bundle with writer threads creating (and deleting
some) listings non-stop, SIGKILLs it at a random moment, starts it again and checks:
every acknowledged create exists and is found by search, every acknowledged delete is
gone, and a write that was in flight at the kill is either wholly there (database and
search) or wholly absent. Each cycle starts with one warm-up create (the first after a
start builds the model's graphs), and the run fails if no writer's create was acknowledged
before a kill. Repeated for several cycles; the restart time is reported.

    python benchmarks/api_restart.py --bundle /tmp/fbmarket-load/bundle --cycles 3
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
    model_version,
    store_for,
    write_result,
)


@dataclass
class Writes:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[str, str] = field(default_factory=dict)  # product_id -> unique word
    deleted: dict[str, str] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)  # words sent without an answer when the server died
    unexpected: list[str] = field(default_factory=list)


def writer(url: str, key: str, writes: Writes, seed: int, deadline: float) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": key}) as client:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            word = f"rr{uuid.uuid4().hex[:10]}"
            with writes.lock:
                writes.in_flight.add(word)
            try:
                form = {"title": f"Restart {word} lamp", "price": "5"}
                response = client.post(
                    "/listings", data=form, files={"photos": ("p.jpg", jpeg(seed * 100_000 + n))}
                )
            except httpx.TransportError:
                return  # the server was killed: this write's fate is checked after the restart
            if response.status_code != 201:
                with writes.lock:
                    writes.in_flight.discard(word)
                    writes.unexpected.append(f"create -> {response.status_code} {response.text[:200]}")
                continue
            product_id = response.json()["product_id"]
            with writes.lock:
                writes.in_flight.discard(word)
                writes.acknowledged[product_id] = word
            if rng.random() < 0.3:
                try:
                    response = client.delete(f"/listings/{product_id}")
                except httpx.TransportError:
                    return  # a delete in flight: either outcome is allowed
                if response.status_code == 204:
                    with writes.lock:
                        writes.deleted[product_id] = word


def warm_up(url: str, key: str, writes: Writes, seed: int) -> float:
    """One acknowledged create before the writers start: the first photo encoding after a start
    builds the model's graphs (seconds), and a kill before any acknowledgement would test nothing."""
    word = f"rr{uuid.uuid4().hex[:10]}"
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=300, headers={"X-API-Key": key}) as client:
        response = client.post(
            "/listings",
            data={"title": f"Restart {word} lamp", "price": "5"},
            files={"photos": ("p.jpg", jpeg(seed))},
        )
    response.raise_for_status()
    with writes.lock:
        writes.acknowledged[response.json()["product_id"]] = word
    return time.perf_counter() - started


def search_ids(client: httpx.Client, word: str) -> list[str]:
    response = client.get("/search", params={"q": word, "k": 10})
    response.raise_for_status()
    return [r["product_id"] for r in response.json()["results"]]


def check(url: str, writes: Writes, bundle: Path, in_flight: set[str]) -> dict[str, int]:
    """Compare what was acknowledged with what the restarted server and its database hold."""
    problems = {"lost": 0, "deleted_but_present": 0, "half_written": 0, "search_hits_missing_in_db": 0}
    with httpx.Client(base_url=url, timeout=60) as client:
        for product_id, word in writes.acknowledged.items():
            in_db = client.get(f"/listings/{product_id}").status_code == 200
            searchable = product_id in search_ids(client, word)
            if product_id in writes.deleted:
                if in_db or searchable:
                    problems["deleted_but_present"] += 1
            elif not (in_db and searchable):
                problems["lost"] += 1
                print(f"LOST {product_id}: in database {in_db}, in search {searchable}")
        landed = 0
        store = store_for(bundle, None)
        try:
            rows = store.listings_frame()
        finally:
            store.close()
        titles = dict(zip(rows["title"], rows["product_id"], strict=False))
        for word in in_flight:
            product_id = titles.get(f"Restart {word} lamp")
            hits = search_ids(client, word)
            if product_id is None:
                if any(client.get(f"/listings/{hit}").status_code != 200 for hit in hits):
                    problems["search_hits_missing_in_db"] += 1
                continue
            landed += 1
            if product_id not in hits:
                problems["half_written"] += 1
                print(f"HALF-WRITTEN {product_id}: in the database, not in search")
    problems["in_flight_writes_that_landed"] = landed
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="a bundle to copy (default: build one in --work)")
    parser.add_argument("--products", type=int, default=1000, help="listings in the built bundle")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="fbmarket-restart-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.bundle or build_bundle(work / "bundle", args.products)
    bundle = copy_bundle(source, work / "copy")
    writes = Writes()
    cycles = []
    server = ServerProcess(bundle, log_path=work / "server.log").start()
    try:
        for cycle in range(args.cycles):
            kill_after = rng.uniform(3.0, 8.0)
            warm_up_s = warm_up(server.url, server.api_key, writes, 9_000_000 + cycle)
            acknowledged_before = len(writes.acknowledged)
            deadline = time.monotonic() + kill_after + 30
            threads = [
                threading.Thread(
                    target=writer, args=(server.url, server.api_key, writes, 100 * cycle + i, deadline)
                )
                for i in range(args.writers)
            ]
            for thread in threads:
                thread.start()
            time.sleep(kill_after)
            server.kill()
            for thread in threads:
                thread.join(timeout=60)
            with writes.lock:
                acknowledged_in_window = len(writes.acknowledged) - acknowledged_before
                in_flight = set(writes.in_flight)
                writes.in_flight.clear()
            started = time.perf_counter()
            server = ServerProcess(bundle, log_path=work / "server.log", port=server.port).start()
            restart_s = time.perf_counter() - started
            result = check(server.url, writes, bundle, in_flight)
            cycles.append(
                {
                    "cycle": cycle + 1,
                    "warm_up_create_s": round(warm_up_s, 1),
                    "killed_after_s": round(kill_after, 2),
                    "acknowledged_before_kill": acknowledged_in_window,
                    "acknowledged_so_far": len(writes.acknowledged),
                    "deleted_so_far": len(writes.deleted),
                    "in_flight_at_kill": len(in_flight),
                    "restart_to_ready_s": round(restart_s, 1),
                    **result,
                }
            )
            print(cycles[-1])
    finally:
        server.stop()
    failures = sum(
        c[k]
        for c in cycles
        for k in ("lost", "deleted_but_present", "half_written", "search_hits_missing_in_db")
    )
    tested = sum(c["acknowledged_before_kill"] for c in cycles)  # 0: no kill landed among writes
    passed = failures == 0 and not writes.unexpected and tested > 0
    payload = {
        "benchmark": "api_restart",
        "bundle": str(source),
        "model_version": model_version(source, None),
        "listings_at_start": count_listings(source, None),
        "cycles": cycles,
        "acknowledged_creates": len(writes.acknowledged),
        "acknowledged_deletes": len(writes.deleted),
        "acknowledged_by_writers_before_kills": tested,
        "unexpected_responses": writes.unexpected[:10],
        "bar": "after SIGKILL mid-write and restart: database and index agree, no acknowledged listing lost",
        "passed": passed,
    }
    write_result("api_restart", payload)
    print(
        f"{args.cycles} kill/restart cycles, {len(writes.acknowledged)} acknowledged creates, "
        f"{len(writes.deleted)} deletes; problems {failures} -> {'PASS' if passed else 'FAIL'}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
