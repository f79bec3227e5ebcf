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
    assert (out / "split.json").is_file()
    # the root categories once, in the bundle's manifest (no categories.json / labels.json copies)
    assert json.loads((out / "bundle.json").read_text())["classes"]
    assert not (out / "categories.json").exists() and not (out / "model" / "labels.json").exists()
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


@pytest.mark.slow
def test_main_opens_the_bundle_once_and_builds_each_index_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages hand the trained bundle and the indexes along: training makes the one Bundle
    (nothing loads it back), and FAISS (listings, photos) and BM25 are built once each."""
    from collections import Counter

    from api_fixtures import API_SAMPLE_PRODUCTS

    from fbmarket import workflow
    from fbmarket.bundle import Bundle
    from fbmarket.bundle.parts import BundleParts
    from fbmarket.config import Settings
    from fbmarket.search.index import VectorIndex
    from fbmarket.search.lexical import LexicalIndex
    from fbmarket.service import Marketplace

    counts: Counter[tuple[str, str]] = Counter()
    stage = ["none"]

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            counts[(name, stage[0])] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Bundle, "load", classmethod(counted("bundle load", Bundle.load.__func__)))
    monkeypatch.setattr(BundleParts, "__init__", counted("bundle made", BundleParts.__init__))
    monkeypatch.setattr(
        Marketplace, "open", classmethod(counted("marketplace open", Marketplace.open.__func__))
    )
    monkeypatch.setattr(VectorIndex, "build", counted("faiss build", VectorIndex.build))
    monkeypatch.setattr(VectorIndex, "load", classmethod(counted("faiss load", VectorIndex.load.__func__)))
    monkeypatch.setattr(LexicalIndex, "build", counted("bm25 build", LexicalIndex.build))

    def entered(name: str, function):
        def run(state: workflow.RunState) -> None:
            stage[0] = name
            function(state)

        return run

    stages = [(name, entered(function.__name__, function)) for name, function in workflow.STAGES]
    settings = Settings().apply_quick()
    settings.data.sample_products = API_SAMPLE_PRODUCTS
    settings.out_dir = tmp_path / "artifacts"
    state = workflow.run_stages(settings, stages, show_progress=False)
    assert state.summary["examples"]

    total = Counter()
    for (name, _), n in counts.items():
        total[name] += n
    assert total["bundle made"] == 1 and counts[("bundle made", "stage_train")] == 1
    assert total["bundle load"] == 0 and total["marketplace open"] == 0 and total["faiss load"] == 0
    # the listings' and the photos' FAISS indexes, once each; training's own (the duplicate
    # rule's validation catalogue) is not the catalogue's
    serving_builds = sum(
        n for (name, where), n in counts.items() if name == "faiss build" and where != "stage_train"
    )
    assert serving_builds == counts[("faiss build", "stage_index")] == 2
    assert total["bm25 build"] == counts[("bm25 build", "stage_index")] == 1
