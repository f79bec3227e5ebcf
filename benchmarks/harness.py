"""The benchmark harness every script in benchmarks/ shares, so none keeps its own copy.

- where things are: `REPO` (importing this module also puts the repository first on
  `sys.path`, so a script runs from a checkout without installing), `DEV_DATA` (the real
  dev data beside it), `RESULTS` (benchmarks/results/);
- timing: `latency_stats` summarises latencies (percentiles by numpy's linear interpolation,
  mean, max) in the one rounding each report uses;
- results: `write_json` (atomic, numpy values as plain numbers) and `write_result`
  (benchmarks/results/<name>.json with the machine it ran on);
- the API benchmarks: a bundle to serve (`build_bundle`, `copy_bundle`), `fbmarket serve` as a
  real subprocess on a free loopback port (`ServerProcess`), and the bundle's database.

Every benchmark talks to 127.0.0.1 only, with bounded loops that stop by themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DEV_DATA = REPO.parent / "shared" / "data" / "gumtree-dev"
RESULTS = REPO / "benchmarks" / "results"


def bundle_parser(doc: str, default_out: Path) -> argparse.ArgumentParser:
    """The arguments every benchmark of a trained dev bundle takes: `--bundle DIR` (required)
    and `--out FILE` (default `default_out`); `doc` is the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=default_out)
    return parser


def no_bundle(bundle: Path) -> bool:
    """True, having said why, when `bundle` holds no trained bundle: the benchmark skips (exit 0)."""
    from fbmarket.layout import BundleLayout

    if BundleLayout(bundle).manifest.is_file():
        return False
    print(f"skipped: no trained bundle at {bundle} (train one on the dev data first)")
    return True


def latency_stats(
    values_ms: Sequence[float],
    keys: Sequence[str] = ("p50", "p99", "mean"),
    digits: int = 3,
    suffix: str = "",
) -> dict[str, float]:
    """Latencies (ms) summarised: "pNN" is the NN-th percentile (numpy, linear interpolation),
    "mean" and "max" what they say; each key gets `suffix` ("p99" + "_ms"). No values: NaN."""
    a = np.asarray(values_ms, dtype=float)
    out: dict[str, float] = {}
    for key in keys:
        if a.size == 0:
            value = float("nan")
        elif key == "mean":
            value = float(a.mean())
        elif key == "max":
            value = float(a.max())
        elif key.startswith("p"):
            value = float(np.percentile(a, float(key[1:])))
        else:
            raise ValueError(f"unknown statistic {key!r}: use pNN, mean or max")
        out[f"{key}{suffix}"] = round(value, digits)
    return out


def _plain(value: Any) -> Any:
    """json.dumps' fallback: numpy scalars and arrays as numbers and lists, anything else as text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: Path, payload: Any) -> Path:
    """Write a result file atomically (a crash never leaves half a report) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=_plain) + "\n")
    temporary.replace(path)
    print(f"wrote {path}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_bundle(out_dir: Path, products: int, seed: int = 42) -> Path:
    """Train the quick pipeline on `products` synthetic listings into `out_dir` (skipped if it exists)."""
    from fbmarket.layout import BundleLayout

    if BundleLayout(out_dir).settings.is_file():
        print(f"using the bundle already in {out_dir}")
        return out_dir
    from fbmarket.config import Settings
    from fbmarket.workflow import run

    settings = Settings().apply_quick()
    settings.data.sample_products = products  # after apply_quick, which caps it
    settings.out_dir = out_dir
    settings.seed = seed
    started = time.perf_counter()
    run(settings, show_progress=True)
    print(
        f"bundle of {products:,} synthetic listings built in {time.perf_counter() - started:.0f} s: {out_dir}"
    )
    return out_dir


def copy_bundle(bundle: Path, destination: Path) -> Path:
    """Benchmarks that write or kill the server work on a copy, never on the bundle given."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(bundle, destination)
    return destination


@dataclass
class ServerProcess:
    """`fbmarket serve` in a subprocess on a free loopback port."""

    bundle: Path
    api_key: str = "bench-key"
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. FBMARKET_INDEX_URI for a shared engine

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "fbmarket.cli", "serve", "--bundle", str(self.bundle)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.database_url:
            command += ["--database", self.database_url]
        return command

    def start(self, timeout: float = 300.0) -> ServerProcess:
        env = {**os.environ, "FBMARKET_API_KEY": self.api_key, "TF_CPP_MIN_LOG_LEVEL": "2", **self.env}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> float:
        """Seconds until /ready answered 200."""
        import httpx  # a test dependency: only the API benchmarks need it

        started = time.perf_counter()
        deadline = started + timeout
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.perf_counter() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with {self.process.returncode}; see {self.log_path}"
                    )
                try:
                    if client.get("/ready").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        raise TimeoutError(f"the server was not ready after {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a power cut or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def machine() -> dict[str, Any]:
    """What a figure was measured on (it depends on it)."""
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json, with the machine it was measured on."""
    return write_json(RESULTS / f"{name}.json", {**payload, "machine": machine()})


def sample_queries(
    bundle: Path, database_url: str | None, n: int = 200, seed: int = 0
) -> dict[str, list[str]]:
    """Realistic search words (two words from real titles) and buyer ids from the bundle's database."""
    import random

    import sqlalchemy as sa

    from fbmarket.data import store as db

    store = store_for(bundle, database_url)
    try:
        titles = store.listings_frame()["title"].astype(str).tolist()
        with store.engine.connect() as connection:
            users = [row[0] for row in connection.execute(sa.select(db.users.c.user_id).limit(500))]
    finally:
        store.close()
    rng = random.Random(seed)
    queries = []
    for title in rng.sample(titles, min(n, len(titles))):
        words = [w for w in title.split() if len(w) > 2] or title.split()
        queries.append(" ".join(words[:2]))
    return {"queries": queries, "users": users}


def store_for(bundle: Path, database_url: str | None):
    from fbmarket.config import Settings
    from fbmarket.data.store import Store

    settings = Settings()
    settings.out_dir = Path(bundle)
    settings.database_url = database_url
    return Store(settings.db_url)


def model_version(bundle: Path, database_url: str | None) -> str | None:
    """The embedding model the served vectors came from (recorded with every figure)."""
    import sqlalchemy as sa

    from fbmarket.data.store import embeddings

    store = store_for(bundle, database_url)
    try:
        with store.engine.connect() as connection:
            return connection.execute(sa.select(embeddings.c.model_version).limit(1)).scalar()
    finally:
        store.close()


def copy_database(source_url: str, target_url: str) -> int:
    """Every table of one fbmarket database into another (empty) one, row for row; returns the
    rows copied. For moving a bundle's SQLite database to the PostgreSQL that replicas share."""
    import sqlalchemy as sa

    from fbmarket.data import store as db

    source, target = db.Store(source_url), db.Store(target_url)
    copied = 0
    try:
        for table in db.metadata.sorted_tables:
            with source.engine.connect() as connection:
                rows = [dict(row) for row in connection.execute(sa.select(table)).mappings()]
            if table.name == "interactions":  # the target numbers them
                rows = [{k: v for k, v in row.items() if k != "id"} for row in rows]
            if rows:
                with target.engine.begin() as connection:
                    connection.execute(sa.insert(table), rows)
            copied += len(rows)
    finally:
        source.close()
        target.close()
    return copied


def count_listings(bundle: Path, database_url: str | None) -> int:
    store = store_for(bundle, database_url)
    try:
        return store.count("listings")
    finally:
        store.close()


def jpeg(seed: int, size: int = 96) -> bytes:
    """A small, distinct, real JPEG for write benchmarks."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
