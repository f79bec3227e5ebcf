"""Crash-safe file writes: the one way fbmarket replaces a file.

A reader must only ever see a complete old file or a complete new one, also after a power
cut. So a file is written to a temporary sibling in the same directory, fsynced (a rename
alone can publish an empty file after a crash), renamed over the target (`os.replace` is
atomic on POSIX and Windows when both are on one volume), and the directory is fsynced so
the rename itself survives. `atomic_write` does all of it; `stage` and `commit` are its two
halves, for a caller that stages several files, fingerprints them, and only then publishes
them (the FAISS index and its id map).

It lives at the bottom of the package (it imports nothing of fbmarket) so that every layer,
from data/ to the API, can use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# The process's umask, read once (os.umask can only be read by setting it): mkstemp creates
# its file 0600, and a bundle written so could not be read by another user or a web server.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would have given a new file


def fsync_path(path: Path) -> None:
    """Force a file's bytes to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    """Persist a rename in `directory`; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stage(path: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(temp_path)` for a temporary sibling of `path`, fsync it, and return it.

    The temporary name starts with a dot and ends with `path`'s own name, so writers that
    insist on an extension (Keras' `.weights.h5`) accept it. On any failure the temporary
    file is removed and the exception re-raised; `path` itself is never touched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp.{path.name}", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # the published file gets the mode any new file would
    finally:
        os.close(fd)
    temp = Path(name)
    try:
        write(temp)
        fsync_path(temp)
    except BaseException:
        discard(temp)
        raise
    return temp


def commit(temp: Path, path: Path) -> None:
    """Atomically publish a staged file under its final name."""
    os.replace(temp, path)
    fsync_dir(Path(path).parent)


def discard(*temps: Path | None) -> None:
    """Remove staged files that will not be committed (missing ones are fine)."""
    for temp in temps:
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Replace `path` with what `write(temp_path)` writes: all of it or, after a crash, none."""
    commit(stage(Path(path), write), Path(path))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf: an R² of one listing, a mean of nothing)
    as None, numpy scalars and arrays as Python ones, tuples as lists. `json.dumps` writes NaN
    as the bare word NaN, which is not JSON: strict readers (browsers, jq, other languages)
    refuse the whole document."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def dumps_json(payload: Any, **kwargs: Any) -> str:
    """`json.dumps` that always writes valid JSON: non-finite numbers become null (`json_safe`),
    and `allow_nan=False` makes any that slipped through (via `default`) an error, not NaN.
    Every JSON file and printed document of the project goes through here."""
    return json.dumps(json_safe(payload), allow_nan=False, **kwargs)


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write JSON (compact) so that `path` holds either the old or the new document."""
    atomic_write_text(path, dumps_json(payload, ensure_ascii=False, separators=(",", ":")))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed (index files can be gigabytes)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
