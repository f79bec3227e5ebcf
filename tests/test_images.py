"""Safe image reading and the cleaned-photo cache, on real files written here."""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fbmarket.data.image_cache import (
    MANIFEST_NAME,
    SKIPPED_IMAGE_COLUMNS,
    cache_path,
    candidate_names,
    clean_images,
    is_safe_image_id,
    source_path,
)
from fbmarket.data.images import (
    ImageError,
    clean_image,
    letterbox,
    load_pixels,
    load_pixels_batch,
    open_image,
)
from fbmarket.data.schema import CLEAN_IMAGE_COLUMNS, SchemaError
from fbmarket.errors import FbmarketError

MAX_PIXELS = 4_000_000
MAX_BYTES = 1_000_000
REAL_DATA = Path(__file__).parents[1].parent / "shared/data/gumtree-dev"


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def read(data: bytes, **limits) -> Image.Image:
    return open_image(data, limits.get("max_pixels", MAX_PIXELS), limits.get("max_bytes", MAX_BYTES))


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of ~60 bytes whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def noisy_jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


# ------------------------------------------------------------------ colour modes


def test_every_odd_mode_becomes_rgb_with_the_right_content() -> None:
    bilevel = Image.new("1", (4, 2), 0)
    bilevel.putpixel((3, 1), 1)
    out = read(encode(bilevel, "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((3, 1)) == (255, 255, 255)

    out = read(encode(Image.new("L", (3, 3), 100), "PNG"))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (100, 100, 100)

    grey_alpha = Image.new("LA", (2, 1), (100, 255))
    grey_alpha.putpixel((1, 0), (100, 0))
    out = read(encode(grey_alpha, "PNG"))
    assert out.getpixel((0, 0)) == (100, 100, 100) and out.getpixel((1, 0)) == (255, 255, 255)

    rgba = Image.new("RGBA", (3, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    out = read(encode(rgba, "PNG"))
    assert out.getpixel((0, 0)) == (10, 20, 30)
    assert out.getpixel((1, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert all(abs(v - 127) <= 1 for v in out.getpixel((2, 0)))  # half black over white

    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([255, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    palette.putpixel((1, 0), 1)
    out = read(encode(palette, "PNG", transparency=0))  # index 0 (red) is see-through
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (0, 200, 0)
    out = read(encode(palette, "GIF"))  # no transparency: plain palette lookup
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 0)) == (0, 200, 0)

    cmyk = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    cmyk.putpixel((1, 0), (0, 255, 255, 0))
    out = read(encode(cmyk, "TIFF"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (255, 0, 0)
    out = read(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    assert np.abs(np.asarray(out, dtype=int) - [255, 0, 0]).max() <= 8


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I", "TIFF")])
def test_16_bit_greyscale_is_scaled_not_clipped(mode: str, fmt: str) -> None:
    deep = Image.new(mode, (3, 1), 0)
    deep.putpixel((1, 0), 257 * 100)
    deep.putpixel((2, 0), 65535)
    out = read(encode(deep, fmt))
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_float_images_in_unit_range_are_stretched() -> None:
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    out = read(encode(floats, "TIFF"))
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_exif_rotated_jpeg_comes_out_upright() -> None:
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())

    out = read(data)
    assert out.size == (20, 40)
    assert np.allclose(out.getpixel((10, 5)), (255, 0, 0), atol=10)  # the stored left is now on top
    assert np.allclose(out.getpixel((10, 35)), (0, 0, 255), atol=10)

    cleaned = clean_image(data, 32, MAX_PIXELS, MAX_BYTES)
    assert (cleaned.width, cleaned.height) == (20, 40)  # upright size of the original


# --------------------------------------------------------------------- letterbox


def test_letterbox_keeps_aspect_and_centres_with_bars() -> None:
    wide = letterbox(Image.new("RGB", (200, 100), (255, 0, 0)), 64)
    pixels = np.asarray(wide)
    assert wide.size == (64, 64) and wide.mode == "RGB"
    assert (pixels[:16] == 0).all() and (pixels[48:] == 0).all()  # black bars top and bottom
    assert (pixels[16:48] == [255, 0, 0]).all()

    tall = np.asarray(letterbox(Image.new("RGB", (30, 90), (0, 255, 0)), 30, fill=(9, 9, 9)))
    assert (tall[:, :10] == 9).all() and (tall[:, 20:] == 9).all()  # 10x30 photo in a 30x30 square
    assert (tall[:, 10:20] == [0, 255, 0]).all()

    small = np.asarray(letterbox(Image.new("RGB", (10, 5), (0, 0, 255)), 40))  # upscales to fill
    assert (small[10:30] == [0, 0, 255]).all() and (small[:10] == 0).all()

    sliver = np.asarray(letterbox(Image.new("RGB", (1000, 1), (255, 255, 255)), 16))
    assert sliver.shape == (16, 16, 3) and sliver.max() > 0  # never scaled to nothing

    square = letterbox(Image.new("RGB", (50, 50), (1, 2, 3)), 20)
    assert square.size == (20, 20) and square.getpixel((0, 0)) == (1, 2, 3)

    with pytest.raises(ValueError):
        letterbox(Image.new("RGB", (5, 5)), 0)


# ------------------------------------------------------------------- bad inputs


def test_zero_byte_file_and_empty_upload(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        open_image(empty, MAX_PIXELS, MAX_BYTES)
    assert caught.value.reason == "empty_file" and "empty.jpg" in str(caught.value)
    with pytest.raises(ImageError) as caught:
        open_image(b"", MAX_PIXELS, MAX_BYTES)
    assert caught.value.reason == "empty_file"


def test_truncated_jpeg_is_detected(tmp_path: Path) -> None:
    data = noisy_jpeg()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as caught:
        open_image(path, MAX_PIXELS, MAX_BYTES)
    assert caught.value.reason == "truncated"


def test_random_bytes_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError) as caught:
        open_image(path, MAX_PIXELS, MAX_BYTES)
    assert caught.value.reason == "not_an_image"
    # a client's unusable photo, not a bug: the error taxonomy's ImageError, never a ValueError
    assert isinstance(caught.value, FbmarketError) and not isinstance(caught.value, ValueError)


def test_a_file_named_exactly_the_id_is_tried_and_decoded(tmp_path: Path) -> None:
    """Some scrapers (and `wget -O <id>`) save a photo with no extension: it is found, and
    decoded like any other, so a file of that name that is no image is not_an_image."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "bare").write_bytes(encode(Image.new("RGB", (20, 10), (200, 10, 10)), "PNG"))
    (images / "BARE_UPPER").write_bytes(encode(Image.new("RGB", (20, 10)), "JPEG"))
    (images / "notes").write_bytes(b"not a photo at all")
    (images / "both").write_bytes(b"not a photo either")
    (images / "both.jpg").write_bytes(encode(Image.new("RGB", (20, 10)), "JPEG"))
    (images / "v1.2").write_bytes(encode(Image.new("RGB", (20, 10)), "JPEG"))  # a dot, no image extension
    assert candidate_names("bare")[-1] == "bare" and candidate_names("bare")[0] == "bare.jpg"
    assert candidate_names("abc.jpg").count("abc.jpg") == 1
    assert source_path(images, "bare") == images / "bare"
    assert source_path(images, "bare_upper") == images / "BARE_UPPER"
    assert source_path(images, "both") == images / "both.jpg"  # an extension still comes first
    frame = pd.DataFrame({"id": ["bare", "bare_upper", "notes", "both", "v1.2", "absent"], "product_id": "p1"})
    clean, skipped = run(frame, images, tmp_path / "cache")
    assert clean["image_id"].tolist() == ["bare", "bare_upper", "both", "v1.2"]
    reasons = dict(zip(skipped["image_id"], skipped["reason"], strict=True))
    assert reasons == {"notes": "not_an_image", "absent": "missing_file"}
    assert skipped.set_index("image_id").loc["absent", "message"].endswith(
        "absent.jpe, absent (in any letter case)"
    )


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (30_000, 30_000, 40_000_000),  # beyond PIL's own hard limit: DecompressionBombError
        (10_000, 10_000, 40_000_000),  # in PIL's warning band: DecompressionBombWarning
        (2_000, 2_000, 1_000_000),  # under PIL's limits, over ours
    ],
)
def test_decompression_bombs_are_refused_from_the_header(width: int, height: int, max_pixels: int) -> None:
    data = png_declaring(width, height)
    assert len(data) < 100
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as caught:
            open_image(data, max_pixels, MAX_BYTES)
    assert caught.value.reason == "decompression_bomb"
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert list(warnings.filters) == filters_before and limit_before == Image.MAX_IMAGE_PIXELS


def test_oversized_file_and_upload(tmp_path: Path) -> None:
    data = noisy_jpeg(200, 200)
    path = tmp_path / "big.jpg"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(ImageError) as caught:
            open_image(source, MAX_PIXELS, len(data) - 1)
        assert caught.value.reason == "too_large"
    assert open_image(path, MAX_PIXELS, len(data)).size == (200, 200)


def test_uploaded_bytes_are_cleaned_like_files() -> None:
    data = encode(Image.new("RGBA", (60, 30), (0, 0, 0, 0)), "PNG")
    image = open_image(data, MAX_PIXELS, MAX_BYTES)
    assert image.mode == "RGB" and image.size == (60, 30) and image.getpixel((0, 0)) == (255, 255, 255)
    cleaned = clean_image(data, 32, MAX_PIXELS, MAX_BYTES)
    assert cleaned.image.size == (32, 32)
    assert (cleaned.width, cleaned.height, cleaned.original_mode) == (60, 30, "RGBA")
    assert cleaned.image.getpixel((16, 0)) == (0, 0, 0)  # black bar above the white photo
    assert cleaned.image.getpixel((16, 16)) == (255, 255, 255)


def test_big_jpegs_report_their_original_size_after_reduced_decoding() -> None:
    stored = Image.new("RGB", (1600, 800), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 800, 800))
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to display: the stored left goes down
    cleaned = clean_image(encode(stored, "JPEG", exif=exif.tobytes()), 64, MAX_PIXELS, MAX_BYTES)
    assert (cleaned.width, cleaned.height, cleaned.original_mode) == (800, 1600, "RGB")
    pixels = np.asarray(cleaned.image, dtype=int)
    assert pixels.shape == (64, 64, 3)
    assert np.abs(pixels[8, 32] - [0, 0, 255]).max() < 20 and np.abs(pixels[56, 32] - [255, 0, 0]).max() < 20
    assert pixels[32, 4].max() < 20  # black bar at the side of the now tall photo


def test_safe_ids() -> None:
    assert is_safe_image_id("912bb259-3ad9-457b-9db1-ce1da9016057")
    for bad in ("../x", "..", ".", "a/b", "a\\b", "", ".hidden", "x..y", "a\x00b", None, 12, "a" * 200):
        assert not is_safe_image_id(bad), bad
    with pytest.raises(ValueError, match="safe file name"):
        cache_path(Path("cache"), 32, "../../etc/passwd")


# ---------------------------------------------------------------- clean_images


def write_dataset(root: Path) -> tuple[Path, pd.DataFrame]:
    """A small images folder with good and broken photos, plus its Images.csv frame."""
    images = root / "images"
    images.mkdir()
    (images / "wide.jpg").write_bytes(encode(Image.new("RGB", (80, 40), (200, 30, 30)), "JPEG"))
    (images / "alpha.jpg").write_bytes(encode(Image.new("RGBA", (30, 60), (0, 0, 0, 0)), "PNG"))
    (images / "grey.png").write_bytes(encode(Image.new("L", (50, 50), 90), "PNG"))  # other extension
    (images / "empty.jpg").write_bytes(b"")
    cut = noisy_jpeg()
    (images / "cut.jpg").write_bytes(cut[: len(cut) // 2])
    (images / "bomb.jpg").write_bytes(png_declaring(30_000, 30_000))
    (root / "outside.jpg").write_bytes(encode(Image.new("RGB", (8, 8)), "JPEG"))  # target of "../outside"
    rows = [
        ("wide", "p1"),
        ("alpha", "p1"),
        ("grey", "p2"),
        ("empty", "p2"),
        ("cut", "p3"),
        ("bomb", "p3"),
        ("absent", "p4"),
        ("../outside", "p4"),
        ("wide", "p5"),
        (None, "p5"),
    ]
    frame = pd.DataFrame(rows, columns=["id", "product_id"])
    frame["image_ref"] = "ref"
    return images, frame


def run(frame: pd.DataFrame, images: Path, cache: Path, **overrides):
    options = {
        "size": 32,
        "max_pixels": MAX_PIXELS,
        "max_bytes": MAX_BYTES,
        "workers": 2,
        "show_progress": False,
    }
    options.update(overrides)
    return clean_images(frame, images, cache, **options)


def test_clean_images_keeps_good_photos_and_explains_the_rest(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    cache = tmp_path / "cache"
    clean, skipped = run(frame, images, cache)

    assert tuple(clean.columns) == CLEAN_IMAGE_COLUMNS
    assert tuple(skipped.columns) == SKIPPED_IMAGE_COLUMNS
    assert clean["image_id"].tolist() == ["wide", "alpha", "grey"]
    wide = clean.iloc[0]
    assert (wide["width"], wide["height"], wide["aspect"], wide["original_mode"]) == (80, 40, 2.0, "RGB")
    assert clean.set_index("image_id").loc["alpha", "original_mode"] == "RGBA"
    assert Path(wide["path"]) == cache / "images_32" / "wide.jpg" == cache_path(cache, 32, "wide")
    for path in clean["path"]:
        with Image.open(path) as cached:
            assert cached.size == (32, 32) and cached.mode == "RGB" and cached.format == "JPEG"

    reasons = dict(zip(skipped["image_id"], skipped["reason"], strict=True))
    assert reasons == {
        "empty": "empty_file",
        "cut": "truncated",
        "bomb": "decompression_bomb",
        "absent": "missing_file",
        "../outside": "unsafe_id",
        "wide": "duplicate_id",
        "": "unsafe_id",
    }
    assert skipped["message"].str.len().gt(10).all()
    assert not (cache / "outside.jpg").exists() and not (cache / "images_32" / ".." / "outside.jpg").exists()


def test_second_run_reuses_the_cache_without_the_originals(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    cache = tmp_path / "cache"
    first_clean, first_skipped = run(frame, images, cache)
    manifest = json.loads((cache / "images_32" / MANIFEST_NAME).read_text())
    assert set(manifest["entries"]) >= {"wide", "alpha", "grey", "cut", "empty"}

    for path in images.iterdir():  # nothing left to decode: the frame must come from the cache
        path.unlink()
    second_clean, second_skipped = run(frame, images, cache)
    pd.testing.assert_frame_equal(first_clean, second_clean)
    # the broken originals are gone too, so those now count as missing
    assert set(second_skipped.loc[second_skipped["reason"] == "missing_file", "image_id"]) == {
        "empty",
        "cut",
        "bomb",
        "absent",
    }


def test_cached_failures_are_remembered_while_the_source_is_unchanged(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    cache = tmp_path / "cache"
    _, first = run(frame, images, cache)
    _, second = run(frame, images, cache)
    pd.testing.assert_frame_equal(first, second)


def test_a_changed_source_invalidates_its_cache_entry(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    cache = tmp_path / "cache"
    first, _ = run(frame, images, cache)
    before = load_pixels(first.iloc[0]["path"], 32)

    source = images / "wide.jpg"
    source.write_bytes(encode(Image.new("RGB", (30, 90), (20, 200, 20)), "JPEG"))
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second, _ = run(frame, images, cache)

    row = second.set_index("image_id").loc["wide"]
    assert (row["width"], row["height"]) == (30, 90)
    after = load_pixels(row["path"], 32)
    assert after[16, 16, 1] > 150 and before[16, 16, 0] > 150  # the green photo replaced the red one
    pd.testing.assert_frame_equal(
        first.iloc[1:].reset_index(drop=True), second.iloc[1:].reset_index(drop=True)
    )


def test_tighter_limits_apply_to_cached_entries(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    cache = tmp_path / "cache"
    run(frame, images, cache)
    clean, skipped = run(frame, images, cache, max_pixels=2_000)  # wide is 80x40 = 3,200 pixels
    assert "wide" not in set(clean["image_id"])
    assert ("wide", "decompression_bomb") in set(zip(skipped["image_id"], skipped["reason"], strict=True))


def test_a_corrupt_manifest_means_a_cold_cache(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    cache = tmp_path / "cache"
    first, _ = run(frame, images, cache)
    manifest_path = cache / "images_32" / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["entries"]["wide"] = {"source": 3, "width": "wide"}  # edited by hand
    manifest["entries"]["alpha"] = ["not", "an", "entry"]
    manifest_path.write_text(json.dumps(manifest))
    second, _ = run(frame, images, cache)
    pd.testing.assert_frame_equal(first, second)
    assert json.loads(manifest_path.read_text())["entries"]["wide"]["width"] == 80  # repaired

    manifest_path.write_text("{not json")
    third, _ = run(frame, images, cache, workers=1)
    pd.testing.assert_frame_equal(first, third)


def test_clean_images_needs_id_and_product_id(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="product_id"):
        clean_images(pd.DataFrame({"id": ["a"]}), tmp_path, tmp_path / "c", 32, MAX_PIXELS, MAX_BYTES)


# ------------------------------------------------------------------ model inputs


def test_load_pixels_and_batches(tmp_path: Path) -> None:
    images, frame = write_dataset(tmp_path)
    clean, _ = run(frame, images, tmp_path / "cache")
    pixels = load_pixels(clean.iloc[0]["path"], 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    smaller = load_pixels(clean.iloc[0]["path"], 16)  # a different cached size is resized
    assert smaller.shape == (16, 16, 3)
    assert smaller[8, 8, 0] > 150 and smaller[0, 8].max() < 30  # red photo between black bars

    batch = load_pixels_batch(clean["path"].tolist(), 24, workers=2)
    assert batch.shape == (3, 24, 24, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[1], load_pixels(clean.iloc[1]["path"], 24))
    assert load_pixels_batch([], 24).shape == (0, 24, 24, 3)
    with pytest.raises(ImageError) as caught:
        load_pixels(tmp_path / "nope.jpg", 24)
    assert caught.value.reason == "missing_file"


# --------------------------------------------------------------------- real data


def test_real_photos_clean(tmp_path: Path) -> None:
    if not (REAL_DATA / "Images.csv").is_file():
        pytest.skip(f"real dev data not found at {REAL_DATA}")
    frame = pd.read_csv(REAL_DATA / "Images.csv", index_col=0).head(50)
    clean, skipped = clean_images(
        frame, REAL_DATA / "images", tmp_path / "cache", 64, 40_000_000, 10 * 1024 * 1024, show_progress=False
    )
    assert len(clean) + len(skipped) == 50
    assert len(clean) >= 48, skipped.to_dict("records")
    assert set(clean["product_id"]) <= set(frame["product_id"])
    assert (clean["width"] > 0).all() and (clean["height"] > 0).all()
    batch = load_pixels_batch(clean["path"].head(8).tolist(), 64)
    assert batch.shape == (8, 64, 64, 3) and batch.std() > 10  # real photos, not blank squares


# ---- issue 14, kind 9: extensions in any case, ids with their own extension -----------------------
def test_photo_files_are_found_whatever_the_extension_case(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    photo = encode(Image.new("RGB", (20, 10), (10, 200, 10)), "JPEG")
    names = {
        "IMG_1234": "IMG_1234.JPG",
        "upper_jpeg": "upper_jpeg.JPEG",
        "mixed": "mixed.Jpeg",
        "png_upper": "png_upper.PNG",
        "webp": "webp.webp",
        "abc.jpg": "abc.jpg",  # the id carries its extension
        "def.JPG": "def.JPG",
        "ghi.jpg": "ghi.png",  # the id's extension is not the file's
        "jkl.jpeg": "jkl.JPG",
        "scan": "scan.JFIF",
    }
    for file_name in names.values():
        image = Image.open(io.BytesIO(photo))
        fmt = {"png": "PNG", "webp": "WEBP"}.get(file_name.rsplit(".", 1)[1].lower(), "JPEG")
        (images / file_name).write_bytes(encode(image, fmt))
    for image_id, file_name in names.items():
        assert source_path(images, image_id) == images / file_name, image_id
    frame = pd.DataFrame({"id": [*names, "nothing"], "product_id": "p1"})
    clean, skipped = run(frame, images, tmp_path / "cache")
    assert sorted(clean["image_id"]) == sorted(names)
    assert skipped["reason"].tolist() == ["missing_file"]
    # a hand-edited Images.csv with spaces around the ids
    spaced = pd.DataFrame({"id": [" abc.jpg ", "IMG_1234 "], "product_id": [" p1", "p2 "]})
    clean, skipped = run(spaced, images, tmp_path / "cache2")
    assert clean["image_id"].tolist() == ["abc.jpg", "IMG_1234"] and skipped.empty
    assert clean["product_id"].tolist() == ["p1", "p2"]


def test_a_real_miss_says_which_names_were_tried(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    frame = pd.DataFrame({"id": ["absent", "gone.jpg"], "product_id": "p1"})
    _, skipped = run(frame, images, tmp_path / "cache")
    messages = dict(zip(skipped["image_id"], skipped["message"], strict=True))
    assert set(skipped["reason"]) == {"missing_file"}
    assert "tried absent.jpg, absent.jpeg, absent.png, absent.webp" in messages["absent"]
    assert "any letter case" in messages["absent"] and str(images) in messages["absent"]
    assert "tried gone.jpg, gone.jpeg, gone.png" in messages["gone.jpg"]
    assert candidate_names("gone.jpg")[:2] == ["gone.jpg", "gone.jpeg"]


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (30_000, 30_000, 40_000_000),  # PIL's hard error
        (10_000, 10_000, 40_000_000),  # PIL's warning band
        (2_000, 2_000, 1_000_000),  # our check
    ],
)
def test_bomb_messages_quote_the_configured_limit(width: int, height: int, max_pixels: int) -> None:
    with pytest.raises(ImageError) as caught:
        open_image(png_declaring(width, height), max_pixels, MAX_BYTES)
    message = caught.value.message
    assert f"{max_pixels:,}" in message and f"{width * height:,} pixels" in message
    assert "89,478,485" not in message and "89478485" not in message and "178956970" not in message


def test_a_bomb_within_our_limit_but_over_pils_hard_limit_says_so() -> None:
    with pytest.raises(ImageError) as caught:
        open_image(png_declaring(30_000, 30_000), 1_000_000_000, MAX_BYTES)
    assert caught.value.reason == "decompression_bomb"
    assert "within the configured limit of 1,000,000,000" in caught.value.message
