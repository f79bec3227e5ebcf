"""A bundle's saved settings describe the bundle where it is now, not where it was trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from fbmarket.config import Settings
from fbmarket.service import load_bundle_settings


def saved_bundle(folder: Path, out_dir: str, database_url: str | None) -> Path:
    settings = Settings()
    settings.out_dir = Path(out_dir)
    settings.database_url = database_url
    folder.mkdir(parents=True)
    settings.save(folder / "settings.json")
    return folder


@pytest.mark.parametrize(
    ("out_dir", "url"),
    [
        ("/home/ann/project/artifacts", "sqlite:////home/ann/project/artifacts/fbmarket.db"),
        ("artifacts", "sqlite:////home/ann/project/artifacts/fbmarket.db"),  # out_dir relative to the old cwd
        ("runs/b1", "sqlite:///runs/b1/fbmarket.db"),  # a relative SQLite URL
    ],
)
def test_the_default_database_of_a_moved_bundle_is_its_own(tmp_path: Path, out_dir: str, url: str) -> None:
    bundle = saved_bundle(tmp_path / "copy", out_dir, url)
    settings = load_bundle_settings(bundle)
    assert settings.out_dir == bundle.resolve()
    assert settings.database_url is None
    assert settings.db_url == f"sqlite:///{bundle.resolve() / 'fbmarket.db'}"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://app@db/fbmarket",
        "sqlite:////srv/shared/catalogue.db",  # another file: chosen on purpose
        "sqlite:////srv/other-bundle/fbmarket.db",  # the default file of another folder
    ],
)
def test_a_database_chosen_on_purpose_is_kept(tmp_path: Path, url: str) -> None:
    bundle = saved_bundle(tmp_path / "copy", "/home/ann/project/artifacts", url)
    assert load_bundle_settings(bundle).database_url == url


def test_a_folder_without_settings_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a model bundle"):
        load_bundle_settings(tmp_path)
