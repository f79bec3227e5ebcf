"""`python main.py`: every stage in order, with timings and a summary table at the end (data flow: docs/architecture.md).

Each stage is a small function that takes what the previous ones produced; the stage
list is the table of contents of the whole system. What one stage opens or builds (the
trained bundle, the FAISS and BM25 indexes) is handed to the next in `RunState`, never
opened or built again: one run opens the bundle once and builds each index once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd

from fbmarket.config import Settings
from fbmarket.data.prices import PRICE_REASONS as READ_PRICE_REASONS
from fbmarket.errors import DataError
from fbmarket.files import dumps_json
from fbmarket.layout import BundleLayout
from fbmarket.prepare import SYNTHETIC_NOTE, PreparedData, prepare_data

if TYPE_CHECKING:
    from fbmarket.bundle import Bundle
    from fbmarket.recommend.training import RankingModels
    from fbmarket.search.index import VectorIndex
    from fbmarket.search.lexical import LexicalIndex

log = logging.getLogger(__name__)


@dataclass
class CatalogueIndexes:
    """The run's listings, indexed once by `stage_index` for every later stage."""

    ids: list[str]
    vectors: VectorIndex  # fusion embeddings (FAISS)
    photos: VectorIndex  # pooled photo vectors of the listings with photos (FAISS)
    lexical: LexicalIndex  # titles and descriptions (BM25)


@dataclass
class RunState:
    """What stages hand to each other, and the rows of the final summary."""

    settings: Settings
    show_progress: bool = True
    prepared: PreparedData | None = None
    bundle: Bundle | None = None  # opened (trained) once, by stage_train or on first need
    indexes: CatalogueIndexes | None = None
    ranking: RankingModels | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def stage_prepare(state: RunState) -> None:
    prepared = prepare_data(state.settings, show_progress=state.show_progress)
    state.prepared = prepared
    report = prepared.report.to_json()
    counts = prepared.products["split"].value_counts().to_dict()
    state.summary["data"] = {
        "source": prepared.raw.origin,
        "synthetic": prepared.synthetic,
        "listings_in": report["rows_in"],
        "listings_kept": report["rows_out"],
        "dropped": report["dropped"],
        "photos_cleaned": report["images"].get("cleaned", 0),
        "photos_skipped": report["images"].get("skipped", {}),
        # which photos, and for a missing one the file names tried (first 20 per reason)
        "photos_skipped_examples": report["images"].get("skipped_examples", {}),
        "geocoded_share": report["geocoding"].get("matched"),
        "split": counts,
    }
    price_drops = {r: n for r, n in report["dropped"].items() if r in PRICE_REASONS}
    if price_drops:
        state.summary["data"]["note"] = (
            f"training's strict cleaning dropped {sum(price_drops.values())} listing(s) for their price "
            f"({', '.join(f'{r}={n}' for r, n in price_drops.items())}); `fbmarket index` on the same "
            "data keeps them, with an unknown price"
        )


def stage_eda(state: RunState) -> None:
    from fbmarket.eda import make_eda_plots

    assert state.prepared is not None
    plots = make_eda_plots(
        state.prepared.products,
        state.prepared.images,
        state.settings.reports_dir / "plots",
        synthetic=state.prepared.synthetic,
    )
    state.summary["plots"] = {name: str(path) for name, path in plots.items()}


def stage_baselines(state: RunState) -> None:
    from fbmarket.baselines import run_baselines

    assert state.prepared is not None
    metrics = run_baselines(
        state.prepared.products,
        state.prepared.images,
        state.settings.reports_dir / "baselines.json",
        seed=state.settings.seed,
        show_progress=state.show_progress,
    )
    state.summary["baselines"] = metrics


def stage_train(state: RunState) -> None:
    from fbmarket.training import train_bundle

    assert state.prepared is not None
    if state.prepared.images.empty:  # the image members would be fit on nothing
        skipped = state.prepared.report.to_json()["images"].get("skipped") or {}
        raise DataError(
            f"no photo to train the image model on: {state.prepared.raw.origin}'s Images.csv has no rows"
            + (f", or none of its photos could be used ({skipped})" if skipped else "")
        )
    result = train_bundle(
        state.prepared, state.settings, state.settings.out_dir, show_progress=state.show_progress
    )
    state.bundle = result.bundle
    state.summary["models"] = result.summary


def opened_bundle(state: RunState) -> Bundle:
    """The run's bundle: the one training made, or the saved one, opened once and kept."""
    if state.bundle is None:
        from fbmarket.bundle import Bundle

        state.bundle = Bundle.load(state.settings.out_dir)
    return state.bundle


def stage_index(state: RunState) -> None:
    """Every listing's fusion embedding -> .npy + ids (bundle), the database, and the FAISS and
    BM25 indexes (kept in `state.indexes` for the later stages)."""
    from fbmarket.data.store import Store
    from fbmarket.search.index import VectorIndex
    from fbmarket.search.lexical import LexicalIndex

    assert state.prepared is not None
    layout = BundleLayout(state.settings.out_dir)
    model = opened_bundle(state)
    products = state.prepared.products
    encoded = model.encode_listings(products, state.prepared.images, show_progress=state.show_progress)
    vectors = encoded.embeddings
    ids = products["product_id"].astype(str).tolist()
    photos = VectorIndex(encoded.photo_vectors.shape[1], state.settings.search, factory="Flat")
    photos.build(
        np.asarray(ids, dtype=object)[encoded.has_photo].tolist(), encoded.photo_vectors[encoded.has_photo]
    )
    photos.save(layout.photo_index)
    np.save(layout.embeddings, vectors)
    layout.embedding_ids.write_text(dumps_json(ids))
    store = Store(state.settings.db_url, root=layout.root)
    try:
        store.upsert_embeddings(ids, vectors, model.version)
    finally:
        store.close()
    index = VectorIndex(vectors.shape[1], state.settings.search)
    index.build(ids, vectors)
    index.save(layout.vector_index)
    lexical = LexicalIndex.from_products(products, state.settings.search)
    state.indexes = CatalogueIndexes(ids, index, photos, lexical)
    state.summary["index"] = {
        "listings": len(ids),
        "dim": int(vectors.shape[1]),
        "listings_with_photos": len(photos),
        **index.describe(),
    }


def stage_ranking(state: RunState) -> None:
    """Buyer profiles and the learned ranker, from the dataset's interactions or simulated ones."""
    from fbmarket.data.store import Store
    from fbmarket.recommend.training import fit_ranking
    from fbmarket.search.hybrid import HybridSearcher
    from fbmarket.synthetic.buyers import (
        USER_CSV_COLUMNS,
        simulate_buyers,
        simulate_interactions,
        towns_from_products,
    )

    assert state.prepared is not None
    settings = state.settings
    products = state.prepared.products
    users, interactions = state.prepared.raw.users, state.prepared.raw.interactions
    simulated = users is None or interactions is None
    if simulated:
        buyers = simulate_buyers(settings.rank.n_buyers, towns_from_products(products), seed=settings.seed)
        interactions = simulate_interactions(
            buyers, products, seed=settings.seed, sessions_per_buyer=settings.rank.sessions_per_buyer
        )
        users = buyers[list(USER_CSV_COLUMNS)]
        store = Store(settings.db_url, root=settings.out_dir)
        try:
            store.upsert_users(users)
            store.add_interactions(interactions)
        finally:
            store.close()
    model = opened_bundle(state)
    indexes = catalogue_indexes(state)  # no category heads: the ranker has always been fit so
    searcher = HybridSearcher(products, indexes.vectors, indexes.lexical, settings.search)

    def retrieve(query: str) -> pd.DataFrame:
        return searcher.retrieve(model.encode_query(query, None), query, None, n=settings.search.candidates).frame

    ranking = fit_ranking(
        products,
        users,
        interactions,
        retrieve,
        settings.rank,
        seed=settings.seed,
        show_progress=state.show_progress,
    )
    ranking.save(BundleLayout(settings.out_dir).ranking_dir)
    state.ranking = ranking
    state.summary["ranking"] = {"simulated_buyers": simulated, **ranking.report}


# Reasons that strict (training) cleaning drops a row for and lenient cleaning (`fbmarket
# index`, live listings) keeps the row for, with an unknown price (fbmarket/data/clean.py).
PRICE_REASONS = (*READ_PRICE_REASONS, "price_outlier")

EXAMPLE_QUERIES = ("sofa", "iphone", "kids bike", "drill")


def stage_examples(state: RunState) -> None:
    """Serve the run's bundle, indexes and ranker as the server would, and print a few searches."""
    from fbmarket.recommend.buyers import Buyer
    from fbmarket.service import SearchRequest

    market = open_marketplace(state)
    try:
        buyer_id = next(iter(sorted(market.ranking.profiles.user_affinity)), None)
        examples = {}
        for query in EXAMPLE_QUERIES:
            response = market.search(SearchRequest(query=query, buyer=Buyer(user_id=buyer_id), k=3))
            examples[query] = [(r.title, r.root_category, r.price, r.location) for r in response.results]
            print(f"  search {query!r} for buyer {buyer_id} ({response.buyer_status}, {response.mode}):")
            for result in response.results:
                price = "n/a" if result.price is None else f"£{result.price:,.2f}"
                print(f"    {result.score:6.3f}  {result.title[:50]:50}  {price:>10}  {result.location}")
        state.summary["examples"] = examples
    finally:
        market.close()


def catalogue_indexes(state: RunState) -> CatalogueIndexes:
    """The indexes stage_index built; for a stage run on its own (benchmarks/train_real.py),
    built once from what stage_index saved."""
    if state.indexes is None:
        from fbmarket.search.index import VectorIndex
        from fbmarket.search.lexical import LexicalIndex

        assert state.prepared is not None
        layout, search = BundleLayout(state.settings.out_dir), state.settings.search
        ids = json.loads(layout.embedding_ids.read_text())
        embeddings = np.load(layout.embeddings)
        vectors = VectorIndex(int(embeddings.shape[1]), search)
        vectors.build(ids, embeddings)
        photos = VectorIndex.load(layout.photo_index, search)
        state.indexes = CatalogueIndexes(
            ids, vectors, photos, LexicalIndex.from_products(state.prepared.products, search)
        )
    return state.indexes


def open_marketplace(state: RunState) -> Any:
    """The serving facade over what this run already holds (bundle, indexes, ranker), as
    `Marketplace.open` assembles it from the folder, without loading or indexing again:
    every listing was embedded and indexed by this run, so there is nothing to reconcile."""
    import os

    from fbmarket.data.store import Store
    from fbmarket.recommend.training import RankingModels
    from fbmarket.search.hybrid import HybridSearcher
    from fbmarket.search.reconcile import query_vocabulary
    from fbmarket.service import Marketplace, listing_catalogue, load_bundle_settings

    layout = BundleLayout(os.path.abspath(state.settings.out_dir))
    settings = load_bundle_settings(layout.root).with_environment()
    if state.settings.database_url:  # the run's own URL: settings.json holds it with the password masked
        settings.database_url = state.settings.database_url
    model, indexes = opened_bundle(state), catalogue_indexes(state)
    ranking = state.ranking or RankingModels.load(layout.ranking_dir)
    store = Store(settings.db_url, root=layout.root)
    catalogue = listing_catalogue(store, store.listings_frame(), settings)
    searcher = HybridSearcher(
        None,
        indexes.vectors,
        indexes.lexical,
        settings.search,
        model.category_space(),
        photos=indexes.photos,
        query_vocabulary=query_vocabulary(layout.root),
        catalogue=catalogue,
    )
    return Marketplace(layout.root, settings, store, model, searcher, ranking, catalogue)


STAGES: list[tuple[str, Callable[[RunState], None]]] = [
    ("clean, geocode, features, split, database", stage_prepare),
    ("EDA plots", stage_eda),
    ("baselines", stage_baselines),
    ("Word2Vec, text/image/fusion models, evaluation", stage_train),
    ("embeddings and FAISS index", stage_index),
    ("buyers and ranker", stage_ranking),
    ("example searches", stage_examples),
]

# `fbmarket train`: the stages that make a bundle `serve` and `search` use as it is (models,
# every listing embedded and indexed, buyer profiles and the learned ranker), without the
# plots, baselines and example searches of `python main.py`.
TRAIN_STAGES: list[tuple[str, Callable[[RunState], None]]] = [
    ("clean, geocode, features, split, database", stage_prepare),
    ("Word2Vec, text/image/fusion models, evaluation", stage_train),
    ("embeddings and FAISS index", stage_index),
    ("buyers and ranker", stage_ranking),
]


def run(settings: Settings, show_progress: bool = True) -> RunState:
    """Run every stage; the summary is printed, and written as JSON next to the bundle."""
    state = run_stages(settings, STAGES, show_progress, out=sys.stdout)
    print(format_summary(state.summary))
    return state


def train(settings: Settings, show_progress: bool = True) -> RunState:
    """`fbmarket train`: a complete, servable bundle (TRAIN_STAGES); stage names go to stderr
    so that stdout stays the JSON summary."""
    return run_stages(settings, TRAIN_STAGES, show_progress, out=sys.stderr if show_progress else None)


def run_stages(
    settings: Settings,
    stages: list[tuple[str, Callable[[RunState], None]]],
    show_progress: bool = True,
    out: TextIO | None = None,
) -> RunState:
    """Run `stages` in order, timed (their names printed to `out`); the summary is written as
    JSON next to the bundle."""
    state = RunState(settings=settings, show_progress=show_progress)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    settings.save(BundleLayout(settings.out_dir).settings)
    for number, (name, stage) in enumerate(stages, start=1):
        if out is not None:
            print(f"[{number}/{len(stages)}] {name}", file=out, flush=True)
        started = time.perf_counter()
        stage(state)
        state.timings[name] = round(time.perf_counter() - started, 2)
    state.summary["timings_s"] = state.timings
    write_summary(state.summary, settings.out_dir)
    return state


def write_summary(summary: dict[str, Any], out_dir: Path) -> None:
    BundleLayout(out_dir).summary.write_text(dumps_json(summary, indent=2, default=str))


def _skipped_photo_rows(examples: dict[str, Any], shown: int = 3) -> list[tuple[str, str]]:
    """One row per skip reason naming its first photos; the full list is in cleaning.json."""
    rows = []
    for reason, block in examples.items():
        photos = block.get("photos", [])
        names = []
        for photo in photos[:shown]:
            tried = photo.get("tried")
            names.append(f"{photo['image_id']} (tried {', '.join(tried[:3])}, ...)" if tried else photo["image_id"])
        more = block.get("total", len(photos)) - len(names)
        tail = f"; +{more} more in reports/cleaning.json" if more else ""
        rows.append((f"  {reason}", "; ".join(map(str, names)) + tail))
    return rows


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table a person reads at the end of a run."""
    lines = ["", "fbmarket run summary", "=" * 60]
    data = summary.get("data", {})
    if data.get("synthetic"):
        lines.append(f"NOTE: {SYNTHETIC_NOTE}")
    rows: list[tuple[str, str]] = [
        ("source", str(data.get("source", ""))),
        ("listings kept / read", f"{data.get('listings_kept', 0)} / {data.get('listings_in', 0)}"),
        ("dropped by reason", ", ".join(f"{k}={v}" for k, v in data.get("dropped", {}).items()) or "none"),
        ("photos cleaned", str(data.get("photos_cleaned", 0))),
        (
            "photos skipped",
            ", ".join(f"{k}={v}" for k, v in data.get("photos_skipped", {}).items()) or "none",
        ),
        *_skipped_photo_rows(data.get("photos_skipped_examples", {})),
        ("locations geocoded", _percent(data.get("geocoded_share"))),
        (
            "split train/val/test",
            "/".join(str(data.get("split", {}).get(s, 0)) for s in ("train", "val", "test")),
        ),
    ]
    for name, value in _metric_rows(summary):
        rows.append((name, value))
    for warning in summary.get("models", {}).get("warnings", []):
        rows.append(("WARNING", warning))
    for name, seconds in summary.get("timings_s", {}).items():
        rows.append((f"time: {name}", f"{seconds:.1f} s"))
    width = max(len(name) for name, _ in rows)
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


# The figures a person looks for first; everything else stays in the JSON reports.
HEADLINE_METRICS = (
    "baselines.category_text.accuracy",
    "baselines.category_text.macro_f1",
    "baselines.category_pixels.accuracy",
    "baselines.price_regression.rmse_gbp",
    "baselines.price_regression.r2",
    "baselines.similar_listings.catalogue.precision_at_k_leaf",
    "baselines.similar_listings.catalogue.precision_at_k_root",
)
HEADLINE_MODEL_KEYS = ("accuracy", "macro_f1")


def _metric_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    flat = _flatten({key: summary.get(key, {}) for key in ("baselines", "models")})
    rows = [(key, f"{flat[key]:.3f}") for key in HEADLINE_METRICS if isinstance(flat.get(key), float)]
    for key, value in flat.items():
        if (
            key.startswith("models.")
            and key.rsplit(".", 1)[-1] in HEADLINE_MODEL_KEYS
            and isinstance(value, float)
        ):
            rows.append((key, f"{value:.3f}"))
    return rows


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
