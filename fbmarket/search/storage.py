"""Crash-safe file writes for the search artefacts (FAISS index, id map, BM25 corpus).

A reader must only ever see a complete old file or a complete new one. So every file
is written to a temporary file in the same directory, flushed to disk, and renamed over
the target (`os.replace` is atomic on POSIX and Windows when both are on one volume).
Writing is split into `stage` and `commit` so that a caller can stage several files,
fingerprint them, and only then publish them.
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


def fsync_path(path: Path) -> None:
    """Force a file's bytes to disk (a rename alone can publish an empty file after a power cut)."""
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

    On any failure the temporary file is removed and the exception re-raised; `path`
    itself is never touched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    fsync_dir(path.parent)


def discard(*temps: Path | None) -> None:
    """Remove staged files that will not be committed (missing ones are fine)."""
    for temp in temps:
        if temp is not None:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write JSON so that `path` holds either the old or the new document, never half of one."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    commit(stage(path, lambda temp: temp.write_text(text, encoding="utf-8")), path)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed (index files can be gigabytes)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
