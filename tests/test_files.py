"""The one atomic-write helper: all of a new file or none of it, and no temporary left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbmarket.files import atomic_write, atomic_write_json, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "settings.json"
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{"a":1}'

    def torn(temp: Path) -> None:
        temp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, torn)
    assert target.read_text() == '{"a":1}'
    assert [p.name for p in target.parent.iterdir()] == ["settings.json"]


def test_the_temporary_name_ends_with_the_target_name(tmp_path: Path) -> None:
    seen: list[str] = []

    def write(temp: Path) -> None:  # Keras insists on ".weights.h5"
        seen.append(temp.name)
        temp.write_bytes(b"w")

    atomic_write(tmp_path / "model.weights.h5", write)
    assert seen[0].startswith(".") and seen[0].endswith("model.weights.h5")
    atomic_write_text(tmp_path / "model.weights.h5", "v2")
    assert (tmp_path / "model.weights.h5").read_text() == "v2"


def test_a_written_file_gets_the_mode_a_new_file_gets(tmp_path: Path) -> None:
    """Not mkstemp's 0600: a bundle must stay readable by another user or a web server."""
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert os.stat(tmp_path / "atomic.txt").st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def strict_loads(text: str) -> object:
    """json.loads that refuses NaN / Infinity, as browsers, jq and other languages do."""
    import json

    def refuse(word: str) -> None:
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_written_is_valid_non_finite_numbers_are_null(tmp_path: Path) -> None:
    import numpy as np

    from fbmarket.files import dumps_json

    payload = {
        "r2_log": float("nan"),
        "inf": float("inf"),
        "neg": -np.inf,
        "f32": np.float32("nan"),
        "f64": np.float64(1.5),
        "i": np.int64(3),
        "nested": [{"x": (float("nan"), 2.0)}, np.array([1.0, np.nan])],
        "ok": "NaN as text stays text",
    }
    expected = {
        "r2_log": None, "inf": None, "neg": None, "f32": None, "f64": 1.5, "i": 3,
        "nested": [{"x": [None, 2.0]}, [1.0, None]], "ok": "NaN as text stays text",
    }  # fmt: skip
    assert strict_loads(dumps_json(payload, indent=2, default=str)) == expected
    atomic_write_json(tmp_path / "a.json", payload)
    assert strict_loads((tmp_path / "a.json").read_text()) == expected


def test_summary_json_with_an_undefined_metric_is_valid(tmp_path: Path) -> None:
    from fbmarket.layout import BundleLayout
    from fbmarket.workflow import write_summary

    write_summary({"models": {"price": {"r2_log": float("nan")}}}, tmp_path)
    assert strict_loads(BundleLayout(tmp_path).summary.read_text()) == {"models": {"price": {"r2_log": None}}}


def test_no_module_writes_json_around_the_common_writer() -> None:
    """json.dumps writes NaN as a bare word: every writer goes through files.dumps_json instead."""
    import re

    package = Path(__file__).resolve().parents[1] / "fbmarket"
    allowed = {"files.py", "features.py"}  # the writer itself; a cache key's hash (no floats)
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name not in allowed and re.search(r"\bjson\.dumps\(", path.read_text())
    ]
    assert offenders == []
