"""A real Milvus for the tests: milvus-lite's server (the Milvus C++ core, the pymilvus protocol)
on a free loopback port, stopped after; and the PostgreSQL database several API processes share.

Registered from tests/conftest.py (`pytest_plugins`). `milvus_lite_server` is also what
benchmarks/api_replicas.py starts.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def milvus_lite_server(folder: Path, name: str = "replicas.db", timeout: float = 60.0) -> Iterator[str]:
    """Start milvus-lite's server on 127.0.0.1 (never 0.0.0.0) with its data in `folder/name`
    (the name must match ^[a-zA-Z0-9.\\-_]+$, at most 36 characters); yields its URI,
    "milvus://127.0.0.1:<port>" (what `index_uri` takes); stops it on exit."""
    with warnings.catch_warnings():  # milvus_lite imports pkg_resources (setuptools < 81)
        warnings.simplefilter("ignore", UserWarning)
        from milvus_lite.server import Server
    port = _free_port()
    server = Server(str(Path(folder) / name), address=f"127.0.0.1:{port}")
    if not server.init():
        raise RuntimeError("milvus-lite server failed to initialise")
    if not server.start():
        raise RuntimeError("milvus-lite server failed to start")
    try:
        deadline = time.monotonic() + timeout
        while True:  # the port answers once the server is up
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"milvus-lite did not listen on 127.0.0.1:{port}") from None
                time.sleep(0.1)
        yield f"milvus://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def milvus_uri(tmp_path: Path) -> Iterator[str]:
    """A fresh milvus-lite server for one test (skipped when milvus-lite is not installed)."""
    pytest.importorskip("milvus_lite", reason="milvus-lite is in requirements.txt")
    with milvus_lite_server(tmp_path) as uri:
        yield uri


def postgres_url_or_skip() -> str:
    """FBMARKET_TEST_POSTGRES_URL; CI must set it (.ci/run), elsewhere the test is skipped."""
    url = os.environ.get("FBMARKET_TEST_POSTGRES_URL")
    if not url:
        message = (
            "API replicas share a PostgreSQL database: set FBMARKET_TEST_POSTGRES_URL "
            "(export FBMARKET_TEST_POSTGRES_URL=$(bash .ci/postgres.sh))"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url
