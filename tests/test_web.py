"""The web page in a real headless Chromium (Debian's), driven by Playwright over a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import LiveServer, chromium_path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        message = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def images_loaded(page: Any, selector: str) -> list[int]:
    """naturalWidth of every matching <img> once it has loaded (0 = broken)."""
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(img => img.complete)", arg=selector
    )
    return page.eval_on_selector_all(selector, "imgs => imgs.map(img => img.naturalWidth)")


def common_word(catalogue: dict) -> str:
    """A word from the most common title word, so a text search surely has hits."""
    words = catalogue["listings"]["title"].str.lower().str.split().explode()
    words = words[words.str.len() > 3]
    return str(words.value_counts().index[0])


def test_type_a_query_and_see_result_cards_with_photos(page: Any, catalogue: dict, tmp_path: Path) -> None:
    page.goto("/")
    page.fill("#q", common_word(catalogue))
    page.press("#q", "Enter")
    page.wait_for_selector("#results .card")
    assert "q=" in page.url, "text searches are bookmarkable GETs"
    cards = page.locator("#results .card")
    assert cards.count() >= 1
    first = cards.first
    assert first.locator(".card-title").inner_text().strip()
    assert first.locator(".card-price").inner_text().strip()
    assert first.locator(".card-town").inner_text().strip()
    assert first.locator(".factors li").count() >= 1, "every card says why it ranked"
    widths = images_loaded(page, "#results .card img.card-photo")
    assert widths and all(w > 0 for w in widths), "result photos load"
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)


def test_buyer_and_filters_show_distance(page: Any, catalogue: dict) -> None:
    page.goto("/")
    page.fill("#q", common_word(catalogue))
    page.fill("#location", "Leeds")
    page.fill("#max_price", "100000")
    page.click("#search-button")
    page.wait_for_selector("#results .card")
    assert "inline buyer" in page.inner_text("#summary")
    distances = page.locator("#results .card-distance")
    assert distances.count() >= 1 and "km away" in distances.first.inner_text()


def test_upload_a_photo_and_see_results(page: Any, catalogue: dict, api_marketplace: Any) -> None:
    photo = api_marketplace.image_path(catalogue["with_photos"][0], 0)
    page.goto("/")
    page.set_input_files("#photo", str(photo))
    page.wait_for_selector("#photo-preview:not([hidden])")
    page.click("#search-button")
    page.wait_for_selector("#results .card")
    assert page.locator("#photo-preview img").get_attribute("src").startswith("data:image/jpeg")
    assert page.locator("#results .card").count() >= 1
    widths = images_loaded(page, "#results .card img.card-photo")
    assert all(w > 0 for w in widths)


def test_open_a_listing_and_see_similar_listings(page: Any, catalogue: dict) -> None:
    page.goto(f"/?q={common_word(catalogue)}")
    first = page.locator("#results .card").first
    title = first.locator(".card-title").inner_text().strip()
    first.locator("a.card-link").click()
    page.wait_for_selector("#listing-title")
    assert page.inner_text("#listing-title").strip() == title
    assert "/item/" in page.url
    assert all(w > 0 for w in images_loaded(page, ".gallery img.listing-photo"))
    page.wait_for_selector("#similar .card")
    assert page.locator("#similar .card").count() >= 1
    page.locator("#similar .card a.card-link").first.click()
    page.wait_for_selector("#listing-title")


def test_bad_input_is_shown_on_the_page(page: Any, tmp_path: Path) -> None:
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("this is not an image")
    page.goto("/")
    page.set_input_files("#photo", str(not_a_photo))
    page.click("#search-button")
    page.wait_for_selector(".error")
    assert "not an image" in page.inner_text(".error")
    missing = page.goto("/item/no-such-listing")
    assert missing.status == 404 and page.inner_text(".error").strip()
