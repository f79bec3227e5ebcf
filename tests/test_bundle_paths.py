"""A bundle's saved settings describe the bundle where it is now, not where it was trained."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "settings.json is damaged or not an fbmarket file (JSONDecodeError"),
        (b'{"seed": 42, "data": {"min_pr', "settings.json is damaged or not an fbmarket file"),
        (b"\x00\xffgarbage", "settings.json is damaged or not an fbmarket file"),
        (b"[1, 2]", "settings.json holds a JSON list, not the object fbmarket writes"),
        (b'{"editor.fontSize": 12}', "settings.json is not fbmarket's settings file"),
        (b'{"seed": "many"}', "settings.json is damaged or not an fbmarket file (ValidationError"),
    ],
)
def test_a_damaged_or_foreign_settings_file_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    """Before: a JSONDecodeError, a pydantic traceback, or (another program's JSON object)
    every setting silently at its default."""
    from fbmarket.bundle import BundleError

    bundle = saved_bundle(tmp_path / "b", "artifacts", None)
    (bundle / "settings.json").write_bytes(content)
    with pytest.raises(BundleError, match=re.escape(says)):
        load_bundle_settings(bundle)
