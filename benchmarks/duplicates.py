"""Duplicate-listing detection on the real dev data: precision/recall, real re-posts, latency per create.

Usage: .venv/bin/python benchmarks/duplicates.py --bundle DIR [--limit N] [--sizes 10000,100000]
           [--queries 300] [--out FILE]

DIR is a bundle trained on the dev data (`fbmarket train --data ../shared/data/gumtree-dev
--out DIR`); the bundle is only read. Skips with a message (exit 0) when it is absent.

1. Quality on the **test** split, with the rule `fbmarket train` chose on the validation
   split (`model/duplicates.json`) and, for comparison, the `DuplicateSettings` default:
   each test listing is posted again as a synthetic copy (search/duplicate_training.py:
   photos cropped 80-95%, resized and re-encoded; title reworded; or both) against the whole
   catalogue as a create sees it (its embeddings from the database, its photo index).
   Precision and recall per kind of copy (bars >= 0.95 / >= 0.90); flagged genuine re-posts
   of the original (listings that already were duplicates in the data) are counted apart.
   The chosen rule is also scored without its same-photo flag (`DuplicateSettings.flag_same_photo`:
   a pair with the same photos is flagged whatever its words); a bundle trained before that
   flag is measured with it added, as a training now saves the rule.
2. The duplicate groups that exist in the dev catalogue (connected components of flagged
   pairs by FAISS self-search, as `fbmarket duplicates` reports them), written to
   benchmarks/results/duplicate_groups_dev.md for a human look, with the genuine re-posts and
   the false positives the labelled set met (git ignores that file: it quotes the dev
   listings, which stay out of the repository; the JSON has only counts).
3. Latency added to a create (`DuplicateDetector.find`: both index searches, the candidates'
   vectors and texts, the rule and its reasons) at 10k and 100k listings: the catalogue grown
   with jittered replicas of the real vectors (cosine ~0.96 to the original), the embedding
   index of the type a server builds at that size (`SearchSettings.factory_for`), the photo
   index Flat as served, FAISS on one thread (`ServeSettings.faiss_threads`); queries are the
   test copies' own vectors. p50/p99 (bar p99 <= 50 ms).

Results: benchmarks/results/duplicates.json and a markdown table in
benchmarks/results/duplicates.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import faiss
import numpy as np
import pandas as pd
from harness import REPO, RESULTS, latency_stats, write_json

from fbmarket.config import SearchSettings
from fbmarket.data import schema as S
from fbmarket.data.store import Store
from fbmarket.search.duplicate_rule import same_photo_rule
from fbmarket.search.duplicate_training import (
    Catalogue,
    evaluate,
    labelled_set,
    sample_originals,
)
from fbmarket.search.duplicates import (
    DuplicateDetector,
    DuplicateProbe,
    DuplicateRule,
    catalogue_pairs,
    duplicate_groups,
)
from fbmarket.search.index import VectorIndex

DEFAULT_OUT = RESULTS / "duplicates.json"
GROUPS_FILE = RESULTS / "duplicate_groups_dev.md"
TABLE_FILE = RESULTS / "duplicates.md"
BARS = {"precision": 0.95, "recall": 0.90, "p99_ms": 50.0}


def load_catalogue(bundle_dir: Path, model: Any) -> tuple[Catalogue, pd.DataFrame, pd.DataFrame, Any]:
    """The served state, read only: listings and photos from the database, embeddings of the
    bundle's model from the database, pooled photo vectors from the saved photo index."""
    from fbmarket.layout import BundleLayout
    from fbmarket.service import load_bundle_settings

    settings = load_bundle_settings(bundle_dir)
    store = Store(settings.db_url, root=bundle_dir)
    try:
        products = store.listings_frame()
        images = store.images_frame()
        ids, embeddings = store.load_embeddings(model.version)
    finally:
        store.close()
    split = json.loads(BundleLayout(bundle_dir).split.read_text())
    split = split.get("assignments", split) if isinstance(split, dict) else split
    products[S.SPLIT] = products[S.PRODUCT_ID].astype(str).map(split)
    products = products.set_index(products[S.PRODUCT_ID].astype(str), drop=False).loc[ids].reset_index(drop=True)
    photos = VectorIndex.load(BundleLayout(bundle_dir).photo_index, settings.search)
    has_photo = np.array([pid in photos for pid in ids], bool)
    photo_vectors = np.zeros((len(ids), photos.dim), np.float32)
    photo_vectors[has_photo] = photos.vectors_of([pid for pid, h in zip(ids, has_photo, strict=True) if h])
    catalogue = Catalogue(
        list(ids),
        np.asarray(embeddings, np.float32),
        photo_vectors,
        has_photo,
        products[S.TITLE].astype(str).tolist(),
        products[S.DESCRIPTION].fillna("").astype(str).tolist(),
    )
    return catalogue, products, images, settings


def jitter(x: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors about `cosine` from the rows of x (a synthetic listing near a real one)."""
    noise = rng.standard_normal(x.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    y = cosine * x + np.sqrt(1 - cosine**2) * noise
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


class TextTable:
    """Titles and descriptions by id, read as `Marketplace._texts` reads them (an index lookup)."""

    def __init__(self, ids: list[str], titles: list[str], descriptions: list[str]):
        self.index = pd.Index(ids)
        self.titles = np.asarray(titles, dtype=object)
        self.descriptions = np.asarray(descriptions, dtype=object)

    def __call__(self, wanted: Any) -> tuple[list[str], list[str]]:
        rows = self.index.get_indexer(list(wanted))
        return self.titles[rows].tolist(), self.descriptions[rows].tolist()


def latency(
    catalogue: Catalogue,
    detector: DuplicateDetector,
    queries: dict[str, Any],
    sizes: list[int],
    n_queries: int,
    seed: int,
) -> dict[str, Any]:
    """Wall time of `DuplicateDetector.find` per query at each catalogue size."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    base = len(catalogue.ids)
    for n in sizes:
        reps = int(np.ceil(n / base))
        ids, emb, pho, has, titles, descs = [], [], [], [], [], []
        for r in range(reps):
            take = min(base, n - r * base)
            if take <= 0:
                break
            ids += [f"{pid}~{r}" if r else pid for pid in catalogue.ids[:take]]
            e = catalogue.embeddings[:take]
            p = catalogue.photo_vectors[:take]
            emb.append(e if r == 0 else jitter(e, 0.96, rng))
            pho.append(p if r == 0 else jitter(p, 0.96, rng))
            has.append(catalogue.has_photo[:take])
            titles += catalogue.titles[:take]
            descs += catalogue.descriptions[:take]
        embeddings, photo_vectors, has_photo = np.concatenate(emb), np.concatenate(pho), np.concatenate(has)
        search = SearchSettings()
        factory = search.factory_for(len(ids))
        started = time.perf_counter()
        vectors = VectorIndex(embeddings.shape[1], search, factory=factory)
        vectors.build(ids, embeddings)
        photos = VectorIndex(photo_vectors.shape[1], search, factory="Flat")
        photos.build([pid for pid, h in zip(ids, has_photo, strict=True) if h], photo_vectors[has_photo])
        build_s = time.perf_counter() - started
        texts = TextTable(ids, titles, descs)
        times, found = [], []
        m = len(queries["embeddings"])
        for q in range(min(n_queries, m) + 10):
            i = q % m
            photo = queries["photo_vectors"][i] if queries["has_photo"][i] else None
            t = time.perf_counter()
            probe = DuplicateProbe(
                queries["embeddings"][i], photo, queries["titles"][i], queries["descriptions"][i]
            )
            matches = detector.find(probe, vectors, photos, texts)
            elapsed = time.perf_counter() - t
            if q >= 10:  # the first few warm FAISS and the vectoriser up
                times.append(elapsed * 1000)
                found.append(len(matches))
        out[str(len(ids))] = {
            "listings": len(ids),
            "embedding_index": factory,
            "photo_index": "Flat",
            "queries": len(times),
            **latency_stats(times, ("p50", "p90", "p99", "max"), digits=2, suffix="_ms"),
            "mean_matches": round(float(np.mean(found)), 2),
            "index_build_s": round(build_s, 1),
            "load_average": [round(v, 2) for v in os.getloadavg()],
        }
        print(f"  {len(ids):>7} listings ({factory}): p50 {out[str(len(ids))]['p50_ms']} ms, p99 {out[str(len(ids))]['p99_ms']} ms")
        del vectors, photos
    return out


def groups_report(
    catalogue: Catalogue, products: pd.DataFrame, detector: DuplicateDetector
) -> tuple[list[dict[str, Any]], int]:
    """The catalogue's duplicate groups, with each listing's title and price and each pair's reasons."""
    pairs = catalogue_pairs(
        detector, catalogue.vectors, catalogue.photos, catalogue.ids, catalogue.titles, catalogue.descriptions
    )
    groups = duplicate_groups([(a, b) for a, b, _, _ in pairs])
    table = products.set_index(products[S.PRODUCT_ID].astype(str))
    where = {pid: n for n, g in enumerate(groups) for pid in g}
    out = [
        {
            "listings": [
                {
                    "product_id": pid,
                    "title": str(table.at[pid, S.TITLE]),
                    "price": None if pd.isna(table.at[pid, S.PRICE]) else float(table.at[pid, S.PRICE]),
                    "category": str(table.at[pid, S.CATEGORY]),
                    "location": str(table.at[pid, S.LOCATION] or ""),
                }
                for pid in g
            ],
            "pairs": [],
        }
        for g in groups
    ]
    for a, b, score, features in pairs:
        reasons = detector.reasons(features.photo[0], features.title[0], features.description[0], score)
        out[where[a]]["pairs"].append({"product_ids": [a, b], "score": round(score, 3), "reasons": reasons})
    return out, len(pairs)


def write_groups(
    path: Path,
    groups: list[dict[str, Any]],
    genuine: list[dict[str, Any]],
    false_positives: list[dict[str, Any]],
    listings: int,
) -> None:
    lines = [
        "# Duplicate groups in the dev catalogue",
        "",
        "Written by `benchmarks/duplicates.py` for a human look: each group is a connected",
        "component of listing pairs the bundle's duplicate rule flags (FAISS self-search over",
        f"the {listings} listings), largest first. Prices in GBP.",
        "",
        f"{len(groups)} groups, {sum(len(g['listings']) for g in groups)} listings.",
        "",
    ]
    for n, group in enumerate(groups, start=1):
        lines.append(f"## Group {n} ({len(group['listings'])} listings)")
        lines.append("")
        lines.append("| id | title | price | category | location |")
        lines.append("|---|---|---|---|---|")
        for card in group["listings"]:
            price = "" if card["price"] is None else f"{card['price']:,.2f}"
            title = card["title"].replace("|", "/")
            lines.append(f"| {card['product_id']} | {title} | {price} | {card['category']} | {card['location']} |")
        lines.append("")
        for pair in sorted(group["pairs"], key=lambda p: -p["score"])[:10]:
            a, b = pair["product_ids"]
            lines.append(f"- {a} ~ {b}: score {pair['score']:.2f}: {', '.join(pair['reasons'])}")
        lines.append("")
    lines += [
        "## Genuine re-posts met by the test labelled set",
        "",
        "Catalogue listings that already were duplicates of a test listing (the same photos, pooled",
        "cosine >= `same_photo_cosine`): a copy of the test listing that the rule matched to them is",
        "reported apart, not counted as a false positive.",
        "",
        "| original | title | other | title | photo cosine |",
        "|---|---|---|---|---|",
    ]
    for item in genuine:
        photo = "n/a (no photos)" if item["photo"] is None else f"{item['photo']:.3f}"
        lines.append(
            f"| {item['original_id']} | {item['original_title'].replace('|', '/')} | {item['other_id']} | "
            f"{item['other_title'].replace('|', '/')} | {photo} |"
        )
    lines += [
        "",
        "## False positives on the test labelled set",
        "",
        "A copy of a test listing matched to another catalogue listing that the strict genuine test",
        f"does not call a re-post of it ({len(false_positives)} pairs; the 40 highest scores):",
        "",
        "| copy kind | original | title | matched | title | score | reasons |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in false_positives[:40]:
        lines.append(
            f"| {item['kind']} | {item['original_id']} | {item['original_title'].replace('|', '/')} | "
            f"{item['other_id']} | {item['other_title'].replace('|', '/')} | {item['score']:.2f} | "
            f"{', '.join(item['reasons'])} |"
        )
    path.write_text("\n".join(lines) + "\n")


def write_table(path: Path, result: dict[str, Any]) -> None:
    lines = [
        "# Duplicate-listing detection (dev bundle, test split)",
        "",
        f"Command: `{result['command']}`",
        "",
        "| rule | kind | copies | precision | precision (genuine re-posts as errors) | recall | "
        "original among candidates |",
        "|---|---|---|---|---|---|---|",
    ]
    for rule, rows in result["test"].items():
        for kind, row in rows.items():
            lines.append(
                f"| {rule} | {kind} | {row['copies']} | {row['precision']} | {row['precision_strict']} | "
                f"{row['recall']} | {row['original_in_candidates']} |"
            )
    lines += ["", "| listings | embedding index | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for row in result["latency"].values():
        lines.append(
            f"| {row['listings']:,} | {row['embedding_index']} | {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |"
        )
    lines += [
        "",
        f"Real duplicate groups in the dev catalogue: {result['groups']['groups']} "
        f"({result['groups']['listings']} listings), listed in `{GROUPS_FILE.relative_to(REPO)}` "
        "(written on the machine that ran this, not committed: it quotes the dev listings).",
    ]
    path.write_text("\n".join(lines) + "\n")


def fit_rule_into(
    bundle_dir: Path, model: Any, catalogue: Catalogue, products: pd.DataFrame, images: pd.DataFrame, settings: Any
) -> None:
    """The train hook's fit (training/steps.py fit_duplicate_rule) on a finished bundle: the same
    validation sample and seed; the catalogue read from the database instead of training's arrays.
    `model` is the bundle loaded from `bundle_dir`; the rule is saved with it (`Bundle.save`)."""
    from fbmarket.search.duplicate_training import fit_on_split

    scratch = Path(tempfile.mkdtemp(prefix="fbmarket-dups-fit-"))
    started = time.perf_counter()
    try:
        rule = fit_on_split(
            model, catalogue, products, images, settings.duplicates, settings.data, scratch, settings.seed,
            cache_originals=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.duplicate_rule = rule
    model.manifest["duplicates"] = rule.to_json()
    model.save(bundle_dir)
    print(f"rule fit on the validation split in {time.perf_counter() - started:.1f} s:")
    print(json.dumps(rule.to_json(), indent=2, default=str)[:3000])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--limit", type=int, default=0, help="test listings copied (0: all)")
    parser.add_argument("--sizes", default="10000,100000", help="catalogue sizes for the latency")
    parser.add_argument("--queries", type=int, default=300, help="timed creates per size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fit-rule",
        action="store_true",
        help="first fit the rule on the bundle's validation split as `fbmarket train` does, writing "
        "model/duplicates.json into the bundle (for a bundle trained before the rule; use a copy)",
    )
    args = parser.parse_args()
    from fbmarket.layout import BundleLayout

    if not BundleLayout(args.bundle).manifest.is_file():
        print(f"skipped: no trained bundle at {args.bundle} (train one on the dev data first)")
        return 0
    from fbmarket.bundle import Bundle

    started = time.perf_counter()
    faiss.omp_set_num_threads(1)  # as `fbmarket serve` runs FAISS (ServeSettings.faiss_threads)
    model = Bundle.load(args.bundle)
    catalogue, products, images, settings = load_catalogue(args.bundle, model)
    if args.fit_rule:
        fit_rule_into(args.bundle, model, catalogue, products, images, settings)
    chosen = model.duplicate_rule
    if chosen is None:
        print("note: the bundle has no model/duplicates.json: using the DuplicateSettings default")
    default = DuplicateRule.from_settings(settings.duplicates)
    rule = chosen or default
    if rule.same_photo_cosine is None and settings.duplicates.flag_same_photo:
        # a bundle trained before the same-photo flag: measured as a training now saves its rule
        rule = replace(rule, same_photo_cosine=same_photo_rule(settings.duplicates))
    detector = DuplicateDetector(rule, settings.duplicates)

    print("labelled set on the test split ...")
    originals = sample_originals(products, "test", args.limit, args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="fbmarket-dups-"))
    try:
        pairs, features, copies = labelled_set(
            model, catalogue, products, images, originals, settings.duplicates, settings.data, scratch,
            args.seed, cache_originals=False,
        )  # fmt: skip
        # the copies' own vectors, as queries for the latency runs
        encoded = model.encode_listings(copies.products.head(args.queries), copies.images, use_cache=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    labelled_s = time.perf_counter() - started
    test = {
        "chosen_on_val": evaluate(pairs, features, rule),
        "chosen_on_val, logistic rule alone (no same-photo flag)": evaluate(
            pairs, features, replace(rule, same_photo_cosine=None)
        ),
        "settings_default": evaluate(pairs, features, default),
    }
    for name, rows in test.items():
        for kind, row in rows.items():
            print(f"  {name:16} {kind:5}: precision {row['precision']} recall {row['recall']} ({row['copies']} copies)")

    row = {pid: i for i, pid in enumerate(catalogue.ids)}
    genuine_pairs = pairs[pairs["genuine"] & ~pairs["label"]][["original_id", "candidate_id"]].drop_duplicates()
    genuine = [
        {
            "original_id": o,
            "original_title": catalogue.titles[row[o]],
            "other_id": c,
            "other_title": catalogue.titles[row[c]],
            "photo": float(catalogue.photo_vectors[row[o]] @ catalogue.photo_vectors[row[c]])
            if catalogue.has_photo[row[o]] and catalogue.has_photo[row[c]]
            else None,
        }
        for o, c in genuine_pairs.itertuples(index=False)
    ]
    # the rule's false positives on the test copies, for a person to judge (a re-post the strict
    # genuine test missed, or a real mistake)
    score, flagged = rule.flags(features)
    wrong = np.flatnonzero(flagged & ~pairs["label"].to_numpy(bool) & ~pairs["genuine"].to_numpy(bool))
    wrong = wrong[np.argsort(-score[wrong])]
    false_positives = [
        {
            "kind": pairs["kind"].iat[i],
            "original_id": pairs["original_id"].iat[i],
            "original_title": catalogue.titles[row[pairs["original_id"].iat[i]]],
            "other_id": pairs["candidate_id"].iat[i],
            "other_title": catalogue.titles[row[pairs["candidate_id"].iat[i]]],
            "score": round(float(score[i]), 3),
            "reasons": detector.reasons(features.photo[i], features.title[i], features.description[i], score[i]),
        }
        for i in wrong
    ]

    print("duplicate groups in the catalogue ...")
    groups, flagged_pairs = groups_report(catalogue, products, detector)
    write_groups(GROUPS_FILE, groups, genuine, false_positives, len(catalogue.ids))

    print("latency added per create ...")
    queries = {
        "embeddings": encoded.embeddings,
        "photo_vectors": encoded.photo_vectors,
        "has_photo": encoded.has_photo,
        "titles": copies.products[S.TITLE].astype(str).head(args.queries).tolist(),
        "descriptions": copies.products[S.DESCRIPTION].fillna("").astype(str).head(args.queries).tolist(),
    }
    sizes = [int(s) for s in args.sizes.split(",") if s]
    timed = latency(catalogue, detector, queries, sizes, args.queries, args.seed)

    result = {
        "command": "benchmarks/duplicates.py " + " ".join(sys.argv[1:]),
        "bundle": str(args.bundle),
        "version": model.version,
        "rule": rule.to_json(),
        "bars": BARS,
        "test": test,
        "test_copies": copies.meta["kind"].value_counts().to_dict(),
        "test_listings": len(originals),
        "genuine_reposts_met": len(genuine),
        "false_positive_pairs": len(false_positives),
        "groups": {
            "groups": len(groups),
            "listings": sum(len(g["listings"]) for g in groups),
            "flagged_pairs": flagged_pairs,
            "sizes": [len(g["listings"]) for g in groups],
            "file": str(GROUPS_FILE.relative_to(REPO)),
        },
        "latency": timed,
        "labelled_set_s": round(labelled_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    write_table(TABLE_FILE, result)
    print(f"results: {args.out}, {TABLE_FILE}, {GROUPS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
