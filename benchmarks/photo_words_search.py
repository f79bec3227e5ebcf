"""Photo + words on the real dev data: how much the words' blend counts next to the photo.

Usage: .venv/bin/python benchmarks/photo_words_search.py --bundle DIR [--out FILE] [--limit 150]

DIR is a bundle trained on the dev data (`fbmarket train --data ../shared/data/gumtree-dev
--out DIR`); skips with a message (exit 0) when it is absent. The catalogue is indexed as
`benchmarks/photo_search.py` indexes it (`load_catalogue`).

A query is the first photo of a validation / test listing with its leaf category's name as
the words ("Prams & Strollers"): a buyer showing a thing and saying what it is. For each
`SearchSettings.photo_words_blend_weight` in WEIGHTS (the other photo settings at their
defaults) it reports, the query's own listing excluded, same-root and same-leaf precision@10,
and recall@1 of the own listing for the photo re-encoded at JPEG quality 60 with the same
words; and the words alone through the usual hybrid search. The default is the weight whose
mean of root and leaf P@10 on validation is within TIE of the best while its recall@1 stays
within RECALL_SLACK of the best recall (duplicates of a photo-only query are
`photo_search.py`'s measure; here they are only not to be lost).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from harness import RESULTS, bundle_parser, no_bundle, write_json
from photo_search import K, jpeg_copy, load_catalogue
from PIL import Image
from tqdm.auto import tqdm

from fbmarket.data import schema as S
from fbmarket.search.hybrid import HybridSearcher

DEFAULT_OUT = RESULTS / "photo_words_search.json"
WEIGHTS = (0.1, 0.3, 0.5, 1.0, 2.0)
TIE = 0.02
RECALL_SLACK = 0.015


def main() -> int:
    parser = bundle_parser(__doc__, DEFAULT_OUT)
    parser.add_argument("--limit", type=int, default=150, help="at most this many queries per split (0: all)")
    args = parser.parse_args()
    if no_bundle(args.bundle):
        return 0
    started = time.perf_counter()
    cat = load_catalogue(args.bundle)
    model, products = cat.model, cat.products
    leaf_name = dict(zip(products[S.PRODUCT_ID].astype(str), products[S.LEAF_NAME].astype(str), strict=True))
    queries: dict[str, list[dict]] = {}
    for name in ("val", "test"):
        pids = [
            p
            for p in products.loc[products[S.SPLIT] == name, S.PRODUCT_ID].astype(str)
            if p in cat.first_photo.index
        ]
        rows = []
        for pid in tqdm(pids[: args.limit or None], desc=f"{name} photo + words", unit="query"):
            image = Image.open(cat.first_photo[pid])
            image.load()
            words = leaf_name[pid]
            photo, copy = model.photo_query(image), model.photo_query(jpeg_copy(image, 60))
            rows.append({
                "pid": pid, "words": words, "photo": photo, "copy": copy,
                "vector": model.encode_query(text=words, photo_features=photo.features),
                "copy_vector": model.encode_query(text=words, photo_features=copy.features),
                "words_vector": model.encode_query(text=words),
            })  # fmt: skip
        queries[name] = rows

    def precision(pid: str, frame) -> tuple[float, float]:
        hits = [h for h in frame[S.PRODUCT_ID].tolist() if h != pid][:K]
        if not hits:
            return 0.0, 0.0
        return (
            float(np.mean([cat.root[h] == cat.root[pid] for h in hits])),
            float(np.mean([cat.leaf[h] == cat.leaf[pid] for h in hits])),
        )

    def measure(rows: list[dict], weight: float | None) -> dict[str, float]:
        """weight None: the words alone (no photo)."""
        tuned = replace(cat.settings.search, photo_words_blend_weight=weight or 0.0)
        s = HybridSearcher(
            products, cat.searcher.vectors, cat.searcher.lexical, tuned, model.category_space(), cat.photos
        )
        roots, leaves, recall = [], [], []
        for row in rows:
            if weight is None:
                frame = s.retrieve(row["words_vector"], row["words"], None, 50).frame
            else:
                photo, copy = row["photo"], row["copy"]
                frame = s.retrieve_photo(
                    photo.features, row["vector"], row["words"], None, 50, photo.root_probs
                ).frame
                top = s.retrieve_photo(
                    copy.features, row["copy_vector"], row["words"], None, 50, copy.root_probs
                ).frame
                recall.append(bool(len(top)) and top[S.PRODUCT_ID].iloc[0] == row["pid"])
            root, leaf = precision(row["pid"], frame)
            roots.append(root)
            leaves.append(leaf)
        out = {
            "root_p10": round(float(np.mean(roots)), 4),
            "leaf_p10": round(float(np.mean(leaves)), 4),
            "n": len(rows),
        }
        if recall:
            out["recall1_reencode"] = round(float(np.mean(recall)), 4)
        return out

    grid = {
        name: {str(w): measure(rows, w) for w in tqdm(WEIGHTS, desc=name)} for name, rows in queries.items()
    }
    words_only = {name: measure(rows, None) for name, rows in queries.items()}
    val = grid["val"]
    best_recall = max(v["recall1_reencode"] for v in val.values())
    eligible = {w: v for w, v in val.items() if v["recall1_reencode"] >= best_recall - RECALL_SLACK}
    score = {w: (v["root_p10"] + v["leaf_p10"]) / 2 for w, v in eligible.items()}
    chosen = min((float(w) for w, v in score.items() if v >= max(score.values()) - TIE))
    default = cat.settings.search.photo_words_blend_weight
    result = {
        "bundle": str(args.bundle),
        "queries": "first photo of each listing + its leaf category name as the words",
        "chosen_on_val": chosen,
        "default": default,
        "grid": grid,
        "words_only": words_only,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for name in ("val", "test"):
        print(f"{name}: words alone {words_only[name]}")
        for w, r in grid[name].items():
            print(f"{name}: photo + words, blend weight {w}: {r}")
    print(f"chosen on val: {chosen} (default {default}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
