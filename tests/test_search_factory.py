"""The FAISS index type follows the catalogue's size when an index is (re)built from the database."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fbmarket.config import SearchSettings, Settings
from fbmarket.search.reconcile import load_or_rebuild_index


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_factory_for_switches_at_the_large_catalogue_size() -> None:
    search = SearchSettings(large_catalogue=1000)
    assert search.factory_for(999) == search.index_factory == "Flat"
    assert search.factory_for(1000) == "PQ128x4fs,RFlat"
    assert SearchSettings(large_catalogue=1000, large_index_factory="").factory_for(10**6) == "Flat"


def test_a_rebuilt_index_gets_the_factory_for_its_size(tmp_path: Path) -> None:
    settings = Settings()
    settings.search.large_catalogue = 300
    ids = [f"p{i}" for i in range(400)]
    vectors = unit_vectors(400, 256)
    index = load_or_rebuild_index(tmp_path / "vectors.faiss", ids, vectors, settings, 256)
    assert index.factory == "PQ128x4fs,RFlat"
    top = index.search(vectors[7], 5)
    assert top[0][0] == "p7" and top[0][1] == pytest.approx(1.0, abs=1e-4)

    small = load_or_rebuild_index(tmp_path / "small.faiss", ids[:200], vectors[:200], settings, 256)
    assert small.factory == "Flat"

    saved = load_or_rebuild_index(tmp_path / "small.faiss", ids, vectors, settings, 256)
    assert saved.factory == "Flat" and len(saved) == 400, "a saved index is reconciled, not rebuilt"


def test_a_factory_the_width_cannot_take_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings()
    settings.search.large_catalogue = 10
    ids = [f"p{i}" for i in range(50)]
    with caplog.at_level(logging.WARNING):
        index = load_or_rebuild_index(tmp_path / "v.faiss", ids, unit_vectors(50, 24), settings, 24)
    assert index.factory == "Flat" and len(index) == 50
    assert "instead" in caplog.text
