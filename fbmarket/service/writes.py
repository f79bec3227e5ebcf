"""The marketplace's writes: a seller's listing created, changed or deleted, and batches
ingested (`fbmarket index`).

A part of `Marketplace` (fbmarket/service/marketplace.py), kept apart because it is its own job. Each
write cleans the listing with the batch rules (fbmarket/data/listing.py), encodes it, looks
for duplicates, then writes the database (one transaction) and only then the in-memory
indexes and the listing catalogue (fbmarket/catalogue.py: one row per listing written,
never the table rebuilt), under the marketplace's write lock.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fbmarket.data import schema as S
from fbmarket.data.listing import (
    PreparedListing,
    clean_listing,
    clean_photos,
    first_image,
    no_photos,
    remove_photo_files,
    require_title,
)
from fbmarket.errors import AlreadyExistsError, NotFoundError
from fbmarket.service.types import ListingInput

if TYPE_CHECKING:
    from fbmarket.config import Settings
    from fbmarket.data.store import Store
    from fbmarket.search.hybrid import HybridSearcher
    from fbmarket.service.listings import ListingSource

log = logging.getLogger(__name__)

COUNT_CHUNK = 500  # listing ids per photo-count query (under every database's bound-parameter limit)


class ListingWrites:
    """Mixed into `Marketplace`: its store, model, searcher and listing catalogue (which only
    these writes change), and its `_after_write`, `predict_category`, `_seller_category`,
    `_find_duplicates`, `duplicate_cards` and `get_listing`."""

    settings: Settings
    store: Store
    model: Any
    searcher: HybridSearcher
    listings: ListingSource
    _write_lock: threading.RLock

    def create_listing(self, listing: ListingInput, photos: list[bytes]) -> dict[str, Any]:
        """Save a new listing; the result also lists its `possible_duplicates` (it is created anyway)."""
        product_id = listing.product_id or uuid.uuid4().hex
        if listing.product_id and self.listings.contains(product_id):
            raise _already_exists(product_id)  # early, before any work; checked again under the lock
        return self._save(replace(listing, product_id=product_id), photos, replace_photos=True, creating=True)

    def update_listing(
        self, product_id: str, listing: ListingInput, photos: list[bytes] | None
    ) -> dict[str, Any]:
        """Change a listing; the result also lists its `possible_duplicates` (never itself)."""
        if not self.listings.contains(product_id):
            raise NotFoundError(f"listing {product_id!r} not found")
        return self._save(
            replace(listing, product_id=product_id), photos, replace_photos=photos is not None, creating=False
        )

    def delete_listing(self, product_id: str) -> None:
        with self._write_lock:
            if not self.store.delete_listing(product_id):
                raise NotFoundError(f"listing {product_id!r} not found")
            self.searcher.remove_products([product_id])
            self.listings.deleted([product_id])
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
            # counted in the database: a batch adds photos to those a listing already has
            counts = count_photos(self.store, ids)
            image_counts = [counts.get(pid, 0) for pid in ids]
            self.searcher.add_products(products, vectors, encoded.photo_vectors, encoded.has_photo, image_counts)
            self.listings.written(products, image_counts)
            self.save_index()
        return len(ids)

    def _prepare(
        self,
        listing: ListingInput,
        photos: list[bytes] | None,
        stored_photos: bool,
        folder: Path | None = None,
    ) -> PreparedListing:
        """Clean the listing and its photos (copies into `folder`, the upload cache by default)
        and encode it; nothing reaches the database. `stored_photos`: without new photos, a
        stored listing keeps its own. On failure the new photo copies are removed."""
        require_title(listing.title)  # before any photo is decoded or a category predicted
        product_id = str(listing.product_id)
        cleaned_photos = None
        if photos is not None:
            folder = folder or self.settings.cache_dir / f"uploads_{self.settings.data.image_size}"
            cleaned_photos = clean_photos(product_id, photos, folder, self.settings.data)
        elif stored_photos and self.listings.contains(product_id):
            cleaned_photos = self.store.images_frame([product_id])
        # the new photos' cleaned copies are on disk now: a refused listing must not leave them there
        written = cleaned_photos if photos is not None else None
        try:
            image = first_image(cleaned_photos)
            category = self._seller_category(listing.category)
            if not category:
                text = f"{listing.title}. {listing.description}"
                category = self.predict_category(text, image, top=1, field="title", require_known=False)[0][0]
            root = category.split("/")[0].strip()
            product = clean_listing(listing, category, cleaned_photos, self.settings.data)
            encoded = self.model.encode_listings(
                product,
                cleaned_photos if cleaned_photos is not None else no_photos(),
                use_cache=False,
            )
            if "/" not in category:
                # The category model names only the root; the catalogue's listings carry full
                # paths, and leaf filters, similar listings and the price model read the leaf.
                # The embedding reads no category, so the leaf head's choice needs no re-encoding.
                leaf = self.model.predict_leaf(encoded.embeddings, root)
                if leaf is not None:
                    product = clean_listing(listing, leaf, cleaned_photos, self.settings.data)
        except BaseException:
            remove_photo_files(written)
            raise
        return PreparedListing(product, cleaned_photos, written, encoded)

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
                # passed the early check, and the second must not overwrite the first. Shared
                # by several processes, the lock is not enough: the database decides (`expect`:
                # the primary key refuses a second create, a row lock orders an edit and a delete).
                expect = None
                if self.listings.shared:
                    expect = "new" if creating else "existing"
                else:
                    listed = self.listings.contains(product_id)
                    if creating and listed:
                        raise _already_exists(product_id)
                    if not creating and not listed:
                        raise NotFoundError(f"listing {product_id!r} not found")
                self.store.save_listing(
                    product,
                    cleaned_photos,
                    vector,
                    self.model.version,
                    replace_photos=replace_photos,
                    expect=expect,
                )
            except BaseException:
                remove_photo_files(written)
                raise
            image_counts = [0 if cleaned_photos is None else len(cleaned_photos)]
            self.searcher.add_products(product, vector, encoded.photo_vectors, encoded.has_photo, image_counts)
            self.listings.written(product, image_counts)
            self._after_write()
        return self.get_listing(product_id) | {"possible_duplicates": self.duplicate_cards(matches)}


def _already_exists(product_id: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"product_id: listing {product_id!r} already exists: use PUT to change it", field="product_id"
    )


def count_photos(store: Store, product_ids: list[str] | None = None) -> dict[str, int]:
    """Photos per listing in the database (every listing, or the given ones; none: absent),
    asked in chunks of COUNT_CHUNK ids so a large batch stays under the bound-parameter limit."""
    if product_ids is None:
        return store.photo_counts()
    counts: dict[str, int] = {}
    for start in range(0, len(product_ids), COUNT_CHUNK):
        counts.update(store.photo_counts(product_ids[start : start + COUNT_CHUNK]))
    return counts
