"""A text-only price estimate stacked under the boosters: ridge on TF-IDF of title + description.

Why: trees split on one column at a time, so 100k sparse n-gram columns are out of their
reach, while a linear model on them is the strongest single price signal on the dev data
(the ridge baseline, fbmarket/baselines.py: R² 0.541 on log price). Its prediction of
log1p(price) becomes one booster feature ("stacked generalisation", Wolpert 1992). The
training rows get out-of-fold predictions (each from a ridge that did not see the row), so
the boosters learn how far to trust it on text the ridge has not memorised; validation,
test and live listings get the ridge fit on every training listing.

On the dev split (benchmarks/price_suggestion.py) the feature took LightGBM's median
absolute error from £25.7 to £24.2 on test (R² on log price 0.500 -> 0.563).

Saved without pickle, like the TF-IDF category member (text/tfidf.py): vocabularies in
JSON, idf weights and coefficients in an .npz, both written atomically.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from fbmarket.files import atomic_write_json, commit, stage
from fbmarket.text.tfidf import ANALYSERS, text_vectorisers, transform

CONFIG_FILE = "price_text.json"
WEIGHTS_FILE = "price_text.npz"
FORMAT = 1


class TextPriceRidge:
    """log1p(price) from TF-IDF (word 1-2 + char_wb 2-5 grams) of a listing's text, by ridge."""

    def __init__(
        self, vectorisers: dict[str, TfidfVectorizer], coef: np.ndarray, intercept: float, alpha: float
    ):
        self.vectorisers = vectorisers
        self.coef = np.asarray(coef, np.float32)
        self.intercept = float(intercept)
        self.alpha = float(alpha)

    @classmethod
    def fit(cls, texts: Sequence[str], log_price: np.ndarray, alpha: float = 1.0) -> TextPriceRidge:
        texts = np.asarray(texts, dtype=object)
        vectorisers = text_vectorisers(len(texts))
        x = sparse.hstack([v.fit_transform(texts) for v in vectorisers.values()], format="csr")
        model = Ridge(alpha=alpha).fit(x, np.asarray(log_price, dtype=float))
        return cls(vectorisers, model.coef_, float(model.intercept_), alpha)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) predicted log1p(price)."""
        if len(texts) == 0:
            return np.zeros(0)
        return np.asarray(transform(self.vectorisers, list(texts)) @ self.coef + self.intercept, dtype=float)

    @classmethod
    def out_of_fold(
        cls,
        texts: Sequence[str],
        log_price: np.ndarray,
        fit_rows: np.ndarray,
        alpha: float,
        folds: int,
        seed: int,
    ) -> np.ndarray:
        """Each row's prediction from a ridge fit on the other folds (only `fit_rows`, e.g. the
        priced ones, are fit on; every row is predicted)."""
        texts = np.asarray(texts, dtype=object)
        out = np.zeros(len(texts))
        for train, held_out in KFold(folds, shuffle=True, random_state=seed).split(texts):
            rows = train[np.isin(train, fit_rows)]
            out[held_out] = cls.fit(texts[rows], log_price[rows], alpha).predict(texts[held_out])
        return out

    # ---------------------------------------------------------------- files
    def save(self, model_dir: Path) -> list[str]:
        model_dir = Path(model_dir)
        config = {
            "format": FORMAT,
            "alpha": self.alpha,
            "intercept": self.intercept,
            "analysers": {
                name: {
                    "params": dict(ANALYSERS[name]) | {"sublinear_tf": True, "min_df": v.min_df},
                    "vocabulary": [t for t, _ in sorted(v.vocabulary_.items(), key=lambda item: item[1])],
                }
                for name, v in self.vectorisers.items()
            },
        }
        buffer = io.BytesIO()
        np.savez(
            buffer,
            coef=self.coef,
            **{f"idf_{n}": v.idf_.astype(np.float32) for n, v in self.vectorisers.items()},
        )
        commit(
            stage(model_dir / WEIGHTS_FILE, lambda tmp: tmp.write_bytes(buffer.getvalue())),
            model_dir / WEIGHTS_FILE,
        )
        atomic_write_json(model_dir / CONFIG_FILE, config)
        return [WEIGHTS_FILE, CONFIG_FILE]

    @classmethod
    def load(cls, model_dir: Path) -> TextPriceRidge:
        """ValueError naming the file when one is missing, unreadable or the two disagree."""
        model_dir = Path(model_dir)
        try:
            config: dict[str, Any] = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
            with np.load(model_dir / WEIGHTS_FILE, allow_pickle=False) as arrays:
                weights = {key: arrays[key] for key in arrays.files}
            vectorisers = {}
            for name, spec in config["analysers"].items():
                params = dict(spec["params"])
                params["ngram_range"] = tuple(params["ngram_range"])
                vectoriser = TfidfVectorizer(vocabulary=spec["vocabulary"], dtype=np.float32, **params)
                vectoriser.idf_ = weights[f"idf_{name}"]
                vectorisers[name] = vectoriser
            width = sum(len(spec["vocabulary"]) for spec in config["analysers"].values())
            if weights["coef"].shape != (width,):
                raise ValueError(f"{weights['coef'].shape} coefficients for a vocabulary of {width}")
            return cls(vectorisers, weights["coef"], float(config["intercept"]), float(config["alpha"]))
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"the text price model ({CONFIG_FILE}, {WEIGHTS_FILE}) in {model_dir} cannot be read: {error}"
            ) from error
