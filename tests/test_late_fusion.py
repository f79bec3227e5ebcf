"""The late-fusion head (fusion/late.py) and its TF-IDF member (text/tfidf.py)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax

from fbmarket.fusion.late import fit_late_fusion, member_weights, pool
from fbmarket.text.tfidf import VOCABULARY_FILE, WEIGHTS_FILE, TfidfClassifier

CLASSES = 4


def _members(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three members over 4 classes: a good one, a weaker independent one, pure noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)

    def member(strength: float) -> np.ndarray:
        logits = rng.normal(size=(n, CLASSES))
        logits[np.arange(n), labels] += strength
        return log_softmax(logits, axis=1)

    return np.stack([member(2.0), member(1.2), member(0.0)], axis=1).astype(np.float32), labels


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def test_pooling_beats_every_member_and_ignores_noise() -> None:
    log_probs, labels = _members(600, 0)
    names = ["good", "weak", "noise"]
    head = fit_late_fusion(log_probs[:400], np.ones((400, 3)), labels[:400], names)
    weights = member_weights(head)
    assert weights["good"] > weights["weak"] > weights["noise"] >= 0.0
    assert weights["noise"] < 0.1
    test = {name: log_probs[400:, i] for i, name in enumerate(names)}
    pooled = pool(head, test, {name: np.ones(200) for name in names})
    assert pooled.shape == (200, CLASSES)
    np.testing.assert_allclose(pooled.sum(1), 1.0, atol=1e-5)
    best_member = max(_accuracy(np.exp(test[name]), labels[400:]) for name in names)
    assert _accuracy(pooled, labels[400:]) > best_member


def test_fit_reaches_the_convex_optimum() -> None:
    """Full-batch Adam lands where L-BFGS-B does on the same (convex) objective."""
    log_probs, labels = _members(400, 1)
    head = fit_late_fusion(log_probs, np.ones((400, 3)), labels, ["a", "b", "c"])
    pooled = pool(head, {n: log_probs[:, i] for i, n in enumerate("abc")}, {n: np.ones(400) for n in "abc"})
    keras_loss = -np.log(pooled[np.arange(400), labels]).mean()

    def loss(theta: np.ndarray) -> float:
        z = log_softmax(np.tensordot(theta[:3], log_probs.transpose(1, 0, 2), 1) + theta[3:], axis=1)
        return float(-z[np.arange(400), labels].mean())

    best = minimize(
        loss, np.r_[np.ones(3) / 3, np.zeros(CLASSES)], bounds=[(0, None)] * 3 + [(None, None)] * 4
    )
    assert keras_loss == pytest.approx(best.fun, abs=2e-3)


def test_a_masked_member_has_no_say(tmp_path: Path) -> None:
    log_probs, labels = _members(300, 2)
    head = fit_late_fusion(log_probs, np.ones((300, 3)), labels, ["a", "b", "c"])
    ones, zeros = np.ones(300), np.zeros(300)
    without_a = pool(
        head, {n: log_probs[:, i] for i, n in enumerate("abc")}, {"a": zeros, "b": ones, "c": ones}
    )
    scrambled = {"a": log_probs[::-1, 0], "b": log_probs[:, 1], "c": log_probs[:, 2]}
    np.testing.assert_allclose(
        without_a, pool(head, scrambled, {"a": zeros, "b": ones, "c": ones}), atol=1e-6
    )
    head.save(tmp_path / "late.keras")
    loaded = keras.models.load_model(tmp_path / "late.keras", compile=False)
    inputs = {n: log_probs[:, i] for i, n in enumerate("abc")}
    masks = {n: ones for n in "abc"}
    np.testing.assert_allclose(pool(loaded, inputs, masks), pool(head, inputs, masks), atol=1e-6)


def test_fit_refuses_mismatched_inputs() -> None:
    log_probs, labels = _members(20, 3)
    with pytest.raises(ValueError, match="member"):
        fit_late_fusion(log_probs, np.ones((20, 3)), labels, ["a", "b"])
    with pytest.raises(ValueError, match="disagree"):
        fit_late_fusion(log_probs, np.ones((20, 2)), labels, ["a", "b", "c"])
    with pytest.raises(ValueError, match="n > 0"):
        fit_late_fusion(log_probs[:0], np.ones((0, 3)), labels[:0], ["a", "b", "c"])


TEXTS = [
    "grey velvet sofa three seater",
    "leather sofa and armchair",
    "corner sofa bed with storage",
    "iphone 12 pro unlocked",
    "samsung galaxy phone cracked screen",
    "nokia phone charger cable",
    "mountain bike 21 gears",
    "kids bicycle with stabilisers",
]
LABELS = np.array([0, 0, 0, 2, 2, 2, 3, 3])  # class 1 never appears in training


def test_tfidf_round_trip_without_pickle_and_unseen_classes_get_nothing(tmp_path: Path) -> None:
    model = TfidfClassifier.fit(TEXTS * 3, np.tile(LABELS, 3), n_classes=4)
    queries = ["red sofa", "broken phone screen", "bike gears", ""]
    probs = model.predict_proba(queries)
    assert probs.shape == (4, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs[:, 1] == 0).all()
    assert list(probs[:3].argmax(1)) == [0, 2, 3]
    model.save(tmp_path)
    with np.load(tmp_path / WEIGHTS_FILE, allow_pickle=False) as arrays:  # plain arrays only
        assert {"coef", "intercept", "class_index", "idf_word", "idf_char"} <= set(arrays.files)
    loaded = TfidfClassifier.load(tmp_path)
    np.testing.assert_allclose(loaded.predict_proba(queries), probs, atol=1e-6)


def test_tfidf_two_classes_and_refusals(tmp_path: Path) -> None:
    two = TfidfClassifier.fit(TEXTS[:6] * 3, np.tile(LABELS[:6], 3), n_classes=3)
    probs = two.predict_proba(["sofa", "phone"])
    assert list(probs.argmax(1)) == [0, 2]
    with pytest.raises(ValueError, match="two categories"):
        TfidfClassifier.fit(TEXTS[:3], LABELS[:3], n_classes=3)
    two.save(tmp_path)
    config = json.loads((tmp_path / VOCABULARY_FILE).read_text())
    config["analysers"]["word"]["vocabulary"].pop()
    (tmp_path / VOCABULARY_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="idf weights do not match"):
        TfidfClassifier.load(tmp_path)


def _damage_vocabulary_truncated(directory: Path) -> None:
    text = (directory / VOCABULARY_FILE).read_text()
    (directory / VOCABULARY_FILE).write_text(text[: len(text) // 2])


def _damage_vocabulary_not_an_object(directory: Path) -> None:
    (directory / VOCABULARY_FILE).write_text("[1, 2]")


def _damage_weights_truncated(directory: Path) -> None:
    data = (directory / WEIGHTS_FILE).read_bytes()
    (directory / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _damage_weights_without_coef(directory: Path) -> None:
    with np.load(directory / WEIGHTS_FILE) as arrays:
        kept = {key: arrays[key] for key in arrays.files if key != "coef"}
    np.savez(directory / WEIGHTS_FILE, **kept)


def _damage_fewer_classes(directory: Path) -> None:
    config = json.loads((directory / VOCABULARY_FILE).read_text())
    config["n_classes"] = 3  # class 3 has coefficients
    (directory / VOCABULARY_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "named", "says"),
    [
        (_damage_vocabulary_truncated, VOCABULARY_FILE, "not a readable TF-IDF vocabulary"),
        (_damage_vocabulary_not_an_object, VOCABULARY_FILE, "JSON object"),
        (_damage_weights_truncated, WEIGHTS_FILE, "not a readable TF-IDF weights"),
        (_damage_weights_without_coef, "", "missing 'coef'"),
        (_damage_fewer_classes, "", "outside the 3 classes"),
    ],
)
def test_a_damaged_tfidf_model_is_a_value_error_naming_the_file(
    tmp_path: Path, damage, named: str, says: str
) -> None:
    """Truncated or edited files are refused at load with the file named: never a raw
    JSONDecodeError / BadZipFile / AttributeError, nor an IndexError at the first prediction."""
    TfidfClassifier.fit(TEXTS * 3, np.tile(LABELS, 3), n_classes=4).save(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError, match=says) as caught:
        TfidfClassifier.load(tmp_path)
    assert str(tmp_path / named) in str(caught.value)


def test_missing_tfidf_weights_name_the_file(tmp_path: Path) -> None:
    TfidfClassifier.fit(TEXTS * 3, np.tile(LABELS, 3), n_classes=4).save(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError) as caught:
        TfidfClassifier.load(tmp_path)
    assert caught.value.filename == str(tmp_path / WEIGHTS_FILE)


TITLES = ["Sofa", "Armchair", "Corner unit", "Phone", "Tablet", "Handset", "Bike", "Bicycle"]


def test_tfidf_title_analysers_read_the_title_at_half_weight_and_round_trip(tmp_path: Path) -> None:
    """Fit with titles, the model has the title word/char analysers (field "title", weight 0.5),
    needs titles to predict, and saves/loads them; a word seen only in titles now counts."""
    texts = [t.replace("sofa", "item") for t in TEXTS] * 3  # "sofa" and co. only in titles
    model = TfidfClassifier.fit(texts, np.tile(LABELS, 3), n_classes=4, titles=TITLES * 3)
    assert model.reads_titles and model.fields["title_word"] == "title" and model.weights["title_char"] == 0.5
    plain = TfidfClassifier.fit(texts, np.tile(LABELS, 3), n_classes=4)
    assert not plain.reads_titles and set(plain.vectorisers) == {"word", "char"}
    with pytest.raises(ValueError, match="reads titles"):
        model.predict_proba(["a listing"])
    with pytest.raises(ValueError, match="titles for"):
        TfidfClassifier.fit(texts, np.tile(LABELS, 3), n_classes=4, titles=TITLES)
    queries, titles = ["", ""], ["Bicycle", "Handset"]
    probs = model.predict_proba(queries, titles)
    assert list(probs.argmax(1)) == [3, 2], "no text: told apart by the title alone"
    model.save(tmp_path)
    config = json.loads((tmp_path / VOCABULARY_FILE).read_text())
    assert config["format"] == 2 and config["analysers"]["title_word"]["field"] == "title"
    loaded = TfidfClassifier.load(tmp_path)
    np.testing.assert_allclose(loaded.predict_proba(queries, titles), probs, atol=1e-6)


def test_a_format_1_tfidf_model_still_loads(tmp_path: Path) -> None:
    """Bundles written before the title analysers: every analyser reads the text at weight 1."""
    model = TfidfClassifier.fit(TEXTS * 3, np.tile(LABELS, 3), n_classes=4)
    model.save(tmp_path)
    config = json.loads((tmp_path / VOCABULARY_FILE).read_text())
    config["format"] = 1
    for spec in config["analysers"].values():
        del spec["field"], spec["weight"]
    (tmp_path / VOCABULARY_FILE).write_text(json.dumps(config))
    loaded = TfidfClassifier.load(tmp_path)
    assert not loaded.reads_titles
    np.testing.assert_allclose(loaded.predict_proba(["red sofa"]), model.predict_proba(["red sofa"]), atol=1e-6)
    config["analysers"]["word"]["field"] = "price"
    (tmp_path / VOCABULARY_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="reads 'price'"):
        TfidfClassifier.load(tmp_path)
