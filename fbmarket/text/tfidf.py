"""TF-IDF + logistic regression over a listing's text: the linear text member of the fusion.

Why a second text model next to the Keras text branch: the two make different
mistakes. The Keras branch reads lemmas through Word2Vec and a learned n-gram
encoder; this one reads raw word 1-2 grams and character 2-5 grams (`char_wb`), which
survive typos, run-on words and model numbers. On the dev product split each alone
scores about the same (test 0.811 / 0.815), and fit on validation the late fusion
(`fusion/late.py`) gives this member the largest weight (0.65 against 0.06 for the Keras
text branch, whose over-confidence the network's head already carries;
`benchmarks/results/late_fusion.json`).

The title is read twice: once inside title + description, and once alone through its own
word and character analysers at half weight (`TITLE_WEIGHT`). A title says what the item is;
a description mostly says how it is sold, so title n-grams diluted by a long description
were under-weighted. On the dev product split (C chosen on val among 10/30/100) the title
analysers lifted this member from val 0.836 / test 0.810 to val 0.843 / test 0.819 (weight
1.0: 0.838 / 0.820). Fit without titles it is the plain text model (the issue's anchor).

Saved without pickle: the vocabularies (JSON, in column order, each with the field it reads
and its weight), their idf weights and the regression coefficients (`.npz`), rebuilt into
scikit-learn vectorisers on load (`TfidfVectorizer(vocabulary=...)` plus its public `idf_`).
Format 1 files (text analysers only) still load.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from fbmarket.data import schema as S
from fbmarket.files import dumps_json

VOCABULARY_FILE = "tfidf.json"
WEIGHTS_FILE = "tfidf.npz"
FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: before the title analysers (every analyser reads the text at weight 1)
MAX_FEATURES = 50_000  # per analyser: the 50k most frequent word and char n-grams
ANALYSERS: dict[str, dict[str, Any]] = {
    "word": {"ngram_range": (1, 2)},
    "char": {"analyzer": "char_wb", "ngram_range": (2, 5)},
}
# Analysers over the title alone, scaled by TITLE_WEIGHT (see the module docstring).
TITLE_ANALYSERS: dict[str, dict[str, Any]] = {
    "title_word": {"ngram_range": (1, 2), "min_df": 1},
    "title_char": {"analyzer": "char_wb", "ngram_range": (2, 5)},
}
TITLE_WEIGHT = 0.5
TEXT, TITLE = "text", "title"  # the field each analyser reads


def product_text(frame: pd.DataFrame) -> np.ndarray:
    """Title + description, the text both this model and the baselines read."""
    return (
        frame[S.TITLE].fillna("").astype(str) + " . " + frame[S.DESCRIPTION].fillna("").astype(str)
    ).to_numpy()


def product_titles(frame: pd.DataFrame) -> np.ndarray:
    """The titles alone, what the title analysers read."""
    return frame[S.TITLE].fillna("").astype(str).to_numpy()


def text_vectorisers(n_train: int) -> dict[str, TfidfVectorizer]:
    """Word 1-2 grams + character 2-5 grams, sublinear tf, each L2-normalised.

    `min_df` is 2 except on tiny sets (under 50 texts), which would otherwise lose
    their whole vocabulary.
    """
    min_df = 2 if n_train >= 50 else 1
    common = {"sublinear_tf": True, "min_df": min_df, "dtype": np.float32, "max_features": MAX_FEATURES}
    return {name: TfidfVectorizer(**params, **common) for name, params in ANALYSERS.items()}


def title_vectorisers(n_train: int) -> dict[str, TfidfVectorizer]:
    """Word 1-2 grams (every title word counts: titles are short) + character 2-5 grams of the title."""
    min_df = 2 if n_train >= 50 else 1
    common = {"sublinear_tf": True, "dtype": np.float32, "max_features": MAX_FEATURES}
    return {
        name: TfidfVectorizer(**({"min_df": min_df} | params), **common) for name, params in TITLE_ANALYSERS.items()
    }


def transform(vectorisers: dict[str, TfidfVectorizer], texts: Sequence[str]) -> sparse.csr_matrix:
    """(n, n_word + n_char) TF-IDF rows for fitted vectorisers."""
    return sparse.hstack([v.transform(texts) for v in vectorisers.values()], format="csr")


def _analyser_params(name: str, vectoriser: TfidfVectorizer) -> dict[str, Any]:
    params = ANALYSERS.get(name) or TITLE_ANALYSERS[name]
    return {k: v for k, v in params.items()} | {"sublinear_tf": True, "min_df": vectoriser.min_df}


class TfidfClassifier:
    """Root category from TF-IDF text, multinomial logistic regression (L2, lbfgs).

    `predict_proba(texts, titles)` gives (n, n_classes) in label order; a class absent from
    the training labels gets probability 0. `texts` are `product_text(frame)`; `titles` the
    titles, needed when the model was fit with them (`reads_titles`); for a free-text query
    pass the query as both.
    """

    def __init__(
        self,
        vectorisers: dict[str, TfidfVectorizer],
        coef: np.ndarray,
        intercept: np.ndarray,
        class_index: np.ndarray,
        n_classes: int,
        c: float,
        fields: dict[str, str] | None = None,
        weights: dict[str, float] | None = None,
    ):
        self.vectorisers = vectorisers
        # per analyser: the field it reads (TEXT | TITLE) and the weight of its columns
        self.fields = {name: (fields or {}).get(name, TEXT) for name in vectorisers}
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in vectorisers}
        self.coef = np.asarray(coef, np.float32)  # (classes seen, features)
        self.intercept = np.asarray(intercept, np.float32)  # (classes seen,)
        self.class_index = np.asarray(class_index, np.int64)  # label of each row of coef
        self.n_classes = int(n_classes)
        self.c = float(c)

    @property
    def reads_titles(self) -> bool:
        return TITLE in self.fields.values()

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: np.ndarray,
        n_classes: int,
        c: float = 30.0,
        seed: int = 0,
        titles: Sequence[str] | None = None,
    ) -> TfidfClassifier:
        """Fit on training texts (and titles: the title analysers, see the module docstring).
        Raises ValueError when fewer than two classes are present or titles and texts differ
        in length.

        `c` is scikit-learn's inverse L2 strength; 30 was the better of (10, 30, 100) on the
        dev validation split with the title analysers (val 0.843, 0.842 / 0.842 the others).
        """
        labels = np.asarray(labels, np.int64)
        seen = np.unique(labels)
        if len(seen) < 2:
            raise ValueError("the TF-IDF text model needs at least two categories in its training rows")
        vectorisers = text_vectorisers(len(texts))
        fields = dict.fromkeys(vectorisers, TEXT)
        weights = dict.fromkeys(vectorisers, 1.0)
        if titles is not None:
            if len(titles) != len(texts):
                raise ValueError(f"{len(titles)} titles for {len(texts)} texts")
            for name, vectoriser in title_vectorisers(len(texts)).items():
                vectorisers[name], fields[name], weights[name] = vectoriser, TITLE, TITLE_WEIGHT
        inputs = {TEXT: texts, TITLE: titles}
        x = sparse.hstack(
            [weights[n] * v.fit_transform(inputs[fields[n]]) for n, v in vectorisers.items()], format="csr"
        )
        model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a few iterations short still ranks well
            model.fit(x, labels)
        coef, intercept = model.coef_, model.intercept_
        if len(seen) == 2:  # scikit-learn keeps one row for two classes: make it symmetric
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return cls(vectorisers, coef, intercept, model.classes_, n_classes, c, fields, weights)

    def features(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> sparse.csr_matrix:
        """(n, vocabulary) weighted TF-IDF rows. Raises ValueError when the model reads titles
        and none (or a different number) are given."""
        if self.reads_titles and (titles is None or len(titles) != len(texts)):
            raise ValueError("this TF-IDF model reads titles: pass one title per text")
        inputs = {TEXT: texts, TITLE: titles}
        return sparse.hstack(
            [self.weights[n] * v.transform(inputs[self.fields[n]]) for n, v in self.vectorisers.items()],
            format="csr",
        )

    def log_proba(
        self, texts: Sequence[str], titles: Sequence[str] | None = None, features: sparse.spmatrix | None = None
    ) -> np.ndarray:
        """(n, n_classes) log-probabilities; -inf (floored at -1e9) for classes never seen.
        `features`: the texts' `features(texts, titles)` when the caller has them already."""
        out = np.full((len(texts), self.n_classes), -1e9, np.float32)
        if len(texts):
            rows = self.features(texts, titles) if features is None else features
            logits = rows @ self.coef.T + self.intercept
            shifted = logits - logits.max(axis=1, keepdims=True)
            out[:, self.class_index] = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return out

    def predict_proba(
        self, texts: Sequence[str], titles: Sequence[str] | None = None, features: sparse.spmatrix | None = None
    ) -> np.ndarray:
        """(n, n_classes) probabilities, rows summing to 1 (`features` as for `log_proba`)."""
        return softmax(self.log_proba(texts, titles, features), axis=1).astype(np.float32)

    # ---------------------------------------------------------------- saving
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "n_classes": self.n_classes,
            "C": self.c,
            "analysers": {
                name: {
                    "params": _analyser_params(name, v),
                    "field": self.fields[name],
                    "weight": self.weights[name],
                    "vocabulary": _ordered_vocabulary(v),
                }
                for name, v in self.vectorisers.items()
            },
        }
        (directory / VOCABULARY_FILE).write_text(dumps_json(config, ensure_ascii=False))
        np.savez(
            directory / WEIGHTS_FILE,
            coef=self.coef,
            intercept=self.intercept,
            class_index=self.class_index,
            **{f"idf_{name}": v.idf_.astype(np.float32) for name, v in self.vectorisers.items()},
        )

    @classmethod
    def load(cls, directory: Path) -> TfidfClassifier:
        """Raises FileNotFoundError when a file is absent, ValueError naming the file when one
        is unreadable (truncated, not JSON / not an .npz) or the two disagree."""
        directory = Path(directory)
        config_path, weights_path = directory / VOCABULARY_FILE, directory / WEIGHTS_FILE
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{config_path}: not a readable TF-IDF vocabulary file ({error})") from error
        if not isinstance(config, dict):
            raise ValueError(f"{config_path}: not a TF-IDF vocabulary file (a JSON object is expected)")
        if config.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{config_path}: unknown TF-IDF model format {config.get('format')}")
        if not weights_path.is_file():
            raise FileNotFoundError(2, "the TF-IDF weights file is missing", str(weights_path))
        try:
            with np.load(weights_path, allow_pickle=False) as arrays:
                weights = {key: arrays[key] for key in arrays.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(
                f"{weights_path}: not a readable TF-IDF weights file ({type(error).__name__}: {error})"
            ) from error
        try:
            return cls._from_parts(config, weights)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            detail = f"missing {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
            raise ValueError(
                f"{directory}: the TF-IDF model files disagree or are incomplete: {detail}"
            ) from error

    @classmethod
    def _from_parts(cls, config: dict[str, Any], weights: dict[str, np.ndarray]) -> TfidfClassifier:
        """The classifier from a parsed config and its arrays; KeyError/ValueError when they disagree."""
        vectorisers, fields, scales = {}, {}, {}
        for name, spec in config["analysers"].items():
            fields[name] = str(spec.get("field", TEXT))
            scales[name] = float(spec.get("weight", 1.0))
            if fields[name] not in (TEXT, TITLE) or not np.isfinite(scales[name]):
                raise ValueError(f"the {name} analyser reads {fields[name]!r} at weight {scales[name]}")
            params = dict(spec["params"])
            params["ngram_range"] = tuple(params["ngram_range"])
            idf = weights[f"idf_{name}"]
            if len(idf) != len(spec["vocabulary"]):
                raise ValueError(f"the {name} idf weights do not match its vocabulary")
            vectoriser = TfidfVectorizer(vocabulary=spec["vocabulary"], dtype=np.float32, **params)
            vectoriser.idf_ = idf  # also validates the vocabulary (duplicate terms)
            vectorisers[name] = vectoriser
        width = sum(len(spec["vocabulary"]) for spec in config["analysers"].values())
        coef, intercept, class_index = weights["coef"], weights["intercept"], weights["class_index"]
        n_classes = int(config["n_classes"])
        if coef.ndim != 2 or coef.shape[1] != width:
            raise ValueError(f"coefficients of shape {coef.shape} for a vocabulary of {width}")
        if not (len(coef) == len(intercept) == len(class_index)):
            raise ValueError(
                f"{len(coef)} coefficient rows, {len(intercept)} intercepts, {len(class_index)} class labels"
            )
        if len(class_index) and (class_index.min() < 0 or class_index.max() >= n_classes):
            raise ValueError(f"class labels {class_index.tolist()} outside the {n_classes} classes")
        if len(np.unique(class_index)) != len(class_index):
            raise ValueError(f"repeated class labels {class_index.tolist()}")
        return cls(vectorisers, coef, intercept, class_index, n_classes, float(config["C"]), fields, scales)


def _ordered_vocabulary(vectoriser: TfidfVectorizer) -> list[str]:
    """The vocabulary as a list whose position is the feature column."""
    return [term for term, _ in sorted(vectoriser.vocabulary_.items(), key=lambda item: item[1])]
