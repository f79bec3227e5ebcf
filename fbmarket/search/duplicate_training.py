"""A labelled set of re-posts, and the duplicate rule chosen on it (search/duplicates.py).

There is no labelled set of duplicate listings, so one is made from a split of the data:
each sampled listing is posted again as synthetic copies of three kinds (photo, text,
both; search/duplicate_copies.py), a listing without photos as a "text" copy only. Each
copy is then treated as a new listing against the whole catalogue, as on a create: its candidates (search/duplicates.py) are scored,
its original is the one positive, and every other candidate is a negative, except genuine
re-posts: catalogue listings that are themselves duplicates of the original by a strict test
independent of the rule (the same photos, pooled cosine >= `same_photo_cosine`; or, without
photos, near-identical title and description). Real marketplaces have them (the dev data has
shops posting the same bed or scooter several times), so flagging one is reported apart, not
counted as a false positive.

`fit_rule` fits a logistic regression per rule (photo + text; text only) on the pairs and picks
each threshold maximising recall subject to precision >= `target_precision`; `evaluate` gives
precision and recall per kind. `fbmarket train` runs this on the validation split
(training/steps.py); benchmarks/duplicates.py on the test split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbmarket.config import DataSettings, DuplicateSettings
from fbmarket.data import schema as S
from fbmarket.search.duplicate_copies import KINDS, Copies, make_copies
from fbmarket.search.duplicate_rule import DuplicateRule, LogisticRule, PairFeatures, same_photo_rule
from fbmarket.search.duplicates import DuplicateDetector
from fbmarket.search.index import VectorIndex

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ pairs


@dataclass
class Catalogue:
    """Every listing's vectors and texts, indexed as a server holds them."""

    ids: list[str]
    embeddings: np.ndarray
    photo_vectors: np.ndarray
    has_photo: np.ndarray
    titles: list[str]
    descriptions: list[str]

    def __post_init__(self) -> None:
        self.row = {pid: i for i, pid in enumerate(self.ids)}
        self.vectors = VectorIndex(self.embeddings.shape[1], factory="Flat")
        self.vectors.build(self.ids, self.embeddings)
        self.photos = VectorIndex(self.photo_vectors.shape[1], factory="Flat")
        with_photo = np.flatnonzero(self.has_photo)
        self.photos.build([self.ids[i] for i in with_photo], self.photo_vectors[with_photo])

    def texts(self, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        rows = [self.row[pid] for pid in ids]
        return [self.titles[i] for i in rows], [self.descriptions[i] for i in rows]


def labelled_pairs(
    detector: DuplicateDetector,
    catalogue: Catalogue,
    copies: Copies,
    embeddings: np.ndarray,
    photo_vectors: np.ndarray,
    has_photo: np.ndarray,
) -> tuple[pd.DataFrame, PairFeatures]:
    """Every (copy, candidate) pair with its similarities and labels.

    Columns: copy_id, original_id, kind, candidate_id, label (the candidate is the original),
    genuine (the candidate is a genuine re-post of the original, by `genuine_reposts`).
    A copy whose original is not among its candidates has no positive pair: a miss.
    """
    candidates = detector.candidates(
        catalogue.vectors, catalogue.photos, embeddings, photo_vectors, has_photo
    )
    meta = copies.meta.set_index("copy_id")
    copy_ids = copies.products[S.PRODUCT_ID].astype(str).tolist()
    records, left_rows, right_ids = [], [], []
    for row, (copy_id, found) in enumerate(zip(copy_ids, candidates, strict=True)):
        original, kind = meta.loc[copy_id, "original_id"], meta.loc[copy_id, "kind"]
        for pid in found:
            records.append({"copy_id": copy_id, "original_id": original, "kind": kind, "candidate_id": pid})
            left_rows.append(row)
            right_ids.append(pid)
    pairs = pd.DataFrame(records, columns=["copy_id", "original_id", "kind", "candidate_id"])
    if pairs.empty:
        return pairs.assign(label=[], genuine=[]), PairFeatures.concat([])
    left = np.asarray(left_rows)
    right = np.array([catalogue.row[pid] for pid in right_ids])
    titles = copies.products[S.TITLE].astype(str).tolist()
    descriptions = copies.products[S.DESCRIPTION].fillna("").astype(str).tolist()
    features = detector.features(
        photo_vectors[left],
        has_photo[left],
        catalogue.photo_vectors[right],
        catalogue.has_photo[right],
        ([titles[i] for i in left], [descriptions[i] for i in left]),
        catalogue.texts(right_ids),
    )
    pairs["label"] = (pairs["candidate_id"] == pairs["original_id"]).to_numpy()
    reposts = genuine_reposts(detector, catalogue, pairs[~pairs["label"]][["original_id", "candidate_id"]])
    pairs["genuine"] = [
        (o, c) in reposts for o, c in zip(pairs["original_id"], pairs["candidate_id"], strict=True)
    ]
    return pairs, features


def genuine_reposts(
    detector: DuplicateDetector, catalogue: Catalogue, pairs: pd.DataFrame
) -> set[tuple[str, str]]:
    """The (original, other) catalogue pairs that are already duplicates in the data.

    Independent of the rule being fit: both listings have photos whose pooled cosine is at
    least `same_photo_cosine` (the same photos), or neither has photos and both title and
    description similarities reach `same_text`.
    """
    if pairs.empty:
        return set()
    unique = pairs.drop_duplicates()
    a = np.array([catalogue.row[p] for p in unique["original_id"]])
    b = np.array([catalogue.row[p] for p in unique["candidate_id"]])
    features = detector.features(
        catalogue.photo_vectors[a],
        catalogue.has_photo[a],
        catalogue.photo_vectors[b],
        catalogue.has_photo[b],
        catalogue.texts(unique["original_id"].tolist()),
        catalogue.texts(unique["candidate_id"].tolist()),
    )
    s = detector.settings
    same_photo = np.nan_to_num(features.photo, nan=0.0) >= s.same_photo_cosine
    same_text = ~features.has_photo & (features.title >= s.same_text) & (features.description >= s.same_text)
    keep = same_photo | same_text
    return set(zip(unique["original_id"][keep], unique["candidate_id"][keep], strict=True))


# ------------------------------------------------------------------------------ the rule


def choose_threshold(
    scores: np.ndarray, labels: np.ndarray, positives: int, target: float, tolerance: float = 0.0
) -> dict[str, Any]:
    """The threshold with the highest recall whose precision is >= target (flag: score >= it).

    Among thresholds within `tolerance` of that recall the most precise is taken: on the dev
    data recall is flat near its top while precision is not, and a threshold that only just
    meets the target on validation misses it on a fresh split about half the time.
    `positives` is the recall's denominator (copies judged, including those whose original
    was never a candidate). With none meeting the target, the most precise threshold.
    """
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(bool)
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)  # end of each tie group
    tp, fp, s = tp[last], fp[last], s[last]
    if not len(s):
        return {"threshold": 1.0, "precision": None, "recall": 0.0, "target_met": False}
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(positives, 1)
    ok = np.flatnonzero(precision >= target)
    met = bool(len(ok))
    if met:
        near = ok[recall[ok] >= recall[ok].max() - tolerance]
        best = int(near[np.lexsort((-recall[near], -precision[near]))[0]])
    else:  # the most precise threshold (then the one with more recall)
        best = int(np.lexsort((-recall, -precision))[0])
    return {
        "threshold": float(s[best]),
        "precision": round(float(precision[best]), 4),
        "recall": round(float(recall[best]), 4),
        "target_met": met,
    }


def fit_rule(
    pairs: pd.DataFrame, features: PairFeatures, settings: DuplicateSettings, seed: int = 0
) -> DuplicateRule:
    """A logistic regression per rule on the labelled pairs, each threshold at the target precision.

    Genuine re-posts are left out (neither duplicate nor not). Without both classes (a tiny
    split) a rule keeps its `DuplicateSettings` default.
    """
    from sklearn.linear_model import LogisticRegression

    default = DuplicateRule.from_settings(settings)
    use = ~pairs["genuine"].to_numpy(bool)
    labels = pairs["label"].to_numpy(bool)
    copies_with_photo = pairs.loc[features.has_photo, "copy_id"].nunique()
    record: dict[str, Any] = {}

    def fit(x: np.ndarray, y: np.ndarray, fallback: LogisticRule, positives: int, name: str) -> LogisticRule:
        if len(np.unique(y)) < 2:
            record[name] = {"fitted": False, "pairs": int(len(y)), "note": "one class only: default kept"}
            return fallback
        model = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000, random_state=seed)
        model.fit(x, y)
        rule = LogisticRule(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), 0.5)
        chosen = choose_threshold(
            rule.score(x), y, positives, settings.target_precision, settings.recall_tolerance
        )
        rule.threshold = chosen["threshold"]
        record[name] = {"fitted": True, "pairs": int(len(y)), "positives": int(y.sum()), **chosen}
        return rule

    photo_rows = use & features.has_photo
    photo = fit(
        np.column_stack([features.photo, features.title, features.description])[photo_rows],
        labels[photo_rows],
        default.photo,
        copies_with_photo,
        "with_photo",
    )
    # the text rule serves pairs without two photos: fit on every pair as if the photos were not there
    text = fit(
        np.column_stack([features.title, features.description])[use],
        labels[use],
        default.text,
        pairs["copy_id"].nunique(),
        "text_only",
    )
    return DuplicateRule(photo, text, {"fit": record}, same_photo_rule(settings))


def evaluate(pairs: pd.DataFrame, features: PairFeatures, rule: DuplicateRule) -> dict[str, Any]:
    """Precision and recall of the rule per kind of copy, and overall.

    recall: copies whose original is flagged / copies; precision: flagged originals / flagged
    pairs, genuine re-posts left out (`precision_strict` counts them as false positives, and
    `genuine_flagged` says how many there were).
    """
    if pairs.empty:
        return {}
    _, flagged = rule.flags(features)
    frame = pairs.assign(flagged=flagged)
    out: dict[str, Any] = {}
    for kind in (*KINDS, "all"):
        part = frame if kind == "all" else frame[frame["kind"] == kind]
        copies = part["copy_id"].nunique()
        if not copies:
            continue
        hit = part[part["flagged"]]
        tp = int(hit["label"].sum())
        genuine = int((hit["genuine"] & ~hit["label"]).sum())
        fp = int(len(hit)) - tp - genuine
        out[kind] = {
            "copies": int(copies),
            "recall": round(tp / copies, 4),
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "precision_strict": round(tp / (tp + fp + genuine), 4) if tp + fp + genuine else None,
            "flagged_pairs": int(len(hit)),
            "false_positives": fp,
            "genuine_flagged": genuine,
            "original_in_candidates": round(part.loc[part["label"], "copy_id"].nunique() / copies, 4),
        }
    return out


# ------------------------------------------------------------------------------ end to end


def labelled_set(
    bundle: Any,
    catalogue: Catalogue,
    products: pd.DataFrame,
    images: pd.DataFrame,
    originals: Sequence[str],
    settings: DuplicateSettings,
    data: DataSettings,
    folder: Path,
    seed: int,
    cache_originals: bool = True,
) -> tuple[pd.DataFrame, PairFeatures, Copies]:
    """Copies of `originals` made, encoded by the bundle, and paired with their candidates.

    `cache_originals` False never touches the bundle's feature cache (a bundle read-only)."""
    copies = make_copies(products, images, originals, folder, data, bundle.max_photos, seed)
    perturbed = copies.products[S.PRODUCT_ID].isin(copies.perturbed).to_numpy()
    embeddings = np.zeros((len(copies.products), bundle.embedding_dim), np.float32)
    photo_vectors = np.zeros((len(copies.products), int(bundle.manifest["feature_dim"])), np.float32)
    has_photo = np.zeros(len(copies.products), bool)
    # new photo files stay out of the bundle's feature cache; the originals' come from it
    kept = None if cache_originals else False
    for rows, use_cache in ((np.flatnonzero(perturbed), False), (np.flatnonzero(~perturbed), kept)):
        if not len(rows):
            continue
        part = copies.products.iloc[rows]
        wanted = copies.images[copies.images[S.PRODUCT_ID].isin(set(part[S.PRODUCT_ID]))]
        encoded = bundle.encode_listings(part, wanted, use_cache=use_cache)
        embeddings[rows], photo_vectors[rows], has_photo[rows] = (
            encoded.embeddings,
            encoded.photo_vectors,
            encoded.has_photo,
        )
    detector = DuplicateDetector(DuplicateRule.from_settings(settings), settings)
    pairs, features = labelled_pairs(detector, catalogue, copies, embeddings, photo_vectors, has_photo)
    return pairs, features, copies


def sample_originals(products: pd.DataFrame, split: str, limit: int, seed: int) -> list[str]:
    """Up to `limit` listings of a split, a seeded sample in catalogue order."""
    ids = products.loc[products[S.SPLIT] == split, S.PRODUCT_ID].astype(str).to_numpy()
    if limit and len(ids) > limit:
        ids = np.sort(np.random.default_rng(seed).choice(ids, limit, replace=False))
    return ids.tolist()


def fit_on_split(
    bundle: Any,
    catalogue: Catalogue,
    products: pd.DataFrame,
    images: pd.DataFrame,
    settings: DuplicateSettings,
    data: DataSettings,
    folder: Path,
    seed: int,
    split: str = "val",
    cache_originals: bool = True,
) -> DuplicateRule:
    """The rule fit on `split`, its figures there recorded in `chosen_on`."""
    started = time.perf_counter()
    originals = sample_originals(products, split, settings.labelled_listings, seed)
    pairs, features, copies = labelled_set(
        bundle, catalogue, products, images, originals, settings, data, folder, seed, cache_originals
    )
    rule = fit_rule(pairs, features, settings, seed)
    genuine = pairs[pairs["genuine"] & ~pairs["label"]][["original_id", "candidate_id"]].drop_duplicates()
    rule.chosen_on |= {
        "split": split,
        "listings": len(originals),
        "copies": copies.meta["kind"].value_counts().to_dict(),
        "pairs": int(len(pairs)),
        "target_precision": settings.target_precision,
        "figures": evaluate(pairs, features, rule),
        "genuine_reposts": int(len(genuine)),
        "genuine_examples": genuine.head(20).values.tolist(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return rule
