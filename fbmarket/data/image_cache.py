"""The disk cache of cleaned listing photos, and the batch cleaning that fills it.

`clean_images` cleans every photo of an Images table once (`data.images.clean_image`:
safe reading, EXIF orientation, RGB, letterbox) into `<cache>/images_<size>/<id>.jpg`
and remembers in a manifest what each source file was (size, mtime) and how it ended,
so a pipeline re-run costs a few stats and a photo that could not be used is reported
with the same reason without being read again. Sources are found under the dataset's
`images/` folder by id, with any of the usual extensions in any letter case.
"""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG as stat_is_file
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fbmarket.data.images import ImageError, decode, letterbox, read_bytes
from fbmarket.data.schema import (
    ASPECT,
    CLEAN_IMAGE_COLUMNS,
    HEIGHT,
    IMAGE_ID,
    IMAGE_PATH,
    ORIGINAL_MODE,
    PRODUCT_ID,
    WIDTH,
    require_columns,
)
from fbmarket.files import atomic_write, atomic_write_text, dumps_json

REASON = "reason"
MESSAGE = "message"
SKIPPED_IMAGE_COLUMNS = (IMAGE_ID, PRODUCT_ID, REASON, MESSAGE)

# Where a photo may live when `images/<id>.jpg` is absent (datasets brought by users); the
# extension may be in any letter case, and an id may carry its own ("abc.jpg").
SOURCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".jpe")
JPEG_QUALITY = 90
MANIFEST_NAME = "manifest.json"
_MANIFEST_FORMAT = 1
# Failures that do not depend on the size limits: safe to remember between runs.
_CACHEABLE_FAILURES = frozenset({"empty_file", "not_an_image", "truncated", "unreadable"})
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def is_safe_image_id(value: object) -> bool:
    """True when the id can be used as a file name: no separators, no '..', no hidden files."""
    return isinstance(value, str) and _SAFE_ID.fullmatch(value) is not None and ".." not in value


def cache_path(cache_dir: Path, size: int, image_id: str) -> Path:
    """Where the cleaned copy of a photo lives: `cache_dir/images_<size>/<id>.jpg`."""
    if not is_safe_image_id(image_id):
        raise ValueError(f"image id {image_id!r} is not a safe file name")
    return Path(cache_dir) / f"images_{size}" / f"{image_id}.jpg"


def candidate_names(image_id: str) -> list[str]:
    """File names a photo may have, most likely first: "<id>.jpg" and the other extensions; for
    an id that already ends in an image extension ("abc.jpg"), the id itself first and then
    its stem with the other extensions ("abc.png"). The bare id ("abc", as some scrapers and
    `wget -O` save photos) comes last: the file is decoded like any other, so one that is not
    an image is reported as `not_an_image`, not taken on its name."""
    stem, own = os.path.splitext(image_id)
    names = [f"{image_id}{extension}" for extension in SOURCE_EXTENSIONS]
    if own.lower() in SOURCE_EXTENSIONS:
        names = [image_id] + [f"{stem}{extension}" for extension in SOURCE_EXTENSIONS] + names
    return list(dict.fromkeys([*names, image_id]))


class _Folder:
    """A photo folder, looked up by exact name first, then in any letter case ("IMG_1234.JPG").

    The case-insensitive listing is made once, on the first miss, and shared by the threads
    of a run, so the common case (`<id>.jpg` exists) costs one stat as before.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._by_folded_name: dict[str, str] | None = None

    def _listing(self) -> dict[str, str]:
        with self._lock:
            if self._by_folded_name is None:
                names: dict[str, str] = {}
                try:
                    with os.scandir(self.path) as entries:
                        for entry in entries:
                            names.setdefault(entry.name.casefold(), entry.name)
                except OSError:
                    pass  # a missing folder: every photo is reported missing_file
                self._by_folded_name = names
            return self._by_folded_name

    def _stat(self, name: str) -> tuple[Path, tuple[int, int]] | None:
        candidate = self.path / name
        try:
            stat = candidate.stat()
        except OSError:
            return None
        return (candidate, (stat.st_size, stat.st_mtime_ns)) if stat_is_file(stat.st_mode) else None

    def find(self, image_id: str) -> tuple[Path, tuple[int, int]] | None:
        """The photo's file and its (size, mtime_ns); None if no candidate name exists in any case."""
        names = candidate_names(image_id)
        for name in names:
            if found := self._stat(name):
                return found
        listing = self._listing()
        for name in names:
            actual = listing.get(name.casefold())
            if actual is not None and (found := self._stat(actual)):
                return found
        return None

    def missing(self, image_id: str) -> str:
        """The missing_file message: which names were looked for, and where."""
        return (
            f"no file for image {image_id} in {self.path}: tried "
            f"{', '.join(candidate_names(image_id))} (in any letter case)"
        )


def _find_source(image_dir: Path, image_id: str) -> tuple[Path, tuple[int, int]] | None:
    """The photo's file and its (size, mtime_ns), trying `<id>.jpg` first; None if there is none."""
    return _Folder(image_dir).find(image_id)


def source_path(image_dir: Path, image_id: str) -> Path | None:
    """`image_dir/<id>.jpg`, or the same id with another extension, in any letter case; None if absent."""
    found = _find_source(Path(image_dir), image_id)
    return found[0] if found else None


def _load_manifest(path: Path, size: int) -> dict[str, dict[str, Any]]:
    """Entries of a previous run; anything unreadable or from another format means 'no cache'."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(payload, dict)
        or payload.get("format") != _MANIFEST_FORMAT
        or payload.get("size") != size
    ):
        return {}
    entries = payload.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_manifest(path: Path, size: int, entries: dict[str, dict[str, Any]]) -> None:
    payload = {"format": _MANIFEST_FORMAT, "size": size, "entries": entries}
    atomic_write_text(path, dumps_json(payload, separators=(",", ":")))


@dataclass(frozen=True)
class _Job:
    image_id: str
    product_id: str


@dataclass(frozen=True)
class _Outcome:
    row: dict[str, Any] | None  # a clean-frame row, or None when skipped
    skip: tuple[str, str] | None  # (reason, message)
    entry: dict[str, Any] | None = None  # new manifest entry; None keeps the old one


_ENTRY_FIELDS = {"source": str, "bytes": int, "mtime_ns": int}
_OK_FIELDS = {"width": int, "height": int, "mode": str}
_FAILED_FIELDS = {REASON: str, MESSAGE: str}


def _valid_entry(entry: object) -> bool:
    """A manifest entry we can trust the shape of (the file may have been edited by hand)."""
    if not isinstance(entry, dict):
        return False
    fields = {**_ENTRY_FIELDS, **(_OK_FIELDS if "width" in entry else _FAILED_FIELDS)}
    return all(isinstance(entry.get(name), kind) for name, kind in fields.items())


class _Cleaner:
    """One clean_images run: decides per photo between the cache and a fresh decode."""

    def __init__(
        self, image_dir: Path, out_dir: Path, size: int, max_pixels: int, max_bytes: int, manifest: dict
    ) -> None:
        self.image_dir = image_dir
        self.folder = _Folder(image_dir)
        self.image_dir_abs = os.path.abspath(image_dir)
        self.out_dir = out_dir
        self.size = size
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.manifest = manifest

    def _from_entry(self, job: _Job, cached: Path, entry: dict[str, Any]) -> _Outcome:
        """A clean row from a manifest entry, re-checking the limits (they may have tightened)."""
        width, height = entry["width"], entry["height"]
        if entry["bytes"] > self.max_bytes:
            message = f"{job.image_id}: {entry['bytes']:,} bytes; the limit is {self.max_bytes:,}"
            return _Outcome(None, ("too_large", message))
        if width * height > self.max_pixels:
            message = f"{job.image_id}: {width}x{height} pixels; the limit is {self.max_pixels:,}"
            return _Outcome(None, ("decompression_bomb", message))
        row = {
            IMAGE_ID: job.image_id,
            PRODUCT_ID: job.product_id,
            # Absolute: the frame is read later (training, features, the database) from
            # wherever the process runs; the database stores it relative to the bundle.
            IMAGE_PATH: os.path.abspath(cached),
            WIDTH: width,
            HEIGHT: height,
            ASPECT: width / height,
            ORIGINAL_MODE: entry["mode"],
        }
        return _Outcome(row, None)

    def __call__(self, job: _Job) -> _Outcome:
        cached = self.out_dir / f"{job.image_id}.jpg"
        found = self.folder.find(job.image_id)
        entry = self.manifest.get(job.image_id)
        if not _valid_entry(entry) or os.path.dirname(entry["source"]) != self.image_dir_abs:
            entry = None  # unusable, or the same id from another dataset folder
        if entry is not None:
            ok = "width" in entry
            if found is None:
                if ok and cached.is_file():
                    return self._from_entry(job, cached, entry)  # original gone: the copy is enough
            elif entry["source"] == os.path.abspath(found[0]) and found[1] == (
                entry["bytes"],
                entry["mtime_ns"],
            ):
                if not ok:
                    return _Outcome(None, (entry[REASON], entry[MESSAGE]))
                if cached.is_file():
                    return self._from_entry(job, cached, entry)

        if found is None:
            return _Outcome(None, ("missing_file", self.folder.missing(job.image_id)))
        source, (n_bytes, mtime_ns) = found
        base = {"source": os.path.abspath(source), "bytes": n_bytes, "mtime_ns": mtime_ns}
        try:
            data, label = read_bytes(source, self.max_bytes)
            rgb, width, height, mode = decode(data, label, self.max_pixels, draft_size=self.size)
            square = letterbox(rgb, self.size)
            atomic_write(cached, lambda tmp: square.save(tmp, format="JPEG", quality=JPEG_QUALITY))
        except ImageError as exc:
            remember = exc.reason in _CACHEABLE_FAILURES
            entry = {**base, REASON: exc.reason, MESSAGE: exc.message} if remember else None
            return _Outcome(None, (exc.reason, exc.message), entry)
        entry = {**base, "width": width, "height": height, "mode": mode}
        return _Outcome(self._from_entry(job, cached, entry).row, None, entry)


def _plan(images: pd.DataFrame) -> tuple[list[_Job], list[dict[str, str]]]:
    """Validate ids up front: unsafe, missing and duplicated ids never reach the file system."""
    jobs: list[_Job] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    for raw_id, raw_product in zip(images["id"].tolist(), images["product_id"].tolist(), strict=True):
        # Stripped: " abc.jpg" in a hand-edited Images.csv is the file abc.jpg, not an unsafe id.
        image_id = (
            "" if raw_id is None or (isinstance(raw_id, float) and np.isnan(raw_id)) else str(raw_id).strip()
        )
        product_id = "" if pd.isna(raw_product) else str(raw_product).strip()
        if not is_safe_image_id(image_id):
            reason, message = "unsafe_id", f"image id {image_id!r} is not a safe file name"
        elif not product_id:
            reason, message = "missing_product_id", f"image {image_id} has no product_id"
        elif image_id in seen:
            reason, message = "duplicate_id", f"image id {image_id} appears more than once; the first is kept"
        else:
            seen.add(image_id)
            jobs.append(_Job(image_id, product_id))
            continue
        skipped.append({IMAGE_ID: image_id, PRODUCT_ID: product_id, REASON: reason, MESSAGE: message})
    return jobs, skipped


def clean_images(
    images: pd.DataFrame,
    image_dir: Path,
    cache_dir: Path,
    size: int,
    max_pixels: int,
    max_bytes: int,
    workers: int = 2,
    show_progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean every photo listed in a raw Images.csv frame into `cache_dir/images_<size>/<id>.jpg`.

    Returns (clean, skipped): `clean` has CLEAN_IMAGE_COLUMNS in input order, `skipped`
    has SKIPPED_IMAGE_COLUMNS with one row per photo left out and why. A manifest in the
    cache folder remembers each original's size, mode and file stat, so a re-run
    re-uses the cached copies without decoding anything; an entry is redone when its
    source file's size or mtime changes. A cached copy whose original has since
    disappeared is still used.
    """
    require_columns(images, ("id", PRODUCT_ID), "images table")
    if size < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    image_dir, cache_dir = Path(image_dir), Path(cache_dir)
    out_dir = cache_path(cache_dir, size, "x").parent
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_NAME
    manifest = _load_manifest(manifest_path, size)

    jobs, skipped = _plan(images)
    cleaner = _Cleaner(image_dir, out_dir, size, max_pixels, max_bytes, dict(manifest))
    rows: list[dict[str, Any]] = []
    changed = False
    try:
        with (
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="images") as pool,
            tqdm(total=len(jobs), desc=f"images {size}px", unit="img", disable=not show_progress) as bar,
        ):
            for job, outcome in zip(jobs, pool.map(cleaner, jobs), strict=True):
                if outcome.entry is not None:
                    manifest[job.image_id] = outcome.entry
                    changed = True
                if outcome.row is not None:
                    rows.append(outcome.row)
                else:
                    assert outcome.skip is not None
                    skipped.append(
                        {
                            IMAGE_ID: job.image_id,
                            PRODUCT_ID: job.product_id,
                            REASON: outcome.skip[0],
                            MESSAGE: outcome.skip[1],
                        }
                    )
                bar.update()
    finally:
        if changed:  # also after an interrupt, so the work done so far is kept
            _save_manifest(manifest_path, size, manifest)

    clean = pd.DataFrame(rows, columns=list(CLEAN_IMAGE_COLUMNS)).astype(
        {WIDTH: "int64", HEIGHT: "int64", ASPECT: "float64"}
    )
    skipped_frame = pd.DataFrame(skipped, columns=list(SKIPPED_IMAGE_COLUMNS))
    return clean, skipped_frame


