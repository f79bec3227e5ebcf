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
