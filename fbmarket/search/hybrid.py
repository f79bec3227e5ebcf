"""Hybrid retrieval: embedding neighbours + BM25 hits, fused, under listing filters (category, price, distance).

`HybridSearcher.retrieve` is the candidate generator for the ranker (recommend/personalise.py): it runs
the FAISS search (when there is a query vector) and the BM25 search (when there is query
text) under the same filters, unions the two lists and scores every candidate on both
signals, so the ranker sees a semantic and a lexical score for each one, not only for
the list that found it. It returns a `Retrieval`: the candidates, the mode that ran and
notes for the buyer. Fusion is "blend" or "rrf" (search/candidates.py).

Filters (`Filters`, search/filters.py) are applied inside both searches (FAISS IDSelector,
BM25 mask), not after them, so n results come back whenever n matching listings exist.

Queries with no known word. The query encoder maps every word outside its vocabulary to
one out-of-vocabulary embedding, so a query made only of such words ("диван", "沙发",
"xqzvvk blorf") encodes to about the same vector whatever it says, and its neighbours
are the same unrelated listings (issue 14). `retrieve` therefore only uses the vector
of a typed query when the query has at least one word the encoder learnt
(`QueryVocabulary`: the text branch's vocabulary, stopwords aside), and runs no search
at all (mode "none", with a note) when it also has no word any listing contains (BM25
vocabulary). One known word is the threshold, not a share of the words: a single real
word ("xqzvvk sofa", "sofa 2seater") changes the vector and carries the intent, while
unknown extras are common (typos, model numbers). A photo is always a signal: a query
with a photo is never cut.

Photo queries (`retrieve(..., query_photo=...)`, search/photo_retrieval.py) add a third
list, the listings whose photos look most like the query photo; similar listings
(`similar_scored`, search/similar.py) use a listing's own vector and title as the query.
The measurements behind the defaults are in the README ("Search", "Search by photo") and
benchmarks/results/search_design_notes.md.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fbmarket.catalogue import CatalogueView, ListingCatalogue
from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.limits import check_k
from fbmarket.search.backend import EmbeddedBackend, RetrievalBackend
from fbmarket.search.candidates import (
    FUSED_SCORE,
    FUSIONS,
    LEXICAL_RANK,
    LEXICAL_SCORE,
    SEMANTIC_RANK,
    SEMANTIC_SCORE,
    Retrieval,
    empty_candidates,
    reciprocal_rank_fusion,
    weighted_blend,
)
from fbmarket.search.categories import CategorySpace
from fbmarket.search.filters import (
    Filters,
    UnknownCategoryError,
    category_key,
    category_prefixes,
    filter_mask,
    live_values,
)
from fbmarket.search.index import VectorIndex
from fbmarket.search.lexical import STOPWORDS, LexicalIndex, check_query
from fbmarket.search.lexical import tokenize as lexical_tokenize
from fbmarket.search.photo_retrieval import PhotoRetrieval
from fbmarket.search.searcher_files import SearcherFiles
from fbmarket.search.similar import (
    SimilarListings,
)

TABLE_COLUMNS = (
    S.PRODUCT_ID,
    S.TITLE,
    S.CATEGORY,
    S.ROOT_CATEGORY,
    S.LEAF_CATEGORY,
    S.PRICE,
    S.LATITUDE,
    S.LONGITUDE,
)


def unknown_words_note(text: str, outcome: str, advice: str = "try other words or a photo") -> str:
    """Why words told the models nothing: only stopwords ("the", "and": in nearly every
    listing, so nothing to tell items apart by, and not indexed), or no word any listing
    contains or the models learnt. `outcome` opens the note ("no results"), `advice` ends it."""
    words = " ".join(text.split())
    if not lexical_tokenize(text):
        return (
            f"{outcome}: {words!r} has only words too common to search or classify by "
            "(stopwords such as 'the' or 'and'); add a word that says what the item is"
        )
    return (
        f"{outcome}: no word of {words!r} is known to this marketplace (no listing contains one "
        f"and the models never learnt one); {advice}"
    )


@dataclass(frozen=True)
class QueryVocabulary:
    """The words the query encoder learnt and the tokeniser it reads queries with.

    `known` is what the encoder can tell apart: the query's tokens in its vocabulary,
    stopwords aside (they are in every vocabulary and say nothing about an item).
    """

    words: frozenset[str]
    tokenize: Callable[[str], list[str]]

    def known(self, text: str) -> list[str]:
        return [t for t in self.tokenize(text) if t in self.words and t not in STOPWORDS]


class HybridSearcher(SearcherFiles, SimilarListings, PhotoRetrieval):
    """FAISS + BM25 over one catalogue, with filters, fusion and live updates. Thread-safe.

    Either index may be absent (no trained embeddings yet -> lexical only); a query then
    uses what exists and `retrieve(...).mode` says what ran.

    Filters and titles are read from a listing catalogue (fbmarket/catalogue.py). The service
    lends its own (`catalogue=`): the searcher then only reads it, and the service, its
    owner, writes every listing change into it. Without one (tests, benchmarks, training) the
    searcher builds a private catalogue of `products` and keeps it up to date itself.
    """

    def __init__(
        self,
        products: pd.DataFrame | None,
        vectors: VectorIndex | None = None,
        lexical: LexicalIndex | None = None,
        settings: SearchSettings | None = None,
        categories: CategorySpace | None = None,
        photos: VectorIndex | None = None,
        query_vocabulary: QueryVocabulary | None = None,
        catalogue: ListingCatalogue | None = None,
        backend: RetrievalBackend | None = None,
    ):
        """`vectors`, `lexical`, `photos`: the in-process indexes of the embedded backend;
        `backend`: another engine instead (e.g. `MilvusBackend`), when they are all None."""
        self.settings = settings or SearchSettings()
        self.categories = categories  # the model's category heads: similar() favours shared categories
        # the encoder's words: a typed query with none of them has no semantic signal (None: not judged)
        self.query_vocabulary = query_vocabulary
        if self.settings.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.settings.fusion!r}")
        # the searcher writes its own catalogue only when it filters over it (embedded, no lent one)
        self._owns_catalogue = catalogue is None and backend is None
        if catalogue is None:
            if products is None and backend is None:
                raise ValueError("give the products to search, or a catalogue of them")
            if products is None:  # the engine holds the listings; this process keeps none
                products = pd.DataFrame({column: pd.Series(dtype=object) for column in TABLE_COLUMNS})
            S.require_columns(products, TABLE_COLUMNS, "products")
            catalogue = ListingCatalogue.from_frame(products)
        self._catalogue = catalogue
        self._lock = threading.RLock()
        if backend is not None and any(index is not None for index in (vectors, lexical, photos)):
            raise ValueError("give in-process indexes or a backend, not both")
        self.backend: RetrievalBackend = backend or EmbeddedBackend(self._catalogue.view, vectors, lexical, photos)

    # The embedded backend's indexes (None under another backend). Settable: `reload` swaps
    # them, and benchmarks assemble a searcher from parts.
    @property
    def vectors(self) -> VectorIndex | None:
        return getattr(self.backend, "vectors", None)

    @vectors.setter
    def vectors(self, index: VectorIndex | None) -> None:
        self._embedded().vectors = index

    @property
    def lexical(self) -> LexicalIndex | None:
        return getattr(self.backend, "lexical", None)

    @lexical.setter
    def lexical(self, index: LexicalIndex | None) -> None:
        self._embedded().lexical = index

    @property
    def photos(self) -> VectorIndex | None:
        return getattr(self.backend, "photos", None)

    @photos.setter
    def photos(self, index: VectorIndex | None) -> None:
        self._embedded().photos = index

    def _embedded(self) -> EmbeddedBackend:
        if not isinstance(self.backend, EmbeddedBackend):
            raise ValueError(f"the {self.backend.name} backend has no in-process index to set")
        self.backend.invalidate()
        return self.backend

    @classmethod
    def build(
        cls,
        products: pd.DataFrame,
        product_ids: list[str] | None = None,
        embeddings: np.ndarray | None = None,
        settings: SearchSettings | None = None,
        categories: CategorySpace | None = None,
        query_vocabulary: QueryVocabulary | None = None,
    ) -> HybridSearcher:
        """Index a clean products table (BM25) and, when given, its embeddings (FAISS)."""
        settings = settings or SearchSettings()
        lexical = LexicalIndex.from_products(products, settings)
        vectors = None
        if embeddings is not None:
            ids = product_ids if product_ids is not None else products[S.PRODUCT_ID].astype(str).tolist()
            vectors = VectorIndex(int(np.shape(embeddings)[1]), settings)
            vectors.build(ids, embeddings)
        return cls(products, vectors, lexical, settings, categories, query_vocabulary=query_vocabulary)

    def title_of(self, product_id: str) -> str | None:
        """A listing's title (None: not listed): from the catalogue, or, when another engine
        holds the listings (no catalogue in this process), from the engine by id."""
        if isinstance(self.backend, EmbeddedBackend):
            return self.table.title_of(product_id)
        rows = self.backend.rows([product_id])
        return str(rows[S.TITLE].iloc[0]) if len(rows) else None

    @property
    def table(self) -> CatalogueView:
        """The listings as of now (a read-only view; `len` is how many are listed)."""
        return self._catalogue.view()

    # ------------------------------------------------------------------ live listings
    def add_products(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None = None,
        photo_vectors: np.ndarray | None = None,
        has_photo: np.ndarray | None = None,
        image_counts: list[int] | None = None,
    ) -> None:
        """Add or replace listings: they are searchable when this returns.

        `photo_vectors` (n, photo dim) with `has_photo` (n,) bool update the photo index:
        a replaced listing that no longer has a photo leaves it. `image_counts` (n,): photos
        per listing, for a backend that stores what results show (Milvus).
        """
        S.require_columns(products, (*TABLE_COLUMNS, S.DESCRIPTION), "products")
        with self._lock:
            self.backend.upsert(products, embeddings, photo_vectors, has_photo, image_counts)
            if self._owns_catalogue:  # a lent catalogue is written by its owner
                self._catalogue.upsert(products)

    def remove_products(self, product_ids: Iterable[str]) -> int:
        """Remove listings from every index; returns how many the catalogue listed."""
        ids = list(dict.fromkeys(map(str, product_ids)))
        with self._lock:
            held = self.backend.remove(ids)
            if self._owns_catalogue:
                return self._catalogue.delete(ids)
            if not isinstance(self.backend, EmbeddedBackend):  # the engine holds the listings
                return int(held)
            view = self.table
            return sum(view.contains(pid) for pid in ids)

    # ------------------------------------------------------------------ queries
    def allowed_ids(self, filters: Filters | None) -> np.ndarray | None:
        """Product ids passing the filters, or None when nothing is filtered."""
        if filters is None or not filters.active:
            return None
        view = self.table
        return view.ids[filter_mask(view, filters)]

    def check_category(self, category: str, roots: Iterable[str] = ()) -> None:
        """Raise `UnknownCategoryError` unless `category` is a catalogue category or a prefix of
        one (as `Filters` match it), or names one of `roots` (e.g. the model's categories,
        which may have no listing yet). The error lists the roots and the nearest spelling."""
        self.canonical_category(category, roots)

    def canonical_category(self, category: str, roots: Iterable[str] = ()) -> str:
        """The catalogue's own spelling of `category` ("home and garden / sofas" ->
        "Home & Garden / Sofas"), matched as `check_category` matches; a seller's category is
        stored in this spelling, so filters and the leaf feature see one name per category.
        Raises `UnknownCategoryError` (roots and the nearest spelling) when nothing matches."""
        view = self.table  # one version throughout, whatever a concurrent write does
        key = category_key(category)
        extra = {category_key(root): root for root in roots}
        if key in extra:
            return extra[key]
        prefixes = category_prefixes(view)
        if key in prefixes:
            return prefixes[key]
        known = extra | prefixes
        close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
        all_roots = sorted(set(extra.values()) | set(live_values(view, S.ROOT_CATEGORY)))
        raise UnknownCategoryError(category, all_roots, known[close[0]] if close else None)

    def query_signal(self, query_text: str, photo: bool = False) -> tuple[list[str], bool | None]:
        """(query terms some listing contains, whether the query vector means anything).

        The vector means something with a photo, or when a word of the text is in the
        encoder's vocabulary; None when this searcher has no vocabulary to judge by.
        """
        known_terms = self.backend.known_terms(query_text) if self.backend.has_lexical else []
        if photo:
            return known_terms, True
        if self.query_vocabulary is None:
            return known_terms, None
        return known_terms, bool(self.query_vocabulary.known(query_text))

    def retrieve(
        self,
        query_vector: np.ndarray | None,
        query_text: str | None,
        filters: Filters | None = None,
        n: int | None = None,
        truncate: bool = True,
        photo: bool = False,
        query_photo: np.ndarray | None = None,
        photo_root_probs: np.ndarray | None = None,
    ) -> Retrieval:
        """Up to n candidates, best fused score first (columns: CANDIDATE_COLUMNS), with the mode.

        Give a query vector (from the query encoder), query text, or both; `photo` says
        the vector holds a photo. Empty text is an error. A typed query without a photo
        whose words the encoder never learnt is searched by its words alone (mode
        "lexical"), and when no listing has any of them either, not at all: no candidates,
        mode "none" (see the module docstring); `notes` says so in a sentence.
        Without a `query_vocabulary` the vector is always used. `truncate=False` keeps
        every listing either search found (up to 2n), so each list can be judged on its
        own, not only on what survived the fusion cut. `query_photo` (the query photo's
        backbone features) with a photo index adds the photo match (`retrieve_photo`);
        `photo_root_probs` is the image head's estimate of the photo's root category, in
        class order.
        """
        if query_photo is not None and self.backend.has_photos:
            return self.retrieve_photo(
                query_photo, query_vector, query_text, filters, n, photo_root_probs, truncate
            )
        n = check_k(self.settings.candidates if n is None else n, self.settings.max_k)
        if query_text is not None:
            check_query(query_text)
        if query_vector is None and query_text is None:
            raise ValueError("give query text, a query vector, or both")
        use_vectors = query_vector is not None and self.backend.has_vectors
        use_text = query_text is not None and self.backend.has_lexical
        if not (use_vectors or use_text):
            missing = "vector index (no trained embeddings)" if query_vector is not None else "lexical index"
            raise ValueError(f"this searcher has no {missing} for this query")
        notes: list[str] = []
        if query_text is not None:
            known_terms, meaningful = self.query_signal(query_text, photo)
            if not known_terms and (meaningful is False or not use_vectors):
                return Retrieval(empty_candidates(), "none", [unknown_words_note(query_text, "no results")])
            if use_vectors and meaningful is False:
                use_vectors = False  # the out-of-vocabulary vector: the same neighbours for any query
                notes.append(
                    "matched by words only: the search model knows none of the query's words, "
                    "so it cannot judge meaning"
                )
        mode = "hybrid" if use_vectors and use_text else "semantic" if use_vectors else "lexical"

        with self._lock:
            backend = self.backend
            selection = backend.select(filters)
            if selection is not None and selection.empty:
                return Retrieval(empty_candidates(), mode, notes)
            semantic = backend.dense_search(query_vector, n, selection) if use_vectors else []
            lexical = backend.lexical_search(query_text, n, selection) if use_text else []
            frame = self._score_candidates(
                query_vector if use_vectors else None,
                query_text if use_text else None,
                semantic,
                lexical,
                n if truncate else len(semantic) + len(lexical),
            )
        return Retrieval(frame, mode, notes)

    def _score_candidates(
        self,
        query_vector: np.ndarray | None,
        query_text: str | None,
        semantic: list[tuple[str, float]],
        lexical: list[tuple[str, float]],
        n: int,
        semantic_weight: float | None = None,
    ) -> pd.DataFrame:
        sem_rank = {pid: r for r, (pid, _) in enumerate(semantic, start=1)}
        lex_rank = {pid: r for r, (pid, _) in enumerate(lexical, start=1)}
        ids = list(sem_rank) + [pid for pid in lex_rank if pid not in sem_rank]
        if not ids:
            return empty_candidates()
        sem_ranks = np.array([sem_rank.get(pid, np.nan) for pid in ids], dtype=float)
        lex_ranks = np.array([lex_rank.get(pid, np.nan) for pid in ids], dtype=float)

        sem_scores = np.full(len(ids), np.nan)
        if query_vector is not None:
            sem_scores[: len(semantic)] = [score for _, score in semantic]
            rest = ids[len(semantic) :]
            if rest:  # lexical-only candidates still get their cosine similarity (NaN: no embedding)
                sem_scores[len(semantic) :] = self.backend.dense_scores(query_vector, rest)
        lex_scores = np.full(len(ids), np.nan)
        if query_text is not None:
            lex_scores = self.backend.lexical_scores(query_text, ids)

        if self.settings.fusion == "blend":
            weight = self.settings.semantic_weight if semantic_weight is None else semantic_weight
            fused = weighted_blend(sem_scores, lex_scores, weight)
        else:
            fused = reciprocal_rank_fusion([sem_ranks, lex_ranks], self.settings.rrf_k)
        order = np.lexsort((np.arange(len(ids)), -fused))[:n]  # ties keep semantic-then-lexical order
        return pd.DataFrame(
            {
                S.PRODUCT_ID: np.array(ids, dtype=object)[order],
                SEMANTIC_SCORE: sem_scores[order],
                LEXICAL_SCORE: lex_scores[order],
                SEMANTIC_RANK: sem_ranks[order],
                LEXICAL_RANK: lex_ranks[order],
                FUSED_SCORE: fused[order],
            }
        )

    def nearest(self, vector: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """The k listings whose embeddings are closest to `vector` (cosine), among those that
        pass `filters`: [(product_id, similarity)], best first (fewer when fewer pass)."""
        with self._lock:
            if not self.backend.has_vectors:
                return []
            selection = self.backend.select(filters)
            if selection is not None and selection.empty:
                return []
            return self.backend.dense_search(vector, k, selection)
