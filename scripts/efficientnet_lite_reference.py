"""Reference ImageNet logits of EfficientNet-Lite computed by a plain numpy forward pass.

An independent path from `fbmarket.vision.efficientnet_lite.build_efficientnet_lite`: it
walks the checkpoint's own tensor names (PyTorch layout, NCHW thinking, explicit
TensorFlow-style "same" padding) instead of Keras layers, so a mistake in the Keras port
(a transposed kernel, wrong padding side, a missed residual, the wrong epsilon) shows as
a mismatch. The test `tests/test_efficientnet_lite.py` compares the Keras network with
the figures this script writes to `tests/data/efficientnet_lite_reference.json`.

    python scripts/efficientnet_lite_reference.py            # both variants, 64 px input
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from fbmarket.vision.efficientnet_lite import BN_EPSILON, MEAN, STD, VARIANTS, read_checkpoint

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "efficientnet_lite_reference.json"


def reference_input(size: int) -> np.ndarray:
    """A fixed (size, size, 3) image in 0..255: smooth gradients plus a checkerboard."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / max(1, size - 1)
    red = 255 * x
    green = 255 * y
    blue = 255 * (((np.floor(x * 8) + np.floor(y * 8)) % 2) * 0.8 + 0.1)
    return np.stack([red, green, blue], axis=-1)


def same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow "same": total padding split with the extra on the bottom/right. x: (C, H, W)."""
    _, h, w = x.shape

    def amounts(n: int) -> tuple[int, int]:
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + kernel - n, 0)
        return total // 2, total - total // 2

    return np.pad(x, ((0, 0), amounts(h), amounts(w)))


def conv(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Dense convolution; x (C, H, W), weight (O, C, k, k) -> (O, H', W')."""
    k = weight.shape[-1]
    padded = same_pad(x, k, stride)
    c, hp, wp = padded.shape
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    patches = np.empty((c, k, k, ho, wo))
    for i in range(k):
        for j in range(k):
            patches[:, i, j] = padded[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
    return np.einsum("ocij,cijhw->ohw", weight, patches)


def depthwise(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """Per-channel convolution; weight (C, 1, k, k)."""
    k = weight.shape[-1]
    padded = same_pad(x, k, stride)
    _, hp, wp = padded.shape
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo))
    for i in range(k):
        for j in range(k):
            window = padded[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
            out += weight[:, 0, i, j][:, None, None] * window
    return out


def batchnorm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    gamma, beta = state[prefix + ".weight"], state[prefix + ".bias"]
    mean, var = state[prefix + ".running_mean"], state[prefix + ".running_var"]
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return x * scale[:, None, None] + (beta - mean * scale)[:, None, None]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def forward(state: dict[str, np.ndarray], image: np.ndarray, strides: list[int]) -> np.ndarray:
    """ImageNet logits (1000,) of one (H, W, 3) image in 0..255."""
    state = {k: v.astype(np.float64) for k, v in state.items()}
    x = ((image - MEAN) / STD).transpose(2, 0, 1)
    x = relu6(batchnorm(conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    for i, stride in enumerate(strides):
        p = f"_blocks.{i}."
        inputs = x
        if p + "_expand_conv.weight" in state:
            x = relu6(batchnorm(conv(x, state[p + "_expand_conv.weight"], 1), state, p + "_bn0"))
        x = relu6(batchnorm(depthwise(x, state[p + "_depthwise_conv.weight"], stride), state, p + "_bn1"))
        x = batchnorm(conv(x, state[p + "_project_conv.weight"], 1), state, p + "_bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    x = relu6(batchnorm(conv(x, state["_conv_head.weight"], 1), state, "_bn1"))
    pooled = x.mean(axis=(1, 2))
    return state["_fc.weight"] @ pooled + state["_fc.bias"]


def block_strides(state: dict[str, np.ndarray], variant_name: str) -> list[int]:
    """Each block's stride: 2 for the first block of the stride-2 stages (from STAGES)."""
    from fbmarket.vision.efficientnet_lite import block_plan

    plan = block_plan(VARIANTS[variant_name])
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    if len(blocks) != len(plan):
        raise SystemExit(f"{variant_name}: checkpoint has {len(blocks)} blocks, plan {len(plan)}")
    return [b["stride"] for b in plan]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    image = reference_input(args.size)
    payload: dict[str, object] = {"size": args.size, "input": "scripts/efficientnet_lite_reference.py"}
    for name, variant in VARIANTS.items():
        state = read_checkpoint(variant.checkpoint_path(), variant.sha256)
        logits = forward(state, image, block_strides(state, name))
        top = np.argsort(-logits)[:10]
        payload[name] = {
            "sha256": variant.sha256,
            "logits_first_32": [round(float(v), 6) for v in logits[:32]],
            "top10": [int(i) for i in top],
            "top10_logits": [round(float(logits[i]), 6) for i in top],
            "logits_mean": round(float(logits.mean()), 6),
            "logits_std": round(float(logits.std()), 6),
        }
        print(name, "top-5 classes", top[:5].tolist())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
