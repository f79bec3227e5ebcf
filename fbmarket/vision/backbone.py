"""The ResNet50V2 image backbone and where its weights come from (SPEC §5.2).

Three sources, resolved before anything is built so a report can say which one ran:

* "imagenet": Keras's own cache file; downloaded only when `allow_download` is set;
* a path to a local `.h5` weights file;
* "none": random initialisation, trained from scratch on the listing photos at a
  reduced resolution with augmentation (the only choice on an offline machine).

Models take uint8-range pixels (0..255, any float dtype) and scale them to [-1, 1]
themselves, exactly as `keras.applications.resnet_v2.preprocess_input` does, so the
saved `.keras` file is the whole recipe from pixels to features.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from fbmarket.config import VisionSettings

IMAGENET_NOTOP_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
FEATURE_DIM = 2048  # ResNet50V2's pooled output


class WeightsUnavailable(ValueError):
    """The configured weights cannot be had offline; the message says what to change."""


@dataclass(frozen=True)
class WeightsChoice:
    kind: str  # "imagenet" | "file" | "none"
    keras_weights: str | None  # what keras.applications.ResNet50V2 is given
    description: str  # one line for reports
    fingerprint: str  # identifies the weights in feature-cache keys

    @property
    def trains_backbone(self) -> bool:
        return self.kind == "none"

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)


def keras_cache_dir() -> Path:
    try:
        from keras.src.backend.config import keras_home

        return Path(keras_home())
    except ImportError:  # older/newer Keras layouts: its documented default
        return Path.home() / ".keras"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(vision: VisionSettings) -> WeightsChoice:
    """Turn `VisionSettings.weights` into a concrete, offline-checked choice."""
    value = str(vision.weights or "none").strip()
    if value.lower() in ("none", "scratch", ""):
        return WeightsChoice(
            "none",
            None,
            f"none: ResNet50V2 trained from scratch on the listing photos at {vision.train_size}px",
            "none",
        )
    if value.lower() == "imagenet":
        cached = keras_cache_dir() / "models" / IMAGENET_NOTOP_FILE
        if cached.is_file():
            return WeightsChoice("imagenet", str(cached), f"imagenet (Keras cache: {cached})", "imagenet")
        if vision.allow_download:
            return WeightsChoice(
                "imagenet", "imagenet", "imagenet (downloaded into the Keras cache)", "imagenet"
            )
        raise WeightsUnavailable(
            f"ImageNet weights are not in the Keras cache ({cached}) and downloading is not allowed: "
            "set vision.allow_download, give a local .h5 path as vision.weights, or use weights='none'"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"vision.weights={value!r} is neither 'imagenet', 'none' nor an existing .h5 file"
        )
    if not path.name.endswith(".h5"):
        raise WeightsUnavailable(f"vision.weights file {path} must be a Keras .h5 weights file")
    digest = file_sha256(path)
    return WeightsChoice("file", str(path), f"file: {path} (sha256 {digest[:12]})", f"file:{digest}")


def build_backbone(size: int, weights: str | None = None, name: str = "backbone") -> keras.Model:
    """Pixels (size, size, 3) in 0..255 -> 2048-d average-pooled ResNet50V2 features."""
    pixels = keras.Input((size, size, 3), name="pixels")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(pixels)
    resnet = keras.applications.ResNet50V2(
        include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg"
    )
    return keras.Model(pixels, resnet(scaled), name=name)


AUGMENTATIONS = ("none", "light", "strong")


def augmentation(seed: int, strength: str = "light") -> keras.Sequential:
    """What a seller's camera varies: framing, mirror, tilt, zoom, light.

    "light" (flip, small shifts and zoom) lets a from-scratch ResNet50V2 fit a few
    thousand photos at all; "strong" adds rotation and lighting changes, which on the dev
    data kept it at chance for six epochs (benchmarks/train_real.py notes).
    """
    if strength not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {strength!r}")
    layers: list[keras.layers.Layer] = []
    if strength != "none":
        layers += [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed + 3),
            keras.layers.RandomZoom((-0.12, 0.0), fill_mode="constant", seed=seed + 2),
        ]
    if strength == "strong":
        layers += [
            keras.layers.RandomRotation(0.06, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomBrightness(0.15, value_range=(0, 255), seed=seed + 4),
            keras.layers.RandomContrast(0.2, value_range=(0, 255), seed=seed + 5),
        ]
    return keras.Sequential(layers or [keras.layers.Identity()], name="augment")


def build_photo_classifier(
    backbone: keras.Model, n_classes: int, seed: int, dropout: float = 0.3, augment: str = "light"
) -> tuple[keras.Model, keras.Model]:
    """(trainable pixels -> class probabilities with augmentation, features -> probabilities head).

    The head is its own model so the image-only classifier can run on cached features.
    """
    size = backbone.input_shape[1]
    features = keras.Input((FEATURE_DIM,), name="features")
    hidden = keras.layers.Dropout(dropout, seed=seed)(features)
    probs = keras.layers.Dense(n_classes, activation="softmax", name="category")(hidden)
    head = keras.Model(features, probs, name="image_head")
    pixels = keras.Input((size, size, 3), name="pixels")
    out = head(backbone(augmentation(seed, augment)(pixels)))
    return keras.Model(pixels, out, name="photo_classifier"), head


def build_feature_head(n_classes: int, seed: int, dropout: float = 0.3) -> keras.Model:
    """Features -> class probabilities, for frozen (imagenet / file) backbones."""
    features = keras.Input((FEATURE_DIM,), name="features")
    hidden = keras.layers.Dropout(dropout, seed=seed)(features)
    probs = keras.layers.Dense(n_classes, activation="softmax", name="category")(hidden)
    return keras.Model(features, probs, name="image_head")
