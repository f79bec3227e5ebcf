"""Saving and loading a `VectorIndex` as a crash-safe pair of files.

Saving is crash-safe: the index file is written to a temporary file and fsynced, its
SHA-256 names the JSON id map (`<index>.ids-<sha>.json`, written first), and renaming the
new index over the old one is the single switch point, so a crash at any moment leaves a
matching pair on disk. `load` finds the id map by the index file's checksum; a missing,
truncated or corrupt file raises `IndexLoadError`, and the caller keeps serving the
index it already has.

The pair: the FAISS index file (`faiss.write_index` of an `IndexIDMap2`) and a JSON id map
`<index>.ids-<sha16>.json` holding the format, the factory string, the dimension, the
string <-> int64 id mapping, the id counter and the tombstones (see `search/index.py`).
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

from fbmarket.files import commit, discard, dumps_json, sha256_file, stage
from fbmarket.search.index_faiss import first_line

FORMAT = "fbmarket.vector_index"
FORMAT_VERSION = 1


class IndexLoadError(RuntimeError):
    """A saved index cannot be used: missing, truncated, corrupt, or out of step with its id map."""


def sidecar_path(path: Path, digest: str) -> Path:
    """The id map of the index file `path` whose SHA-256 is `digest`."""
    return path.with_name(f"{path.name}.ids-{digest[:16]}.json")


def write_index_files(path: Path, index: faiss.Index, state: dict[str, Any]) -> None:
    """Write `index` to `path` and `state` (the id map) beside it, so that a crash at any moment
    leaves a loadable pair.

    The id map is named after the index file's checksum and written first; renaming
    the new index file over the old one is then the single switch point. Id maps of
    earlier saves are deleted afterwards. The caller holds its index's lock.
    """
    temp_index = temp_side = None
    try:
        temp_index = stage(path, lambda temp: faiss.write_index(index, str(temp)))
        digest = sha256_file(temp_index)
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            **state,
            "index_file": path.name,
            "index_sha256": digest,
        }
        text = dumps_json(payload, ensure_ascii=False, separators=(",", ":"))
        side = sidecar_path(path, digest)
        temp_side = stage(side, lambda temp: temp.write_text(text, encoding="utf-8"))
        commit(temp_side, side)
        temp_side = None
        commit(temp_index, path)
        temp_index = None
    finally:
        discard(temp_index, temp_side)
    for stale in path.parent.glob(f"{glob.escape(path.name)}.ids-*.json"):
        if stale != side:
            discard(stale)


@dataclass
class SavedIndex:
    """What `read_index_files` found: the FAISS objects and the checked id map."""

    raw: faiss.Index  # owns the C++ object that `idmap` points into
    idmap: faiss.IndexIDMap2
    factory: str
    dim: int
    next_id: int
    product_ids: list[str]
    ids: list[int]
    tombstones: set[int]


def read_index_files(path: Path) -> SavedIndex:
    """Read a saved pair; any problem raises `IndexLoadError` saying what is wrong."""
    if not path.is_file():
        raise IndexLoadError(f"no FAISS index file at {path}")
    try:
        digest = sha256_file(path)
    except OSError as error:
        raise IndexLoadError(f"cannot read the index file {path}: {error}") from None
    side = sidecar_path(path, digest)
    if not side.is_file():
        raise IndexLoadError(
            f"no id map matches the index file {path} (checksum {digest[:16]}): the file is "
            "corrupt, truncated or was changed outside fbmarket, or its id map was deleted; "
            "rebuild it with `fbmarket index`"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown format {meta.get('format')!r} version {meta.get('version')!r}")
        factory, dim, next_id = str(meta["factory"]), int(meta["dim"]), int(meta["next_id"])
        pids, ints = [str(p) for p in meta["product_ids"]], [int(i) for i in meta["ids"]]
        tombstones = {int(i) for i in meta["tombstones"]}
        if meta["index_sha256"] != digest or len(pids) != len(ints):
            raise ValueError("inconsistent id map")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise IndexLoadError(f"the id map {side} is unreadable or corrupt: {error}") from None
    try:
        raw = faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexLoadError(f"FAISS cannot read {path}: {first_line(error)}") from None
    idmap = faiss.downcast_index(raw)
    if not isinstance(idmap, faiss.IndexIDMap2):
        raise IndexLoadError(
            f"{path} holds a {type(idmap).__name__}, not an IndexIDMap2 with product ids"
        )
    if idmap.d != dim:
        raise IndexLoadError(f"{path} has dimension {idmap.d} but its id map says {dim}")
    stored = faiss.vector_to_array(idmap.id_map)
    if len(stored) != len(ints) + len(tombstones) or set(stored.tolist()) != set(ints) | tombstones:
        raise IndexLoadError(f"the ids inside {path} do not match its id map {side}")
    return SavedIndex(raw, idmap, factory, dim, next_id, pids, ints, tombstones)
