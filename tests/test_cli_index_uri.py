"""`fbmarket index --index-uri` then `fbmarket search --index-uri` on a small trained bundle: the
listings go into a milvus-lite file, and search answers from it as the embedded default does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_fixtures import copy_bundle
from test_cli_search import fbmarket

pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def bundle(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_bundle(api_bundle, tmp_path_factory.mktemp("cli_milvus") / "bundle")


def test_index_into_milvus_lite_then_search_it(bundle: Path, tmp_path: Path) -> None:
    uri = str(tmp_path / "engine.db")
    loaded = fbmarket("index", "--bundle", str(bundle), "--index-uri", uri, "--quiet")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    summary = json.loads(loaded.stdout)
    assert summary["search_engine"]["loaded"] == summary["index_size"] > 0
    assert "not_ready" not in summary
    again = json.loads(fbmarket("index", "--bundle", str(bundle), "--index-uri", uri, "--quiet").stdout)
    assert again["search_engine"]["loaded"] == summary["index_size"] and again["search_engine"]["removed"] == 0

    def search(*extra: str) -> list[dict]:
        done = fbmarket("search", "--bundle", str(bundle), "bike", "-k", "10", "--json", *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    embedded, milvus = search(), search("--index-uri", uri)
    assert milvus and len(milvus) == len(embedded)
    ids = [r["product_id"] for r in milvus]
    assert len(set(ids) & {r["product_id"] for r in embedded}) >= 0.9 * len(embedded)
    assert ids[0] == embedded[0]["product_id"]
    filtered = search("--index-uri", uri, "--max-price", "50")
    assert filtered and all(r["price"] is not None and r["price"] <= 50 for r in filtered)


def test_a_bad_index_uri_is_one_line(bundle: Path) -> None:
    done = fbmarket("search", "--bundle", str(bundle), "bike", "--index-uri", "faiss://nowhere")
    assert done.returncode == 2
    # (TensorFlow's start-up lines may come first: the error is the last line, and one line)
    assert done.stderr.strip().splitlines()[-1].startswith("fbmarket search: error: --index-uri / FBMARKET_INDEX_URI")
    assert "Traceback" not in done.stderr
