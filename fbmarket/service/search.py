"""The marketplace's reads for buyers: search (words, a photo, filters), a buyer's home feed
and similar listings, ranked for the buyer.

A part of `Marketplace` (fbmarket/service/marketplace.py), kept apart because it is its own job: the
request is checked (refusing what cannot be honoured, naming the field), retrieval runs in
fbmarket/search/, the ranker in fbmarket/recommend/, and `Marketplace._results` turns the
ranked ids into results.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from fbmarket.data import schema as S
from fbmarket.data.clean import clean_text
from fbmarket.errors import BadRequestError, NotFoundError
from fbmarket.recommend.buyers import Buyer, resolve_buyer
from fbmarket.recommend.features import DISTANCE_KM
from fbmarket.recommend.personalise import RankRequest
from fbmarket.search.candidates import PHOTO_MATCH
from fbmarket.search.filters import Filters
from fbmarket.search.similar import SAME_LEAF, SAME_ROOT, SIMILARITY
from fbmarket.service.listings import CategoryNames, ListingSource, SharedListings, excluded_by
from fbmarket.service.types import ListingResult, SearchRequest, SearchResponse, check_request_k
from fbmarket.text.tokenize import get_tokenizer

if TYPE_CHECKING:
    from fbmarket.catalogue import CatalogueView
    from fbmarket.config import Settings
    from fbmarket.data.store import Store
    from fbmarket.recommend.personalise import RankingModels
    from fbmarket.search.hybrid import HybridSearcher


def clean_query(query: str | None, field: str = "q") -> str | None:
    """The query as the catalogue's text is cleaned (`clean_text`: HTML tags and entities,
    control and invisible characters, spacing), so "<b>sofa</b>" searches "sofa" and not the
    words "b" and "sofa". None when none was given; a query with nothing left after cleaning
    ("<b></b>", "&nbsp;") is the client's 422 on `field`, not a search for nothing or a feed."""
    if query is None or not query.strip():
        return None
    cleaned = clean_text(query)
    if not cleaned:
        raise BadRequestError(
            f"{field}: nothing is left to search once HTML tags, character entities and "
            "control or invisible characters are removed; give words or a photo",
            field=field,
        )
    return cleaned


class SearchQueries:
    """Mixed into `Marketplace`: its model, searcher, ranking, catalogue and known users, and
    its `_results` (ranked frame -> ListingResult)."""

    model: Any
    settings: Settings
    searcher: HybridSearcher
    ranking: RankingModels
    listings: ListingSource  # read through one view per request
    category_names: CategoryNames | None  # a shared catalogue's category names
    store: Store
    _users: set[str]
    _popular: list[str]  # the most popular listing ids (a shared catalogue's feed pool)
    _vector_indexes: Any  # the (embedding, photo) indexes of any backend (service/duplicates.py)

    def search(self, request: SearchRequest) -> SearchResponse:
        k = check_request_k(request.k)
        text = clean_query(request.query)
        buyer, status, notes = self._buyer(request.buyer)
        filters = self._filters(request, buyer)
        if text is None and request.image is None:
            if request.buyer is None or status == "anonymous":
                raise BadRequestError(
                    "empty query: give words, a photo, or a buyer (for a home feed)", field="q"
                )
            return self._feed(buyer, status, notes, k, filters)
        if request.image is None and not get_tokenizer().tokenize(text):  # e.g. only punctuation
            raise BadRequestError("a query needs words (letters or digits) or a photo", field="q")
        photo = self.model.photo_query(request.image) if request.image is not None else None
        query_vector = self.model.encode_query(text, photo_features=None if photo is None else photo.features)
        retrieval = self.searcher.retrieve(
            query_vector,
            text,
            filters,
            n=self.settings.search.candidates,
            photo=request.image is not None,
            query_photo=None if photo is None else photo.features,
            photo_root_probs=None if photo is None else photo.root_probs,
        )
        candidates, mode, notes = retrieval.frame, retrieval.mode, notes + retrieval.notes
        if mode == "none":  # no known word: nothing was searched, and the note says why
            return SearchResponse([], status, mode, notes)
        if candidates.empty:
            return SearchResponse([], status, mode, notes + ["no listing matches the query and filters"])
        # the candidates' fields, read once for ranking and results (embedded: the whole catalogue)
        view = self.listings.view(candidates[S.PRODUCT_ID].astype(str).tolist())
        request = RankRequest(buyer, view, k=k, candidates=candidates)
        recommendation = self.ranking.personalise(request, photo_query=mode.startswith("photo"))
        shown = recommendation.results
        if PHOTO_MATCH in shown and shown[PHOTO_MATCH].any():
            # counted among the results (the ranker pins every match first): candidates beyond k are not shown
            matched, hidden = int(shown[PHOTO_MATCH].sum()), int(candidates[PHOTO_MATCH].sum())
            more = f" ({hidden - matched} more beyond these {len(shown)})" if hidden > matched else ""
            notes = notes + [
                f"{matched} listing(s) show this photo (or a re-encoded, cropped or resized copy): "
                f"shown first{more}"
            ]
        return SearchResponse(self._results(shown, view), status, mode, notes + recommendation.notes)

    def recommend(self, user_id: str, k: int = 10) -> SearchResponse:
        if not self._known_user(str(user_id)):
            raise NotFoundError(f"user {user_id!r} not found")
        buyer, status, notes = self._buyer(Buyer(user_id=str(user_id)))
        return self._feed(buyer, status, notes, check_request_k(k), None)

    def _feed(
        self, buyer: Buyer, status: str, notes: list[str], k: int, filters: Filters | None
    ) -> SearchResponse:
        listings = self.listings
        if isinstance(listings, SharedListings):  # a bounded pool from the database
            view = self._feed_pool(listings, buyer, filters)
            exclude = excluded_by(view, filters)
        else:
            view = listings.view()
            exclude = None
            if filters is not None and filters.active:
                allowed = set(self.searcher.allowed_ids(filters))
                exclude = set(view.live_ids) - allowed
        recommendation = self.ranking.personalise(RankRequest(buyer, view, k=k, exclude=exclude))
        return SearchResponse(
            self._results(recommendation.results, view), status, "feed", notes + recommendation.notes
        )

    def _feed_pool(self, listings: SharedListings, buyer: Buyer, filters: Filters | None) -> CatalogueView:
        """A shared catalogue's home-feed pool: the newest listings of the buyer's favourite
        categories, the popular ones and the newest overall (`SharedListings.feed_view`)."""
        profiles = self.ranking.profiles
        shares, _ = profiles.affinity(buyer)
        order = np.argsort(-np.asarray(shares, dtype=float), kind="stable")
        favourites = [profiles.categories[i] for i in order[: max(profiles.settings.feed_categories, 1)]]
        return listings.feed_view(
            favourites,
            profiles.settings.feed_candidates,
            self._popular,
            filters,
            lambda category: self._canonical_category(category),
        )

    def _known_user(self, user_id: str) -> bool:
        """A buyer this process loaded, or (shared catalogue) one the database has now."""
        return user_id in self._users or (self.listings.shared and self.store.has_user(user_id))

    def _canonical_category(self, category: str) -> str:
        """The catalogue's spelling of a category (UnknownCategoryError when it has none)."""
        if self.category_names is not None:
            return self.category_names.canonical(category, roots=self.model.classes)
        return self.searcher.canonical_category(category, roots=self.model.classes)

    def similar(self, product_id: str, k: int = 10) -> list[ListingResult]:
        k = check_request_k(k)
        if not self.listings.contains(product_id):
            raise NotFoundError(f"listing {product_id!r} not found")
        frame = self.searcher.similar_scored(product_id, k, root_probs=self._served_root_probs(product_id))
        parts = frame[[SIMILARITY, SAME_ROOT, SAME_LEAF]]
        frame["factors"] = parts.to_dict("records")  # they add up to the score
        frame[DISTANCE_KM] = np.nan
        return self._results(frame)

    def _served_root_probs(self, product_id: str) -> np.ndarray | None:
        """The listing's root-category probabilities as the bundle serves them (its late
        fusion, `Bundle.stored_category_probabilities`, from the stored photo vector: no
        backbone pass, ~40 ms on the dev bundle), for similar listings to favour that root.

        None, and similar listings read the root off the embedding with the network's head,
        when `search.similar_served_category` is off, the bundle has no late fusion (its
        served estimate is that head), or the listing has no embedding (matched by title).
        """
        if not self.settings.search.similar_served_category or getattr(self.model, "late_fusion", None) is None:
            return None
        vectors, photos = self._vector_indexes()  # the embedding and photo indexes, any backend
        if vectors is None or product_id not in vectors:
            return None
        product = self.store.listings_frame([product_id])
        if product.empty:
            return None
        shown = self.listings.view([product_id])  # photo counts live in memory, as results read them
        count = int(shown.image_count[shown.row(product_id)]) if shown.contains(product_id) else 0
        vector = np.zeros((1, int(self.model.manifest["feature_dim"])), np.float32)
        if count and photos is not None and product_id in photos:
            vector = photos.vectors_of([product_id])
        else:
            count = 0  # photos without a stored vector: read as a listing without photos
        return self.model.stored_category_probabilities(product, vector, [count])[0]

    def _buyer(self, query: Buyer | None) -> tuple[Buyer, str, list[str]]:
        """The request's buyer resolved against the profiles: (buyer, status, notes)."""
        if query is None:
            return resolve_buyer(self.ranking.profiles)
        derived = ("user_id", "known", "region")  # the profiles' to fill, never the request's
        fields = {k: v for k, v in asdict(query).items() if k not in derived and v is not None}
        return resolve_buyer(self.ranking.profiles, query.user_id, **fields)

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
        if request.category:  # UnknownCategoryError: the 422 on `category` with the valid roots
            self._canonical_category(request.category)
        return Filters(  # refuses impossible bounds itself (BadRequestError)
            category=request.category or None,
            min_price=request.min_price,
            max_price=request.max_price,
            latitude=buyer.latitude if request.max_distance_km is not None else None,
            longitude=buyer.longitude if request.max_distance_km is not None else None,
            max_km=request.max_distance_km,
        )
