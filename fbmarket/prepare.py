"""The data half of the pipeline: source -> clean -> images -> geo -> features -> split -> database.

`prepare_data` is what every later stage (models, search, API) starts from; it writes
its outputs (cleaning report, split) under `settings.out_dir` so a bundle carries them.
The category encoder is handed to training in memory: the bundle stores the root
categories once, in bundle.json (`Bundle.save`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.categories import CategoryEncoder
from fbmarket.data.clean import CleaningReport, attach_created, attach_geo, clean_products
from fbmarket.data.features import add_features
from fbmarket.data.image_cache import MESSAGE, REASON, SKIPPED_IMAGE_COLUMNS, candidate_names, clean_images
from fbmarket.data.sources import PRODUCTS_FILE, RawTables, read_source
from fbmarket.data.split import assign_split
from fbmarket.data.store import Store
from fbmarket.errors import DataError
from fbmarket.files import dumps_json
from fbmarket.layout import BundleLayout

log = logging.getLogger(__name__)

SYNTHETIC_NOTE = "SYNTHETIC data from fbmarket's embedded generator (not real listings)"
# Photos named per skip reason in the cleaning report: enough to find a pattern (a wrong
# folder, an extension nobody expected), not the whole Images.csv of a broken dataset.
SKIPPED_PHOTOS_SHOWN = 20


@dataclass
class PreparedData:
    """Clean, featured, split listings and their photos: the input of every model."""

    products: pd.DataFrame  # clean columns + features + `split`
    images: pd.DataFrame  # clean image rows of kept products
    encoder: CategoryEncoder  # root categories
    report: CleaningReport
    raw: RawTables
    synthetic: bool

    def part(self, split: str) -> pd.DataFrame:
        return self.products[self.products[S.SPLIT] == split]


def resolve_data_dir(settings: Settings, show_progress: bool = True) -> tuple[Path | str, bool]:
    """The dataset to read; without `--data`, generate the embedded synthetic marketplace once."""
    if settings.data_dir is not None:
        return settings.data_dir, False
    from fbmarket.synthetic.marketplace import write_sample

    folder = BundleLayout(settings.out_dir).sample_data
    marker = folder / "Products.csv"
    stamp = folder / ".generated.json"
    wanted = {"products": settings.data.sample_products, "seed": settings.seed}
    if not (marker.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted):
        log.info("generating the synthetic marketplace in %s", folder)
        write_sample(
            folder, n_products=settings.data.sample_products, seed=settings.seed, show_progress=show_progress
        )
        stamp.write_text(dumps_json(wanted))
    return folder, True


def clean_raw(
    raw: RawTables, settings: Settings, strict: bool = True, show_progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame, CleaningReport]:
    """Raw tables -> clean products (geocoded, featured) and clean photos, with the report."""
    report = CleaningReport(read_issues=raw.issues.to_json())
    report.count_unread(raw.issues.malformed_rows.get(PRODUCTS_FILE, 0))
    products, report = clean_products(
        raw.products,
        settings.data.min_price,
        settings.data.max_price,
        strict=strict,
        report=report,
        max_title_chars=settings.data.max_title_chars,
        max_description_chars=settings.data.max_description_chars,
        max_location_chars=settings.data.max_location_chars,
    )
    products = attach_created(products, raw.images)
    products = attach_geo(products, report)

    known = raw.images[raw.images["product_id"].astype("str").str.strip().isin(products[S.PRODUCT_ID])]
    orphans = len(raw.images) - len(known)
    if raw.image_dir is None:
        photos = pd.DataFrame(columns=list(S.CLEAN_IMAGE_COLUMNS))
        skipped = pd.DataFrame(
            {
                S.IMAGE_ID: known["id"].astype("str").str.strip(),
                S.PRODUCT_ID: known["product_id"].astype("str").str.strip(),
                REASON: "no_image_folder",
                MESSAGE: f"{raw.origin} has no images/ folder",
            },
            columns=list(SKIPPED_IMAGE_COLUMNS),
        )
    else:
        photos, skipped = clean_images(
            known,
            raw.image_dir,
            settings.cache_dir,
            size=settings.data.image_size,
            max_pixels=settings.data.max_image_pixels,
            max_bytes=settings.data.max_image_bytes,
            show_progress=show_progress,
        )
    report.images = {
        "rows_in": len(raw.images),
        "orphan_rows": orphans,  # photos whose product is not (or no longer) listed
        "cleaned": len(photos),
        "skipped": skipped["reason"].value_counts().to_dict() if len(skipped) else {},
        "skipped_examples": skipped_examples(skipped),
        "products_without_photo": int((~products[S.PRODUCT_ID].isin(photos[S.PRODUCT_ID])).sum()),
    }
    products = add_features(products, photos)
    return products, photos, report


def skipped_examples(skipped: pd.DataFrame, limit: int = SKIPPED_PHOTOS_SHOWN) -> dict[str, dict]:
    """Per skip reason, the total and the first `limit` photos by name, with why.

    Counts alone ("missing_file: 3") leave a person to re-derive which photos and which file
    names were looked for; a missing photo lists the names tried (`candidate_names`, in any
    letter case), so a wrong folder or an unexpected extension shows at a glance.
    """
    examples: dict[str, dict] = {}
    for reason, rows in skipped.groupby(REASON, sort=False):
        shown = []
        for row in rows.head(limit).itertuples(index=False):
            item = {"image_id": getattr(row, S.IMAGE_ID), "product_id": getattr(row, S.PRODUCT_ID)}
            if reason == "missing_file" and getattr(row, S.IMAGE_ID):
                item["tried"] = candidate_names(getattr(row, S.IMAGE_ID))
            item["message"] = getattr(row, MESSAGE)
            shown.append(item)
        examples[str(reason)] = {"total": len(rows), "shown": len(shown), "photos": shown}
    return examples


def prepare_data(settings: Settings, show_progress: bool = True, store: bool = True) -> PreparedData:
    """Everything up to a persisted split and a filled database."""
    data_dir, synthetic = resolve_data_dir(settings, show_progress)
    raw = read_source(data_dir)
    products, photos, report = clean_raw(raw, settings, strict=True, show_progress=show_progress)
    if products.empty:
        raise DataError(f"no listing in {raw.origin} survived cleaning: {report.to_json()['dropped']}")
    products = assign_split(
        products, BundleLayout(settings.out_dir).split, settings.data.split_fractions, settings.seed
    )
    encoder = CategoryEncoder.fit(products[S.ROOT_CATEGORY])
    payload = report.to_json() | {"source": raw.origin, "synthetic": synthetic}
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "cleaning.json").write_text(dumps_json(payload, indent=2, default=str))
    if store:
        # photo paths relative to the bundle; a new bundle's folder is made here
        database = Store(settings.db_url, root=settings.out_dir, create_folder=True)
        try:
            database.upsert_listings(products, photos)
            if raw.users is not None:
                database.upsert_users(raw.users)
            if raw.interactions is not None:
                database.add_interactions(raw.interactions)
        finally:
            database.close()
    return PreparedData(products, photos, encoder, report, raw, synthetic)
