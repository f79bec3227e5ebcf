"""The Sell page in headless Chromium: advice appears as the seller types, publishing works
with the write key kept in the tab, the new listing is found by the next search, and bad
input is named next to its field with nothing written."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import LiveServer, common_word


def test_advice_appears_as_the_seller_types(page: Any, catalogue: dict) -> None:
    page.goto("/sell")
    page.fill("#title", f"{common_word(catalogue).capitalize()} in good condition")
    page.wait_for_selector("#category-advice .suggestion")
    suggestions = page.locator("#category-advice .suggestion")
    assert suggestions.count() >= 1
    assert page.locator("#category-advice .probability").first.inner_text().endswith("%")
    page.wait_for_selector("#price-advice #price-median")
    low = page.inner_text("#price-low")
    high = page.inner_text("#price-high")
    assert low.startswith("£") or low == "free", low
    assert high.startswith("£"), high
    assert page.locator("#price-evidence .mini-card").count() >= 1, "the range comes with evidence"
    suggestions.first.click()
    assert page.input_value("#category") == suggestions.first.get_attribute("data-category")


def test_a_reposted_photo_and_title_are_flagged_as_a_duplicate(
    page: Any, catalogue: dict, api_marketplace: Any
) -> None:
    product_id = catalogue["with_photos"][0]
    listing = catalogue["listings"].set_index("product_id").loc[product_id]
    page.goto("/sell")
    page.set_input_files("#photos", str(api_marketplace.image_path(product_id, 0)))
    page.fill("#title", str(listing["title"]))
    page.fill("#description", str(listing["description"] or ""))
    page.wait_for_selector(f'#duplicate-advice .mini-card[data-product-id="{product_id}"]')
    assert page.locator("#duplicate-advice img").count() >= 1, "duplicates are shown with their photos"
    assert page.locator("#photo-previews img").count() == 1


def test_publish_with_the_key_then_find_it_by_search(
    page: Any, live_server: LiveServer, catalogue: dict, tmp_path: Path
) -> None:
    word = "zq" + uuid.uuid4().hex[:8]
    page.goto("/sell")
    page.fill("#title", f"Vintage {word} armchair")
    page.fill("#description", "Solid oak frame, new cushions. Collection only.")
    page.fill("#price", "£45")
    page.fill("#location", "Leeds, West Yorkshire")
    page.wait_for_selector("#price-advice")
    page.click("#publish-button")
    assert "write key" in page.inner_text("#api_key-error"), "publishing asks for the key first"

    page.fill("#api_key", "not-the-key")
    page.click("#publish-button")
    page.wait_for_selector("#advice-errors li[data-field=api_key]")
    assert page.evaluate("sessionStorage.getItem('fbmarket.writeKey')") is None, "a wrong key is not kept"

    page.fill("#title", f"Vintage {word} armchair")
    page.fill("#price", "£45")
    page.fill("#location", "Leeds, West Yorkshire")
    page.fill("#api_key", live_server.api_key)
    page.click("#publish-button")
    page.wait_for_selector("#published")
    product_id = page.get_attribute("#published", "data-product-id")
    assert page.evaluate("sessionStorage.getItem('fbmarket.writeKey')") == live_server.api_key
    assert page.is_hidden("#key-row"), "the key is asked once per tab"
    assert page.input_value("#title") == "", "the form is cleared, so it is not published twice"
    page.screenshot(path=str(tmp_path / "sell-published.png"), full_page=True)

    page.click("#find-it")
    page.wait_for_selector(f'#results .card[data-product-id="{product_id}"]')
    with live_server.client() as api:
        stored = api.get(f"/listings/{product_id}").json()
        assert stored["price"] == 45 and stored["town"], stored
        assert api.delete(f"/listings/{product_id}", headers=live_server.write_headers).status_code == 204


@pytest.mark.parametrize(
    ("field", "value", "expect"),
    [
        ("price", "about twenty quid-ish", "price"),
        ("location", "Xyzzyville Qwerty", "location"),
        ("title", "   ", "title"),
    ],
)
def test_bad_input_is_named_at_its_field_and_nothing_is_written(
    page: Any, live_server: LiveServer, field: str, value: str, expect: str
) -> None:
    word = "zq" + uuid.uuid4().hex[:8]
    page.goto("/sell")
    page.evaluate("key => sessionStorage.setItem('fbmarket.writeKey', key)", live_server.api_key)
    page.reload()
    page.fill("#title", f"Garden {word} bench")
    page.fill("#description", f"{word} weathered teak")
    page.fill(f"#{field}", value)
    page.click("#publish-button")
    page.wait_for_selector(f"#{expect}-error:not([hidden])")
    assert page.get_attribute(f"#{expect}", "aria-invalid") == "true"
    assert page.locator("#published").count() == 0
    with live_server.client() as api:
        found = api.get("/search", params={"q": word, "k": 50}).json()["results"]
    assert not [r for r in found if word in r["title"]], "nothing half-written"


def test_a_photo_that_fails_to_decode_is_named(page: Any, live_server: LiveServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page.goto("/sell")
    page.fill("#title", "Kitchen table")
    page.set_input_files("#photos", str(broken))
    page.wait_for_selector("#photos-error:not([hidden])")
    assert "broken.jpg" in page.inner_text("#photos-error")
