"""The marketplace's price questions: a fair price range for a seller's draft, with the
catalogue's nearest priced listings as evidence, and the seller's category in the catalogue's
spelling (which pricing and listing both need).

A part of `Marketplace` (fbmarket/service/marketplace.py), kept apart because it is its own job: the
quantile models live in fbmarket/price/; this cleans the draft as a create would, embeds it
and asks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from fbmarket.data import schema as S
from fbmarket.data.images import open_image
from fbmarket.data.listing import clean_listing, require_title
from fbmarket.errors import BadRequestError
from fbmarket.limits import MAX_RESULTS
from fbmarket.price.model import round_gbp
from fbmarket.recommend.features import DISTANCE_KM
from fbmarket.search.filters import Filters, UnknownCategoryError
from fbmarket.search.similar import SIMILARITY
from fbmarket.service.types import ListingInput, ListingResult, PriceSuggestion

if TYPE_CHECKING:
    from fbmarket.config import Settings
    from fbmarket.search.hybrid import HybridSearcher


class PriceQueries:
    """Mixed into `Marketplace`, whose model, searcher and settings it uses (and its
    `predict_category`, `_canonical_category` and `_results`)."""

    model: Any
    searcher: HybridSearcher
    settings: Settings

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
        title = require_title(draft.title)
        price_model = self.model.require_price_model()
        limits = self.settings.data
        images = [
            photo if isinstance(photo, Image.Image) else open_image(photo, limits.max_image_pixels, limits.max_image_bytes)
            for photo in photos
        ]
        category, source = self._seller_category(draft.category), "given"
        if not category:
            text = f"{title}. {draft.description or ''}".strip()
            category = self.predict_category(text, images[0] if images else None, top=1, field="title")[0][0]
            source = "predicted"
        root = category.split("/")[0].strip()
        unpriced = replace(draft, title=title, price=None, product_id="draft")
        product = clean_listing(unpriced, category, None, self.settings.data)
        used = images[: self.model.max_photos]
        dim = int(self.model.manifest["feature_dim"])
        features = np.stack([self.model.photo_vector(image) for image in used]) if used else np.zeros((0, dim))
        embedding = self.model.encode_drafts(product, [features])  # reads no category
        if "/" not in category:  # a root alone (predicted or picked) leaves the price model without its leaf
            leaf = self.model.predict_leaf(embedding, root)
            if leaf is not None:
                product = clean_listing(unpriced, leaf, None, self.settings.data)
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
            found = self._canonical_category(given)
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
            more = self.searcher.nearest(vector, min(MAX_RESULTS, k + len(seen)), Filters(min_price=0.0))
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
