"""The arithmetic of docs/deployment.md: 100M listings, 2,000 searches/s, from measured
per-search costs (benchmarks/serving_costs.py) and published Milvus figures (cited below).

Nothing here is measured: it multiplies. Every input is either read from a results file
(`--costs`, `--postgres`) or a named assumption in `ASSUMED` / `PUBLISHED` with its source,
so a changed assumption or a re-measured cost re-derives every row of the plan:

    python benchmarks/capacity_plan.py --costs benchmarks/results/serving_costs_dev.json \
        --postgres benchmarks/results/postgres_footprint.json

Writes benchmarks/results/capacity_plan.json and prints the tables (Markdown).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from harness import RESULTS, write_json

GIB = 1024**3

# The workload (assumptions of the plan, not measurements).
ASSUMED: dict[str, float] = {
    "listings": 100e6,
    "peak_searches_per_s": 2000,
    "share_photo_queries": 0.05,  # of searches; the rest typed (feeds cost about a typed search's ranking)
    "listing_writes_per_s": 50,  # creates + updates + deletes, daily average
    "listing_writes_per_s_peak": 200,
    "photos_per_listing": 1.76,  # the dev data's 9,312 photos / 5,297 listings (measured on it)
    "cpu_target_utilisation": 0.6,  # headroom: a replica runs at 60 % of its cores at peak
    "http_overhead_factor": 1.0,  # replaced by the measured server CPU-ms / in-process CPU-ms when given
    "milvus_replicas": 2,  # in-memory replicas of the collection: availability + read throughput
    "hnsw_m": 16,
    "ivfpq_m": 64,  # sub-quantizers of 8 bits for the 256-d embedding (4 dims each)
    "ivfpq_photo_m": 160,  # for the photo field (8 dims each)
    "scalar_bytes": 140,  # id, category (root/leaf), price + has_price, lat/lon, created, in Milvus
    "bm25_terms_per_listing": 40.2,  # unique words of title + description on the dev data (measured on it)
    "bm25_bytes_per_term": 8,  # sparse posting: 4-byte id + 4-byte weight
    "nightly_changed_share": 0.05,  # listings re-embedded each night when the backbone is unchanged
    "ray_night_hours": 4,
}

# Published figures, with where they come from (other hardware: see docs/deployment.md).
PUBLISHED: dict[str, Any] = {
    # Milvus 2.2 Benchmark Test Report, https://milvus.io/docs/v2.2.x/benchmark.md
    # (milvus-io/milvus-docs site/en/reference/benchmark.md): 1M SIFT 128-d, HNSW M=8
    # efConstruction=200, nq=1 topk=1 ef=64, one query node, Xeon Gold 6226R.
    "milvus_2_2_qps_8_cores": 7153,
    "milvus_2_2_qps_16_cores": 14135,
    "milvus_2_2_qps_32_cores": 20281,
    "milvus_2_2_bench_vectors": 1e6,
    "milvus_2_2_bench_dim": 128,
    "milvus_2_2_bench_ef": 64,
    # DISKANN defaults, https://milvus.io/docs/disk_index.md: PQ codes in memory up to
    # PQCodeBudgetGBRatio x raw size, a node cache of SearchCacheBudgetGBRatio x raw, a Vamana
    # graph of MaxDegree edges per vector on disk.
    "diskann_pq_ratio": 0.125,
    "diskann_cache_ratio": 0.10,
    "diskann_max_degree": 56,
}


def index_sizes(n: float, dim: int, m_pq: int) -> dict[str, dict[str, float]]:
    """Memory and disk (GiB) per collection replica for one float32 vector field of n vectors.

    HNSW (Malkov & Yashunin 2018; FAISS/hnswlib layout): raw vectors + 2M links of 4 bytes on
    layer 0 + about 1/(M-1) of that again on the upper layers, all in memory. IVF_PQ (Jégou et
    al. 2011): m one-byte codes + an 8-byte id per vector in memory, centroids negligible.
    DISKANN (Subramanya et al. 2019, Milvus defaults above): PQ codes and a node cache in
    memory; raw vectors + graph on local NVMe.
    """
    raw = n * dim * 4
    m = ASSUMED["hnsw_m"]
    hnsw_links = n * 2 * m * 4 * (1 + 1 / (m - 1))
    ivfpq = n * (m_pq + 8)
    disk_graph = n * (PUBLISHED["diskann_max_degree"] * 4 + 4)
    return {
        "FLAT": {"memory_gib": raw / GIB, "disk_gib": 0.0},
        "HNSW": {"memory_gib": (raw + hnsw_links) / GIB, "disk_gib": 0.0},
        "IVF_PQ": {"memory_gib": ivfpq / GIB, "disk_gib": 0.0},
        "DISKANN": {
            "memory_gib": raw * (PUBLISHED["diskann_pq_ratio"] + PUBLISHED["diskann_cache_ratio"]) / GIB,
            "disk_gib": (raw + disk_graph) / GIB,
        },
        "raw_float32_gib": {"memory_gib": raw / GIB, "disk_gib": raw / GIB},
    }


def plan(costs: dict[str, Any], postgres: dict[str, Any] | None) -> dict[str, Any]:
    bundle = costs["bundle"]
    dim, photo_dim = int(bundle["embedding_dim"]), int(bundle["photo_feature_dim"])
    per = costs["per_search_cpu_ms"]
    n = ASSUMED["listings"]

    # --- API replicas: CPU-ms per search that stays in fbmarket (measured, one core).
    text_ms, photo_ms = per["text_query_in_process"], per["photo_query_in_process"]
    server = costs.get("server") or {}
    overhead = ASSUMED["http_overhead_factor"]
    if server.get("server_cpu_ms_per_request") and per.get("search_total_embedded"):
        # the served request's CPU over the in-process search's: HTTP, JSON, framework
        overhead = max(1.0, server["server_cpu_ms_per_request"] / per["search_total_embedded"])
    mixed_ms = (1 - ASSUMED["share_photo_queries"]) * text_ms + ASSUMED["share_photo_queries"] * photo_ms
    search_cores = ASSUMED["peak_searches_per_s"] * mixed_ms * overhead / 1000
    batch = costs.get("photo_batch") or {}
    photo_single_ms = (
        costs["stages"]["photo_backbone_head"]["cpu_ms"]["mean"]
        if "photo_backbone_head" in costs["stages"]
        else 0
    )
    write_ms = (
        ASSUMED["photos_per_listing"] * photo_single_ms + costs["stages"]["encode_text"]["cpu_ms"]["mean"]
    )
    write_cores = ASSUMED["listing_writes_per_s_peak"] * write_ms / 1000
    api_cores = (search_cores + write_cores) / ASSUMED["cpu_target_utilisation"]
    api = {
        "cpu_ms_text_search": text_ms,
        "cpu_ms_photo_search": photo_ms,
        "cpu_ms_mixed_search": round(mixed_ms, 2),
        "http_overhead_factor": round(overhead, 2),
        "cores_for_searches": round(search_cores, 1),
        "cpu_ms_listing_write_encode": round(write_ms, 1),
        "cores_for_writes_at_peak": round(write_cores, 1),
        "cores_with_headroom": round(api_cores, 1),
        "replicas_of_2_cores": math.ceil(api_cores / 2),
    }

    # --- Milvus memory/disk per collection replica.
    embedding = index_sizes(n, dim, int(ASSUMED["ivfpq_m"]))
    photo = index_sizes(n, photo_dim, int(ASSUMED["ivfpq_photo_m"]))
    scalars_gib = n * ASSUMED["scalar_bytes"] / GIB
    bm25_gib = n * ASSUMED["bm25_terms_per_listing"] * ASSUMED["bm25_bytes_per_term"] / GIB
    chosen = embedding["HNSW"]["memory_gib"] + photo["DISKANN"]["memory_gib"] + scalars_gib + bm25_gib
    replicas = ASSUMED["milvus_replicas"]
    milvus_memory = {
        "embedding_hnsw_gib": round(embedding["HNSW"]["memory_gib"], 1),
        "photo_diskann_gib": round(photo["DISKANN"]["memory_gib"], 1),
        "photo_diskann_nvme_gib": round(photo["DISKANN"]["disk_gib"], 1),
        "scalars_gib": round(scalars_gib, 1),
        "bm25_sparse_gib": round(bm25_gib, 1),
        "per_replica_gib": round(chosen, 1),
        "replicas": replicas,
        "total_gib": round(chosen * replicas, 1),
        "total_with_50pct_headroom_gib": round(chosen * replicas * 1.5, 1),
    }

    # --- Milvus query-node cores: the published per-search cost scaled to this search.
    core_ms_published = 8 * 1000 / PUBLISHED["milvus_2_2_qps_8_cores"]  # 1M, 128-d, ef 64, topk 1
    dim_factor = dim / PUBLISHED["milvus_2_2_bench_dim"]
    ef = max(costs["bundle"]["search_candidates_default"], 64)
    ef_factor = ef / PUBLISHED["milvus_2_2_bench_ef"]
    scale_factor = math.log2(n) / math.log2(PUBLISHED["milvus_2_2_bench_vectors"])  # HNSW: ~log N hops
    # low: one graph over the whole collection (a lower bound: Milvus searches per segment)
    low = core_ms_published * dim_factor * ef_factor * scale_factor
    # high: every sealed segment is its own graph, searched in turn (segments of 8 GiB raw)
    segment_vectors = 8 * GIB / (dim * 4)
    segments = n / segment_vectors
    per_segment = (
        core_ms_published
        * dim_factor
        * ef_factor
        * math.log2(segment_vectors)
        / math.log2(PUBLISHED["milvus_2_2_bench_vectors"])
    )
    high = per_segment * math.ceil(segments)
    query = {
        "published_core_ms_per_search": round(core_ms_published, 3),
        "dim_factor": round(dim_factor, 2),
        "ef_factor": round(ef_factor, 2),
        "log_n_factor": round(scale_factor, 2),
        "segments_of_8_gib": round(segments, 1),
        "dense_core_ms_low": round(low, 1),
        "dense_core_ms_high": round(high, 1),
        "cores_at_peak_low": round(
            ASSUMED["peak_searches_per_s"] * low / 1000 / ASSUMED["cpu_target_utilisation"], 0
        ),
        "cores_at_peak_high": round(
            ASSUMED["peak_searches_per_s"] * high / 1000 / ASSUMED["cpu_target_utilisation"], 0
        ),
    }

    # --- Nightly embedding (Ray): backbone per photo, batched (measured, one core).
    per_photo_ms = batch.get("cpu_ms_per_photo")
    nightly: dict[str, Any] = {}
    if per_photo_ms:
        changed_photos = n * ASSUMED["nightly_changed_share"] * ASSUMED["photos_per_listing"]
        full_photos = n * ASSUMED["photos_per_listing"]
        seconds = ASSUMED["ray_night_hours"] * 3600
        nightly = {
            "cpu_ms_per_photo_batched": per_photo_ms,
            "photos_changed_per_night": round(changed_photos),
            "cores_for_changed_in_window": math.ceil(changed_photos * per_photo_ms / 1000 / seconds),
            "photos_full_reembed": round(full_photos),
            "core_hours_full_reembed": round(full_photos * per_photo_ms / 1000 / 3600),
        }

    pg: dict[str, Any] = {}
    if postgres:
        per_listing = postgres["bytes_per_listing"]
        pg = {
            "bytes_per_listing_measured": per_listing,
            "by_table": postgres["bytes_per_listing_by_table"],
            "gib_for_100m": round(per_listing * n / GIB, 1),
            "gib_with_2x_bloat_and_wal": round(2 * per_listing * n / GIB, 1),
        }
    return {
        "assumed": ASSUMED,
        "published": PUBLISHED,
        "bundle": bundle,
        "api": api,
        "milvus_index_sizes_embedding": {
            k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in embedding.items()
        },
        "milvus_index_sizes_photo": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in photo.items()},
        "milvus_memory": milvus_memory,
        "milvus_query_cores": query,
        "nightly_embedding": nightly,
        "postgres": pg,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--costs", type=Path, default=RESULTS / "serving_costs.json")
    parser.add_argument("--postgres", type=Path, help="postgres_footprint.json (optional)")
    args = parser.parse_args()
    costs = json.loads(args.costs.read_text())
    postgres = json.loads(args.postgres.read_text()) if args.postgres else None
    result = plan(costs, postgres)
    result["inputs"] = {"costs": str(args.costs), "postgres": str(args.postgres) if args.postgres else None}
    write_json(RESULTS / "capacity_plan.json", result)
    print(
        json.dumps({k: v for k, v in result.items() if k not in ("assumed", "published", "bundle")}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
