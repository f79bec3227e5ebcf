"""Root-category label encoder, persisted as JSON so a bundle decodes labels the same way anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fbmarket.files import dumps_json

UNKNOWN = -1


class CategoryEncoder:
    """Stable mapping between category names and integer labels (sorted, so re-fits agree)."""

    def __init__(self, classes: Iterable[str]):
        self.classes: list[str] = sorted({str(c) for c in classes})
        if not self.classes:
            raise ValueError("a category encoder needs at least one category")
        self._index = {name: i for i, name in enumerate(self.classes)}

    @classmethod
    def fit(cls, categories: pd.Series) -> CategoryEncoder:
        return cls(categories.dropna().unique())

    def __len__(self) -> int:
        return len(self.classes)

    def transform(self, categories: Iterable[str], unknown: str = "error") -> np.ndarray:
        """Labels for names; an unseen name raises (unknown="error") or maps to -1 (unknown="mark")."""
        names = [str(c) for c in categories]
        labels = np.array([self._index.get(name, UNKNOWN) for name in names], dtype=np.int64)
        if unknown == "error" and (labels == UNKNOWN).any():
            unseen = sorted({name for name, label in zip(names, labels, strict=True) if label == UNKNOWN})
            raise ValueError(f"unseen categor{'y' if len(unseen) == 1 else 'ies'}: {', '.join(unseen[:10])}")
        return labels

    def inverse_transform(self, labels: Iterable[int]) -> list[str]:
        return [self.classes[int(i)] for i in labels]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps_json({"classes": self.classes}, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> CategoryEncoder:
        return cls(json.loads(Path(path).read_text())["classes"])
