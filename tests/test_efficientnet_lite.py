"""EfficientNet-Lite from the packaged PyTorch checkpoints: faithful, complete, and refusing."""

from __future__ import annotations

import collections
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fbmarket.vision import efficientnet_lite as lite

REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite_reference.json"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from efficientnet_lite_reference import reference_input  # noqa: E402


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, np.ndarray]:
    variant = lite.VARIANTS["efficientnet_lite0"]
    return lite.read_checkpoint(variant.checkpoint_path(), variant.sha256)


@pytest.mark.parametrize("name", sorted(lite.VARIANTS))
def test_converted_network_reproduces_the_numpy_reference(name: str, tmp_path: Path) -> None:
    reference = json.loads(REFERENCE.read_text())
    size = reference["size"]
    model = lite.pretrained_efficientnet_lite(name, size, tmp_path, include_top=True)
    logits = model.predict(reference_input(size)[None].astype("float32"), verbose=0)[0]
    expected = reference[name]
    np.testing.assert_allclose(logits[:32], expected["logits_first_32"], atol=1e-4)
    assert np.argsort(-logits)[:10].tolist() == expected["top10"]
    # the conversion was cached under the checkpoint's hash and loads back to the same network
    cached = lite.converted_weights_path(lite.VARIANTS[name], tmp_path)
    assert cached.is_file() and lite.VARIANTS[name].sha256[:16] in cached.name
    again = lite.pretrained_efficientnet_lite(name, size, tmp_path, include_top=True)
    np.testing.assert_allclose(again.predict(reference_input(size)[None], verbose=0)[0], logits, atol=1e-6)


def test_every_checkpoint_tensor_is_used_exactly_once(lite0_state: dict[str, np.ndarray]) -> None:
    model = lite.build_efficientnet_lite("efficientnet_lite0", 32, include_top=True)
    used = lite.assign_checkpoint(model, lite0_state)
    assert set(used) == set(lite0_state)
    targets = [t for t in used.values() if not t.startswith("(")]
    weights_per_layer = collections.Counter(targets)
    for layer in model.layers:
        if layer.weights:
            # BatchNorm: gamma, beta, mean, variance; conv: kernel; dense: kernel + bias
            assert weights_per_layer[layer.name] == len(layer.weights), layer.name
    skipped = [k for k, t in used.items() if t.startswith("(")]
    assert all(k.endswith("num_batches_tracked") for k in skipped)
    # without the classifier, the two _fc tensors are accounted for but not placed
    features = lite.build_efficientnet_lite("efficientnet_lite0", 32)
    used = lite.assign_checkpoint(features, lite0_state)
    assert set(used) == set(lite0_state) and used["_fc.weight"].startswith("(")


def test_missing_or_extra_tensors_are_refused(lite0_state: dict[str, np.ndarray]) -> None:
    model = lite.build_efficientnet_lite("efficientnet_lite0", 32, include_top=True)
    missing = dict(lite0_state)
    del missing["_blocks.3._bn1.running_var"]
    with pytest.raises(lite.CheckpointRefused, match="no tensor _blocks.3._bn1.running_var"):
        lite.assign_checkpoint(model, missing)
    extra = dict(lite0_state) | {"_blocks.99._bn1.weight": np.zeros(3, np.float32)}
    with pytest.raises(lite.CheckpointRefused, match="fit no layer"):
        lite.assign_checkpoint(model, extra)
    wrong = dict(lite0_state) | {"_conv_stem.weight": np.zeros((32, 3, 5, 5), np.float32)}
    with pytest.raises(lite.CheckpointRefused, match="conv_stem"):
        lite.assign_checkpoint(model, wrong)


def test_tampered_checkpoint_is_refused_by_its_hash(tmp_path: Path) -> None:
    variant = lite.VARIANTS["efficientnet_lite0"]
    copy = tmp_path / "tampered.pth"
    shutil.copyfile(variant.checkpoint_path(), copy)
    with open(copy, "r+b") as handle:
        handle.seek(-100, 2)
        handle.write(b"\x00" * 8)
    with pytest.raises(lite.CheckpointRefused, match="sha256"):
        lite.read_checkpoint(copy, variant.sha256)


def _legacy_file(path: Path, payload: object) -> Path:
    with open(path, "wb") as handle:
        for header in (lite.LEGACY_MAGIC, lite.LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        pickle.dump(payload, handle, protocol=2)
        pickle.dump([], handle, protocol=2)
    return path


class _Sneaky:
    """A pickle that would call os.system on load."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_pickle_with_another_global_is_refused(tmp_path: Path) -> None:
    path = _legacy_file(tmp_path / "evil.pth", collections.OrderedDict(x=_Sneaky()))
    with pytest.raises(lite.CheckpointRefused, match="system.*refused|posix.system|os.system"):
        lite.read_checkpoint(path)
    foreign = _legacy_file(tmp_path / "foreign.pth", collections.OrderedDict(x=[1, 2, 3]))
    with pytest.raises(lite.CheckpointRefused, match="state dict of tensors"):
        lite.read_checkpoint(foreign)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"PK\x03\x04 not a legacy checkpoint")
    with pytest.raises(lite.CheckpointRefused, match="not a legacy PyTorch checkpoint"):
        lite.read_checkpoint(garbage)


def test_block_plan_matches_the_checkpoints(lite0_state: dict[str, np.ndarray]) -> None:
    blocks = {int(k.split(".")[1]) for k in lite0_state if k.startswith("_blocks.")}
    assert len(lite.block_plan(lite.VARIANTS["efficientnet_lite0"])) == len(blocks) == 16
    assert lite.round_filters(16, 1.1) == 16 and lite.round_filters(320, 1.1) == 352
