"""Duplicate-listing detection: the rule and its file, the service, the API and the CLI.

Over a copy of the tiny trained bundle (tests/api_fixtures.py), whose training fit the
duplicate rule on its validation split, so the train hook runs here too.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_fixtures import copy_bundle, jpeg_bytes, run_server, serve_settings
from PIL import Image

from fbmarket.config import DuplicateSettings
from fbmarket.search.duplicate_copies import perturb_photo, reword_title
from fbmarket.search.duplicate_rule import (
    RULE_FILE,
    DuplicateRule,
    LogisticRule,
    PairFeatures,
    TextSimilarity,
)
from fbmarket.search.duplicate_training import choose_threshold
from fbmarket.search.duplicates import duplicate_groups

KEY = "duplicates-test-key"


# ------------------------------------------------------------------------------ units


def test_text_similarity_ignores_word_order_case_and_punctuation() -> None:
    text = TextSimilarity()
    left = text.vectors(["Kids bike 16 inch, red", "Grey sofa bed"], ["good condition", "two seater"])
    right = text.vectors(["RED kids BIKE 16 inch!", "Oak dining table"], ["Good condition.", ""])
    title, description = text.pairs(
        (left[0], right[0]), (left[1], right[1]), np.array([False, False]), np.array([False, True])
    )
    assert title[0] == pytest.approx(1.0, abs=1e-5) and description[0] == pytest.approx(1.0, abs=1e-5)
    assert title[1] < 0.2 and description[1] == 0.0, "one description empty, the other not: no evidence"


def test_reworded_titles_change_but_stay_close() -> None:
    rng = np.random.default_rng(0)
    text = TextSimilarity()
    for title in ("Kids bike 16 inch red", "Grey two seater sofa bed in good condition", "Chair"):
        reworded = reword_title(title, rng)
        assert reworded != title
        a, b = text.vectors([title], [""])[0], text.vectors([reworded], [""])[0]
        assert TextSimilarity.rowwise(a, b)[0] > 0.5, (title, reworded)


def test_a_perturbed_photo_is_a_smaller_decodable_jpeg() -> None:
    image = Image.new("RGB", (200, 160), (30, 120, 200))
    data = perturb_photo(image, np.random.default_rng(1))
    copy = Image.open(io.BytesIO(data))
    assert copy.format == "JPEG" and copy.width < 200 and copy.height < 160


def test_the_threshold_keeps_the_target_precision_with_the_most_recall() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0])
    chosen = choose_threshold(scores, labels, positives=4, target=0.6)
    assert chosen["threshold"] == 0.3 and chosen["recall"] == 0.75 and chosen["target_met"]
    strict = choose_threshold(scores, labels, positives=4, target=0.95)
    assert strict["threshold"] == 0.9 and strict["precision"] == 1.0


def test_groups_are_connected_components() -> None:
    assert duplicate_groups([("a", "b"), ("c", "d"), ("b", "e")]) == [["a", "b", "e"], ["c", "d"]]


def test_rule_json_round_trip(tmp_path: Path) -> None:
    rule = DuplicateRule(
        LogisticRule((20.0, 5.0, 3.0), -25.0, 0.7), LogisticRule((9.0, 6.0), -12.0, 0.8), {"split": "val"}
    )
    rule.save(tmp_path / RULE_FILE)
    loaded = DuplicateRule.load(tmp_path / RULE_FILE)
    assert loaded == rule
    features = PairFeatures(np.array([0.99, np.nan]), np.array([0.9, 0.95]), np.array([1.0, 1.0]))
    assert np.allclose(loaded.score(features), rule.score(features))
    defaults = DuplicateRule.from_settings(DuplicateSettings())
    assert DuplicateRule.from_json(json.loads(json.dumps(defaults.to_json()))) == defaults
    bad = rule.to_json()
    bad["with_photo"]["coef"] = [1.0]
    with pytest.raises(ValueError, match="weights"):
        DuplicateRule.from_json(bad)
    for value in (1.5, 0, "high", True):
        with pytest.raises(ValueError, match="same_photo_cosine"):
            DuplicateRule.from_json(rule.to_json() | {"same_photo_cosine": value})


def test_the_same_photos_under_new_words_are_flagged_only_with_the_same_photo_bar(tmp_path: Path) -> None:
    """A re-post under a new title and description scored low on the logistic rule (its text
    weights were fit on copies that keep their words) and went unflagged."""
    logistic = (LogisticRule((20.0, 5.0, 3.0), -25.0, 0.7), LogisticRule((9.0, 6.0), -12.0, 0.8))
    # same photos + new words, similar photos + new words, no photos + new words
    features = PairFeatures(np.array([0.99, 0.9, np.nan]), np.array([0.05, 0.05, 0.05]), np.array([0.1, 0.1, 0.1]))
    _, without = DuplicateRule(*logistic).flags(features)
    assert not without.any()
    rule = DuplicateRule(*logistic, same_photo_cosine=0.95)
    score, flagged = rule.flags(features)
    assert flagged.tolist() == [True, False, False] and score[0] < 0.7  # the score stays the rule's
    rule.save(tmp_path / RULE_FILE)
    assert DuplicateRule.load(tmp_path / RULE_FILE).same_photo_cosine == 0.95
    old = rule.to_json()
    del old["same_photo_cosine"]  # a rule saved before the field: the logistic rules alone
    assert DuplicateRule.from_json(old).same_photo_cosine is None
    assert DuplicateRule.from_settings(DuplicateSettings()).same_photo_cosine == 0.95
    assert DuplicateRule.from_settings(DuplicateSettings(flag_same_photo=False)).same_photo_cosine is None


# ----------------------------------------------------------------------------- bundle


@pytest.fixture(scope="module")
def dup_bundle(api_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_bundle(api_bundle, tmp_path_factory.mktemp("dups") / "bundle")


@pytest.fixture(scope="module")
def market(dup_bundle: Path) -> Iterator[Any]:
    from fbmarket.service import Marketplace

    marketplace = Marketplace.open(dup_bundle)
    yield marketplace
    marketplace.close()


@pytest.fixture(scope="module")
def server(market: Any) -> Iterator[str]:
    from fbmarket.api.app import create_app

    with run_server(create_app(market, serve_settings(KEY))) as url:
        yield url


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=120.0) as client:
        yield client


def original(market: Any) -> dict[str, Any]:
    """A stored listing with a photo: its fields and its cleaned photo's bytes."""
    photos = market.store.images_frame()
    pid = str(sorted(photos["product_id"].astype(str))[0])
    listing = market.get_listing(pid)
    path = market.image_path(pid, 0)
    return listing | {"photo": path.read_bytes()}


def cropped_reencoded(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    image = image.crop((int(w * 0.06), int(h * 0.05), int(w * 0.94), int(h * 0.95))).resize(
        (int(w * 0.7), int(h * 0.7))
    )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=45)
    return buffer.getvalue()


def form_of(listing: dict[str, Any], **changes: str) -> dict[str, str]:
    form = {
        "title": listing["title"],
        "description": listing.get("description") or "",
        "price": "" if listing.get("price") is None else str(listing["price"]),
        "location": listing.get("location") or "",
        "category": listing["category"],
    }
    return {k: v for k, v in (form | changes).items() if v != ""}


def test_training_fit_the_rule_on_validation_and_the_bundle_loads_it(dup_bundle: Path, market: Any) -> None:
    manifest = json.loads((dup_bundle / "bundle.json").read_text())
    assert manifest["files"]["duplicates"] == f"model/{RULE_FILE}"
    saved = DuplicateRule.load(dup_bundle / "model" / RULE_FILE)
    assert saved.chosen_on["split"] == "val" and saved.chosen_on["listings"] > 0
    assert set(saved.chosen_on["figures"]) >= {"photo", "text", "both", "all"}
    assert manifest["duplicates"]["with_photo"]["threshold"] == saved.photo.threshold
    assert market.duplicates.rule == saved


def test_a_bundle_without_the_rule_uses_the_settings_and_a_corrupt_one_is_named(
    dup_bundle: Path, tmp_path: Path
) -> None:
    from fbmarket.bundle import Bundle, BundleError

    old = copy_bundle(dup_bundle, tmp_path / "old")
    (old / "model" / RULE_FILE).unlink()
    assert Bundle.load(old, lazy=True).duplicate_rule is None
    (old / "model" / RULE_FILE).write_text('{"format": "fbmarket.duplicate_rule", "with_photo": {}}')
    with pytest.raises(BundleError, match=RULE_FILE):
        Bundle.load(old, lazy=True).duplicate_rule  # noqa: B018


def test_an_exact_repost_and_a_cropped_reencoded_copy_are_flagged_an_unrelated_one_is_not(market: Any) -> None:
    from fbmarket.service import ListingInput

    source = original(market)
    fields = {k: source[k] for k in ("title", "description", "price", "location", "category")}

    exact = market.find_duplicates(ListingInput(**fields), [source["photo"]])
    assert exact and exact[0].product_id == source["product_id"]
    assert any(r.startswith("same photo") for r in exact[0].reasons), exact[0].reasons
    assert any("title" in r for r in exact[0].reasons)
    assert exact[0].photo_similarity > 0.95 and exact[0].text_similarity > 0.95 and 0 < exact[0].score <= 1

    reposted = ListingInput(
        title="Lovely item, collection only", description="Moving house, must go this week.", price=5.0
    )  # the same photo under new words
    again = market.find_duplicates(reposted, [source["photo"]])
    match = next(m for m in again if m.product_id == source["product_id"])
    assert any(r.startswith("same photo") for r in match.reasons), match.reasons

    copy = market.find_duplicates(ListingInput(**fields), [cropped_reencoded(source["photo"])])
    assert source["product_id"] in [m.product_id for m in copy]
    match = next(m for m in copy if m.product_id == source["product_id"])
    assert match.photo_similarity is not None and match.reasons

    noise = np.random.default_rng(5).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG")
    unrelated = ListingInput(
        title="Brass ship telescope with oak tripod",
        description="Antique nautical instrument, engraved, collection from the harbour.",
        price=380.0,
        category=source["category"],
    )
    assert source["product_id"] not in [m.product_id for m in market.find_duplicates(unrelated, [buffer.getvalue()])]


def test_a_draft_is_never_written(market: Any) -> None:
    from fbmarket.service import ListingInput

    source = original(market)
    uploads = market.settings.cache_dir / f"uploads_{market.settings.data.image_size}"
    before = (market.store.count("listings"), sorted(uploads.glob("*")) if uploads.exists() else [])
    draft = ListingInput(title=source["title"], description=source["description"] or "")
    market.find_duplicates(draft, [source["photo"], jpeg_bytes()])
    after = (market.store.count("listings"), sorted(uploads.glob("*")) if uploads.exists() else [])
    assert after == before


def test_post_listings_returns_possible_duplicates_and_still_creates(api: httpx.Client, market: Any) -> None:
    source = original(market)
    response = api.post(
        "/listings",
        data=form_of(source),
        files=[("photos", ("again.jpg", source["photo"], "image/jpeg"))],
        headers={"X-API-Key": KEY},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    duplicates = created["possible_duplicates"]
    assert duplicates and duplicates[0]["product_id"] == source["product_id"]
    first = duplicates[0]
    assert set(first) >= {
        "product_id", "title", "price", "url", "image_url", "score", "photo_similarity",
        "text_similarity", "reasons",
    }  # fmt: skip
    assert first["title"] == source["title"] and first["url"] == f"/listings/{source['product_id']}"
    assert first["image_url"] == f"/listings/{source['product_id']}/images/0" and first["reasons"]
    assert created["product_id"] not in [d["product_id"] for d in duplicates], "never its own duplicate"
    assert api.get(f"/listings/{created['product_id']}").status_code == 200, "created all the same"

    listed = api.get(f"/listings/{created['product_id']}/duplicates")
    assert listed.status_code == 200
    assert listed.json()["product_id"] == created["product_id"]
    assert source["product_id"] in [d["product_id"] for d in listed.json()["duplicates"]]
    back = api.get(f"/listings/{source['product_id']}/duplicates").json()["duplicates"]
    assert created["product_id"] in [d["product_id"] for d in back], "symmetric"
    assert api.get("/listings/no-such-listing/duplicates").status_code == 404

    edited = api.put(
        f"/listings/{created['product_id']}", data={"price": "1"}, headers={"X-API-Key": KEY}
    )
    assert edited.status_code == 200 and edited.json()["price"] == 1
    assert source["product_id"] in [d["product_id"] for d in edited.json()["possible_duplicates"]]
    assert created["product_id"] not in [d["product_id"] for d in edited.json()["possible_duplicates"]]
    api.delete(f"/listings/{created['product_id']}", headers={"X-API-Key": KEY})


def test_predict_duplicates_needs_no_key_and_writes_nothing(api: httpx.Client, market: Any) -> None:
    source = original(market)
    uploads = market.settings.cache_dir / f"uploads_{market.settings.data.image_size}"
    before = (market.store.count("listings"), sorted(uploads.glob("*")) if uploads.exists() else [])
    response = api.post(
        "/predict/duplicates",
        data={"title": source["title"], "description": source["description"] or ""},
        files=[("photos", ("draft.jpg", cropped_reencoded(source["photo"]), "image/jpeg"))],
    )
    assert response.status_code == 200, response.text
    found = response.json()["duplicates"]
    assert source["product_id"] in [d["product_id"] for d in found]
    assert all(d["reasons"] and 0 <= d["score"] <= 1 for d in found)
    after = (market.store.count("listings"), sorted(uploads.glob("*")) if uploads.exists() else [])
    assert after == before


@pytest.mark.parametrize(
    ("data", "files", "field"),
    [
        ({"description": "no title"}, None, "title"),
        ({"title": "Lamp", "price": "cheap"}, None, "price"),
        ({"title": "Lamp"}, [("photos", ("x.jpg", b"\xff\xd8\xff\xe0" + b"0" * 64, "image/jpeg"))], "photos[0]"),
    ],
)
def test_bad_draft_input_is_refused_naming_the_field(
    api: httpx.Client, data: dict[str, str], files: list | None, field: str
) -> None:
    response = api.post("/predict/duplicates", data=data, files=files or [("photos", ("", b"", "image/jpeg"))])
    assert response.status_code in (415, 422), response.text
    body = response.json()
    assert body["detail"].startswith(field) or field in [e.get("field") for e in body.get("errors") or []]


def test_cli_reports_duplicate_groups(dup_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fbmarket.cli import main
    from fbmarket.service import ListingInput, Marketplace

    bundle = copy_bundle(dup_bundle, tmp_path / "cli")
    with_repost = Marketplace.open(bundle)
    try:
        source = original(with_repost)
        fields = {k: source[k] for k in ("title", "description", "price", "location", "category")}
        repost = ListingInput(**fields, product_id=f"repost-{uuid.uuid4().hex[:8]}")
        created = with_repost.create_listing(repost, [cropped_reencoded(source["photo"])])
        assert source["product_id"] in [d["product_id"] for d in created["possible_duplicates"]]
    finally:
        with_repost.close()
    assert main(["duplicates", "--bundle", str(bundle), "--json", "--limit", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    groups = [{card["product_id"] for card in g["listings"]} for g in report["groups"]]
    assert any({source["product_id"], repost.product_id} <= group for group in groups)
    group = next(g for g in report["groups"] if repost.product_id in {c["product_id"] for c in g["listings"]})
    assert group["pairs"] and all(pair["reasons"] for pair in group["pairs"])
    assert main(["duplicates", "--bundle", str(bundle), "--limit", "1"]) == 0
    text = capsys.readouterr().out
    assert "duplicate group(s)" in text and "group 1:" in text
