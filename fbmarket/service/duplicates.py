"""The marketplace's duplicate (re-post) questions: of a stored listing, of a seller's draft,
and across the whole catalogue, answered with the cards a person needs to judge a match.

A part of `Marketplace` (fbmarket/service/marketplace.py), kept apart because it is its own job: the
detector and its rule live in fbmarket/search/duplicates.py; this joins them to the
marketplace's indexes, texts and photo counts.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fbmarket.data import schema as S
from fbmarket.data.listing import PreparedListing
from fbmarket.errors import NotFoundError
from fbmarket.search.duplicates import DuplicateMatch, DuplicateProbe, catalogue_pairs, duplicate_groups
from fbmarket.search.engine_index import EngineIndex
from fbmarket.search.milvus import MilvusBackend
from fbmarket.service.listings import ListingSource, SharedListings
from fbmarket.service.types import ListingInput, plain

if TYPE_CHECKING:
    from fbmarket.catalogue import CatalogueView
    from fbmarket.data.store import Store
    from fbmarket.search.duplicates import DuplicateDetector
    from fbmarket.search.hybrid import HybridSearcher


class DuplicateQueries:
    """Mixed into `Marketplace`, whose indexes and listing catalogue (texts, shown fields,
    photo counts) it reads."""

    searcher: HybridSearcher
    duplicates: DuplicateDetector
    listings: ListingSource  # read through one view per question
    store: Store
    # and calls its _prepare (clean and encode a listing)

    def duplicates_of(self, product_id: str) -> list[DuplicateMatch]:
        """The listings that may be the same as this stored one (re-posts), best first."""
        view = self.listings.view([product_id], texts=True)
        if product_id not in view:
            raise NotFoundError(f"listing {product_id!r} not found")
        vectors, photos = self._vector_indexes()
        embedding = photo = None
        if vectors is not None and product_id in vectors:
            embedding = vectors.vectors_of([product_id])[0]
        if photos is not None and product_id in photos:
            photo = photos.vectors_of([product_id])[0]
        row = view.row(product_id)
        title, description = (view.title[row], view.description[row]) if row >= 0 else ("", "")
        probe = DuplicateProbe(embedding, photo, str(title or ""), str(description or ""), [product_id])
        return self.duplicates.find(probe, vectors, photos, self._texts)

    def _vector_indexes(self) -> tuple[Any, Any]:
        """(embedding index, photo index) duplicate detection searches: the in-process FAISS
        indexes, or the retrieval engine's fields (`EngineIndex`) when Milvus holds them."""
        backend = self.searcher.backend
        if isinstance(backend, MilvusBackend):
            photos = EngineIndex(backend, "photo") if backend.has_photos else None
            return EngineIndex(backend, "embedding"), photos
        return self.searcher.vectors, self.searcher.photos

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
        shown = self.listings.view([m.product_id for m in matches])
        rows = shown.rows([m.product_id for m in matches])
        cards = []
        for match, row in zip(matches, rows.tolist(), strict=True):
            if row < 0:
                continue
            cards.append(
                match.to_json()
                | {
                    "title": str(shown.title[row]),
                    "price": plain(shown.price[row]),
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
        shown = self._whole_catalogue()
        listed = shown.alive
        ids = shown.ids[listed].tolist()
        descriptions = [str(d) if isinstance(d, str) else "" for d in shown.description[listed]]
        titles = [str(t) if isinstance(t, str) else "" for t in shown.title[listed]]
        pairs = catalogue_pairs(
            self.duplicates, *self._vector_indexes(), ids, titles, descriptions
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
                    "price": plain(shown.price[row]),
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

    def _whole_catalogue(self) -> CatalogueView:
        """Every listing, for a batch question (`duplicate_groups`): the embedded catalogue, or a
        shared one read whole from the database (O(catalogue): an operator's job, not a request)."""
        if isinstance(self.listings, SharedListings):
            return self.listings.frame_view(self.store.listing_rows(None))
        return self.listings.view()

    def _find_duplicates(self, prepared: PreparedListing, exclude: list[str]) -> list[DuplicateMatch]:
        encoded = prepared.encoded
        product = prepared.product
        probe = DuplicateProbe(
            encoded.embeddings[0],
            encoded.photo_vectors[0] if bool(encoded.has_photo[0]) else None,
            str(product[S.TITLE].iloc[0]),
            str(product[S.DESCRIPTION].iloc[0] or ""),
            exclude,
        )
        return self.duplicates.find(probe, *self._vector_indexes(), self._texts)

    def _texts(self, product_ids: Any) -> tuple[list[str], list[str]]:
        """Titles and descriptions of listings by id ('' for one deleted meanwhile)."""
        product_ids = list(product_ids)
        shown = self.listings.view(product_ids, texts=True)
        rows = shown.rows(product_ids)
        titles = [str(shown.title[r] or "") if r >= 0 else "" for r in rows.tolist()]
        descriptions = [str(shown.description[r] or "") if r >= 0 else "" for r in rows.tolist()]
        return titles, descriptions
