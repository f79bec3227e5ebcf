"""Duplicate-listing detection: is this listing a re-post of one the catalogue already holds?

A re-post is the same thing listed again: the same photos re-encoded, cropped or resized,
the same text lightly reworded, or both (re-posting spam, or a seller who forgot the first
listing). Detection has two steps, both cheap enough to run on every create:

1. Candidates: the listing's `photo_candidates` nearest listings in the photo index (pooled
   backbone features; a re-encoded or cropped copy of a photo lands next to its original)
   and its `embedding_candidates` nearest in the embedding index (the fusion embedding:
   reworded text with the same photos stays close). The listing itself is never a candidate.
2. Decision: each candidate pair gets three similarities, the photo cosine (None when either
   listing has no photo) and the character-trigram cosine of the titles and of the
   descriptions (`TextSimilarity`: word order, case and punctuation do not matter, a dropped
   or swapped word costs a little), and a logistic rule turns them into a score in 0..1
   (`DuplicateRule`; a text-only rule for pairs without two photos). Pairs at or above the
   rule's threshold are possible duplicates, with reasons a person can check.

The similarities and the rule (`PairFeatures`, `TextSimilarity`, `DuplicateRule`) are in
search/duplicate_rule.py. `fbmarket train` fits the rule and its thresholds on the validation split
(search/duplicate_training.py: synthetic re-posts of validation listings against the whole
catalogue, recall maximised at precision >= 0.95) and saves it as `model/duplicates.json`;
bundles without it use the defaults in `DuplicateSettings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fbmarket.config import DuplicateSettings
from fbmarket.search.duplicate_rule import (
    RULE_FILE as RULE_FILE,  # re-exported: the bundle names the file by it
)
from fbmarket.search.duplicate_rule import (
    DuplicateRule,
    PairFeatures,
    TextSimilarity,
    empty_texts,
)
from fbmarket.search.index import VectorIndex

# (titles, descriptions) of listings by id, in the order asked
TextLookup = Callable[[Sequence[str]], tuple[Sequence[str], Sequence[str]]]


@dataclass
class DuplicateMatch:
    """An existing listing that may be the same listing posted again, and why."""

    product_id: str
    score: float  # the rule's score, 0..1; flagged at or above its threshold
    photo_similarity: float | None  # cosine of the pooled photo features; None without two photos
    text_similarity: float  # mean of the title and description similarities
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DuplicateProbe:
    """One listing checked for duplicates, saved or a seller's draft.

    `embedding` is its fusion embedding (None: the embedding index is not asked), `photo_vector`
    its pooled unit photo vector (None without a photo); `exclude` are ids that are never its
    duplicates (itself, when it is stored).
    """

    embedding: np.ndarray | None
    photo_vector: np.ndarray | None
    title: str
    description: str = ""
    exclude: Sequence[str] = ()


class DuplicateDetector:
    """Candidates from the indexes, scored by the rule, explained. Thread-safe (read-only state)."""

    def __init__(self, rule: DuplicateRule, settings: DuplicateSettings | None = None):
        self.rule = rule
        self.settings = settings or DuplicateSettings()
        self.text = TextSimilarity(self.settings.description_chars)

    # ------------------------------------------------------------------ candidates
    def candidates(
        self,
        vectors: VectorIndex | None,
        photos: VectorIndex | None,
        embeddings: np.ndarray | None,
        photo_vectors: np.ndarray | None,
        has_photo: np.ndarray | None,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> list[list[str]]:
        """For each of m listings: the ids of its photo and embedding neighbours (union, photo first).

        `embeddings` (m, d) and `photo_vectors` (m, f) with `has_photo` (m,) are the listings'
        own vectors; `exclude[i]` are ids never returned for listing i (itself). One more
        neighbour than asked is fetched so that excluding itself still leaves k.
        """
        m = (
            len(embeddings)
            if embeddings is not None
            else len(photo_vectors)
            if photo_vectors is not None
            else 0
        )
        found: list[dict[str, None]] = [{} for _ in range(m)]
        s = self.settings
        if photos is not None and len(photos) and photo_vectors is not None and has_photo is not None:
            rows = np.flatnonzero(np.asarray(has_photo, bool))
            if len(rows):
                k = min(s.photo_candidates + 1, len(photos))
                for row, hits in zip(rows, photos.search_batch(photo_vectors[rows], k), strict=True):
                    found[row].update((pid, None) for pid, _ in hits)
        if vectors is not None and len(vectors) and embeddings is not None and m:
            k = min(s.embedding_candidates + 1, len(vectors))
            for row, hits in enumerate(vectors.search_batch(embeddings, k)):
                found[row].update((pid, None) for pid, _ in hits)
        out = []
        for row, ids in enumerate(found):
            skip = set(exclude[row]) if exclude is not None else set()
            out.append([pid for pid in ids if pid not in skip])
        return out

    # ------------------------------------------------------------------ features
    def features(
        self,
        left_photos: np.ndarray,
        left_has_photo: np.ndarray,
        right_photos: np.ndarray,
        right_has_photo: np.ndarray,
        left_texts: tuple[Sequence[str], Sequence[str]],
        right_texts: tuple[Sequence[str], Sequence[str]],
    ) -> PairFeatures:
        """Similarities of aligned pairs (row i of the left with row i of the right)."""
        photo = np.einsum("ij,ij->i", left_photos.astype(np.float64), right_photos.astype(np.float64))
        photo = np.where(np.asarray(left_has_photo, bool) & np.asarray(right_has_photo, bool), photo, np.nan)
        lt, ld = self.text.vectors(*left_texts)
        rt, rd = self.text.vectors(*right_texts)
        title, description = self.text.pairs(
            (lt, rt), (ld, rd), empty_texts(left_texts[1]), empty_texts(right_texts[1])
        )
        return PairFeatures(np.clip(photo, -1.0, 1.0), title, description)

    def match_features(
        self,
        candidates: Sequence[str],
        photo_vector: np.ndarray | None,
        photos: VectorIndex | None,
        title: str,
        description: str,
        texts: TextLookup,
    ) -> PairFeatures:
        """Similarities of one listing with each of its candidates (its own text vectorised once)."""
        n = len(candidates)
        photo = np.full(n, np.nan)
        if photos is not None and photo_vector is not None and n:
            has = np.array([pid in photos for pid in candidates], bool)
            if has.any():
                vectors = photos.vectors_of([pid for pid, h in zip(candidates, has, strict=True) if h])
                q = np.asarray(photo_vector, np.float64).reshape(-1)
                photo[has] = np.clip(vectors.astype(np.float64) @ q, -1.0, 1.0)
        titles, descriptions = texts(list(candidates))
        title_vectors, description_vectors = self.text.vectors([title, *titles], [description, *descriptions])
        empty = empty_texts([description, *descriptions])
        title_sim = np.clip((title_vectors[1:] @ title_vectors[0].T).toarray().reshape(-1), 0.0, 1.0)
        description_sim = np.clip(
            (description_vectors[1:] @ description_vectors[0].T).toarray().reshape(-1), 0.0, 1.0
        )
        if empty[0]:
            # The listing checked has no description (a draft the seller is still typing, or a
            # re-post without one): that says nothing either way, so the titles stand for it.
            description_sim = title_sim.copy()
        return PairFeatures(photo, title_sim.astype(np.float64), description_sim.astype(np.float64))

    # ------------------------------------------------------------------ one listing
    def find(
        self, probe: DuplicateProbe, vectors: VectorIndex | None, photos: VectorIndex | None, texts: TextLookup
    ) -> list[DuplicateMatch]:
        """The possible duplicates of one listing (saved or a draft), best first, looked for in the
        catalogue's embedding index (`vectors`), photo index (`photos`) and words (`texts`)."""
        embedding, photo_vector, exclude = probe.embedding, probe.photo_vector, probe.exclude
        title, description = probe.title, probe.description
        has_photo = None if photo_vector is None else np.ones(1, bool)
        pv = None if photo_vector is None else np.asarray(photo_vector, np.float32).reshape(1, -1)
        ev = None if embedding is None else np.asarray(embedding, np.float32).reshape(1, -1)
        (candidates,) = self.candidates(vectors, photos, ev, pv, has_photo, [list(exclude)]) or [[]]
        if not candidates:
            return []
        features = self.match_features(candidates, photo_vector, photos, title, description, texts)
        return self.matches(candidates, features)

    def matches(self, candidates: Sequence[str], features: PairFeatures) -> list[DuplicateMatch]:
        """The flagged candidates as DuplicateMatch, best first, at most `max_results`."""
        score, flagged = self.rule.flags(features)
        order = [i for i in np.argsort(-score, kind="stable") if flagged[i]][: self.settings.max_results]
        return [
            DuplicateMatch(
                product_id=str(candidates[i]),
                score=round(float(score[i]), 4),
                photo_similarity=None if np.isnan(features.photo[i]) else round(float(features.photo[i]), 4),
                text_similarity=round(float(features.text[i]), 4),
                reasons=self.reasons(features.photo[i], features.title[i], features.description[i], score[i]),
            )
            for i in order
        ]

    def reasons(self, photo: float, title: float, description: float, score: float) -> list[str]:
        """What a person checks: the evidence that is strong, in words with its figure."""
        s = self.settings
        out = []
        if not np.isnan(photo):
            if photo >= s.same_photo_cosine:
                out.append(f"same photo (cosine {photo:.2f})")
            elif photo >= s.similar_photo_cosine:
                out.append(f"similar photo (cosine {photo:.2f})")
        for name, value in (("title", title), ("description", description)):
            if value >= 0.995:
                out.append(f"same {name} ({value:.2f})")
            elif value >= s.same_text:
                out.append(f"near-identical {name} ({value:.2f})")
            elif value >= s.similar_text:
                out.append(f"similar {name} ({value:.2f})")
        if not out:
            out.append(f"photo and text together (score {score:.2f})")
        return out


def duplicate_groups(pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Connected components of flagged pairs (a re-posted listing and every copy of it), largest first."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def catalogue_pairs(
    detector: DuplicateDetector,
    vectors: VectorIndex | None,
    photos: VectorIndex | None,
    ids: Sequence[str],
    titles: Sequence[str],
    descriptions: Sequence[str],
    chunk: int = 1024,
) -> list[tuple[str, str, float, PairFeatures]]:
    """Every flagged pair of listings in a catalogue (FAISS self-search): (a, b, score, features), a < b.

    Each listing is looked up with its own stored vectors, as `duplicates_of` does, and pairs are
    scored once whichever side found them; the text vectors are made once for the catalogue.
    """
    ids = [str(pid) for pid in ids]
    row = {pid: i for i, pid in enumerate(ids)}
    title_vectors, description_vectors = detector.text.vectors(titles, descriptions)
    empty = empty_texts(descriptions)
    dim = photos.dim if photos is not None else 1
    has_photo = np.array([photos is not None and pid in photos for pid in ids], bool)
    photo_matrix = np.zeros((len(ids), dim), np.float32)
    if has_photo.any():
        photo_matrix[has_photo] = photos.vectors_of([pid for pid, h in zip(ids, has_photo, strict=True) if h])
    in_vectors = [pid for pid in ids if vectors is not None and pid in vectors]
    out: list[tuple[str, str, float, PairFeatures]] = []
    seen: set[tuple[int, int]] = set()
    for start in range(0, len(ids), chunk):
        part = list(range(start, min(start + chunk, len(ids))))
        part_ids = [ids[i] for i in part]
        embeddings = None
        if vectors is not None and in_vectors:
            embeddings = np.zeros((len(part), vectors.dim), np.float32)
            known = [k for k, pid in enumerate(part_ids) if pid in vectors]
            if known:
                embeddings[known] = vectors.vectors_of([part_ids[k] for k in known])
        candidates = detector.candidates(
            vectors, photos, embeddings, photo_matrix[part], has_photo[part], [[pid] for pid in part_ids]
        )
        left, right = [], []
        for i, found in zip(part, candidates, strict=True):
            for pid in found:
                j = row.get(pid)
                if j is None:
                    continue
                pair = (min(i, j), max(i, j))
                if pair not in seen:
                    seen.add(pair)
                    left.append(pair[0])
                    right.append(pair[1])
        if not left:
            continue
        a, b = np.asarray(left), np.asarray(right)
        photo = np.einsum("ij,ij->i", photo_matrix[a].astype(np.float64), photo_matrix[b].astype(np.float64))
        photo = np.where(has_photo[a] & has_photo[b], np.clip(photo, -1.0, 1.0), np.nan)
        title, description = detector.text.pairs(
            (title_vectors[a], title_vectors[b]),
            (description_vectors[a], description_vectors[b]),
            empty[a],
            empty[b],
        )
        features = PairFeatures(photo, title, description)
        score, flagged = detector.rule.flags(features)
        for k in np.flatnonzero(flagged):
            out.append((ids[a[k]], ids[b[k]], float(score[k]), features.subset(np.array([k]))))
    return out
