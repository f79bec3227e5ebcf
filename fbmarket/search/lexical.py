"""BM25 lexical retrieval over title + description (bm25s), with live add/remove.

Tokens come from `search/terms.py` (`tokenize`: NFKC, lower case, stopwords out, each word
its singular). The title counts `SearchSettings.title_weight` times: a cheap field boost,
since titles say what a listing is and descriptions add noise.

Live updates. bm25s precomputes a (document x term) score matrix from corpus-wide
statistics (document frequencies, average length), so a new listing cannot be slotted
in; rebuilding costs seconds at 100k listings (pure-Python passes over the corpus). The
index is therefore two segments:

* the main segment, a bm25s index over the corpus as of the last (re)build;
* a delta of listings added since, scored with the same Lucene BM25 formula and the
  main segment's statistics (so scores stay comparable), in a small sparse matrix.

Removal masks a main-segment document (or drops it from the delta). When pending
changes exceed `REBUILD_FRACTION` of the main segment (at least `REBUILD_MIN`), the next
write rebuilds the main segment; searches never rebuild. Until then IDF values are
those of the last build: slightly stale, never wrong about which documents match.

Persistence: one JSON file holding the tokenised corpus (vocabulary + token ids per
listing) and the normalisation that produced it, written atomically; `load` re-creates
the bm25s matrix from it. bm25s's own save format was not used: it writes several files
non-atomically and keeps no per-document tokens, so a loaded index could not take
further adds or rebuilds. `from_products` builds the same index straight from the
clean table (e.g. the database).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import bm25s
import numpy as np
import pandas as pd
import scipy.sparse as sp

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.files import atomic_write_json
from fbmarket.limits import check_k
from fbmarket.search.index import SMALL_LOOKUP, IdSelection, IndexLoadError
from fbmarket.search.terms import LEGACY_NORMALISATION, check_query, normalisation, renormalise, tokenize
from fbmarket.search.terms import STOPWORDS as STOPWORDS  # re-exported for search.hybrid

log = logging.getLogger(__name__)

# bm25s sets its own logger to DEBUG on import, so every index build would print a line
logging.getLogger("bm25s").setLevel(logging.WARNING)

FORMAT = "fbmarket.lexical_index"
FORMAT_VERSION = 1
K1, B = 1.5, 0.75  # bm25s defaults (Lucene variant)
REBUILD_MIN = 500  # pending adds/removes that always fit in the delta
REBUILD_FRACTION = 0.05  # ... or this share of the main segment, whichever is larger
PROGRESS_DOCS = 20_000  # show bm25s progress bars when (re)building at least this many

class LexicalIndex:
    """BM25 over listing title + description, addressed by product id. Thread-safe."""

    def __init__(self, settings: SearchSettings | None = None):
        self.settings = settings or SearchSettings()
        self._lock = threading.RLock()
        self._vocab: dict[str, int] = {}
        self._docs: dict[str, np.ndarray] = {}  # product id -> term ids (title repeated)
        self._reset_segments()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_products(cls, products: pd.DataFrame, settings: SearchSettings | None = None) -> LexicalIndex:
        """Index a clean products table (product_id, title, description)."""
        S.require_columns(products, (S.PRODUCT_ID, S.TITLE, S.DESCRIPTION), "products")
        index = cls(settings)
        index.build(
            products[S.PRODUCT_ID].astype(str).tolist(),
            products[S.TITLE].tolist(),
            products[S.DESCRIPTION].tolist(),
        )
        return index

    def build(
        self, product_ids: Sequence[str], titles: Sequence[object], descriptions: Sequence[object]
    ) -> None:
        """Replace the whole index with these listings."""
        docs = self._documents(product_ids, titles, descriptions)
        with self._lock:
            self._vocab = {}
            self._docs = {pid: self._term_ids(terms) for pid, terms in docs}
            self._rebuild()

    def add(
        self, product_ids: Sequence[str], titles: Sequence[object], descriptions: Sequence[object]
    ) -> None:
        """Add listings (searchable at once); an existing product id is replaced."""
        docs = self._documents(product_ids, titles, descriptions)
        with self._lock:
            for pid, terms in docs:
                if pid in self._docs:
                    self._drop(pid)
                self._docs[pid] = self._term_ids(terms)
                self._delta.append(pid)
            self._after_write()

    def remove(self, product_ids: Iterable[str]) -> int:
        """Remove listings; unknown ids are ignored. Returns how many were removed."""
        with self._lock:
            removed = 0
            for pid in dict.fromkeys(map(str, product_ids)):
                if pid in self._docs:
                    self._drop(pid)
                    del self._docs[pid]
                    removed += 1
            if removed:
                self._after_write()
            return removed

    def compact(self) -> None:
        """Fold the delta and the removals into a fresh bm25s index (fresh statistics too)."""
        with self._lock:
            self._rebuild()

    def _documents(
        self, product_ids: Sequence[str], titles: Sequence[object], descriptions: Sequence[object]
    ) -> list[tuple[str, list[str]]]:
        ids = [str(pid) for pid in product_ids]
        if not len(ids) == len(titles) == len(descriptions):
            raise ValueError(
                f"{len(ids)} product ids, {len(titles)} titles and {len(descriptions)} descriptions"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate product ids")
        weight = max(int(self.settings.title_weight), 1)
        return [
            (pid, tokenize(title) * weight + tokenize(description))
            for pid, title, description in zip(ids, titles, descriptions, strict=True)
        ]

    def _term_ids(self, terms: list[str]) -> np.ndarray:
        vocab = self._vocab
        return np.fromiter((vocab.setdefault(t, len(vocab)) for t in terms), dtype=np.int32, count=len(terms))

    def _drop(self, pid: str) -> None:
        """Take a listing's current document out: its main-segment row when that is still
        live, else its delta entry (a main-segment listing replaced once lives in the delta)."""
        row = self._main_row.get(pid)
        if row is not None and self._main_alive[row]:
            self._main_alive[row] = False
            self._main_removed += 1
        else:
            self._delta.remove(pid)
        self._changed()

    def _after_write(self) -> None:
        pending = len(self._delta) + self._main_removed
        if self._n_main == 0 or pending > max(REBUILD_MIN, REBUILD_FRACTION * self._n_main):
            self._rebuild()
        else:
            self._changed()

    def _reset_segments(self) -> None:
        self._main: bm25s.BM25 | None = None
        self._main_pids = np.array([], dtype=object)
        self._main_row: dict[str, int] = {}
        self._main_alive = np.zeros(0, dtype=bool)
        self._main_removed = 0
        self._n_main = 0
        self._main_vocab = 0
        self._idf = np.zeros(0, dtype=np.float32)
        self._avgdl = 1.0
        self._delta: list[str] = []
        self._changed()

    def _changed(self) -> None:
        self._version = getattr(self, "_version", 0) + 1
        self._delta_matrix: tuple[sp.csc_matrix, np.ndarray] | None = None
        self._lookup: tuple[pd.Index, np.ndarray, dict[str, int]] | None = None
        self._cache: tuple[tuple[int, str], tuple[np.ndarray, np.ndarray]] | None = None
        self._all_pids: np.ndarray | None = None

    def _rebuild(self) -> None:
        """Re-index every live listing with bm25s; the vocabulary is compacted on the way."""
        self._reset_segments()
        pids = list(self._docs)
        if not pids:
            self._vocab = {}
            return
        # renumber terms densely in order of first use, dropping terms of removed listings
        old_terms = np.empty(len(self._vocab), dtype=object)
        for term, i in self._vocab.items():
            old_terms[i] = term
        used = np.unique(np.concatenate([self._docs[p] for p in pids]))
        remap = np.full(len(self._vocab), -1, dtype=np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        self._vocab = {str(term): i for i, term in enumerate(old_terms[used])}
        self._docs = {p: remap[self._docs[p]] for p in pids}

        corpus = [self._docs[p].tolist() for p in pids]
        retriever = None
        if self._vocab:  # bm25s cannot index a corpus without a single term
            retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
            retriever.index(
                bm25s.tokenization.Tokenized(ids=corpus, vocab=dict(self._vocab)),
                show_progress=len(pids) >= PROGRESS_DOCS,
            )
        lengths = np.fromiter((len(d) for d in corpus), dtype=np.float64, count=len(corpus))
        df = np.zeros(len(self._vocab), dtype=np.float64)
        for doc in self._docs.values():
            df[np.unique(doc)] += 1
        n = len(pids)
        self._main = retriever
        self._main_pids = np.array(pids, dtype=object)
        self._main_row = {p: i for i, p in enumerate(pids)}
        self._main_alive = np.ones(n, dtype=bool)
        self._n_main = n
        self._main_vocab = len(self._vocab)
        self._idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)  # Lucene IDF, as bm25s
        self._avgdl = float(lengths.mean()) if n and lengths.mean() > 0 else 1.0
        self._changed()

    # ------------------------------------------------------------------ querying
    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._docs

    @property
    def pending_changes(self) -> int:
        """Adds and removals not yet folded into the main bm25s segment."""
        return len(self._delta) + self._main_removed

    def search(
        self, query: str, k: int, allowed: Iterable[str] | IdSelection | None = None
    ) -> list[tuple[str, float]]:
        """The k best BM25 matches: [(product_id, score)], best first.

        Only listings sharing at least one term with the query come back, so a query of
        unknown words (or only stopwords) returns [] rather than failing.
        """
        k = check_k(k, self.settings.max_k)
        with self._lock:
            pids, scores = self._all_scores(check_query(query))
            keep = scores > 0
            if allowed is not None:
                if isinstance(allowed, IdSelection):
                    if allowed.version != self._version:
                        raise ValueError("stale IdSelection: the lexical index changed since it was made")
                    pos = np.asarray(allowed.ids, dtype=np.int64)
                else:
                    pos = self._positions(allowed)
                mask = np.zeros(len(pids), dtype=bool)
                mask[pos[pos >= 0]] = True
                keep &= mask
            candidates = np.flatnonzero(keep)
            if len(candidates) > k:
                top = np.argpartition(-scores[candidates], k - 1)[:k]
                candidates = candidates[top]
            order = np.lexsort((candidates, -scores[candidates]))  # score desc, then index order
            best = candidates[order]
            return list(zip(pids[best].tolist(), scores[best].astype(float).tolist(), strict=True))

    def known_terms(self, query: str) -> list[str]:
        """The query's index terms that some listing contains (the vocabulary of the last build
        plus later adds; a term only removed listings had may linger until the next rebuild)."""
        with self._lock:
            return [term for term in tokenize(check_query(query)) if term in self._vocab]

    def score(self, query: str, product_ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of given listings for a query (0 for no match or an unknown id)."""
        with self._lock:
            _, scores = self._all_scores(check_query(query))
            pos = self._positions(product_ids)
            return np.where(pos >= 0, scores[np.maximum(pos, 0)] if len(scores) else 0.0, 0.0)

    @property
    def version(self) -> int:
        """Changes with every write; positions from `positions` are valid until it does."""
        return self._version

    def positions(self, product_ids: Iterable[str]) -> np.ndarray:
        """Each listing's position in this index's score vector (-1 if absent), for an IdSelection."""
        with self._lock:
            return self._positions(product_ids)

    def _positions(self, product_ids: Iterable[str]) -> np.ndarray:
        if self._lookup is None:
            live_rows = np.flatnonzero(self._main_alive)
            positions = np.concatenate([live_rows, self._n_main + np.arange(len(self._delta))]).astype(
                np.int64
            )
            pids = np.concatenate([self._main_pids[live_rows], np.array(self._delta, dtype=object)])
            self._lookup = (
                pd.Index(pids, dtype=object),
                positions,
                dict(zip(pids.tolist(), positions.tolist(), strict=True)),
            )
        index, positions, by_id = self._lookup
        wanted = (
            product_ids if isinstance(product_ids, np.ndarray | pd.Index | pd.Series) else list(product_ids)
        )
        if len(wanted) <= SMALL_LOOKUP:
            return np.fromiter((by_id.get(p, -1) for p in wanted), dtype=np.int64, count=len(wanted))
        found = index.get_indexer(pd.Index(wanted, dtype=object))
        return np.where(found >= 0, positions[np.maximum(found, 0)], -1)

    def _all_scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every document (main segment, then delta) for a query; cached per version."""
        key = (self._version, query)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        qids = [self._vocab[t] for t in tokenize(query) if t in self._vocab]
        main_scores = np.zeros(self._n_main, dtype=np.float32)
        main_ids = [i for i in qids if i < self._main_vocab]
        if self._main is not None and main_ids:
            main_scores = np.asarray(self._main.get_scores_from_ids(main_ids), dtype=np.float32)
            if self._main_removed:
                main_scores[~self._main_alive] = 0.0
        scores = np.concatenate([main_scores, self._delta_scores(qids)]) if self._delta else main_scores
        if self._all_pids is None:  # once per version, not per query
            self._all_pids = np.concatenate([self._main_pids, np.array(self._delta, dtype=object)])
        result = (self._all_pids, scores)
        self._cache = (key, result)
        return result

    def _delta_scores(self, qids: list[int]) -> np.ndarray:
        """Lucene BM25 for the delta documents with the main segment's statistics."""
        if not self._delta or not qids:
            return np.zeros(len(self._delta), dtype=np.float32)
        if self._delta_matrix is None:
            docs = [self._docs[p] for p in self._delta]
            rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
            cols = np.concatenate(docs) if docs else np.zeros(0, np.int32)
            tf = sp.csc_matrix(
                (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(docs), len(self._vocab))
            )
            tf.sum_duplicates()
            norm = K1 * (1 - B + B * np.array([len(d) for d in docs], dtype=np.float32) / self._avgdl)
            self._delta_matrix = (tf, norm)
        tf, norm = self._delta_matrix
        n = self._n_main
        scores = np.zeros(tf.shape[0], dtype=np.float32)
        for i in qids:
            if i >= tf.shape[1]:
                continue
            column = tf[:, [i]].toarray().ravel()
            if not column.any():
                continue
            idf = self._idf[i] if i < self._main_vocab else np.log1p((n + 0.5) / 0.5)
            scores += idf * column / (column + norm)
        return scores

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> None:
        """Write the tokenised corpus atomically (one JSON file; no pickle)."""
        with self._lock:
            terms = [""] * len(self._vocab)
            for term, i in self._vocab.items():
                terms[i] = term
            payload = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "title_weight": self.settings.title_weight,
                "normalisation": normalisation(),
                "vocab": terms,
                "product_ids": list(self._docs),
                "docs": [doc.tolist() for doc in self._docs.values()],
            }
        atomic_write_json(Path(path), payload)

    @classmethod
    def load(
        cls, path: Path | str, settings: SearchSettings | None = None, products: pd.DataFrame | None = None
    ) -> LexicalIndex:
        """Read a saved corpus and re-index it; problems raise `IndexLoadError`.

        An index saved with another term normalisation (files before it was recorded used
        Harman's S-stemmer, "harman-s") or title weight still loads: rebuilt from `products`
        (the clean table: product_id, title, description) when given, which is exact. Without
        the table, another normalisation is migrated by re-normalising each stored term
        (Harman's "boxe" -> "box", "knive" -> "knife", "children" -> "child"); where the old
        stem is ambiguous ("len" from "lens") the term may stay apart from its new form until
        the next rebuild from the table.
        A title weight cannot be migrated from stored tokens, so that case needs the table.
        """
        path = Path(path)
        if not path.is_file():
            raise IndexLoadError(f"no lexical index file at {path}")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format {meta.get('format')!r} version {meta.get('version')!r}")
            terms = [str(t) for t in meta["vocab"]]
            pids = [str(p) for p in meta["product_ids"]]
            docs = [np.asarray(d, dtype=np.int32) for d in meta["docs"]]
            if len(pids) != len(docs) or len(set(pids)) != len(pids) or len(set(terms)) != len(terms):
                raise ValueError("product ids and documents do not line up")
            if any(len(d) and (d.min() < 0 or d.max() >= len(terms)) for d in docs):
                raise ValueError("a document refers to a term outside the vocabulary")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise IndexLoadError(f"the lexical index {path} is unreadable or corrupt: {error}") from None
        index = cls(settings)
        stored = meta.get("normalisation") or meta.get("stemmer") or LEGACY_NORMALISATION
        current = normalisation()
        weight_differs = meta.get("title_weight") != index.settings.title_weight
        if (stored != current or weight_differs) and products is not None:
            log.info(
                "lexical index %s was saved with %s, title_weight=%s: rebuilt from the products table",
                path,
                stored,
                meta.get("title_weight"),
            )
            return cls.from_products(products, index.settings)
        if weight_differs:
            # the stored tokens were weighted differently: the caller should rebuild from the table
            raise IndexLoadError(
                f"the lexical index {path} was built with title_weight={meta.get('title_weight')}, "
                f"settings say {index.settings.title_weight}; rebuild it from the products table"
            )
        if stored != current:
            log.warning(
                "lexical index %s was saved with %s: its terms are re-normalised with %s "
                "(approximate until it is rebuilt from the products table)",
                path,
                stored,
                current,
            )
            terms, docs = renormalise(terms, docs, stored)
        with index._lock:
            index._vocab = {t: i for i, t in enumerate(terms)}
            index._docs = dict(zip(pids, docs, strict=True))
            index._rebuild()
        return index
