"""A bundle's saved settings, made to describe the bundle where it is now (it may have been
copied or moved since training wrote them)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fbmarket.bundle.files import BundleError, read_json_object, reading
from fbmarket.config import Settings
from fbmarket.layout import DATABASE_FILE, BundleLayout


def load_bundle_settings(bundle_dir: Path | str) -> Settings:
    """A bundle's saved settings, made to describe the bundle where it is now.

    settings.json records where training ran: `out_dir` (often relative to that cwd) and,
    when `--database` or FBMARKET_DATABASE_URL named it, the URL of the bundle's own SQLite
    file by its old absolute path. A copied or moved bundle must use its own folder and its
    own database, never the old place (where SQLite would silently create an empty file).
    """
    bundle_dir = Path(os.path.abspath(bundle_dir))
    settings_file = BundleLayout(bundle_dir).settings
    if not settings_file.is_file():
        raise FileNotFoundError(
            f"{bundle_dir} is not a model bundle (no {settings_file.name}): train one with "
            "`fbmarket train` or `python main.py`"
        )
    layout = BundleLayout(bundle_dir)
    payload = read_json_object(layout, settings_file)
    known = {f.name for f in dataclasses.fields(Settings)}
    if not known & set(payload):  # Settings.from_json ignores unknown keys: all defaults, silently
        raise BundleError(
            f"bundle {bundle_dir}: {settings_file.name} is not fbmarket's settings file (none of "
            f"{', '.join(sorted(known)[:5])}, ... in it); retrain the bundle with `fbmarket train`"
        )
    with reading(layout, settings_file):
        settings = Settings.from_json(payload)
    saved_out_dir = settings.out_dir
    settings.out_dir = bundle_dir
    if _is_bundle_database(settings.database_url, saved_out_dir, bundle_dir):
        settings.database_url = None  # Settings.db_url: the SQLite file inside this bundle
    return settings


def _is_bundle_database(url: str | None, saved_out_dir: Path | None, bundle_dir: Path) -> bool:
    """Whether `url` is the default SQLite file of the folder the bundle was saved in (or of
    this bundle): `sqlite:///<out_dir>/fbmarket.db`, `out_dir` absolute, or relative to the
    cwd training ran in (then it matches the end of the file's folder)."""
    if not url or not url.startswith("sqlite:///"):
        return False
    file = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    if file.name != DATABASE_FILE:
        return False
    folder = file.parent
    if folder == bundle_dir:
        return True
    if saved_out_dir is None:
        return False
    saved = Path(saved_out_dir)
    if saved.is_absolute():
        return folder == saved
    tail = saved.parts
    return bool(tail) and folder.parts[-len(tail) :] == tail
