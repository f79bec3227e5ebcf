"""Safe reading and cleaning of listing photos.

Photos come from scrapers and from strangers' uploads, so every byte is untrusted:
files may be empty, truncated, not images at all, decompression bombs, or in colour
modes a model cannot take. This module turns any of them into either a clean,
upright, letterboxed RGB picture or an `ImageError` with a machine-readable reason,
and keeps a disk cache of the cleaned copies so a pipeline re-run costs a few stats.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG as stat_is_file
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

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
from fbmarket.errors import ImageError  # defined with the other client-facing errors; imported from here too

REASON = "reason"
MESSAGE = "message"
SKIPPED_IMAGE_COLUMNS = (IMAGE_ID, PRODUCT_ID, REASON, MESSAGE)

# Raster formats a marketplace photo plausibly comes in. Everything else is refused
# before decoding: exotic decoders are attack surface (EPS would even run Ghostscript).
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM")  # JPEG covers MPO
# Formats whose load() never runs PIL's size check again, so decoding them needs no lock.
_LOAD_WITHOUT_CHECKS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "PPM"})
# Where a photo may live when `images/<id>.jpg` is absent (datasets brought by users); the
# extension may be in any letter case, and an id may carry its own ("abc.jpg").
SOURCE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".jpe")
JPEG_QUALITY = 90
MANIFEST_NAME = "manifest.json"
_MANIFEST_FORMAT = 1
# Failures that do not depend on the size limits: safe to remember between runs.
_CACHEABLE_FAILURES = frozenset({"empty_file", "not_an_image", "truncated", "unreadable"})
# Cached copies are our own files; these limits only stop a wrong path from hurting.
_CACHE_MAX_PIXELS = 64_000_000
_CACHE_MAX_BYTES = 64 * 1024 * 1024

_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")

# warnings.catch_warnings mutates process-wide state and is not thread-safe; one lock
# keeps concurrent opens from restoring each other's filters (and leaking them).
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class CleanImage:
    """A cleaned photo plus what the features need to know about the original."""

    image: Image.Image  # RGB, letterboxed square
    width: int  # of the original, upright
    height: int
    original_mode: str


# --------------------------------------------------------------------------- reading


def _read_bytes(source: Path | str | bytes | bytearray | memoryview, max_bytes: int) -> tuple[bytes, str]:
    """Read at most `max_bytes` (+1 to detect overflow) so a huge file never lands in memory."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), "uploaded image"
        if len(data) > max_bytes:
            raise ImageError("too_large", f"{label} is {len(data):,} bytes; the limit is {max_bytes:,}")
    else:
        path = Path(source)
        label = path.name or str(path)
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise ImageError("too_large", f"{label} is {size:,} bytes; the limit is {max_bytes:,}")
                data = handle.read(max_bytes + 1)
        except FileNotFoundError as exc:
            raise ImageError("missing_file", f"{label}: file not found") from exc
        except OSError as exc:  # a directory, no permission, I/O error
            raise ImageError("unreadable", f"{label}: cannot read file ({exc.strerror or exc})") from exc
        if len(data) > max_bytes:  # grew after the size check
            raise ImageError("too_large", f"{label} is over the {max_bytes:,}-byte limit")
    if not data:
        raise ImageError("empty_file", f"{label} is empty (0 bytes)")
    return data, label


def _bomb_filter(max_pixels: int) -> str:
    """What PIL's own DecompressionBombWarning should do under our limit.

    PIL warns above Image.MAX_IMAGE_PIXELS. If our limit is stricter, such an image is
    over our limit too: make the warning an error. If ours is looser, our own check is
    the one that counts, so the warning is noise.
    """
    pil_limit = Image.MAX_IMAGE_PIXELS
    return "error" if pil_limit is not None and max_pixels <= pil_limit else "ignore"


_PIL_PIXELS = re.compile(r"\(([0-9]+) pixels\)")


def _bomb_error(exc: Exception, label: str, max_pixels: int) -> ImageError:
    """PIL's own message quotes PIL's limit (89,478,485 pixels, or twice that for its hard
    error), not ours: say how many pixels the image declares and the limit configured."""
    match = _PIL_PIXELS.search(str(exc))
    if match is None:
        return ImageError(
            "decompression_bomb", f"{label} declares more pixels than the limit of {max_pixels:,}"
        )
    pixels = int(match.group(1))
    if pixels > max_pixels:
        return ImageError(
            "decompression_bomb", f"{label} declares {pixels:,} pixels; the limit is {max_pixels:,}"
        )
    hard = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return ImageError(
        "decompression_bomb",
        f"{label} declares {pixels:,} pixels: within the configured limit of {max_pixels:,} "
        f"but over the image library's hard limit of {hard:,}",
    )


def _decode_failure(exc: Exception, label: str, what: str) -> ImageError:
    """PIL reports a short file as OSError/EOFError mentioning truncation; the rest is 'unreadable'."""
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return ImageError("truncated", f"{label} is truncated ({text or 'unexpected end of data'})")
    return ImageError("unreadable", f"{label}: {what} ({type(exc).__name__}: {text})")


def _decode(
    data: bytes, label: str, max_pixels: int, draft_size: int | None = None
) -> tuple[Image.Image, int, int, str]:
    """Open, check, fully decode, orient and convert; returns (RGB image, width, height, mode).

    width/height are those of the original, upright photo (before any JPEG draft
    reduction), so features describe what the seller uploaded.
    """
    action = _bomb_filter(max_pixels)
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(exc, label, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            "not_an_image", f"{label} is not an image in a supported format ({', '.join(ALLOWED_FORMATS)})"
        ) from exc
    except Exception as exc:  # broken headers surface as many exception types
        raise _decode_failure(exc, label, "cannot parse image header") from exc

    width, height = image.size
    mode = image.mode
    if width <= 0 or height <= 0:
        raise ImageError("unreadable", f"{label} declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            "decompression_bomb",
            f"{label} declares {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}",
        )

    try:
        if draft_size and image.format in ("JPEG", "MPO"):
            image.draft(None, (draft_size, draft_size))  # decode at 1/2..1/8 scale when it is enough
        if image.format in _LOAD_WITHOUT_CHECKS:
            image.load()
        else:  # TIFF tiles / GIF frames re-run PIL's size check during load
            with _WARNINGS_LOCK, warnings.catch_warnings():
                warnings.simplefilter(action, Image.DecompressionBombWarning)
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(exc, label, max_pixels) from exc
    except Exception as exc:
        raise _decode_failure(exc, label, "cannot decode image") from exc

    loaded_size = image.size
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # corrupt EXIF must not cost us an otherwise good photo
        upright = image
    if upright.size != loaded_size and upright.size == loaded_size[::-1]:
        width, height = height, width
    try:
        rgb = to_rgb(upright)
    except ValueError as exc:
        raise ImageError("unreadable", f"{label}: cannot convert colour mode {mode} to RGB ({exc})") from exc
    return rgb, width, height, mode


def open_image(source: Path | str | bytes, max_pixels: int, max_bytes: int) -> Image.Image:
    """Read a photo from a file or from uploaded bytes into an upright RGB image.

    Checks the byte size before reading, the declared pixel count before decoding,
    decodes fully so truncation shows now rather than inside a model, applies the
    EXIF orientation and converts any colour mode to RGB (alpha onto white).
    Raises ImageError with `reason` in: empty_file, not_an_image, truncated,
    decompression_bomb, too_large, unreadable (and missing_file for a path).
    """
    data, label = _read_bytes(source, max_bytes)
    return _decode(data, label, max_pixels)[0]


def clean_image(source: Path | str | bytes, size: int, max_pixels: int, max_bytes: int) -> CleanImage:
    """open_image + letterbox in one step, keeping the original's size and mode (uploads use this)."""
    data, label = _read_bytes(source, max_bytes)
    rgb, width, height, mode = _decode(data, label, max_pixels, draft_size=size)
    return CleanImage(letterbox(rgb, size), width, height, mode)


# ------------------------------------------------------------------------ converting


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit and float greyscale to 0..255.

    PIL's own convert() clips such values at 255, which turns most 16-bit photos
    white; here 16-bit ranges are scaled, floats in 0..1 are stretched, and larger
    ranges are scaled by their peak.
    """
    values = np.asarray(image).astype(np.float32)
    values[~np.isfinite(values)] = 0.0
    peak = float(values.max()) if values.size else 0.0
    if image.mode == "F" and peak <= 1.0:
        values *= 255.0
    elif peak > 255.0:
        values *= 255.0 / (65535.0 if peak <= 65535.0 else peak)
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency (alpha band or palette/colour key) goes onto white."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in ("I", "F") or mode.startswith("I;"):
        return _high_depth_to_rgb(image)
    bands = image.getbands()
    if "A" in bands or "a" in bands or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def letterbox(image: Image.Image, size: int, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Fit the image inside a size x size square keeping its aspect ratio, padding with `fill`.

    The real photos are letterboxed with black bars, so black is the default. The
    shorter side keeps at least one pixel even for extreme aspect ratios.
    """
    if size < 1:
        raise ValueError(f"letterbox size must be >= 1, got {size}")
    if image.mode != "RGB":
        image = to_rgb(image)
    width, height = image.size
    scale = size / max(width, height)
    new_size = (max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale))))
    if new_size != image.size:
        # reducing_gap first shrinks by an integer factor (cheap box filter), then resamples.
        image = image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    if new_size == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(image, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


# -------------------------------------------------------------------------- the cache


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
    its stem with the other extensions ("abc.png")."""
    stem, own = os.path.splitext(image_id)
    names = [f"{image_id}{extension}" for extension in SOURCE_EXTENSIONS]
    if own.lower() in SOURCE_EXTENSIONS:
        names = [image_id] + [f"{stem}{extension}" for extension in SOURCE_EXTENSIONS] + names
    return list(dict.fromkeys(names))


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


def _write_atomic(path: Path, write: Any) -> None:
    """Write via a temporary sibling and os.replace, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_manifest(path: Path, size: int, entries: dict[str, dict[str, Any]]) -> None:
    payload = {"format": _MANIFEST_FORMAT, "size": size, "entries": entries}
    _write_atomic(
        path, lambda tmp: tmp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
    )


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
            data, label = _read_bytes(source, self.max_bytes)
            rgb, width, height, mode = _decode(data, label, self.max_pixels, draft_size=self.size)
            square = letterbox(rgb, self.size)
            _write_atomic(cached, lambda tmp: square.save(tmp, format="JPEG", quality=JPEG_QUALITY))
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


# ---------------------------------------------------------------------- model inputs


def load_pixels(path: Path | str, size: int) -> np.ndarray:
    """A cleaned photo as uint8 (size, size, 3), letterboxed again if the file has another size."""
    data, label = _read_bytes(path, _CACHE_MAX_BYTES)
    rgb = _decode(data, label, _CACHE_MAX_PIXELS, draft_size=size)[0]
    if rgb.size != (size, size):
        rgb = letterbox(rgb, size)
    return np.asarray(rgb, dtype=np.uint8)


def load_pixels_batch(
    paths: Sequence[Path | str] | Iterable[Path | str], size: int, workers: int = 1
) -> np.ndarray:
    """Stack photos into one uint8 (n, size, size, 3) array for a model batch."""
    paths = list(paths)
    batch = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def fill(index: int) -> None:
        batch[index] = load_pixels(paths[index], size)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fill, range(len(paths))))
    else:
        for index in range(len(paths)):
            fill(index)
    return batch
