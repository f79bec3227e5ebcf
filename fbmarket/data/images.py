"""Safe reading and cleaning of listing photos.

Photos come from scrapers and from strangers' uploads, so every byte is untrusted:
files may be empty, truncated, not images at all, decompression bombs, or in colour
modes a model cannot take. This module turns any of them into either a clean,
upright, letterboxed RGB picture or an `ImageError` with a machine-readable reason,
and reads cleaned copies back as model inputs (`load_pixels`). The disk cache of cleaned
copies that makes a pipeline re-run cost a few stats is `data/image_cache.py`.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fbmarket.errors import ImageError  # defined with the other client-facing errors; imported from here too

# Raster formats a marketplace photo plausibly comes in. Everything else is refused
# before decoding: exotic decoders are attack surface (EPS would even run Ghostscript).
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM")  # JPEG covers MPO
# Formats whose load() never runs PIL's size check again, so decoding them needs no lock.
_LOAD_WITHOUT_CHECKS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "PPM"})
# Cached copies are our own files; these limits only stop a wrong path from hurting.
_CACHE_MAX_PIXELS = 64_000_000
_CACHE_MAX_BYTES = 64 * 1024 * 1024

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


def read_bytes(source: Path | str | bytes | bytearray | memoryview, max_bytes: int) -> tuple[bytes, str]:
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


def decode(
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
    data, label = read_bytes(source, max_bytes)
    return decode(data, label, max_pixels)[0]


def clean_image(source: Path | str | bytes, size: int, max_pixels: int, max_bytes: int) -> CleanImage:
    """open_image + letterbox in one step, keeping the original's size and mode (uploads use this)."""
    data, label = read_bytes(source, max_bytes)
    rgb, width, height, mode = decode(data, label, max_pixels, draft_size=size)
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


# ---------------------------------------------------------------------- model inputs


def load_pixels(path: Path | str, size: int) -> np.ndarray:
    """A cleaned photo as uint8 (size, size, 3), letterboxed again if the file has another size."""
    data, label = read_bytes(path, _CACHE_MAX_BYTES)
    rgb = decode(data, label, _CACHE_MAX_PIXELS, draft_size=size)[0]
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
