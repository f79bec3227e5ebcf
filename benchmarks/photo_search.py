"""Photo search quality on the real dev data: category precision and finding a re-encoded photo.

Usage: .venv/bin/python benchmarks/photo_search.py --bundle DIR [--out FILE] [--served 200]

DIR is a bundle trained on the dev data (`fbmarket train --data ../shared/data/gumtree-dev
--out DIR`); its database holds the clean listings and `split.json` the product-level split.
Skips with a message (exit 0) when the bundle is absent.

Every listing is encoded with `Bundle.encode_listings` (embedding + pooled photo vector) and
indexed over the whole catalogue, as `fbmarket serve` holds it. Queries are the first
photo of each validation / test listing with photos (its cleaned cached copy, as a buyer's
upload would be cleaned), through `Bundle.photo_query` and `Bundle.encode_query`:

* category: the query's own listing excluded, precision@10 of listings in the same root
  and in the same leaf category (bars: root >= 0.55, leaf >= 0.25);
* duplicates: the same photo JPEG re-encoded at quality 60, cropped by 10% (5% off each
  side, then re-encoded) and resized to half its side: recall@1 of its own listing
  (bar >= 0.95), the base of duplicate-listing detection.

`SearchSettings.photo_match_cosine` (a listing whose pooled photo vector is at least that
close to the query photo is pinned first) is chosen on the validation queries with the
default weights (the weight grid runs without it), among MATCH_CUTOFFS.
The weights of `HybridSearcher.retrieve_photo` (embedding blend, root and leaf agreement,
in units of the photo cosine) are chosen on the validation queries: the best mean of root and leaf
P@10 among settings whose duplicate recall@1 stays >= 0.95 (the smallest weights within
0.005 of the best); the test figures are then reported for the chosen and the default
setting. `--served N` also runs N test photos through `Marketplace.search` (the learned
ranker, anonymous buyer) on a copy of the bundle.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from harness import RESULTS, bundle_parser, no_bundle, write_json
from PIL import Image
from tqdm.auto import tqdm

from fbmarket.config import Settings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.layout import BundleLayout
from fbmarket.search.hybrid import HybridSearcher
from fbmarket.search.index import VectorIndex

DEFAULT_OUT = RESULTS / "photo_search.json"
K = 10
BLEND_WEIGHTS = (0.0, 0.1)
ROOT_WEIGHTS = (0.0, 0.2, 0.4)
LEAF_WEIGHTS = (0.0, 0.1)
MIN_RECALL = 0.95  # choice constraint on validation (the bar); none meeting it: the best recall
TIE = 0.005
VARIANTS = ("reencode", "crop10", "resize50")
MATCH_CUTOFFS = (0.0, 0.8, 0.85, 0.9, 0.95)  # SearchSettings.photo_match_cosine candidates


def jpeg_copy(image: Image.Image, quality: int) -> Image.Image:
    """`image` saved as a JPEG at `quality` and read back."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def variants(image: Image.Image) -> dict[str, Image.Image]:
    """The same photo as a re-poster would upload it."""
    jpeg = jpeg_copy
    w, h = image.size
    return {
        "reencode": jpeg(image, 60),
        "crop10": jpeg(image.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))), 85),
        "resize50": image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC),
    }


@dataclass
class Catalogue:
    """A dev bundle's whole catalogue indexed as `fbmarket serve` holds it (photo index included)."""

    settings: Settings
    model: Any  # fbmarket.bundle.Bundle
    products: pd.DataFrame  # with the bundle's split in S.SPLIT
    searcher: HybridSearcher
    photos: VectorIndex
    root: dict[str, str]  # product id -> root category
    leaf: dict[str, str]  # product id -> leaf category (full path)
    first_photo: pd.Series  # product id -> path of its first photo


def load_catalogue(bundle: Path) -> Catalogue:
    """Encode every listing of `bundle` (embedding + pooled photo vector) and index them."""
    from fbmarket.bundle import Bundle

    settings = Settings.load(BundleLayout(bundle).settings)
    settings.out_dir = bundle
    model = Bundle.load(bundle)
    store = Store(settings.db_url, root=bundle)  # photo paths are stored relative to the bundle
    products = store.listings_frame()
    images = store.images_frame()
    store.close()
    split = json.loads(BundleLayout(bundle).split.read_text())
    split = split.get("assignments", split) if isinstance(split, dict) else split
    products[S.SPLIT] = products[S.PRODUCT_ID].astype(str).map(split)
    encoded = model.encode_listings(products, images, show_progress=True)
    ids = products[S.PRODUCT_ID].astype(str).tolist()
    searcher = HybridSearcher.build(products, ids, encoded.embeddings, settings.search, model.category_space())
    photos = VectorIndex(encoded.photo_vectors.shape[1], settings.search, factory="Flat")
    photos.build(np.asarray(ids, dtype=object)[encoded.has_photo].tolist(), encoded.photo_vectors[encoded.has_photo])
    searcher.photos = photos
    first = images.sort_values([S.PRODUCT_ID, "position"]).drop_duplicates(S.PRODUCT_ID)
    return Catalogue(
        settings,
        model,
        products,
        searcher,
        photos,
        dict(zip(ids, products[S.ROOT_CATEGORY].astype(str), strict=True)),
        dict(zip(ids, products[S.LEAF_CATEGORY].astype(str), strict=True)),
        first.set_index(first[S.PRODUCT_ID].astype(str))[S.IMAGE_PATH],
    )


def main() -> int:
    parser = bundle_parser(__doc__, DEFAULT_OUT)
    parser.add_argument("--served", type=int, default=0, help="test photos also run through Marketplace.search")
    parser.add_argument("--limit", type=int, default=0, help="at most this many queries per split (0: all)")
    args = parser.parse_args()
    if no_bundle(args.bundle):
        return 0
    started = time.perf_counter()
    catalogue = load_catalogue(args.bundle)
    settings, model, products, searcher, photos = (
        catalogue.settings, catalogue.model, catalogue.products, catalogue.searcher, catalogue.photos
    )
    root, leaf, first = catalogue.root, catalogue.leaf, catalogue.first_photo
    queries: dict[str, list[dict]] = {}
    for name in ("val", "test"):
        pids = [p for p in products.loc[products[S.SPLIT] == name, S.PRODUCT_ID].astype(str) if p in first.index]
        if args.limit:
            pids = pids[: args.limit]
        rows = []
        for pid in tqdm(pids, desc=f"{name} query photos", unit="photo"):
            image = Image.open(first[pid])
            image.load()
            photo = model.photo_query(image)
            row = {"pid": pid, "photo": photo, "vector": model.encode_query(photo_features=photo.features)}
            for kind, copy in variants(image).items():
                p = model.photo_query(copy)
                row[kind] = (p, model.encode_query(photo_features=p.features))
            rows.append(row)
        queries[name] = rows

    def measure(rows: list[dict], search) -> dict[str, float]:
        same_root, same_leaf, recall = [], [], {k: [] for k in VARIANTS}
        for row in rows:
            pid = row["pid"]
            hits = search(row["photo"], row["vector"], K + 1)
            others = [h for h in hits if h != pid][:K]
            same_root.append(np.mean([root[h] == root[pid] for h in others]) if others else 0.0)
            same_leaf.append(np.mean([leaf[h] == leaf[pid] for h in others]) if others else 0.0)
            for kind in VARIANTS:
                photo, vector = row[kind]
                top = search(photo, vector, 1)
                recall[kind].append(bool(top) and top[0] == pid)
        out = {"root_p10": float(np.mean(same_root)), "leaf_p10": float(np.mean(same_leaf))}
        out |= {f"recall1_{k}": float(np.mean(v)) for k, v in recall.items()}
        out["recall1_min"] = min(out[f"recall1_{k}"] for k in VARIANTS)
        out["n"] = len(rows)
        return out

    def searcher_with(blend_w: float, root_w: float, leaf_w: float, cutoff: float = 0.0):
        tuned = replace(
            settings.search,
            photo_blend_weight=blend_w,
            photo_root_weight=root_w,
            photo_leaf_weight=leaf_w,
            photo_match_cosine=cutoff,
        )
        s = HybridSearcher(products, searcher.vectors, searcher.lexical, tuned, model.category_space(), photos)

        def search(photo, vector, n):
            frame = s.retrieve_photo(photo.features, vector, None, None, max(n, 50), photo.root_probs).frame
            return frame[S.PRODUCT_ID].tolist()[:n]

        return search

    def raw_photo_search(photo, vector, n):
        return [pid for pid, _ in photos.search(photo.features / np.linalg.norm(photo.features), n)]

    grid = {}
    for blend_w, root_w, leaf_w in tqdm(
        list(itertools.product(BLEND_WEIGHTS, ROOT_WEIGHTS, LEAF_WEIGHTS)), desc="weights on val"
    ):
        grid[(blend_w, root_w, leaf_w)] = measure(queries["val"], searcher_with(blend_w, root_w, leaf_w))
    eligible = {k: v for k, v in grid.items() if v["recall1_min"] >= MIN_RECALL}
    if not eligible:  # no setting keeps duplicates first often enough: keep the ones that do best
        top_recall = max(v["recall1_min"] for v in grid.values())
        eligible = {k: v for k, v in grid.items() if v["recall1_min"] >= top_recall - TIE}
    score = {k: (v["root_p10"] + v["leaf_p10"]) / 2 for k, v in eligible.items()}
    best = max(score.values())
    chosen = min((k for k, v in score.items() if v >= best - TIE), key=lambda k: (sum(k), k))
    search = settings.search
    default = (search.photo_blend_weight, search.photo_root_weight, search.photo_leaf_weight)
    # the photo-match cutoff, with the default weights: the highest cutoff within TIE of the
    # best duplicate recall on val (a higher cutoff pins fewer look-alikes of other listings)
    cutoffs_val = {c: measure(queries["val"], searcher_with(*default, cutoff=c)) for c in MATCH_CUTOFFS}
    top_recall = max(v["recall1_min"] for v in cutoffs_val.values())
    chosen_cutoff = max(c for c, v in cutoffs_val.items() if v["recall1_min"] >= top_recall - TIE)
    default_cutoff = search.photo_match_cosine
    result = {
        "bundle": str(args.bundle),
        "backbone": model.manifest.get("backbone", "resnet50v2"),
        "weights": model.weights_info.get("description"),
        "chosen_on_val": {"blend_weight": chosen[0], "root_weight": chosen[1], "leaf_weight": chosen[2]},
        "val": {"chosen": grid[chosen], "raw_photo_nn": measure(queries["val"], raw_photo_search)},
        "test": {
            "chosen": measure(queries["test"], searcher_with(*chosen)),
            "default": measure(queries["test"], searcher_with(*default, cutoff=default_cutoff)),
            "default_weights_chosen_cutoff": measure(queries["test"], searcher_with(*default, cutoff=chosen_cutoff)),
            "raw_photo_nn": measure(queries["test"], raw_photo_search),
        },
        "grid_val": {f"blend{k[0]}_root{k[1]}_leaf{k[2]}": v for k, v in grid.items()},
        "match_cutoff": {"default": default_cutoff, "chosen_on_val": chosen_cutoff},
        "match_cutoffs_val": {str(c): v for c, v in cutoffs_val.items()},
    }
    if args.served:
        result["test"]["served"] = served(args.bundle, queries["test"][: args.served], root, leaf)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for name in ("chosen", "default", "raw_photo_nn", "served"):
        if name in result["test"]:
            r = result["test"][name]
            print(
                f"test {name:13s} root P@10 {r['root_p10']:.3f}  leaf P@10 {r['leaf_p10']:.3f}  "
                f"recall@1 reencode {r['recall1_reencode']:.3f} crop10 {r['recall1_crop10']:.3f} "
                f"resize50 {r['recall1_resize50']:.3f}  (n={r['n']})"
            )
    print(f"chosen on val: {result['chosen_on_val']}; wrote {args.out}")
    return 0


def served(bundle: Path, rows: list[dict], root: dict, leaf: dict) -> dict[str, float]:
    """The same measures through `Marketplace.search` (ranker included), anonymous buyer."""
    from fbmarket.service import Marketplace, SearchRequest

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("logs", "checkpoints"))
        market = Marketplace.open(copy)
        images = market.store.images_frame()
        first = images.sort_values([S.PRODUCT_ID, "position"]).drop_duplicates(S.PRODUCT_ID)
        paths = dict(zip(first[S.PRODUCT_ID].astype(str), first[S.IMAGE_PATH], strict=True))
        same_root, same_leaf, recall = [], [], {k: [] for k in VARIANTS}
        try:
            for row in tqdm(rows, desc="served photo searches"):
                pid = row["pid"]
                image = Image.open(paths[pid])
                image.load()
                results = market.search(SearchRequest(image=image, k=K + 1)).results
                others = [r.product_id for r in results if r.product_id != pid][:K]
                same_root.append(np.mean([root[h] == root[pid] for h in others]) if others else 0.0)
                same_leaf.append(np.mean([leaf[h] == leaf[pid] for h in others]) if others else 0.0)
                for kind, copy_image in variants(image).items():
                    top = market.search(SearchRequest(image=copy_image, k=1)).results
                    recall[kind].append(bool(top) and top[0].product_id == pid)
        finally:
            market.close()
    out = {"root_p10": float(np.mean(same_root)), "leaf_p10": float(np.mean(same_leaf)), "n": len(rows)}
    out |= {f"recall1_{k}": float(np.mean(v)) for k, v in recall.items()}
    return out


if __name__ == "__main__":
    sys.exit(main())
