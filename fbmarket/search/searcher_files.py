"""A searcher's indexes on disk: save, load and reload (another process's save).

A part of `HybridSearcher` (search/hybrid.py), mixed in. The listing table is never saved:
it is the clean products table (the database).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.search.categories import CategorySpace
from fbmarket.search.index import IndexLoadError, VectorIndex
from fbmarket.search.lexical import LexicalIndex

if TYPE_CHECKING:
    from fbmarket.search.hybrid import HybridSearcher, QueryVocabulary

VECTOR_FILE = "vectors.faiss"
PHOTO_FILE = "photos.faiss"
LEXICAL_FILE = "lexical.json"


class SearcherFiles:
    """Mixed into `HybridSearcher`, whose indexes it writes and swaps under its lock."""

    settings: SearchSettings
    vectors: VectorIndex | None
    lexical: LexicalIndex | None
    photos: VectorIndex | None
    _lock: threading.RLock

    def save(self, directory: Path | str) -> None:
        """Write the indexes (each atomically) into a directory: vectors.faiss (+ id map), lexical.json.

        The listing table is not saved: it is the clean products table (the database).
        """
        directory = Path(directory)
        with self._lock:
            if self.vectors is not None:
                self.vectors.save(directory / VECTOR_FILE)
            if self.photos is not None:
                self.photos.save(directory / PHOTO_FILE)
            if self.lexical is not None:
                self.lexical.save(directory / LEXICAL_FILE)

    @classmethod
    def load(
        cls,
        directory: Path | str,
        products: pd.DataFrame,
        settings: SearchSettings | None = None,
        categories: CategorySpace | None = None,
        query_vocabulary: QueryVocabulary | None = None,
    ) -> HybridSearcher:
        """Open saved indexes over a products table; a missing index file means that index is absent.

        A corrupt file raises `IndexLoadError` (a missing one is not an error: e.g. no
        embeddings were trained yet). A lexical index saved with an older term normalisation
        is rebuilt from `products` when they carry descriptions (`LexicalIndex.load`).
        """
        vectors, lexical = _read_indexes(Path(directory), settings or SearchSettings(), products)
        return cls(products, vectors, lexical, settings, categories, query_vocabulary=query_vocabulary)

    def reload(self, directory: Path | str) -> None:
        """Swap in indexes saved by another process; on any load error the current ones stay.

        Raises `IndexLoadError` with the reason, having changed nothing.
        """
        vectors, lexical = _read_indexes(Path(directory), self.settings)
        with self._lock:
            self.vectors, self.lexical = vectors, lexical  # the embedded backend's; re-aligned on use


def _read_indexes(
    directory: Path, settings: SearchSettings, products: pd.DataFrame | None = None
) -> tuple[VectorIndex | None, LexicalIndex | None]:
    if not directory.is_dir():
        raise IndexLoadError(f"no search index directory at {directory}")
    vector_path, lexical_path = directory / VECTOR_FILE, directory / LEXICAL_FILE
    if not vector_path.exists() and not lexical_path.exists():
        raise IndexLoadError(f"{directory} holds neither {VECTOR_FILE} nor {LEXICAL_FILE}")
    vectors = VectorIndex.load(vector_path, settings) if vector_path.exists() else None
    table = None
    if products is not None and {S.PRODUCT_ID, S.TITLE, S.DESCRIPTION} <= set(products.columns):
        table = products  # lets an index saved with another normalisation be rebuilt exactly
    lexical = LexicalIndex.load(lexical_path, settings, table) if lexical_path.exists() else None
    return vectors, lexical
