"""`fbmarket index` and `fbmarket search` as a user runs them, on a small trained bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_fixtures import copy_bundle, jpeg_bytes

from fbmarket.synthetic.marketplace import write_sample

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"product_id", "title", "category", "price", "location", "distance_km", "score", "factors"}


def fbmarket(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "fbmarket.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def bundle(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_bundle(api_bundle, tmp_path_factory.mktemp("cli") / "bundle")


def test_search_json_has_the_documented_fields(bundle: Path) -> None:
    completed = fbmarket(
        "search", "--bundle", str(bundle), "bike", "-k", "5", "--json", "--lat", "51.5", "--lon", "-0.12"
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout)
    assert 1 <= len(results) <= 5
    for result in results:
        assert set(result) >= RESULT_KEYS
        assert result["score"] == pytest.approx(sum(result["factors"].values()), abs=1e-4)
        assert result["distance_km"] is None or result["distance_km"] >= 0


def test_index_adds_a_new_folder_and_search_finds_it(bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "more"
    write_sample(folder, n_products=60, seed=777, show_progress=False)
    products = pd.read_csv(folder / "Products.csv", index_col=0, lineterminator="\n", dtype=str)
    completed = fbmarket("index", "--bundle", str(bundle), "--data", str(folder), "--quiet")
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout)
    assert 0 < summary["indexed"] <= len(products)

    new_ids = set(products["id"])
    title = next(
        t.split("|")[0].strip()
        for t, pid in zip(products["product_name"], products["id"], strict=True)
        if isinstance(t, str)
    )
    found = fbmarket("search", "--bundle", str(bundle), title, "-k", "20", "--json")
    assert found.returncode == 0, found.stderr[-3000:]
    assert new_ids & {r["product_id"] for r in json.loads(found.stdout)}

    again = fbmarket("index", "--bundle", str(bundle), "--data", str(folder), "--quiet")  # idempotent
    assert json.loads(again.stdout)["index_size"] == summary["index_size"]


def test_search_errors_are_messages_not_tracebacks(bundle: Path) -> None:
    empty = fbmarket("search", "--bundle", str(bundle), "   ")
    assert empty.returncode == 2 and "empty query" in empty.stderr
    bad_k = fbmarket("search", "--bundle", str(bundle), "sofa", "-k", "0")
    assert bad_k.returncode == 2 and "-k: '0': must be from 1 to 100" in bad_k.stderr
    cold = fbmarket("search", "--bundle", str(bundle), "sofa", "--user", "no-such-user")
    assert cold.returncode == 0 and "cold-start" in cold.stdout
    missing = fbmarket("search", "--bundle", str(bundle / "nope"), "sofa")
    assert missing.returncode == 2 and "not a model bundle" in missing.stderr


def test_a_lazy_bundle_loads_what_a_query_needs_and_answers_alike(bundle: Path, tmp_path: Path) -> None:
    """`fbmarket search` opens the bundle lazily: a typed query must not wait for the photo models."""
    import io

    from PIL import Image

    from fbmarket.bundle import PARTS, Bundle

    eager, lazy = Bundle.load(bundle), Bundle.load(bundle, lazy=True)
    assert eager.loaded_parts == PARTS and lazy.loaded_parts == ()
    np.testing.assert_allclose(lazy.encode_query("kids bike"), eager.encode_query("kids bike"), atol=1e-6)
    assert lazy.loaded_parts == ()
    photo = Image.open(io.BytesIO(jpeg_bytes()))
    np.testing.assert_allclose(lazy.encode_query("bike", photo), eager.encode_query("bike", photo), atol=1e-5)
    assert lazy.loaded_parts == ("backbone",)

    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes())
    found = fbmarket(
        "search", "--bundle", str(bundle), "bike", "--image", str(tmp_path / "photo.jpg"), "--json"
    )
    assert found.returncode == 0, found.stderr[-3000:]
    assert json.loads(found.stdout) and "bm25s" not in found.stderr and "faiss.loader" not in found.stderr


def test_search_says_when_no_word_is_known_and_refuses_bad_filters(bundle: Path) -> None:
    """Issue 14 in the CLI: unknown words, a misspelt or lower-case category, an unplaceable town."""
    unknown = fbmarket("search", "--bundle", str(bundle), "xqzvvk blorf")
    assert unknown.returncode == 0, unknown.stderr[-3000:]
    assert "note: no results: no word of 'xqzvvk blorf' is known" in unknown.stdout
    assert "0 result(s)" in unknown.stdout and "retrieval none" in unknown.stdout
    as_json = fbmarket("search", "--bundle", str(bundle), "диван", "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []
    assert "note: no results: no word of 'диван'" in as_json.stderr

    lower = fbmarket(
        "search", "--bundle", str(bundle), "good condition", "--category", "home & garden", "--json"
    )
    assert lower.returncode == 0, lower.stderr[-3000:]
    results = json.loads(lower.stdout)
    assert results and all(r["category"].startswith("Home & Garden") for r in results)

    misspelt = fbmarket("search", "--bundle", str(bundle), "sofa", "--category", "Home & Gardn")
    assert misspelt.returncode == 2 and "Traceback" not in misspelt.stderr
    assert (
        "unknown category 'Home & Gardn'" in misspelt.stderr
        and "Did you mean 'Home & Garden'?" in misspelt.stderr
    )
    assert "the roots are" in misspelt.stderr

    nowhere = fbmarket(
        "search", "--bundle", str(bundle), "sofa", "--location", "Xyzzyville", "--max-distance-km", "20"
    )
    assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
    assert "location 'Xyzzyville' could not be placed" in nowhere.stderr
