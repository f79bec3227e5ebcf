"""Uploaded photos -> checked bytes and images, or an HTTP error that says what is wrong.

Every upload is a stranger's file: its size is checked before it is read, and it is
fully decoded (with the decompression-bomb limit) before any model or database sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import UploadFile
from PIL import Image

from fbmarket.api.errors import IMAGE_STATUS, ApiError
from fbmarket.config import Settings
from fbmarket.data.images import open_image
from fbmarket.errors import ImageError


@dataclass
class Photo:
    data: bytes
    image: Image.Image
    filename: str


def image_error(exc: ImageError, field: str) -> ApiError:
    return ApiError(IMAGE_STATUS.get(exc.reason, 422), f"{field}: {exc.message}", exc.reason, field)


def read_photo(upload: UploadFile, settings: Settings, field: str = "photo") -> Photo | None:
    """The upload's bytes and decoded image; None for an empty file input (a form sent without a photo)."""
    limit = settings.serve.max_upload_bytes
    name = upload.filename or "upload"
    if upload.size is not None and upload.size > limit:
        raise ApiError(
            413, f"{field}: {name} is {upload.size:,} bytes; the limit is {limit:,}", "too_large", field
        )
    upload.file.seek(0)
    data = upload.file.read(limit + 1)  # never more than the limit in memory
    if not data and not upload.filename:
        return None  # browsers send an empty, nameless part for an untouched file input
    if len(data) > limit:
        raise ApiError(413, f"{field}: {name} is over the {limit:,}-byte limit", "too_large", field)
    try:
        image = open_image(data, max_pixels=settings.data.max_image_pixels, max_bytes=limit)
    except ImageError as exc:
        raise image_error(
            ImageError(exc.reason, exc.message.replace("uploaded image", name, 1)), field
        ) from exc
    return Photo(data, image, name)


def read_photos(uploads: list[UploadFile] | None, settings: Settings, field: str = "photos") -> list[Photo]:
    uploads = list(uploads or [])
    most = settings.serve.max_photos_per_listing
    if len(uploads) > most:
        raise ApiError(
            422, f"{field}: at most {most} photos per listing, got {len(uploads)}", "too_many", field
        )
    photos = [read_photo(upload, settings, f"{field}[{i}]") for i, upload in enumerate(uploads)]
    return [p for p in photos if p is not None]
