"""What decides whether two listings are duplicates: their similarities and a logistic rule.

A candidate pair (see search/duplicates.py) is described by three similarities, the photo
cosine (None when either listing has no photo) and the character-trigram cosine of the
titles and of the descriptions (`TextSimilarity`), gathered in `PairFeatures`. A
`DuplicateRule` turns them into a score in 0..1 with one logistic rule for pairs with two
photos and one for text-only pairs, each with its threshold; it is saved as JSON in the
bundle (`RULE_FILE`), fitted by search/duplicate_training.py or taken from
`DuplicateSettings` defaults.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from fbmarket.config import DuplicateSettings
from fbmarket.files import dumps_json

RULE_FILE = "duplicates.json"  # in the bundle's model/ folder
RULE_FORMAT = "fbmarket.duplicate_rule"
RULE_FORMAT_VERSION = 1
PHOTO_FEATURES = ("photo", "title", "description")
TEXT_FEATURES = ("title", "description")
_NON_WORD = re.compile(r"[\W_]+")


@dataclass
class PairFeatures:
    """Similarities of listing pairs, aligned: photo is NaN where either listing has no photo."""

    photo: np.ndarray
    title: np.ndarray
    description: np.ndarray

    def __len__(self) -> int:
        return len(self.title)

    @property
    def has_photo(self) -> np.ndarray:
        return ~np.isnan(self.photo)

    @property
    def text(self) -> np.ndarray:
        """The one text similarity reported per pair: title and description weigh the same."""
        return (self.title + self.description) / 2

    def subset(self, rows: np.ndarray) -> PairFeatures:
        return PairFeatures(self.photo[rows], self.title[rows], self.description[rows])

    @classmethod
    def concat(cls, parts: Sequence[PairFeatures]) -> PairFeatures:
        if not parts:
            return cls(np.zeros(0), np.zeros(0), np.zeros(0))
        return cls(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in ("photo", "title", "description"))
        )


class TextSimilarity:
    """Cosine of character-trigram counts (within words) of two texts, stateless.

    Hashed (sklearn's HashingVectorizer), so it needs no fitted vocabulary: the similarity
    the training split chose thresholds for is the one served, for any new word. Text is
    lower-cased and stripped of punctuation first, and trigrams stay inside words, so word
    order, case and punctuation do not change it.
    """

    def __init__(self, description_chars: int = 1000):
        self.description_chars = int(description_chars)
        self._vectorizer = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(3, 3),
            preprocessor=_normalise,
            alternate_sign=False,
            norm="l2",
            n_features=2**20,
            dtype=np.float32,
        )

    def vectors(
        self, titles: Sequence[str], descriptions: Sequence[str]
    ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Unit trigram vectors of titles and of descriptions (cut to `description_chars`).

        One vectoriser call for both (its per-call checks cost about a millisecond, a create
        makes one call)."""
        cut = [text_of(d)[: self.description_chars] for d in descriptions]
        both = self._vectorizer.transform([text_of(t) for t in titles] + cut).tocsr()
        return both[: len(titles)], both[len(titles) :]

    @staticmethod
    def rowwise(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
        """Cosine of row i of `a` with row i of `b` (both unit rows; an empty text is a zero row)."""
        return np.asarray(a.multiply(b).sum(axis=1), dtype=np.float64).reshape(-1)

    def pairs(
        self,
        titles: tuple[sp.csr_matrix, sp.csr_matrix],
        descriptions: tuple[sp.csr_matrix, sp.csr_matrix],
        left_empty: np.ndarray,
        right_empty: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Title and description similarities of aligned rows. Two empty descriptions say
        nothing, so they count as the titles' similarity; one empty, one not: 0."""
        title = np.clip(self.rowwise(*titles), 0.0, 1.0)
        description = np.clip(self.rowwise(*descriptions), 0.0, 1.0)
        both_empty = left_empty & right_empty
        description[both_empty] = title[both_empty]
        return title, description


@dataclass
class LogisticRule:
    """sigmoid(coef . features + intercept), flagged at `threshold`."""

    coef: tuple[float, ...]
    intercept: float
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ np.asarray(self.coef, dtype=np.float64) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def to_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {
            "features": list(names),
            "coef": [float(c) for c in self.coef],
            "intercept": float(self.intercept),
            "threshold": float(self.threshold),
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any], names: Sequence[str]) -> LogisticRule:
        if list(payload.get("features", names)) != list(names):
            raise ValueError(f"expected features {list(names)}, got {payload.get('features')}")
        coef = tuple(float(c) for c in payload["coef"])
        if len(coef) != len(names):
            raise ValueError(f"{len(names)} weights expected, got {len(coef)}")
        threshold = float(payload["threshold"])
        if not all(math.isfinite(v) for v in (*coef, float(payload["intercept"]), threshold)):
            raise ValueError("weights and threshold must be finite numbers")
        return cls(coef, float(payload["intercept"]), threshold)


@dataclass
class DuplicateRule:
    """The decision: a photo rule for pairs where both listings have photos, a text rule otherwise."""

    photo: LogisticRule
    text: LogisticRule
    chosen_on: dict[str, Any] = field(default_factory=dict)  # how and where it was chosen (reports)
    # A pair whose photos are the same (pooled photo cosine at least this) is flagged whatever
    # its words: a re-post under a new title and description scores low on the logistic rule,
    # whose text weights were fit on copies that keep their words. None: the logistic rules
    # alone (rules saved before this field).
    same_photo_cosine: float | None = None

    def score(self, features: PairFeatures) -> np.ndarray:
        """Score in 0..1 of each pair; compare with `thresholds(features)`."""
        out = np.zeros(len(features))
        with_photo = features.has_photo
        if with_photo.any():
            x = np.column_stack([features.photo, features.title, features.description])[with_photo]
            out[with_photo] = self.photo.score(x)
        if (~with_photo).any():
            x = np.column_stack([features.title, features.description])[~with_photo]
            out[~with_photo] = self.text.score(x)
        return out

    def thresholds(self, features: PairFeatures) -> np.ndarray:
        return np.where(features.has_photo, self.photo.threshold, self.text.threshold)

    def flags(self, features: PairFeatures) -> tuple[np.ndarray, np.ndarray]:
        """(score, flagged) of each pair: flagged at its rule's threshold or, with
        `same_photo_cosine`, when both listings have the same photos. The score stays the
        logistic rule's (a same-photo pair with new words can be flagged at a low score)."""
        score = self.score(features)
        flagged = score >= self.thresholds(features)
        if self.same_photo_cosine is not None:
            flagged |= np.nan_to_num(features.photo, nan=-1.0) >= self.same_photo_cosine
        return score, flagged

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "format": RULE_FORMAT,
            "format_version": RULE_FORMAT_VERSION,
            "with_photo": self.photo.to_json(PHOTO_FEATURES),
            "text_only": self.text.to_json(TEXT_FEATURES),
            "same_photo_cosine": self.same_photo_cosine,
            "chosen_on": self.chosen_on,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> DuplicateRule:
        if payload.get("format") != RULE_FORMAT:
            raise ValueError(f"not a duplicate rule (format {payload.get('format')!r})")
        if int(payload.get("format_version", 0)) > RULE_FORMAT_VERSION:
            raise ValueError(f"format version {payload.get('format_version')} is newer than this code reads")
        same_photo = payload.get("same_photo_cosine")
        if same_photo is not None:
            if isinstance(same_photo, bool) or not isinstance(same_photo, int | float):
                raise ValueError(f"same_photo_cosine must be a number or null, got {same_photo!r}")
            if not 0.0 < float(same_photo) <= 1.0:
                raise ValueError(f"same_photo_cosine must be in (0, 1], got {same_photo}")
            same_photo = float(same_photo)
        return cls(
            LogisticRule.from_json(payload["with_photo"], PHOTO_FEATURES),
            LogisticRule.from_json(payload["text_only"], TEXT_FEATURES),
            dict(payload.get("chosen_on") or {}),
            same_photo,
        )

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_json(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: Path | str) -> DuplicateRule:
        return cls.from_json(json.loads(Path(path).read_text()))

    @classmethod
    def from_settings(cls, settings: DuplicateSettings) -> DuplicateRule:
        """The configured default rule (bundles trained before `model/duplicates.json`)."""
        return cls(
            LogisticRule(
                tuple(settings.rule_photo_weights),
                settings.rule_photo_intercept,
                settings.rule_photo_threshold,
            ),
            LogisticRule(
                tuple(settings.rule_text_weights), settings.rule_text_intercept, settings.rule_text_threshold
            ),
            {"source": "DuplicateSettings defaults"},
            same_photo_rule(settings),
        )


def same_photo_rule(settings: DuplicateSettings) -> float | None:
    """The rule's `same_photo_cosine` for these settings: their bar for the same photos, or None
    when `flag_same_photo` is off."""
    return float(settings.same_photo_cosine) if settings.flag_same_photo else None


def text_of(value: object) -> str:
    """A title or description as text (NaN and None: empty)."""
    return value if isinstance(value, str) else ""


def _normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def empty_texts(descriptions: Sequence[str]) -> np.ndarray:
    """Which texts hold no word at all (their similarity says nothing)."""
    return np.array([not _normalise(text_of(d)) for d in descriptions], bool)
