"""The marketplace as one object: what the CLI's `search` and the HTTP API call.

It joins the trained bundle (query encoder, category head), the FAISS index, BM25, the
ranker and the database. Every write goes to the database first and the index second,
so a failure half-way leaves the two agreeing (the index is rebuilt from the database's
embeddings on start when they disagree: fbmarket/search/reconcile.py).

`Marketplace` is the facade; its jobs live in their own modules and are mixed in: searches
and feeds (service/search.py), writes (service/writes.py), duplicates (service/duplicates.py)
and prices (service/prices.py). What it takes and gives is in service/types.py, the errors
it raises in errors.py, and a seller's listing is cleaned by the batch rules in
data/listing.py.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fbmarket.bundle.files import check_ranking_files, reading
from fbmarket.bundle.settings import load_bundle_settings
from fbmarket.catalogue import CatalogueView, ListingCatalogue
from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.clean import clean_text
from fbmarket.data.store import Store
from fbmarket.errors import BadRequestError, NotFoundError
from fbmarket.layout import BundleLayout
from fbmarket.recommend.features import DISTANCE_KM
from fbmarket.recommend.personalise import RankingModels
from fbmarket.recommend.ranker import RuleRanker
from fbmarket.search.backend import EmbeddedBackend, parse_index_uri
from fbmarket.search.candidates import PHOTO_MATCH
from fbmarket.search.duplicates import DuplicateDetector, DuplicateRule
from fbmarket.search.hybrid import HybridSearcher, unknown_words_note
from fbmarket.search.index import VectorIndex
from fbmarket.search.lexical import LexicalIndex
from fbmarket.search.milvus import MilvusBackend
from fbmarket.search.reconcile import (
    embed_missing,
    load_or_rebuild_index,
    load_or_rebuild_photo_index,
    query_vocabulary,
)
from fbmarket.service.duplicates import DuplicateQueries
from fbmarket.service.listings import (
    CategoryNames,
    ListingSource,
    LocalListings,
    SharedListings,
    popular_ids,
)
from fbmarket.service.prices import PriceQueries
from fbmarket.service.search import SearchQueries
from fbmarket.service.types import (
    ListingResult,
    plain,
)
from fbmarket.service.writes import ListingWrites, count_photos
from fbmarket.text.tokenize import get_tokenizer

log = logging.getLogger(__name__)

INDEX_SAVE_EVERY = 25  # live writes between index saves (the database is the truth in between)


class Marketplace(SearchQueries, ListingWrites, DuplicateQueries, PriceQueries):
    """The serving facade. Open it once per process; its methods are safe to call from threads.

    State lives in two places: the database (listings, photos, embeddings, buyers) is the
    truth, and the saved FAISS index is a cache of its embeddings. `open` reconciles the
    two, so a process killed between a database commit and an index save loses nothing.
    In memory, `catalogue` (fbmarket/catalogue.py) holds every listing once: this object
    writes it after each database write, and lends it read-only to the searcher and ranker.
    """

    def __init__(
        self,
        bundle_dir: Path,
        settings: Settings,
        store: Store,
        model: Any,
        searcher: HybridSearcher,
        ranking: RankingModels,
        catalogue: ListingCatalogue | None,
        listings: ListingSource | None = None,
    ):
        self.bundle_dir = bundle_dir
        self.settings = settings
        self.store = store
        self.model = model
        self.searcher = searcher
        self.ranking = ranking
        # Embedded: every listing once, with its photo count; written only here, under the write
        # lock. Shared (listings given: SharedListings): None, every request reads the database.
        self.catalogue = catalogue
        if listings is None:
            if catalogue is None:
                raise ValueError("give the in-memory catalogue, or a shared listing source")
            listings = LocalListings(catalogue)
        self.listings: ListingSource = listings
        # a shared catalogue's category names (filters, a seller's category): a TTL cache
        self.category_names = (
            CategoryNames(store.category_paths, settings.serve.category_cache_s) if listings.shared else None
        )
        feed_pool = settings.rank.feed_candidates
        popularity = getattr(ranking.profiles, "popularity", {}) or {}
        self._popular = popular_ids(popularity, feed_pool) if listings.shared else []
        rule = getattr(model, "duplicate_rule", None)  # None: a bundle trained before the rule was fit
        self.duplicates = DuplicateDetector(
            rule or DuplicateRule.from_settings(settings.duplicates), settings.duplicates
        )
        self._write_lock = threading.RLock()
        self._writes_since_save = 0
        self._users = self._known_users()
        self.embedded_on_open = 0  # listings `open` found without an embedding and embedded
        self._embed_error: str | None = None  # why opening could not embed every listing

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(
        cls,
        bundle_dir: Path | str,
        database_url: str | None = None,
        lazy_models: bool = False,
        index_uri: str | None = None,
        shared: bool = False,
        repair_engine: bool = True,
    ) -> Marketplace:
        """Load the bundle, database and indexes. `lazy_models` loads the models a typed
        search does not use (text-only, photo backbone, image head) on first use instead:
        for one-shot commands; a server loads everything before it says it is ready.

        `index_uri` (else `Settings.index_uri`, FBMARKET_INDEX_URI) chooses where retrieval
        runs (search/backend.py): unset, the in-process FAISS + BM25 indexes, reconciled with
        the database; a Milvus URI, the bundle's collection there (filled by `fbmarket index
        --index-uri`, `load_search_index`), and no in-process index is built. A bad URI or an
        engine that cannot be reached is a DataError naming --index-uri / FBMARKET_INDEX_URI.

        `shared`: other processes write the same database (and retrieval engine), so this one
        keeps no listing table of its own (`SharedListings`, service/listings.py): what a
        request ranks and shows is read from the database per request. A Milvus `index_uri`
        always means shared (several processes use one engine); on open the engine is then
        repaired to hold exactly the database's listings (`sync_search_index`) unless
        `repair_engine` is False (`fbmarket index`, which reloads every listing itself)."""
        # Absolute once, here: every path derived from it (photo cache, index, database)
        # then means the same thing whatever the process's cwd is later.
        bundle_dir = Path(os.path.abspath(bundle_dir))
        settings = load_bundle_settings(bundle_dir).with_environment()
        if database_url:
            settings.database_url = database_url
        if index_uri:
            settings.index_uri = index_uri
        target = parse_index_uri(settings.index_uri)  # a bad URI is refused before any model loads
        from fbmarket.bundle import Bundle

        model = Bundle.load(bundle_dir, lazy=lazy_models)
        store = Store(settings.db_url, root=bundle_dir)
        rebased = store.rebase_photo_paths()
        if rebased:
            log.info("%d photo path(s) re-based onto the bundle at %s", rebased, bundle_dir)
        products = store.listings_frame()
        embed_error, embedded = None, 0
        try:
            embedded = embed_missing(store, model, products)
        except Exception as error:  # serve what is embedded; /ready names what is not, and why
            log.exception("embedding the listings that have no embedding failed")
            embed_error = f"{type(error).__name__}: {error}"
        shared = shared or not target.embedded
        catalogue = None if shared else listing_catalogue(store, products, settings)
        if target.embedded:
            vector_index, lexical, photo_index = embedded_indexes(bundle_dir, store, model, products, settings)
            searcher = HybridSearcher(
                products if shared else None,  # shared: the searcher keeps its own filter table
                vector_index,
                lexical,
                settings.search,
                model.category_space(),
                photos=photo_index,
                query_vocabulary=query_vocabulary(bundle_dir),
                catalogue=catalogue,
            )
        else:
            backend = MilvusBackend.open(
                target, model.embedding_dim, photo_dim(model), model.version, settings.search
            )
            searcher = HybridSearcher(
                None,
                settings=settings.search,
                categories=model.category_space(),
                query_vocabulary=query_vocabulary(bundle_dir),
                backend=backend,
            )
        layout = BundleLayout(bundle_dir)
        ranking_dir = layout.ranking_dir
        if (ranking_dir / "profiles.json").is_file():
            check_ranking_files(layout)  # a damaged file named, not a JSON or Keras traceback
            with reading(layout, ranking_dir):
                ranking = RankingModels.load(ranking_dir)
        else:
            ranking = cold_ranking(products, settings)
        listings = SharedListings(store, settings.rank.affinity_level) if shared else None
        market = cls(bundle_dir, settings, store, model, searcher, ranking, catalogue, listings)
        market.embedded_on_open, market._embed_error = embedded, embed_error
        if not target.embedded and repair_engine:
            market.sync_search_index()
        return market

    def ready(self) -> dict[str, bool]:
        return {name: ok for name, (ok, _) in self.readiness().items()}

    def readiness(self) -> dict[str, tuple[bool, str]]:
        """Each readiness check with a sentence: when it fails, what is missing and the command
        that fixes it (an operator reads this in /ready's `detail`)."""
        try:
            indexed = self.searcher.backend.vector_count()
        except Exception as error:  # an engine that went away: readiness says so, the server runs on
            log.warning("the search engine does not answer: %s", error)
            return {
                "bundle": (self.model is not None, "the model bundle is loaded"),
                "index": (False, "the search engine does not answer: check --index-uri / FBMARKET_INDEX_URI"),
                "database": (self._database_alive(), "the database answers"),
            }
        listings = self.listings.count()
        if indexed == listings:
            index = (True, f"the vector index holds all {listings} listings")
        elif self.searcher.vectors is None:  # an engine several processes share (Milvus)
            index = (
                False,
                f"the search engine holds {indexed} listing(s) with an embedding, the database "
                f"{listings} listing(s)"
                + (f" ({self._embed_error})" if self._embed_error else "")
                + "; a server repairs the engine from the database when it starts (restart one), "
                f"or run `fbmarket index --bundle {self.bundle_dir} --index-uri ...`",
            )
        else:
            index = (
                False,
                f"the vector index holds {indexed} of {listings} listings: "
                f"{max(listings - indexed, 0)} listing(s) without an embedding"
                + (f" ({self._embed_error})" if self._embed_error else "")
                + f"; run `fbmarket index --bundle {self.bundle_dir}` to embed them, then restart",
            )
        alive = self._database_alive()
        database = (
            (True, "the database answers")
            if alive
            else (False, "the database does not answer: check --database / FBMARKET_DATABASE_URL")
        )
        return {
            "bundle": (self.model is not None, "the model bundle is loaded"),
            "index": index,
            "database": database,
        }

    def _database_alive(self) -> bool:
        try:
            self.store.count("listings")
        except Exception:  # a dead connection is exactly what readiness reports
            return False
        return True

    def close(self) -> None:
        with self._write_lock:
            self.save_index()
            self.store.close()
            self.searcher.backend.close()

    def sync_search_index(self) -> dict[str, int]:
        """Repair the retrieval engine (Milvus) to hold exactly the database's listings: those
        the database has and the engine lacks are loaded (`load_search_index(only=...)`), those
        the engine has and the database no longer has are removed. Run on every shared open.

        Safe when several processes start at once, and while others write: it only upserts by
        product id and deletes ids, both idempotent. The engine's ids are read before the
        database's, so a listing another process creates meanwhile (database first, engine
        second) is never taken for a stale one; an id is removed only if the database still
        lacks it just before. What it does not see: a listing in both whose engine row is older
        than its database row (an edit whose engine write failed after its commit);
        `fbmarket index --index-uri` reloads every row. Returns {"added": n, "removed": n}.
        """
        backend = self.searcher.backend
        if not isinstance(backend, MilvusBackend):
            return {"added": 0, "removed": 0}
        # an empty collection is asked nothing more (milvus-lite 2.5.1 answers a query iterator
        # over one with an error, measured)
        engine_ids = set(backend.product_ids()) if backend.count() else set()
        database_ids = set(self.store.listing_ids())
        missing = sorted(database_ids - engine_ids)
        added = self.load_search_index(only=missing)["loaded"] if missing else 0
        stale = [pid for pid in sorted(engine_ids - database_ids) if not self.store.has_listing(pid)]
        removed = backend.remove(stale) if stale else 0
        if added or removed:
            log.info("search engine repaired from the database: %d listing(s) added, %d removed", added, removed)
        return {"added": added, "removed": removed}

    def load_search_index(
        self, show_progress: bool = False, batch: int = 2048, only: Sequence[str] | None = None
    ) -> dict[str, int]:
        """Copy every listing of the database (or the `only` ids) into the retrieval engine (a
        Milvus backend): its fields, its embedding of this bundle's model, its pooled photo
        vector (the saved photo index, reconciled with the photos as on an embedded open) and
        photo count. Idempotent (upserts by product id); a whole load also removes the listings
        the engine holds that the database no longer has.
        Returns {"loaded": n, "removed": n, "with_photo": n}."""
        from tqdm.auto import tqdm

        backend = self.searcher.backend
        if isinstance(backend, EmbeddedBackend):
            raise BadRequestError("the embedded index is built on open; --index-uri names an engine to load")
        products = self.store.listings_frame(only)
        ids, vectors = self.store.load_embeddings(self.model.version)
        position = {pid: i for i, pid in enumerate(ids)}
        photos = None
        try:
            photos = load_or_rebuild_photo_index(
                BundleLayout(self.bundle_dir).photo_index, products, self.store, self.model, self.settings
            )
        except Exception:  # words and embeddings still load; photo search then finds nothing
            log.exception("photo vectors could not be read or computed: listings are loaded without them")
        pids = products[S.PRODUCT_ID].astype(str).tolist()
        counts = count_photos(self.store, pids if only is not None else None)
        loaded = with_photo = 0
        bar = tqdm(total=len(pids), desc="loading the search engine", unit="listing", disable=not show_progress)
        with self._write_lock:
            for start in range(0, len(pids), batch):
                chunk = products.iloc[start : start + batch]
                chunk_ids = pids[start : start + batch]
                have = [pid in position for pid in chunk_ids]
                embedded = chunk[np.array(have, bool)]
                rest = chunk[~np.array(have, bool)]
                for part, has_embedding in ((embedded, True), (rest, False)):
                    if part.empty:
                        continue
                    part_ids = part[S.PRODUCT_ID].astype(str).tolist()
                    emb = vectors[[position[pid] for pid in part_ids]] if has_embedding else None
                    has_photo = np.array([photos is not None and pid in photos for pid in part_ids], bool)
                    photo_vectors = None
                    if photos is not None and has_photo.any():
                        photo_vectors = np.zeros((len(part_ids), photos.dim), np.float32)
                        photo_vectors[has_photo] = photos.vectors_of([p for p, h in zip(part_ids, has_photo, strict=True) if h])
                    backend.upsert(part, emb, photo_vectors, has_photo, [counts.get(pid, 0) for pid in part_ids])
                    with_photo += int(has_photo.sum())
                loaded += len(chunk_ids)
                bar.update(len(chunk_ids))
            bar.close()
            stale = []
            if only is None and hasattr(backend, "product_ids"):
                stale = sorted(set(backend.product_ids()) - set(pids))
            removed = backend.remove(stale) if stale else 0
        return {"loaded": loaded, "removed": removed, "with_photo": with_photo}

    def save_index(self) -> None:
        if self.searcher.vectors is not None:
            self.searcher.vectors.save(BundleLayout(self.bundle_dir).vector_index)
        if self.searcher.photos is not None:
            self.searcher.photos.save(BundleLayout(self.bundle_dir).photo_index)
        self._writes_since_save = 0

    def _known_users(self) -> set[str]:
        known = set(self.ranking.profiles.buyers) if hasattr(self.ranking.profiles, "buyers") else set()
        return known | self.store.user_ids()

    def predict_category(
        self,
        text: str | None,
        image: Image.Image | None,
        top: int = 3,
        field: str = "text",
        require_known: bool = True,
    ) -> list[tuple[str, float]]:
        """The `top` (category, probability) pairs for a listing's words and/or photo.

        The text is cleaned as the catalogue's listing text is (`clean_text`), so markup and
        entities never reach the model. Raises BadRequestError naming `field` (the request field
        that held the words: "text" for /predict/category, "title" for a listing) when there is
        neither a word (once cleaned) nor a photo, and (`require_known`, for advice: the
        category and price suggestions) when no word is one the models or the catalogue know,
        reason "no_known_word": the answer would be the category prior, not a prediction. A
        listing being saved passes False: it still gets the model's best guess, so a create is
        never refused for its words, and its other fields are checked as before.
        """
        typed = text
        text = (clean_text(text) or None) if text is not None else None  # as the catalogue's text
        if image is None and not (text and get_tokenizer().tokenize(text)):
            message = "give text, a photo, or both to predict a category"
            if typed and typed.strip():  # nothing readable once cleaned, or no word the tokeniser finds
                message = (
                    "give text with letters or digits (HTML tags, entities and control characters "
                    "do not count), a photo, or both to predict a category"
                )
            raise BadRequestError(f"{field}: {message}", field=field)
        if require_known and image is None and text:
            # words the models know nothing of give the category prior, not a prediction:
            # as search does (mode "none"), say so instead of answering with confidence
            known_terms, meaningful = self.searcher.query_signal(text)
            if not known_terms and meaningful is False:
                advice = "add words that say what the item is, a photo, or the category"
                note = unknown_words_note(text, "no category can be predicted", advice)
                raise BadRequestError(f"{field}: {note}", field=field, reason="no_known_word")
        return self.model.predict_category(text, image, top=top)

    def get_listing(self, product_id: str) -> dict[str, Any]:
        listing = self.store.get_listing(product_id)
        if listing is None:
            raise NotFoundError(f"listing {product_id!r} not found")
        photos = self.store.images_frame([product_id])
        listing["images"] = photos[S.IMAGE_ID].tolist()
        listing.pop("updated_at", None)
        return {key: plain(value) for key, value in listing.items()}

    def image_path(self, product_id: str, n: int) -> Path:
        photos = self.store.images_frame([product_id])
        if photos.empty and self.store.get_listing(product_id) is None:
            raise NotFoundError(f"listing {product_id!r} not found")
        if not 0 <= n < len(photos):
            raise NotFoundError(f"listing {product_id!r} has {len(photos)} photo(s); there is no photo {n}")
        path = Path(photos[S.IMAGE_PATH].iloc[n])
        if not path.is_file():
            raise NotFoundError(f"photo {n} of listing {product_id!r} is missing from the image cache")
        return path

    # ------------------------------------------------------------------ in-memory state
    def _after_write(self) -> None:
        self._writes_since_save += 1
        if self._writes_since_save >= INDEX_SAVE_EVERY:
            self.save_index()

    def _results(self, ranked: pd.DataFrame, shown: CatalogueView | None = None) -> list[ListingResult]:
        """The ranked listings as results, read from `shown` (the view the request ranked with;
        None: a view of these ids now). A listing deleted meanwhile is left out."""
        ids = ranked[S.PRODUCT_ID].astype(str).tolist()
        if shown is None:  # one version throughout, whatever a concurrent write does
            shown = self.listings.view(ids)
        rows = shown.rows(ids)
        scores = ranked["score"].to_numpy(float)
        factors = ranked["factors"].tolist()
        distances = (
            ranked[DISTANCE_KM].to_numpy(float) if DISTANCE_KM in ranked else np.full(len(ids), np.nan)
        )
        matches = (
            ranked[PHOTO_MATCH].to_numpy(bool) if PHOTO_MATCH in ranked else np.zeros(len(ids), bool)
        )
        results = []
        for i, (pid, row) in enumerate(zip(ids, rows.tolist(), strict=True)):
            title = shown.title[row] if row >= 0 else None
            if not isinstance(title, str):
                continue  # deleted between retrieval and now
            location = shown.location[row]
            results.append(
                ListingResult(
                    product_id=pid,
                    title=title,
                    category=str(shown.value(S.CATEGORY, row)),
                    root_category=str(shown.value(S.ROOT_CATEGORY, row)),
                    price=plain(shown.price[row]),
                    location=str(location or ""),
                    distance_km=plain(distances[i]),
                    score=float(scores[i]),
                    factors={k: float(v) for k, v in factors[i].items()},
                    image_count=int(shown.image_count[row]),
                    photo_match=bool(matches[i]),
                )
            )
        return results


def photo_dim(model: Any) -> int | None:
    """The width of the bundle's pooled photo vectors (its backbone's features); None without one."""
    manifest = getattr(model, "manifest", None) or {}
    return int(manifest["feature_dim"]) if "feature_dim" in manifest else None


def embedded_indexes(
    bundle_dir: Path, store: Store, model: Any, products: pd.DataFrame, settings: Settings
) -> tuple[VectorIndex, LexicalIndex, VectorIndex | None]:
    """The in-process FAISS, BM25 and photo indexes (the embedded backend's), reconciled with
    the database; the photo index is None when it can neither be loaded nor rebuilt."""
    ids, vectors = store.load_embeddings(model.version)
    vector_index = load_or_rebuild_index(
        BundleLayout(bundle_dir).vector_index, ids, vectors, settings, model.embedding_dim
    )
    lexical = LexicalIndex.from_products(products, settings.search)
    try:
        photo_index = load_or_rebuild_photo_index(BundleLayout(bundle_dir).photo_index, products, store, model, settings)
    except Exception:  # photo search falls back to the query embedding; words are unaffected
        log.exception("the photo index could not be loaded or rebuilt: photo queries use the embedding")
        photo_index = None
    return vector_index, lexical, photo_index


def listing_catalogue(store: Store, products: pd.DataFrame, settings: Settings) -> ListingCatalogue:
    """The in-memory catalogue of the database's listings, with their photo counts (kept in
    memory: a database query per search cost more than the rest of result assembly)."""
    return ListingCatalogue.from_frame(
        products, settings.rank.affinity_level, image_counts=count_photos(store)
    )


def cold_ranking(products: pd.DataFrame, settings: Settings) -> RankingModels:
    """No buyer data at all: rule-based ranking with flat category tastes."""
    empty = pd.DataFrame(columns=["user_id", "product_id", "event", "timestamp"])
    from fbmarket.recommend.buyers import BuyerProfiles, load_interactions

    profiles = BuyerProfiles.build(None, load_interactions(empty), products, settings.rank)
    return RankingModels(profiles, RuleRanker(settings.rank.rule_weights), None, {"note": "no buyer data"})
