"""Shared fixtures: the real dev data (skipped when absent) and a tiny synthetic marketplace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gumtree-dev"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not (REAL_DATA / "Products.csv").is_file():
        pytest.skip(f"real dev data not found at {REAL_DATA} (it lives beside the repo in ../shared)")
    return REAL_DATA
