"""The search indexes made to agree with the database, which is the truth.

The saved FAISS files are caches of the database's embeddings (the vector index) and of the
photos it points to (the photo index). Opening a bundle reconciles each with the database:
listings it lacks are added, listings the database no longer has are removed, and a missing
or corrupt file is rebuilt, so a process killed between a database commit and an index save
loses nothing. `embed_missing` first gives every listing an embedding of the bundle's model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.search.hybrid import QueryVocabulary
from fbmarket.search.index import IndexLoadError, VectorIndex

log = logging.getLogger(__name__)

EMBED_CHUNK = 2048  # listings embedded per database write when opening a bundle


def load_or_rebuild_index(
    path: Path, ids: list[str], vectors: np.ndarray, settings: Settings, dim: int
) -> VectorIndex:
    """The saved index when it agrees with the database's embeddings; otherwise repaired or rebuilt.

    A corrupt file is logged and rebuilt from the database (which holds every embedding),
    so a crash mid-save costs a rebuild, never a listing. A rebuilt index gets the FAISS
    factory the catalogue's size calls for (`SearchSettings.factory_for`); a saved one
    keeps its own.
    """
    if not ids:  # an empty catalogue (e.g. a fresh database): live listings fill it
        return VectorIndex(dim, settings.search)
    index = None
    if path.is_file():
        try:
            index = VectorIndex.load(path, settings.search)
        except IndexLoadError as error:
            log.warning("saved index unusable (%s): rebuilding from the database", error)
    if index is not None and index.dim == vectors.shape[1]:
        wanted = set(ids)
        have = set(index.product_ids)
        extra = have - wanted
        if extra:
            index.remove(sorted(extra))
        position = {pid: i for i, pid in enumerate(ids)}
        missing = sorted(wanted - have)
        if missing:
            index.add(missing, vectors[[position[pid] for pid in missing]])
        if extra or missing:
            log.info("index reconciled with the database: %d added, %d removed", len(missing), len(extra))
            index.save(path)
        return index
    factory = settings.search.factory_for(len(ids))
    try:
        index = VectorIndex(vectors.shape[1], settings.search, factory=factory)
    except ValueError as error:  # e.g. a PQ layout that does not divide this embedding width
        log.warning("%s: using %r instead", error, settings.search.index_factory)
        index = VectorIndex(vectors.shape[1], settings.search)
    index.build(ids, vectors)
    index.save(path)
    return index


def load_or_rebuild_photo_index(
    path: Path, products: pd.DataFrame, store: Store, model: Any, settings: Settings
) -> VectorIndex:
    """The saved photo index, reconciled with the database's listings and photos.

    Photo vectors are derived data (the backbone over the cleaned photo files the database
    points to), so a missing or corrupt index, or listings it lacks, are recomputed
    from the photos, through the bundle's feature cache when it holds them.
    """
    dim = int(model.manifest["feature_dim"])
    index = None
    if path.is_file():
        try:
            index = VectorIndex.load(path, settings.search)
        except IndexLoadError as error:
            log.warning("saved photo index unusable (%s): rebuilding from the photos", error)
        if index is not None and index.dim != dim:
            log.warning("saved photo index is %d-d, the bundle's backbone %d-d: rebuilding", index.dim, dim)
            index = None
    if index is None:
        index = VectorIndex(dim, settings.search, factory="Flat")
    ids = products[S.PRODUCT_ID].astype(str).tolist() if not products.empty else []
    photos = store.images_frame() if ids else pd.DataFrame()
    with_photos = set(photos[S.PRODUCT_ID].astype(str)) if not photos.empty else set()
    extra = sorted(set(index.product_ids) - with_photos)
    if extra:
        index.remove(extra)
    missing = [pid for pid in ids if pid in with_photos and pid not in index]
    if missing:
        wanted = products[products[S.PRODUCT_ID].astype(str).isin(set(missing))]
        vectors, keep = model.photo_vectors(wanted, photos)
        found = wanted[S.PRODUCT_ID].astype(str).to_numpy()[keep].tolist()
        if found:
            index.add(found, vectors[keep])
    if extra or missing or not path.is_file():
        log.info("photo index reconciled: %d added, %d removed", len(missing), len(extra))
        index.save(path)
    return index


def embed_missing(store: Store, model: Any, products: pd.DataFrame) -> int:
    """Embed every listing in the database that has no embedding of this model (none at all, or
    one from another model version); returns how many were embedded.

    The database is the state: listings can arrive without embeddings (`fbmarket train` before
    it embedded its data, `prepare`, another tool writing the tables, a retrained model), and
    the vector index is rebuilt from the embeddings, so without this they would never be found
    and readiness (index holds every listing) would never turn true.
    """
    if products.empty:
        return 0
    versions = store.embedding_versions()
    ids = products[S.PRODUCT_ID].astype(str)
    stale = products[ids.map(lambda pid: versions.get(pid) != model.version).to_numpy()]
    if stale.empty:
        return 0
    log.info("embedding %d listing(s) that have no embedding of model %s", len(stale), model.version)
    for start in range(0, len(stale), EMBED_CHUNK):
        chunk = stale.iloc[start : start + EMBED_CHUNK]
        chunk_ids = chunk[S.PRODUCT_ID].astype(str).tolist()
        vectors = model.encode_products(chunk, store.images_frame(chunk_ids))
        store.upsert_embeddings(chunk_ids, vectors, model.version)
    return len(stale)


def query_vocabulary(bundle_dir: Path) -> QueryVocabulary | None:
    """The words the bundle's query encoder learnt (model/vocabulary.json) and its tokeniser.

    None (every query vector used, as before) when the file is missing or unreadable.
    """
    from fbmarket.layout import BundleLayout
    from fbmarket.text.tokenize import get_tokenizer
    from fbmarket.text.word2vec import OOV, PAD, Vocabulary

    path = BundleLayout(bundle_dir).vocabulary
    try:
        tokens = Vocabulary.load(path).tokens
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("no query vocabulary (%s): queries of unknown words are not detected", error)
        return None
    return QueryVocabulary(frozenset(t for t in tokens if t not in (PAD, OOV)), get_tokenizer().tokenize)
