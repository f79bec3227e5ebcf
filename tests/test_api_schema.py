"""Schemathesis fuzzes every operation of the live server's OpenAPI schema: never a 500.

It runs against its own server over a copy of the bundle, so the random listings it
creates (with the API key) never show up in the other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import LiveServer, copy_bundle, run_server, serve_settings
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in requirements-dev.txt")
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def fuzz_server(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from fbmarket.api.app import create_app
    from fbmarket.service import Marketplace

    bundle = copy_bundle(api_bundle, tmp_path_factory.mktemp("fuzz") / "bundle")
    market = Marketplace.open(bundle)
    key = "fuzz-key"
    app_settings = serve_settings(key)
    try:
        with run_server(create_app(market, app_settings)) as url:
            yield LiveServer(url, key, app_settings, bundle, market)
    finally:
        market.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


def _operations() -> list[tuple[str, str]]:
    """Every operation of the schema, read from the app itself (no server needed to collect)."""
    from fbmarket.api.app import create_app

    document = create_app(loader=_never_called).openapi()
    methods = ("get", "post", "put", "delete", "patch")
    return [
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    ]


def _never_called() -> Any:
    raise AssertionError("the schema is read without starting the app")


@pytest.mark.parametrize(("path", "method"), _operations(), ids=lambda value: str(value))
def test_no_server_errors_and_responses_match_the_schema(
    path: str, method: str, api_schema: Any, fuzz_server: LiveServer
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            headers={"X-API-Key": fuzz_server.api_key},
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
            timeout=60,
        )

    fuzz()
