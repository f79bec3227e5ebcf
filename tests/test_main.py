"""`python main.py` end to end on a tiny synthetic marketplace, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_main_runs_end_to_end_on_a_tiny_sample(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(
        [sys.executable, "main.py", "--quick", "--out", str(out), "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "fbmarket run summary" in completed.stdout
    assert "SYNTHETIC" in completed.stdout
    summary = json.loads((out / "summary.json").read_text())
    data = summary["data"]
    assert data["synthetic"] is True
    assert (
        data["listings_kept"] > 0 and data["listings_kept"] < data["listings_in"]
    )  # the dirt was cleaned out
    assert set(data["split"]) == {"train", "val", "test"}
    assert (out / "split.json").is_file() and (out / "categories.json").is_file()
    assert (out / "fbmarket.db").is_file()
    cleaning = json.loads((out / "reports" / "cleaning.json").read_text())
    assert cleaning["dropped_total"] == sum(cleaning["dropped"].values()) > 0
    assert cleaning["images"]["skipped"], "the sample's corrupt photos must be reported"
    for plot in summary["plots"].values():
        assert Path(plot).stat().st_size > 1000
    assert 0.0 <= summary["baselines"]["category_text"]["accuracy"] <= 1.0


def test_main_rejects_a_missing_data_folder(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "main.py", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "does not exist" in completed.stderr
