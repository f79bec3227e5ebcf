"""Per-search costs that stay in fbmarket whatever the retrieval engine is: the inputs of the
capacity plan in docs/deployment.md.

With Milvus as the engine (issue 11), nearest-neighbour search and BM25 move out of the API
process; what each `fbmarket serve` replica still spends per search is the query encoding
(words; a photo: decode + backbone + image head + query encoder), the fusion of the
candidate lists, the learned ranker over the candidates and the assembly of the results.
This script times each of those on its own, single-threaded (TensorFlow, BLAS and FAISS
limited to one thread, so a figure is one core's work), as wall and CPU milliseconds with
p50/p99 (numpy percentiles, linear interpolation: harness.latency_stats):

- `encode_text`: `Bundle.encode_query(text)` for 1-3 title words or a leaf name;
- `photo_*`: JPEG bytes -> PIL image (`decode`), `Bundle.photo_query` (backbone + image
  head) and `Bundle.encode_query(photo_features=...)`, on photos from the bundle's cache;
- `retrieval_embedded`: FAISS + BM25 search of the embedded default (what Milvus replaces;
  timed so the two halves add up to the whole search);
- `fusion`: `HybridSearcher._score_candidates` over those lists (cosine of lexical-only
  hits, BM25 of semantic-only hits, min-max blend);
- `rank_N`: the learned ranker (`RankingModels.personalise`) over N candidates for a known
  buyer, N = the default `SearchSettings.candidates` and others (`--candidates`);
- `assemble`: ranked ids -> `ListingResult`s (`Marketplace._results`);
- `search_total`: the whole `Marketplace.search` (known buyer, default settings);
- `photo_batch_per_photo`: the backbone over photos in batches of 32 as `fbmarket index`
  and a batch embedding job run it (the per-photo cost of the nightly re-embedding).

Then, unless `--no-load`, the throughput of one `fbmarket serve` process on loopback: the
`benchmarks/api_load.py` run (wrk if installed, else its asyncio client, which shares the
machine's cores with the server) with the server process's CPU seconds read from
/proc/<pid>/stat before and after, so CPU-ms per request counts HTTP, JSON and the
framework as well as the stages above.

The bundle is never written: it is opened through a copy whose files are hard links
(any file the server replaces is replaced by rename, leaving the original alone) and whose
SQLite databases are real copies (SQLite writes in place).

    python benchmarks/serving_costs.py --bundle artifacts
    python benchmarks/serving_costs.py --bundle /work/dev-bundle --queries 300 --load-duration 30

Results: benchmarks/results/serving_costs.json (and .md, a table); `--name` changes the
file name, e.g. to keep one file per bundle.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ[_variable] = "1"  # single-threaded figures: set before numpy/TF/FAISS load
os.environ["TF_NUM_INTEROP_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from harness import RESULTS, ServerProcess, latency_stats, machine, write_json  # noqa: E402

STATS = ("p50", "p90", "p99", "mean", "max")
WARMUP = 10
DEFAULT_CANDIDATES = (50, 200, 500, 1000)


def single_threaded() -> None:
    """TensorFlow and FAISS on one thread (TF's must be set before its runtime starts)."""
    import faiss
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    faiss.omp_set_num_threads(1)


def linked_copy(bundle: Path, destination: Path) -> Path:
    """`bundle` as hard links under `destination`, its SQLite files copied for real."""
    if destination.exists():
        shutil.rmtree(destination)

    def link(source: str, target: str) -> str:
        if source.endswith((".db", ".db-wal", ".db-shm", ".sqlite")):
            return shutil.copy2(source, target)
        try:
            os.link(source, target)
        except OSError:  # another file system: a real copy
            shutil.copy2(source, target)
        return target

    shutil.copytree(bundle, destination, copy_function=link)
    return destination


class Clock:
    """Wall and CPU (this process) milliseconds of named stages."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def time(self, name: str, fn: Callable[[], Any], record: bool = True) -> Any:
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        if record:
            self.cpu.setdefault(name, []).append((time.process_time() - c) * 1000)
            self.wall.setdefault(name, []).append((time.perf_counter() - w) * 1000)
        return out

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "n": len(self.wall[name]),
                "wall_ms": latency_stats(self.wall[name], STATS),
                "cpu_ms": latency_stats(self.cpu[name], STATS),
            }
            for name in self.wall
        }


def text_stages(
    market: Any, requests: list[Any], candidate_sizes: list[int], clock: Clock
) -> dict[str, float]:
    """Every stage of a typed search, called as `Marketplace.search` calls it; returns the mean
    number of candidates each `rank_N` actually received (fewer when fewer listings match)."""
    from fbmarket.recommend.personalise import RankRequest

    searcher = market.searcher
    n_default = market.settings.search.candidates
    received: dict[int, list[int]] = {n: [] for n in candidate_sizes}
    for i, request in enumerate(requests):
        record = i >= WARMUP
        buyer, _, _ = market._buyer(request.buyer)
        text = request.query
        vector = clock.time("encode_text", lambda t=text: market.model.encode_query(t, None), record)
        semantic, lexical = clock.time(
            "retrieval_embedded",
            lambda v=vector, t=text: (
                searcher.vectors.search(v, n_default, None),
                searcher.lexical.search(t, n_default, None),
            ),
            record,
        )
        frame = clock.time(
            "fusion",
            lambda v=vector, t=text, s=semantic, lx=lexical: searcher._score_candidates(
                v, t, s, lx, n_default
            ),
            record,
        )
        for n in candidate_sizes:
            candidates = frame if n == n_default else searcher.retrieve(vector, text, None, n=n).frame
            if record:
                received[n].append(len(candidates))
            ranked = clock.time(
                f"rank_{n}",
                lambda b=buyer, c=candidates, k=request.k: market.ranking.personalise(
                    RankRequest(b, market.catalogue.view(), k=k, candidates=c)
                ),
                record,
            )
            if n == n_default:
                clock.time("assemble", lambda r=ranked: market._results(r.results), record)
        clock.time("search_total", lambda r=request: market.search(r), record)
    return {f"rank_{n}": round(float(np.mean(v)), 1) for n, v in received.items() if v}


def photo_paths(market: Any, count: int, seed: int) -> list[Path]:
    """Up to `count` photo files of the bundle's cache (the cleaned copies training used)."""
    from fbmarket.data import schema as S

    frame = market.store.images_frame()
    paths = [Path(p) for p in frame[S.IMAGE_PATH].dropna().astype(str) if Path(p).is_file()]
    rng = np.random.default_rng(seed)
    if len(paths) > count:
        paths = [paths[i] for i in rng.choice(len(paths), count, replace=False)]
    return paths


def photo_stages(market: Any, paths: list[Path], clock: Clock) -> None:
    """A photo query: decode, backbone + image head, query encoder (each timed)."""
    from PIL import Image

    blobs = [p.read_bytes() for p in paths]
    for i, blob in enumerate(blobs * (1 + WARMUP // max(len(blobs), 1))):
        record = i >= WARMUP

        def decode(b: bytes = blob) -> Image.Image:
            image = Image.open(io.BytesIO(b))
            image.load()
            return image

        image = clock.time("photo_decode", decode, record)
        photo = clock.time("photo_backbone_head", lambda im=image: market.model.photo_query(im), record)
        clock.time(
            "photo_encode_query",
            lambda p=photo: market.model.encode_query(None, photo_features=p.features),
            record,
        )


def photo_batch(market: Any, count: int) -> dict[str, Any]:
    """The backbone over `count` photos in the batch path `fbmarket index` uses (no feature cache)."""
    from fbmarket.data import schema as S

    images = market.store.images_frame()
    images = images[images[S.IMAGE_PATH].astype(str).map(lambda p: Path(p).is_file())].head(count)
    if images.empty:
        return {"photos": 0}
    market.model._photo_features(images.head(min(32, len(images))), False, False)  # warm-up: graph traced
    w, c = time.perf_counter(), time.process_time()
    market.model._photo_features(images, False, False)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {
        "photos": len(images),
        "batch_size": 32,
        "wall_ms_per_photo": round(wall * 1000 / len(images), 2),
        "cpu_ms_per_photo": round(cpu * 1000 / len(images), 2),
        "photos_per_s_one_core": round(len(images) / cpu, 1) if cpu > 0 else None,
    }


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc/<pid>/stat, clock ticks -> seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc/<pid>/status VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def server_throughput(bundle: Path, work: Path, duration: int, connections: int) -> dict[str, Any]:
    """api_load.py's drive of GET /search against one `fbmarket serve`, plus its CPU seconds."""
    import httpx
    from api_load import run_python_client, run_wrk, scrape_server_counts, search_paths

    paths = search_paths(bundle, None, 10)
    server = ServerProcess(bundle, log_path=work / "server.log")
    started = time.perf_counter()
    server.start()
    ready_s = time.perf_counter() - started
    try:
        with httpx.Client(base_url=server.url, timeout=30) as warm:
            for path in paths[:20]:
                warm.get(path)
        before_counts = scrape_server_counts(server.url)
        assert server.process is not None
        cpu_before = process_cpu_seconds(server.process.pid)
        if shutil.which("wrk"):
            result = run_wrk(server.url, paths, connections, 2, duration, work)
        else:
            result = asyncio.run(run_python_client(server.url, paths, connections, duration))
        cpu_seconds = process_cpu_seconds(server.process.pid) - cpu_before
        rss_mib = process_rss_mib(server.process.pid)
        after_counts = scrape_server_counts(server.url)
    finally:
        server.stop()
    served = {s: after_counts.get(s, 0) - before_counts.get(s, 0) for s in after_counts}
    requests = int(sum(served.values())) or result["requests"]
    return {
        **result,
        "server_ready_s": round(ready_s, 1),
        "server_side_search_counts_by_status": served,
        "server_cpu_s": round(cpu_seconds, 2),
        "server_cpu_ms_per_request": round(cpu_seconds * 1000 / max(requests, 1), 2),
        "server_cores_busy": round(cpu_seconds / result["seconds"], 2),
        "server_rss_mib_after_load": rss_mib,
        "note": "one process, default settings; the load generator ran on the same machine"
        + ("" if shutil.which("wrk") else " (Python asyncio client: it takes CPU from the server)"),
    }


def bundle_facts(bundle: Path, market: Any) -> dict[str, Any]:
    from fbmarket.layout import BundleLayout

    manifest = json.loads(BundleLayout(bundle).manifest.read_text())
    return {
        "path": str(bundle),
        "listings": len(market.catalogue),
        "photos": int(market.store.count("images")),
        "embedding_dim": manifest.get("embedding_dim"),
        "photo_feature_dim": manifest.get("feature_dim"),
        "backbone": manifest.get("backbone"),
        "backbone_input_px": getattr(market.model, "backbone_size", None),
        "model_version": market.model.version,
        "search_candidates_default": market.settings.search.candidates,
        "vector_index": getattr(market.searcher.vectors, "factory", None),
    }


def markdown(payload: dict[str, Any]) -> str:
    b = payload["bundle"]
    lines = [
        "# Per-search costs in an fbmarket process (benchmarks/serving_costs.py)",
        "",
        f"Bundle `{b['path']}`: {b['listings']:,} listings, {b['photos']:,} photos, embedding "
        f"{b['embedding_dim']} floats, photo features {b['photo_feature_dim']} ({b['backbone']}), "
        f"{b['search_candidates_default']} candidates by default. Single-threaded, "
        f"{payload['machine']['cpus']} cores, load average before {payload['load_before']}, "
        f"after {payload['load_after']}. Measured {payload['measured_at']}.",
        "",
        "| stage | n | CPU p50 ms | CPU p99 ms | CPU mean ms | wall p50 ms | wall p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in payload["stages"].items():
        lines.append(
            f"| {name} | {s['n']} | {s['cpu_ms']['p50']:.2f} | {s['cpu_ms']['p99']:.2f} | "
            f"{s['cpu_ms']['mean']:.2f} | {s['wall_ms']['p50']:.2f} | {s['wall_ms']['p99']:.2f} |"
        )
    lines += [
        "",
        "Candidates the ranker actually received (mean): "
        + ", ".join(f"{k} {v}" for k, v in payload["candidates_received"].items()),
        "",
    ]
    per = payload["per_search_cpu_ms"]
    lines += [
        "Per search, CPU ms (means) that stay in the API process whatever the engine:",
        "",
        f"- typed query: {per['text_query_in_process']:.2f} (encode + fusion + rank_{b['search_candidates_default']} + assemble)",
        f"- photo query: {per['photo_query_in_process']:.2f} (decode + backbone/head + encode + fusion + rank + assemble)",
        f"- embedded retrieval that an engine replaces: {per['retrieval_embedded']:.2f}",
        "",
    ]
    batch = payload.get("photo_batch") or {}
    if batch.get("photos"):
        lines += [
            f"Batch photo features (backbone, batches of 32, {batch['photos']} photos): "
            f"{batch['cpu_ms_per_photo']} CPU ms per photo = {batch['photos_per_s_one_core']} photos/s per core.",
            "",
        ]
    load = payload.get("server")
    if load:
        lat = load["latency_ms"]
        lines += [
            f"One `fbmarket serve` process, GET /search ({load['tool']}): {load['requests_per_s']} requests/s, "
            f"p50 {lat['p50']} ms, p99 {lat['p99']} ms, errors {load['errors']}; server CPU "
            f"{load['server_cpu_ms_per_request']} ms per request ({load['server_cores_busy']} cores busy), "
            f"resident memory {load.get('server_rss_mib_after_load')} MiB after the run. "
            f"{load['note']}.",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True, help="a trained bundle (never written)")
    parser.add_argument("--queries", type=int, default=200, help="typed queries timed (after 10 warm-up)")
    parser.add_argument("--photos", type=int, default=40, help="photo queries timed")
    parser.add_argument("--batch-photos", type=int, default=256, help="photos in the batch-embedding figure")
    parser.add_argument(
        "--candidates", default=",".join(map(str, DEFAULT_CANDIDATES)), help="ranker sizes N, comma-separated"
    )
    parser.add_argument("--load-duration", type=int, default=30, help="seconds of HTTP load (0: none)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-load", action="store_true", help="skip the HTTP throughput run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--name", default="serving_costs", help="result file name (benchmarks/results/NAME.json)"
    )
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()

    from fbmarket.layout import BundleLayout

    if not BundleLayout(args.bundle).manifest.is_file():
        parser.error(f"{args.bundle} is not a trained bundle (no {BundleLayout(args.bundle).manifest.name})")
    single_threaded()
    from search_e2e_latency import make_queries, scenarios

    from fbmarket.service import Marketplace

    work = args.work or Path(tempfile.mkdtemp(prefix="fbmarket-costs-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        copy = linked_copy(args.bundle, work / "bundle")
        market = Marketplace.open(copy)
        try:
            sizes = sorted({int(n) for n in args.candidates.split(",")} | {market.settings.search.candidates})
            queries = make_queries(market, args.queries + WARMUP, args.seed)
            requests = scenarios(market, queries, args.seed)["known_buyer"]
            clock = Clock()
            received = text_stages(market, requests, sizes, clock)
            photo_stages(market, photo_paths(market, args.photos, args.seed), clock)
            batch = photo_batch(market, args.batch_photos)
            facts = bundle_facts(args.bundle, market)
        finally:
            market.store.close()
        stages = clock.stats()
        n_default = facts["search_candidates_default"]

        def mean(name: str) -> float:
            return stages[name]["cpu_ms"]["mean"] if name in stages else float("nan")

        shared = mean("fusion") + mean(f"rank_{n_default}") + mean("assemble")
        per_search = {
            "text_query_in_process": round(mean("encode_text") + shared, 3),
            "photo_query_in_process": round(
                mean("photo_decode") + mean("photo_backbone_head") + mean("photo_encode_query") + shared, 3
            ),
            "retrieval_embedded": round(mean("retrieval_embedded"), 3),
            "search_total_embedded": round(mean("search_total"), 3),
        }
        server = None
        if not args.no_load and args.load_duration > 0:
            server = server_throughput(copy, work, args.load_duration, args.connections)
        payload = {
            "benchmark": "serving_costs",
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "bundle": facts,
            "threads": 1,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "stages": stages,
            "candidates_received": received,
            "per_search_cpu_ms": per_search,
            "photo_batch": batch,
            "server": server,
            "machine": machine(),
        }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(RESULTS / f"{args.name}.json", payload)
    (RESULTS / f"{args.name}.md").write_text(markdown(payload) + "\n")
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
