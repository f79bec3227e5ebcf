"""The marketplace as one object: what the CLI's `search` and the HTTP API call.

It joins the trained bundle (query encoder, category head), the FAISS index, BM25, the
ranker and the database. Every write goes to the database first and the index second,
so a failure half-way leaves the two agreeing (the index is rebuilt from the database's
embeddings on start when they disagree).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from PIL import Image

from fbmarket.catalogue import ListingCatalogue
from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.clean import CleaningReport, attach_geo, clean_products, clean_text
from fbmarket.data.features import add_features
from fbmarket.data.images import clean_image, open_image
from fbmarket.data.split import hash_split
from fbmarket.data.store import Store, images, users
from fbmarket.price.model import round_gbp
from fbmarket.recommend.buyers import Buyer, resolve_buyer
from fbmarket.recommend.features import DISTANCE_KM
from fbmarket.recommend.ranker import RuleRanker
from fbmarket.recommend.training import RankingModels
from fbmarket.search.duplicates import (
    DuplicateDetector,
    DuplicateMatch,
    DuplicateRule,
    catalogue_pairs,
    duplicate_groups,
)
from fbmarket.search.hybrid import (
    NOTES,
    PHOTO_MATCH,
    SAME_LEAF,
    SAME_ROOT,
    SIMILARITY,
    Filters,
    HybridSearcher,
    QueryVocabulary,
    UnknownCategoryError,
)
from fbmarket.search.index import IndexLoadError, VectorIndex
from fbmarket.search.lexical import LexicalIndex

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
INDEX_FILE = "index/vectors.faiss"
PHOTO_INDEX_FILE = "index/photos.faiss"  # pooled photo features of each listing with photos
RANKING_DIR = "ranking"
MAX_K = 100
INDEX_SAVE_EVERY = 25  # live writes between index saves (the database is the truth in between)
DATABASE_FILE = "fbmarket.db"  # the default SQLite database inside a bundle (Settings.db_url)
EMBED_CHUNK = 2048  # listings embedded per database write when opening a bundle
COUNT_CHUNK = 500  # listing ids per photo-count query (under every database's bound-parameter limit)


# A seller's listing refused by the cleaning rules -> the form field at fault (HTTP 422 names it).
_FIELD_OF_DROP_REASON = {
    "missing_title": "title",
    "missing_category": "category",
    "duplicate_id": "product_id",
    "missing_id": "product_id",
}


class NotFoundError(KeyError):
    """An id that does not exist (listing, buyer): HTTP 404."""


class BadRequestError(ValueError):
    """A request that cannot be served as asked (empty query, k out of range): HTTP 422.

    `field` names the request field at fault when there is one; `reason` is the
    machine-readable cause and `details` any structured help (e.g. the valid choices).
    """

    def __init__(
        self,
        message: str,
        field: str | None = None,
        reason: str = "bad_request",
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.field = field
        self.reason = reason
        self.details = details or {}


@dataclass
class BuyerQuery:
    """Who is searching: a known user id, or an inline buyer, or nobody (anonymous)."""

    user_id: str | None = None
    age: int | None = None
    gender: str | None = None
    location: str | None = None  # "Town, County", geocoded offline
    latitude: float | None = None
    longitude: float | None = None
    budget_gbp: float | None = None
    max_travel_km: float | None = None


@dataclass
class SearchRequest:
    query: str | None = None
    image: Image.Image | None = None
    buyer: BuyerQuery | None = None
    k: int = 10
    category: str | None = None  # root or full leaf path
    min_price: float | None = None
    max_price: float | None = None
    max_distance_km: float | None = None


@dataclass
class ListingResult:
    product_id: str
    title: str
    category: str
    root_category: str
    price: float | None
    location: str
    distance_km: float | None
    score: float
    factors: dict[str, float]  # contributions that add up to `score`
    image_count: int = 0


@dataclass
class SearchResponse:
    results: list[ListingResult]
    buyer_status: str  # "known" | "cold_start" (unknown or new user) | "anonymous" | "inline"
    # "hybrid" | "lexical" | "semantic" | "feed" | "none" — what retrieval actually ran ("none": the
    # query has no word the catalogue or the model knows, so nothing was searched; a note says so)
    mode: str
    notes: list[str] = field(default_factory=list)  # e.g. "user u123 not found: cold-start buyer"


@dataclass
class ListingInput:
    """A listing as a seller submits it; category is predicted when missing."""

    title: str
    description: str = ""
    price: float | None = None
    location: str = ""
    category: str | None = None
    product_id: str | None = None  # generated when missing
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PriceSuggestion:
    """A fair price for a draft listing (fbmarket/price/): the median and a calibrated range in
    GBP, P(free), the category it was priced in, and the nearest priced listings as evidence."""

    median: float
    low: float
    high: float
    free_probability: float
    category: str
    category_source: str  # "given" | "predicted"
    evidence: list[ListingResult]
    interval: float = 0.8  # nominal share of prices inside [low, high]
    model: str = "lightgbm-quantile"


class Marketplace:
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
        catalogue: ListingCatalogue,
    ):
        self.bundle_dir = bundle_dir
        self.settings = settings
        self.store = store
        self.model = model
        self.searcher = searcher
        self.ranking = ranking
        # every listing once, with its photo count; written only here, under the write lock
        self.catalogue = catalogue
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
        cls, bundle_dir: Path | str, database_url: str | None = None, lazy_models: bool = False
    ) -> Marketplace:
        """Load the bundle, database and indexes. `lazy_models` loads the models a typed
        search does not use (text-only, photo backbone, image head) on first use instead:
        for one-shot commands; a server loads everything before it says it is ready."""
        # Absolute once, here: every path derived from it (photo cache, index, database)
        # then means the same thing whatever the process's cwd is later.
        bundle_dir = Path(os.path.abspath(bundle_dir))
        settings = load_bundle_settings(bundle_dir).with_environment()
        if database_url:
            settings.database_url = database_url
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
        ids, vectors = store.load_embeddings(model.version)
        vector_index = load_or_rebuild_index(
            bundle_dir / INDEX_FILE, ids, vectors, settings, model.embedding_dim
        )
        lexical = LexicalIndex.from_products(products, settings.search)
        try:
            photo_index = load_or_rebuild_photo_index(
                bundle_dir / PHOTO_INDEX_FILE, products, store, model, settings
            )
        except Exception:  # photo search falls back to the query embedding; words are unaffected
            log.exception("the photo index could not be loaded or rebuilt: photo queries use the embedding")
            photo_index = None
        # Photos per listing live in the catalogue (a database query per search cost more than
        # the rest of result assembly); a listing without photos has 0.
        catalogue = ListingCatalogue.from_frame(
            products, settings.rank.affinity_level, image_counts=_count_photos(store)
        )
        searcher = HybridSearcher(
            None,
            vector_index,
            lexical,
            settings.search,
            model.category_space(),
            photos=photo_index,
            query_vocabulary=query_vocabulary(bundle_dir),
            catalogue=catalogue,
        )
        ranking_dir = bundle_dir / RANKING_DIR
        if (ranking_dir / "profiles.json").is_file():
            ranking = RankingModels.load(ranking_dir)
        else:
            ranking = cold_ranking(products, settings)
        market = cls(bundle_dir, settings, store, model, searcher, ranking, catalogue)
        market.embedded_on_open, market._embed_error = embedded, embed_error
        return market

    def ready(self) -> dict[str, bool]:
        return {name: ok for name, (ok, _) in self.readiness().items()}

    def readiness(self) -> dict[str, tuple[bool, str]]:
        """Each readiness check with a sentence: when it fails, what is missing and the command
        that fixes it (an operator reads this in /ready's `detail`)."""
        vectors = self.searcher.vectors
        indexed = len(vectors) if vectors is not None else 0
        listings = len(self.catalogue)
        if indexed == listings:
            index = (True, f"the vector index holds all {listings} listings")
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

    def save_index(self) -> None:
        if self.searcher.vectors is not None:
            self.searcher.vectors.save(self.bundle_dir / INDEX_FILE)
        if self.searcher.photos is not None:
            self.searcher.photos.save(self.bundle_dir / PHOTO_INDEX_FILE)
        self._writes_since_save = 0

    def _known_users(self) -> set[str]:
        known = set(self.ranking.profiles.buyers) if hasattr(self.ranking.profiles, "buyers") else set()
        with self.store.engine.connect() as connection:
            known |= {row[0] for row in connection.execute(sa.select(users.c.user_id))}
        return known

    # ------------------------------------------------------------------ reading
    def search(self, request: SearchRequest) -> SearchResponse:
        k = check_k(request.k)
        text = request.query.strip() if request.query is not None else None
        text = text or None
        buyer, status, notes = self._buyer(request.buyer)
        filters = self._filters(request, buyer)
        if text is None and request.image is None:
            if request.buyer is None or status == "anonymous":
                raise BadRequestError("empty query: give words, a photo, or a buyer (for a home feed)")
            return self._feed(buyer, status, notes, k, filters)
        photo = self.model.photo_query(request.image) if request.image is not None else None
        try:
            query_vector = self.model.encode_query(text, photo_features=None if photo is None else photo.features)
        except ValueError as error:  # e.g. only punctuation: nothing to search with
            raise BadRequestError(str(error)) from error
        try:
            candidates = self.searcher.retrieve(
                query_vector,
                text,
                filters,
                n=self.settings.search.candidates,
                photo=request.image is not None,
                query_photo=None if photo is None else photo.features,
                photo_root_probs=None if photo is None else photo.root_probs,
            )
        except ValueError as error:
            raise BadRequestError(str(error)) from error
        mode = candidates.attrs.get("mode", "hybrid")
        notes = notes + candidates.attrs.get(NOTES, [])
        if mode == "none":  # no known word: nothing was searched, and the note says why
            return SearchResponse([], status, mode, notes)
        if candidates.empty:
            return SearchResponse([], status, mode, notes + ["no listing matches the query and filters"])
        recommendation = self.ranking.recommend(
            buyer, self.catalogue.view(), k=k, candidates=candidates, photo_query=mode.startswith("photo")
        )
        shown = recommendation.results
        if PHOTO_MATCH in shown and shown[PHOTO_MATCH].any():
            # counted among the results (the ranker pins every match first): candidates beyond k are not shown
            matched, hidden = int(shown[PHOTO_MATCH].sum()), int(candidates[PHOTO_MATCH].sum())
            more = f" ({hidden - matched} more beyond these {len(shown)})" if hidden > matched else ""
            notes = notes + [
                f"{matched} listing(s) show this photo (or a re-encoded, cropped or resized copy): "
                f"shown first{more}"
            ]
        return SearchResponse(self._results(shown), status, mode, notes + recommendation.notes)

    def recommend(self, user_id: str, k: int = 10) -> SearchResponse:
        if str(user_id) not in self._users:
            raise NotFoundError(f"user {user_id!r} not found")
        buyer, status, notes = self._buyer(BuyerQuery(user_id=str(user_id)))
        return self._feed(buyer, status, notes, check_k(k), None)

    def _feed(
        self, buyer: Buyer, status: str, notes: list[str], k: int, filters: Filters | None
    ) -> SearchResponse:
        view = self.catalogue.view()
        exclude = None
        if filters is not None and filters.active:
            allowed = set(self.searcher.allowed_ids(filters))
            exclude = set(view.live_ids) - allowed
        recommendation = self.ranking.recommend(buyer, view, k=k, exclude=exclude)
        return SearchResponse(
            self._results(recommendation.results), status, "feed", notes + recommendation.notes
        )

    def similar(self, product_id: str, k: int = 10) -> list[ListingResult]:
        k = check_k(k)
        if product_id not in self.catalogue.view():
            raise NotFoundError(f"listing {product_id!r} not found")
        frame = self.searcher.similar_scored(product_id, k)
        parts = frame[[SIMILARITY, SAME_ROOT, SAME_LEAF]]
        frame["factors"] = parts.to_dict("records")  # they add up to the score
        frame[DISTANCE_KM] = np.nan
        return self._results(frame)

    def predict_category(
        self, text: str | None, image: Image.Image | None, top: int = 3
    ) -> list[tuple[str, float]]:
        if not (text and text.strip()) and image is None:
            raise BadRequestError("give text, a photo, or both to predict a category")
        try:
            return self.model.predict_category(text, image, top=top)
        except ValueError as error:
            raise BadRequestError(str(error)) from error

    def suggest_price(
        self, draft: ListingInput, photos: Sequence[bytes | Image.Image] = ()
    ) -> PriceSuggestion:
        """A price range for a listing not yet posted: nothing is written (database, index,
        photo cache). The draft is cleaned and geocoded as `create_listing` would, embedded
        without a price (as the price model was trained), priced by the bundle's quantile
        models, and shown beside its nearest priced listings in the catalogue.

        BadRequestError (field `title` / `category`) for a draft that cannot be priced;
        ImageError for a photo that does not decode; PriceModelError when the bundle has no
        price model.
        """
        title = _require_title(draft.title)
        price_model = self.model.require_price_model()
        limits = self.settings.data
        images = [
            photo if isinstance(photo, Image.Image) else open_image(photo, limits.max_image_pixels, limits.max_image_bytes)
            for photo in photos
        ]
        category, source = self._seller_category(draft.category), "given"
        if not category:
            text = f"{title}. {draft.description or ''}".strip()
            category = self.predict_category(text, images[0] if images else None, top=1)[0][0]
            source = "predicted"
        root = category.split("/")[0].strip()
        unpriced = replace(draft, title=title, price=None, product_id="draft")
        product = self._clean_listing(unpriced, category, None)
        used = images[: self.model.max_photos]
        dim = int(self.model.manifest["feature_dim"])
        features = np.stack([self.model.photo_vector(image) for image in used]) if used else np.zeros((0, dim))
        embedding = self.model.encode_drafts(product, [features])  # reads no category
        if "/" not in category:  # a root alone (predicted or picked) leaves the price model without its leaf
            leaf = self.model.predict_leaf(embedding, root)
            if leaf is not None:
                product = self._clean_listing(unpriced, leaf, None)
        frame = price_model.features(product, embedding, [len(images)])
        predicted = price_model.predict(frame)
        low, median, high = (round_gbp(v[0]) for v in (predicted.low, predicted.median, predicted.high))
        if predicted.free is not None and predicted.free[0]:  # P(free) >= the val-chosen threshold
            low = median = high = 0.0
        return PriceSuggestion(
            median=median,
            low=low,
            high=high,
            free_probability=round(float(predicted.free_probability[0]), 4),
            category=str(product[S.CATEGORY].iloc[0]),
            category_source=source,
            evidence=self._price_evidence(embedding[0], str(product[S.ROOT_CATEGORY].iloc[0])),
            interval=price_model.interval,
        )

    def _seller_category(self, category: str | None) -> str:
        """A seller's category in the catalogue's spelling, "" when none was given.

        Case, spacing and "and"/"&" do not matter (as in search); a path must be a root of
        the model or a category (or prefix of one) the catalogue has: a made-up sub-path would
        become a category of one listing that no filter or leaf feature knows.
        """
        given = (category or "").strip()
        if not given:
            return ""
        try:
            found = self.searcher.canonical_category(given, roots=self.model.classes)
        except UnknownCategoryError as error:
            raise BadRequestError(
                f"category: {error}",
                field="category",
                reason="unknown_category",
                details={"valid_roots": error.roots, "suggestion": error.suggestion},
            ) from error
        if found.split("/")[0].strip() not in self.model.classes:
            raise BadRequestError(
                f"category: {given!r} is under a root the model does not know; the roots are: "
                f"{', '.join(self.model.classes)}",
                field="category",
                reason="unknown_category",
                details={"valid_roots": list(self.model.classes)},
            )
        return found

    def _price_evidence(self, vector: np.ndarray, root: str) -> list[ListingResult]:
        """The catalogue's nearest listings with a price (by fusion embedding), those in the
        same root category first; `score` and `factors["similarity"]` are the cosine."""
        k = self.settings.price.evidence_k
        hits = self.searcher.nearest(vector, k, Filters(root_category=root, min_price=0.0))
        if len(hits) < k:  # a thin category: fill up from the rest of the catalogue
            seen = {pid for pid, _ in hits}
            more = self.searcher.nearest(vector, min(MAX_K, k + len(seen)), Filters(min_price=0.0))
            hits += [(pid, score) for pid, score in more if pid not in seen][: k - len(hits)]
        if not hits:
            return []
        ids, scores = zip(*hits, strict=True)
        frame = pd.DataFrame(
            {
                S.PRODUCT_ID: list(ids),
                "score": list(scores),
                "factors": [{SIMILARITY: float(score)} for score in scores],
                DISTANCE_KM: np.nan,
            }
        )
        return self._results(frame)

    def get_listing(self, product_id: str) -> dict[str, Any]:
        listing = self.store.get_listing(product_id)
        if listing is None:
            raise NotFoundError(f"listing {product_id!r} not found")
        photos = self.store.images_frame([product_id])
        listing["images"] = photos[S.IMAGE_ID].tolist()
        listing.pop("updated_at", None)
        return {key: _plain(value) for key, value in listing.items()}

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

    # ------------------------------------------------------------------ duplicates
    def duplicates_of(self, product_id: str) -> list[DuplicateMatch]:
        """The listings that may be the same as this stored one (re-posts), best first."""
        view = self.catalogue.view()
        if product_id not in view:
            raise NotFoundError(f"listing {product_id!r} not found")
        searcher = self.searcher
        embedding = photo = None
        if searcher.vectors is not None and product_id in searcher.vectors:
            embedding = searcher.vectors.vectors_of([product_id])[0]
        if searcher.photos is not None and product_id in searcher.photos:
            photo = searcher.photos.vectors_of([product_id])[0]
        row = view.row(product_id)
        title, description = (view.title[row], view.description[row]) if row >= 0 else ("", "")
        return self.duplicates.find(
            searcher.vectors,
            searcher.photos,
            self._texts,
            embedding,
            photo,
            str(title or ""),
            str(description or ""),
            exclude=[product_id],
        )

    def find_duplicates(self, draft: ListingInput, photos: list[bytes]) -> list[DuplicateMatch]:
        """Possible duplicates of a listing not saved (a seller's draft): nothing is written.

        The draft is cleaned and encoded exactly as a create would be, so it gets the matches
        its create would; its cleaned photos live in a temporary folder removed on return.
        A draft with the id of a stored listing (an edit) never matches that listing.
        """
        exclude = [draft.product_id] if draft.product_id else []
        draft = replace(draft, product_id=draft.product_id or f"draft-{uuid.uuid4().hex}")
        with tempfile.TemporaryDirectory(prefix="fbmarket-draft-") as folder:
            prepared = self._prepare(draft, photos, stored_photos=False, folder=Path(folder))
            return self._find_duplicates(prepared, exclude)

    def duplicate_cards(self, matches: list[DuplicateMatch]) -> list[dict[str, Any]]:
        """Matches with what a person needs to judge them: title, price, category, place, photos.
        A match deleted since it was found is left out."""
        shown = self.catalogue.view()
        rows = shown.rows([m.product_id for m in matches])
        cards = []
        for match, row in zip(matches, rows.tolist(), strict=True):
            if row < 0:
                continue
            cards.append(
                match.to_json()
                | {
                    "title": str(shown.title[row]),
                    "price": _plain(shown.price[row]),
                    "category": str(shown.value(S.CATEGORY, row)),
                    "location": str(shown.location[row] or ""),
                    "image_count": int(shown.image_count[row]),
                }
            )
        return cards

    def duplicate_groups(self) -> list[dict[str, Any]]:
        """The catalogue's groups of duplicate listings (re-posting), largest first.

        Every listing is checked against its neighbours in the indexes (FAISS self-search);
        a group is a connected component of the flagged pairs. Each group has its `listings`
        (id, title, price, category, location, photos) and its flagged `pairs` with scores and
        reasons, for a person to look at (`fbmarket duplicates`).
        """
        shown = self.catalogue.view()
        listed = shown.alive
        ids = shown.ids[listed].tolist()
        descriptions = [str(d) if isinstance(d, str) else "" for d in shown.description[listed]]
        titles = [str(t) if isinstance(t, str) else "" for t in shown.title[listed]]
        pairs = catalogue_pairs(
            self.duplicates, self.searcher.vectors, self.searcher.photos, ids, titles, descriptions
        )
        group_of: dict[str, int] = {}
        groups = duplicate_groups([(a, b) for a, b, _, _ in pairs])
        for n, members in enumerate(groups):
            group_of.update(dict.fromkeys(members, n))
        out: list[dict[str, Any]] = [{"listings": [], "pairs": []} for _ in groups]
        for n, members in enumerate(groups):
            rows = shown.rows(members)
            out[n]["listings"] = [
                {
                    "product_id": pid,
                    "title": str(shown.title[row]),
                    "price": _plain(shown.price[row]),
                    "category": str(shown.value(S.CATEGORY, row)),
                    "location": str(shown.location[row] or ""),
                    "image_count": int(shown.image_count[row]),
                }
                for pid, row in zip(members, rows.tolist(), strict=True)
            ]
        for a, b, score, features in pairs:
            match = self.duplicates.matches([b], features)
            reasons = match[0].reasons if match else []
            out[group_of[a]]["pairs"].append(
                {
                    "product_ids": [a, b],
                    "score": round(score, 4),
                    "photo_similarity": None
                    if np.isnan(features.photo[0])
                    else round(float(features.photo[0]), 4),
                    "text_similarity": round(float(features.text[0]), 4),
                    "reasons": reasons,
                }
            )
        for group in out:
            group["pairs"].sort(key=lambda pair: -pair["score"])
        return out

    def _find_duplicates(self, prepared: _Prepared, exclude: list[str]) -> list[DuplicateMatch]:
        encoded = prepared.encoded
        product = prepared.product
        return self.duplicates.find(
            self.searcher.vectors,
            self.searcher.photos,
            self._texts,
            encoded.embeddings[0],
            encoded.photo_vectors[0] if bool(encoded.has_photo[0]) else None,
            str(product[S.TITLE].iloc[0]),
            str(product[S.DESCRIPTION].iloc[0] or ""),
            exclude=exclude,
        )

    def _texts(self, product_ids: Any) -> tuple[list[str], list[str]]:
        """Titles and descriptions of listings by id ('' for one deleted meanwhile)."""
        shown = self.catalogue.view()
        rows = shown.rows(list(product_ids))
        titles = [str(shown.title[r] or "") if r >= 0 else "" for r in rows.tolist()]
        descriptions = [str(shown.description[r] or "") if r >= 0 else "" for r in rows.tolist()]
        return titles, descriptions

    # ------------------------------------------------------------------ writing
    def create_listing(self, listing: ListingInput, photos: list[bytes]) -> dict[str, Any]:
        """Save a new listing; the result also lists its `possible_duplicates` (it is created anyway)."""
        product_id = listing.product_id or uuid.uuid4().hex
        if listing.product_id and product_id in self.catalogue.view():
            raise _already_exists(product_id)  # early, before any work; checked again under the lock
        return self._save(replace(listing, product_id=product_id), photos, replace_photos=True, creating=True)

    def update_listing(
        self, product_id: str, listing: ListingInput, photos: list[bytes] | None
    ) -> dict[str, Any]:
        """Change a listing; the result also lists its `possible_duplicates` (never itself)."""
        if product_id not in self.catalogue.view():
            raise NotFoundError(f"listing {product_id!r} not found")
        return self._save(
            replace(listing, product_id=product_id), photos, replace_photos=photos is not None, creating=False
        )

    def delete_listing(self, product_id: str) -> None:
        with self._write_lock:
            if not self.store.delete_listing(product_id):
                raise NotFoundError(f"listing {product_id!r} not found")
            self.searcher.remove_products([product_id])
            self.catalogue.delete([product_id])
            self._after_write()

    def ingest(self, products: pd.DataFrame, photos: pd.DataFrame, show_progress: bool = False) -> int:
        """Add or replace a batch of clean listings (`fbmarket index`); returns how many."""
        if products.empty:
            return 0
        encoded = self.model.encode_listings(products, photos, show_progress=show_progress)
        vectors = encoded.embeddings
        ids = products[S.PRODUCT_ID].astype(str).tolist()
        with self._write_lock:
            self.store.upsert_listings(products, photos)
            self.store.upsert_embeddings(ids, vectors, self.model.version)
            self.searcher.add_products(products, vectors, encoded.photo_vectors, encoded.has_photo)
            # counted in the database: a batch adds photos to those a listing already has
            counts = _count_photos(self.store, ids)
            self.catalogue.upsert(products, [counts.get(pid, 0) for pid in ids])
            self.save_index()
        return len(ids)

    def _prepare(
        self, listing: ListingInput, photos: list[bytes] | None, stored_photos: bool, folder: Path | None = None
    ) -> _Prepared:
        """Clean the listing and its photos (copies into `folder`, the upload cache by default)
        and encode it; nothing reaches the database. `stored_photos`: without new photos, a
        stored listing keeps its own. On failure the new photo copies are removed."""
        _require_title(listing.title)  # before any photo is decoded or a category predicted
        product_id = str(listing.product_id)
        cleaned_photos = None
        if photos is not None:
            cleaned_photos = self._clean_photos(product_id, photos, folder)
        elif stored_photos and product_id in self.catalogue.view():
            cleaned_photos = self.store.images_frame([product_id])
        # the new photos' cleaned copies are on disk now: a refused listing must not leave them there
        written = cleaned_photos if photos is not None else None
        try:
            image = _first_image(cleaned_photos)
            category = self._seller_category(listing.category)
            if not category:
                text = f"{listing.title}. {listing.description}"
                category = self.predict_category(text, image, top=1)[0][0]
            root = category.split("/")[0].strip()
            product = self._clean_listing(listing, category, cleaned_photos)
            encoded = self.model.encode_listings(
                product,
                cleaned_photos if cleaned_photos is not None else _no_photos(),
                use_cache=False,
            )
            if "/" not in category:
                # The category model names only the root; the catalogue's listings carry full
                # paths, and leaf filters, similar listings and the price model read the leaf.
                # The embedding reads no category, so the leaf head's choice needs no re-encoding.
                leaf = self.model.predict_leaf(encoded.embeddings, root)
                if leaf is not None:
                    product = self._clean_listing(listing, leaf, cleaned_photos)
        except BaseException:
            _remove_photo_files(written)
            raise
        return _Prepared(product, cleaned_photos, written, encoded)

    def _save(
        self, listing: ListingInput, photos: list[bytes] | None, replace_photos: bool, creating: bool
    ) -> dict[str, Any]:
        """Clean, embed, look for duplicates, then database (one transaction), then the in-memory
        indexes. Duplicates are looked for before the write (the listing is not its own) and
        outside the write lock: a few milliseconds that never hold up other writers."""
        product_id = str(listing.product_id)
        prepared = self._prepare(listing, photos, stored_photos=True)
        product, cleaned_photos, written, encoded = (
            prepared.product,
            prepared.cleaned_photos,
            prepared.written,
            prepared.encoded,
        )
        try:
            matches = self._find_duplicates(prepared, [product_id])
        except Exception:  # the check is advice: a failure of it must not refuse the listing
            log.exception("looking for duplicates of %s failed", product_id)
            matches = []
        vector = encoded.embeddings
        with self._write_lock:
            try:
                # Checked again here: two creates of one id (or an edit racing a delete) both
                # passed the early check, and the second must not overwrite the first.
                listed = product_id in self.catalogue.view()
                if creating and listed:
                    raise _already_exists(product_id)
                if not creating and not listed:
                    raise NotFoundError(f"listing {product_id!r} not found")
                self.store.save_listing(
                    product, cleaned_photos, vector, self.model.version, replace_photos=replace_photos
                )
            except BaseException:
                _remove_photo_files(written)
                raise
            self.searcher.add_products(product, vector, encoded.photo_vectors, encoded.has_photo)
            self.catalogue.upsert(product, [0 if cleaned_photos is None else len(cleaned_photos)])
            self._after_write()
        return self.get_listing(product_id) | {"possible_duplicates": self.duplicate_cards(matches)}

    def _clean_listing(
        self, listing: ListingInput, category: str, photos: pd.DataFrame | None
    ) -> pd.DataFrame:
        raw = pd.DataFrame(
            {
                "id": [listing.product_id],
                "product_name": [listing.title],
                "category": [category],
                "product_description": [listing.description or ""],
                "price": [None if listing.price is None else f"{float(listing.price):.2f}"],
                "location": [listing.location or ""],
            }
        ).astype("str")
        limit = self.settings.data.max_price
        if listing.price is not None and float(listing.price) > limit:
            # The batch rules would keep the row and drop the price (an outlier): a seller who
            # typed it must hear so, not find the listing stored without a price.
            raise BadRequestError(
                f"price: £{float(listing.price):,.2f} is above this marketplace's limit of £{limit:,.0f} "
                "(data.max_price); check for a typo",
                field="price",
                reason="price_outlier",
            )
        report = CleaningReport()
        # The title is the seller's own: none of the scraped "Title | in Town | Gumtree" rule.
        product, report = clean_products(
            raw,
            self.settings.data.min_price,
            self.settings.data.max_price,
            strict=False,
            report=report,
            scraped_titles=False,
            max_title_chars=self.settings.data.max_title_chars,
            max_description_chars=self.settings.data.max_description_chars,
        )
        if product.empty:
            reasons = list(report.dropped) or ["invalid_fields"]
            field_at_fault = next((f for r in reasons if (f := _FIELD_OF_DROP_REASON.get(r))), None)
            message = f"listing rejected: {', '.join(reasons)}"
            raise BadRequestError(
                f"{field_at_fault}: {message}" if field_at_fault else message,
                field=field_at_fault,
                reason=reasons[0],
            )
        product[S.CREATED] = datetime.now(UTC).strftime("%Y-%m-%d")
        product = attach_geo(product, report)
        if product[S.LOCATION].iloc[0] and pd.isna(product[S.LATITUDE].iloc[0]):
            # Stored without coordinates it would silently drop out of every distance filter
            # and every "near me" ranking: the seller must hear about it now, not never.
            raise BadRequestError(
                f"location: {listing.location!r} could not be placed (no UK town or county of that "
                'name in the offline gazetteer); give a known town ("Leeds" or "Leeds, West Yorkshire") '
                "or leave it empty",
                field="location",
                reason="location_not_placed",
            )
        product = add_features(product, photos if photos is not None else _no_photos())
        product[S.SPLIT] = hash_split(str(listing.product_id), self.settings.data.split_fractions)
        return product

    def _clean_photos(self, product_id: str, photos: list[bytes], folder: Path | None = None) -> pd.DataFrame:
        """Every photo must decode (an ImageError names the bad one); cleaned copies go to `folder`,
        the upload cache by default."""
        size = self.settings.data.image_size
        folder = folder or self.settings.cache_dir / f"uploads_{size}"
        folder.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        for position, data in enumerate(photos):
            try:
                cleaned = clean_image(
                    data, size, self.settings.data.max_image_pixels, self.settings.data.max_image_bytes
                )
                image_id = f"{product_id}-{position}-{uuid.uuid4().hex[:8]}"
                path = folder / f"{image_id}.jpg"
                cleaned.image.save(path, format="JPEG", quality=90)
            except BaseException:
                _remove_photo_files(pd.DataFrame(rows, columns=[S.IMAGE_PATH]))  # the ones before it
                raise
            rows.append(
                {
                    S.IMAGE_ID: image_id,
                    S.PRODUCT_ID: product_id,
                    S.IMAGE_PATH: str(path),
                    S.WIDTH: cleaned.width,
                    S.HEIGHT: cleaned.height,
                    S.ASPECT: cleaned.width / max(cleaned.height, 1),
                    S.ORIGINAL_MODE: cleaned.original_mode,
                }
            )
        return pd.DataFrame(rows, columns=list(S.CLEAN_IMAGE_COLUMNS))

    def _after_write(self) -> None:
        self._writes_since_save += 1
        if self._writes_since_save >= INDEX_SAVE_EVERY:
            self.save_index()

    # ------------------------------------------------------------------ helpers
    def _buyer(self, query: BuyerQuery | None) -> tuple[Buyer, str, list[str]]:
        if query is None:
            return resolve_buyer(self.ranking.profiles)
        fields = {k: v for k, v in asdict(query).items() if k != "user_id" and v is not None}
        try:
            return resolve_buyer(self.ranking.profiles, query.user_id, **fields)
        except ValueError as error:
            raise BadRequestError(str(error)) from error

    def _filters(self, request: SearchRequest, buyer: Buyer) -> Filters:
        """The request's filters, refusing what cannot be honoured (HTTP 422) instead of
        returning nothing: a category no listing or model class has, a distance limit
        around a location that could not be placed."""
        if request.max_distance_km is not None and not buyer.has_location:
            given = request.buyer.location if request.buyer is not None else None
            if given or buyer.location:
                whose = "location" if given else f"the location of user {buyer.user_id!r}"
                raise BadRequestError(
                    f"{whose} {given or buyer.location!r} could not be placed (no UK town or county "
                    "of that name in the offline gazetteer), so max_distance_km cannot be applied: "
                    'give a known town ("Leeds" or "Leeds, West Yorkshire") or lat and lon',
                    field="location",
                    reason="location_not_placed",
                )
            raise BadRequestError(
                "max_distance_km needs the buyer's location (lat/lon, location or a known user)",
                field="max_distance_km",
            )
        if request.category:
            try:
                self.searcher.check_category(request.category, roots=self.model.classes)
            except UnknownCategoryError as error:
                raise BadRequestError(
                    str(error),
                    field="category",
                    reason="unknown_category",
                    details={"valid_roots": error.roots},
                ) from error
        try:
            return Filters(
                category=request.category or None,
                min_price=request.min_price,
                max_price=request.max_price,
                latitude=buyer.latitude if request.max_distance_km is not None else None,
                longitude=buyer.longitude if request.max_distance_km is not None else None,
                max_km=request.max_distance_km,
            )
        except ValueError as error:
            raise BadRequestError(str(error)) from error

    def _results(self, ranked: pd.DataFrame) -> list[ListingResult]:
        ids = ranked[S.PRODUCT_ID].astype(str).tolist()
        shown = self.catalogue.view()  # one version throughout, whatever a concurrent write does
        rows = shown.rows(ids)
        scores = ranked["score"].to_numpy(float)
        factors = ranked["factors"].tolist()
        distances = (
            ranked[DISTANCE_KM].to_numpy(float) if DISTANCE_KM in ranked else np.full(len(ids), np.nan)
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
                    price=_plain(shown.price[row]),
                    location=str(location or ""),
                    distance_km=_plain(distances[i]),
                    score=float(scores[i]),
                    factors={k: float(v) for k, v in factors[i].items()},
                    image_count=int(shown.image_count[row]),
                )
            )
        return results


@dataclass
class _Prepared:
    """A listing cleaned and encoded, not yet saved."""

    product: pd.DataFrame  # one clean row
    cleaned_photos: pd.DataFrame | None  # its photos (new copies, or the stored ones)
    written: pd.DataFrame | None  # the new photo copies on disk (removed if the write fails)
    encoded: Any  # bundle.EncodedListings


def _count_photos(store: Store, product_ids: list[str] | None = None) -> dict[str, int]:
    """Photos per listing in the database (every listing, or the given ones; none: absent)."""
    query = sa.select(images.c.product_id, sa.func.count()).group_by(images.c.product_id)
    if product_ids is None:
        chunks: list[Any] = [query]
    else:
        chunks = [
            query.where(images.c.product_id.in_(product_ids[start : start + COUNT_CHUNK]))
            for start in range(0, len(product_ids), COUNT_CHUNK)
        ]
    counts: dict[str, int] = {}
    with store.engine.connect() as connection:
        for chunk in chunks:
            counts.update({str(pid): int(n) for pid, n in connection.execute(chunk)})
    return counts


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequestError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    return k


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


def load_bundle_settings(bundle_dir: Path | str) -> Settings:
    """A bundle's saved settings, made to describe the bundle where it is now.

    settings.json records where training ran: `out_dir` (often relative to that cwd) and,
    when `--database` or FBMARKET_DATABASE_URL named it, the URL of the bundle's own SQLite
    file by its old absolute path. A copied or moved bundle must use its own folder and its
    own database, never the old place (where SQLite would silently create an empty file).
    """
    bundle_dir = Path(os.path.abspath(bundle_dir))
    if not (bundle_dir / SETTINGS_FILE).is_file():
        raise FileNotFoundError(
            f"{bundle_dir} is not a model bundle (no {SETTINGS_FILE}): train one with "
            "`fbmarket train` or `python main.py`"
        )
    settings = Settings.load(bundle_dir / SETTINGS_FILE)
    saved_out_dir = settings.out_dir
    settings.out_dir = bundle_dir
    if _is_bundle_database(settings.database_url, saved_out_dir, bundle_dir):
        settings.database_url = None  # Settings.db_url: the SQLite file inside this bundle
    return settings


def _is_bundle_database(url: str | None, saved_out_dir: Path | None, bundle_dir: Path) -> bool:
    """Whether `url` is the default SQLite file of the folder the bundle was saved in (or of
    this bundle): `sqlite:///<out_dir>/fbmarket.db`, `out_dir` absolute, or relative to the
    cwd training ran in (then it matches the end of the file's folder)."""
    if not url or not url.startswith("sqlite:///"):
        return False
    file = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
    if file.name != DATABASE_FILE:
        return False
    folder = file.parent
    if folder == bundle_dir:
        return True
    if saved_out_dir is None:
        return False
    saved = Path(saved_out_dir)
    if saved.is_absolute():
        return folder == saved
    tail = saved.parts
    return bool(tail) and folder.parts[-len(tail) :] == tail


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
    from fbmarket.text.tokenize import get_tokenizer
    from fbmarket.text.word2vec import OOV, PAD, VOCAB_FILE, Vocabulary

    path = bundle_dir / "model" / VOCAB_FILE
    try:
        tokens = Vocabulary.load(path).tokens
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("no query vocabulary (%s): queries of unknown words are not detected", error)
        return None
    return QueryVocabulary(frozenset(t for t in tokens if t not in (PAD, OOV)), get_tokenizer().tokenize)


def cold_ranking(products: pd.DataFrame, settings: Settings) -> RankingModels:
    """No buyer data at all: rule-based ranking with flat category tastes."""
    empty = pd.DataFrame(columns=["user_id", "product_id", "event", "timestamp"])
    from fbmarket.recommend.buyers import BuyerProfiles, load_interactions

    profiles = BuyerProfiles.build(None, load_interactions(empty), products, settings.rank)
    return RankingModels(profiles, RuleRanker(settings.rank.rule_weights), None, {"note": "no buyer data"})


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _already_exists(product_id: str) -> BadRequestError:
    return BadRequestError(
        f"product_id: listing {product_id!r} already exists: use PUT to change it",
        field="product_id",
        reason="already_exists",
    )


def _require_title(title: str | None) -> str:
    """The title as typed (stripped), or the client's 422 on `title` when it has nothing a
    buyer could read: blanks, control or zero-width characters only (the cleaning rules'
    `clean_text`, so the check and the stored title agree)."""
    if not clean_text(title or ""):
        raise BadRequestError(
            "title: a listing needs a title with letters, digits or symbols in it",
            field="title",
            reason="missing_title",
        )
    return str(title).strip()


def _no_photos() -> pd.DataFrame:
    return pd.DataFrame(columns=list(S.CLEAN_IMAGE_COLUMNS))


def _remove_photo_files(photos: pd.DataFrame | None) -> None:
    """Delete the cleaned copies a refused write had already made (no database row names them)."""
    if photos is None or photos.empty:
        return
    for path in photos[S.IMAGE_PATH]:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove %s: %s", path, error)


def _first_image(photos: pd.DataFrame | None) -> Image.Image | None:
    """The listing's first photo that opens. A cached copy that has gone missing must not turn an
    edit of the price into a server error: the listing is then embedded from what remains."""
    if photos is None or photos.empty:
        return None
    for path in photos[S.IMAGE_PATH]:
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as error:  # missing or unreadable cached copy
            log.warning("photo %s unusable: %s", path, error)
    return None
