"""POST /predict/price and `fbmarket price` over the tiny trained bundle (its price model is
trained by `fbmarket train`'s price stage, training/steps.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_fixtures import LiveServer, copy_bundle, jpeg_bytes, run_server, serve_settings
from test_cli_search import fbmarket

PRICE_KEYS = {
    "median", "low", "high", "interval", "currency", "free_probability", "category", "category_source",
    "evidence", "model",
}  # fmt: skip


def test_the_trained_bundle_has_a_calibrated_price_model(api_bundle: Path) -> None:
    manifest = json.loads((api_bundle / "bundle.json").read_text())
    assert manifest["files"]["price"] == "model/price.json"
    for key in ("price_low", "price_median", "price_high"):
        assert (api_bundle / manifest["files"][key]).is_file()
    record = manifest["price"]
    assert record["calibration"]["calibrated"] is True and record["calibration"]["split"] == "val"
    assert record["evaluated_on"] == "test"
    priced = record["metrics"]["priced"]
    assert priced["n"] > 0 and 0 <= priced["coverage"] <= 1
    assert manifest["metrics"]["price"]["median_abs_error_gbp"] >= 0
    assert not list((api_bundle / "model").glob("*.pkl"))


def test_predict_price_answers_with_a_range_and_evidence(api: httpx.Client, catalogue: dict) -> None:
    response = api.post(
        "/predict/price",
        data={"title": "mountain bike 21 gears", "description": "good tyres", "location": "Leeds"},
        files=[("photos", ("p.jpg", jpeg_bytes(), "image/jpeg"))],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PRICE_KEYS
    assert 0 <= body["low"] <= body["median"] <= body["high"]
    assert body["interval"] == 0.8 and body["currency"] == "GBP" and body["model"] == "lightgbm-quantile"
    assert 0 <= body["free_probability"] <= 1
    assert body["category_source"] == "predicted"
    roots = set(catalogue["listings"]["root_category"])
    assert body["category"].split(" / ")[0] in roots
    assert " / " in body["category"], "a predicted root is refined to its most likely leaf (the leaf head)"
    evidence = body["evidence"]
    assert len(evidence) == 5
    assert all(card["price"] is not None for card in evidence)
    assert all(card["url"].startswith("/listings/") for card in evidence)
    scores = [card["score"] for card in evidence]
    same_root = [card["root_category"] == body["category"].split(" / ")[0] for card in evidence]
    # same-root listings first (when the category has that many), each group by similarity
    assert same_root == sorted(same_root, reverse=True)
    assert scores[: sum(same_root)] == sorted(scores[: sum(same_root)], reverse=True)


def test_predict_price_with_a_given_category_uses_it(api: httpx.Client, catalogue: dict) -> None:
    listing = catalogue["listings"].iloc[0]
    response = api.post(
        "/predict/price", data={"title": str(listing["title"]), "category": listing["category"]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["category"] == listing["category"] and body["category_source"] == "given"
    assert all(card["root_category"] == listing["root_category"] for card in body["evidence"][:1])
    again = api.post("/predict/price", data={"title": str(listing["title"]), "category": listing["category"]})
    assert again.json() == body, "the same draft gets the same suggestion (nothing was written)"


def test_predict_price_refuses_what_it_cannot_price(api: httpx.Client) -> None:
    missing = api.post("/predict/price", data={"description": "no title"})
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["title"]
    blank = api.post("/predict/price", data={"title": "   "})
    assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "title"
    unknown = api.post("/predict/price", data={"title": "a lamp", "category": "Spaceships / Rockets"})
    assert unknown.status_code == 422
    error = unknown.json()["errors"][0]
    assert error["field"] == "category" and error["type"] == "unknown_category" and error["valid_roots"]
    photo = api.post(
        "/predict/price", data={"title": "a lamp"}, files=[("photos", ("x.jpg", b"not a jpeg", "image/jpeg"))]
    )
    assert photo.status_code in (415, 422)
    assert photo.json()["errors"][0]["loc"] == ["body", "photos[0]"]


@pytest.fixture(scope="module")
def server_without_price_model(
    api_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A bundle as trained before the price model existed: no model/price*.{json,txt}."""
    from fbmarket.api.app import create_app
    from fbmarket.service import Marketplace

    bundle = copy_bundle(api_bundle, tmp_path_factory.mktemp("noprice") / "bundle")
    for path in (bundle / "model").glob("price*"):
        path.unlink()
    market = Marketplace.open(bundle)
    settings = serve_settings("k")
    try:
        with run_server(create_app(market, settings)) as url:
            yield LiveServer(url, "k", settings, bundle, market)
    finally:
        market.close()


def test_a_bundle_without_a_price_model_still_serves_and_says_503(
    server_without_price_model: LiveServer,
) -> None:
    with server_without_price_model.client() as client:
        assert client.get("/ready").status_code == 200
        assert client.get("/search", params={"q": "bike"}).status_code == 200
        response = client.post("/predict/price", data={"title": "mountain bike"})
    assert response.status_code == 503
    body = response.json()
    assert body["reason"] == "no_price_model"
    assert "this bundle has no price model; retrain with fbmarket train" in body["detail"]


def test_cli_price_prints_the_range_and_evidence(api_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(api_bundle, tmp_path / "bundle")
    photo = tmp_path / "bike.jpg"
    photo.write_bytes(jpeg_bytes())
    completed = fbmarket(
        "price", "--bundle", str(bundle), "--title", "mountain bike", "--location", "Leeds", "--image", str(photo),
        "--json",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    suggestion = json.loads(completed.stdout)
    assert suggestion["low"] <= suggestion["median"] <= suggestion["high"]
    assert len(suggestion["evidence"]) == 5 and suggestion["category_source"] == "predicted"
    text = fbmarket("price", "--bundle", str(bundle), "--title", "mountain bike")
    assert text.returncode == 0, text.stderr[-3000:]
    assert "suggested price: £" in text.stdout and "P(free)" in text.stdout and "evidence" in text.stdout
    for path in (bundle / "model").glob("price*"):
        path.unlink()
    shutil.rmtree(bundle / "index", ignore_errors=True)  # rebuilt on open; the answer is the error
    refused = fbmarket("price", "--bundle", str(bundle), "--title", "mountain bike")
    assert refused.returncode == 2
    assert "no price model" in refused.stderr
