"""The web page in a real headless Chromium (Debian's), driven by Playwright over a live server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_fixtures import common_word


def images_loaded(page: Any, selector: str) -> list[int]:
    """naturalWidth of every matching <img> once it has loaded (0 = broken)."""
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(img => img.complete)", arg=selector
    )
    return page.eval_on_selector_all(selector, "imgs => imgs.map(img => img.naturalWidth)")


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
