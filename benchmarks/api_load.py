"""API under load (a quality bar): 16 concurrent clients for 60 s against GET /search, on loopback.

Starts `fbmarket serve` on a bundle (default: builds one of 10,000 synthetic listings),
then drives it with wrk (Debian package `wrk`; a Python asyncio client when wrk is
absent) with a rotating mix of real title words, half of them as known buyers.
Reports requests/s, latency percentiles and errors (connection errors or any non-2xx).

    python benchmarks/api_load.py --products 10000 --work /tmp/fbmarket-load
    python benchmarks/api_load.py --bundle artifacts/ --duration 60 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from harness import (
    ServerProcess,
    build_bundle,
    count_listings,
    latency_stats,
    model_version,
    sample_queries,
    write_result,
)

WRK_SCRIPT = r"""
local paths = {}
for line in io.lines(os.getenv("FBMARKET_WRK_PATHS")) do paths[#paths + 1] = line end
local counter = 0
local threads = {}

setup = function(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  return wrk.format("GET", paths[((counter + offset) % #paths) + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def search_paths(bundle: Path, database_url: str | None, k: int) -> list[str]:
    sample = sample_queries(bundle, database_url)
    users = sample["users"]
    paths = []
    for i, query in enumerate(sample["queries"]):
        params: dict[str, str | int] = {"q": query, "k": k}
        if users and i % 2 == 0:
            params["user_id"] = users[i % len(users)]
        paths.append("/search?" + urlencode(params))
    return paths


def run_wrk(url: str, paths: list[str], connections: int, threads: int, duration: int, work: Path) -> dict:
    paths_file = work / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    script = work / "search.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    print("$", " ".join(command))
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={"FBMARKET_WRK_PATHS": str(paths_file)},
        timeout=duration + 120,
    )
    print(completed.stdout)
    match = re.search(r"WRKJSON (\{.*\})", completed.stdout)
    if completed.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = {key: raw[key] for key in ("connect", "read", "write", "status", "timeout")}
    return {
        "tool": f"wrk -t{threads} -c{connections} -d{duration}s",
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "latency_ms": {
            "p50": raw["p50_us"] / 1000,
            "p90": raw["p90_us"] / 1000,
            "p99": raw["p99_us"] / 1000,
            "max": raw["max_us"] / 1000,
            "mean": round(raw["mean_us"] / 1000, 2),
        },
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
    }


async def run_python_client(url: str, paths: list[str], connections: int, duration: int) -> dict:
    """Fallback without wrk: `connections` asyncio clients in a loop (the client shares the CPUs)."""
    latencies: list[float] = []
    errors = {"transport": 0, "status": 0}
    stop_at = time.perf_counter() + duration

    async def client(offset: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    response = await http.get(paths[i % len(paths)])
                    if response.status_code >= 400:
                        errors["status"] += 1
                except httpx.TransportError:
                    errors["transport"] += 1
                latencies.append(time.perf_counter() - started)
                i += connections

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(connections)))
    seconds = time.perf_counter() - started
    return {
        "tool": f"python asyncio httpx, {connections} clients, {duration}s",
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "latency_ms": latency_stats([s * 1000 for s in latencies], ("p50", "p90", "p99", "max", "mean"), 2),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
    }


def scrape_server_counts(url: str) -> dict[str, float]:
    """The server's own /metrics view of the run: /search requests by status."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for status, value in re.findall(
        r'fbmarket_http_requests_total\{method="GET",route="/search",status="(\d+)"\} (\S+)', text
    ):
        counts[status] = float(value)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="serve this bundle (default: build one in --work)")
    parser.add_argument("--products", type=int, default=10_000, help="listings in the built bundle")
    parser.add_argument("--work", type=Path, help="folder for the built bundle and logs (kept for re-runs)")
    parser.add_argument("--database", help="serve from this SQLAlchemy URL instead of the bundle's SQLite")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("-k", type=int, default=10, help="results per search")
    parser.add_argument(
        "--python-client", action="store_true", help="use the asyncio client even if wrk exists"
    )
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="fbmarket-load-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or build_bundle(work / "bundle", args.products)
    paths = search_paths(bundle, args.database, args.k)
    server = ServerProcess(bundle, database_url=args.database, log_path=work / "server.log")
    started = time.perf_counter()
    server.start()
    ready_s = time.perf_counter() - started
    print(f"server ready in {ready_s:.1f} s at {server.url}")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as warm:  # first calls build lazy state
            for path in paths[:20]:
                warm.get(path)
        before = scrape_server_counts(server.url)
        if shutil.which("wrk") and not args.python_client:
            result = run_wrk(server.url, paths, args.connections, args.threads, args.duration, work)
        else:
            result = asyncio.run(run_python_client(server.url, paths, args.connections, args.duration))
        after = scrape_server_counts(server.url)
    finally:
        server.stop()
    server_counts = {status: after.get(status, 0) - before.get(status, 0) for status in after}
    payload = {
        "benchmark": "api_load",
        "endpoint": "GET /search (hybrid retrieval + personalised re-ranking, half as known buyers)",
        "bundle": str(bundle),
        "listings": count_listings(bundle, args.database),
        "model_version": model_version(bundle, args.database),
        "connections": args.connections,
        "duration_s": args.duration,
        "server_ready_s": round(ready_s, 1),
        **result,
        "server_side_search_counts_by_status": server_counts,
        "bar": "0 errors, 16 concurrent clients, 60 s, loopback",
        "passed": result["errors"] == 0,
    }
    write_result("api_load", payload)
    latency = result["latency_ms"]
    print(
        f"{result['requests']:,} requests in {result['seconds']} s = {result['requests_per_s']} req/s; "
        f"p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f} ms, p99 {latency['p99']:.1f} ms; "
        f"errors {result['errors']} -> {'PASS' if payload['passed'] else 'FAIL'}"
    )
    return 0 if payload["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
