"""The error taxonomy (fbmarket/errors.py) mapped once to statuses and the JSON error shape;
anything else (ValueError and KeyError included) is a bug: a 500 with a logged traceback."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fbmarket.api.errors import install_error_handlers
from fbmarket.errors import AlreadyExistsError, BadRequestError, ImageError, NotFoundError
from fbmarket.price.model import PriceModelError

RAISED = {
    "not_found": NotFoundError("listing 'x' not found"),
    "bad": BadRequestError("location: 'Xyzzy' could not be placed", field="location", reason="location_not_placed"),
    "exists": AlreadyExistsError("product_id: listing 'a' already exists", field="product_id"),
    "price": PriceModelError("this bundle has no price model; retrain with fbmarket train"),
    "image": ImageError("not_an_image", "upload.txt is not an image"),
    "bug": ValueError("a bug, not the client's mistake"),
    "key_bug": KeyError("title"),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/raise/{name}")
    def boom(name: str) -> None:
        raise RAISED[name]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("not_found", 404, "not_found"),
        ("bad", 422, "location_not_placed"),
        ("exists", 422, "already_exists"),
        ("price", 503, "no_price_model"),
        ("image", 415, "not_an_image"),
    ],
)
def test_client_errors_keep_their_status_and_shape(client, name, status, reason) -> None:
    response = client.post(f"/raise/{name}")
    body = response.json()
    assert response.status_code == status and body["reason"] == reason
    assert body["detail"] == RAISED[name].message
    field = RAISED[name].field
    if field:
        assert body["errors"] == [
            {"loc": ["body", field], "msg": body["detail"], "type": reason, "field": field}
        ]
    else:
        assert "errors" not in body


@pytest.mark.parametrize("name", ["bug", "key_bug"])
def test_a_value_or_key_error_is_a_bug(client, caplog, name) -> None:
    with caplog.at_level(logging.ERROR, logger="fbmarket.api.errors"):
        response = client.post(f"/raise/{name}")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error", "reason": "internal"}
    assert any(record.exc_info for record in caplog.records), "the traceback is logged"
