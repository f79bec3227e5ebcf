"""Neighbour-vote members of the late fusion: a listing's category from its nearest known listings.

Why: the linear members (TF-IDF logistic regression, the image head) learn one boundary
per category; second-hand listings come in near-copies (the same seller's items, the same
model posted by many sellers, the same stock photo), where the labels of the few most
similar known listings say more than any boundary. On the dev product split the
validation-fit late fusion gained from them on test: 0.835 -> 0.849 with both members
(text vote k=20, photo vote k=20, tau=0.05; each alone 0.816 / 0.586).

The vote is the weighted k-nearest-neighbour classifier of Wu et al. 2018 ("Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", eq. 7): neighbour i of the
k most cosine-similar references adds exp(s_i / tau) to its label's score. Scores are
shifted by the best similarity before exp (the same probabilities, no overflow) and a
small pseudo-count keeps every category possible, so the log-probabilities the pooling
reads stay finite.

Two members (`MEMBERS`): "text_neighbours" over the TF-IDF member's weighted rows
(`TfidfClassifier.features`, unit length), "photo_neighbours" over a listing's unit pooled
photo features. Their references are the training listings (train + val in a saved bundle,
train alone when the pooling weights are fit on val). Saved in one .npz (`save_votes`,
no pickle); the text references as CSR arrays, the photo references as float16.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

from fbmarket.files import dumps_json

TEXT, PHOTO = "text_neighbours", "photo_neighbours"
MEMBERS = (TEXT, PHOTO)
FORMAT = 1
PSEUDO_COUNT = 1e-3  # added to every category's vote before normalising
CHUNK = 512  # query rows per similarity block: (512, n_references) floats at a time


def unit_rows(x: np.ndarray | sparse.spmatrix) -> np.ndarray | sparse.csr_matrix:
    """Rows scaled to unit L2 length, float32; all-zero rows stay zero (scikit-learn's
    `normalize`, dense or CSR)."""
    x = sparse.csr_matrix(x, dtype=np.float32) if sparse.issparse(x) else np.asarray(x, np.float32)
    return normalize(x)


class NeighbourVote:
    """Category probabilities from the labels of the k most cosine-similar reference rows.

    `references` (n, d) dense or CSR, `labels` (n,) ints in [0, n_classes). A query row
    with no features (all zeros) gets the uniform distribution: it has no neighbours.
    """

    def __init__(
        self,
        references: np.ndarray | sparse.spmatrix,
        labels: np.ndarray,
        n_classes: int,
        k: int = 20,
        temperature: float = 0.05,
    ):
        labels = np.asarray(labels, np.int64)
        if references.shape[0] != len(labels):
            raise ValueError(f"{references.shape[0]} reference rows for {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"labels outside the {n_classes} categories")
        if k < 1 or not temperature > 0:
            raise ValueError(f"k must be >= 1 and the temperature > 0, got {k} and {temperature}")
        self.references = unit_rows(references)
        self.labels = labels
        self.n_classes = int(n_classes)
        self.k = int(k)
        self.temperature = float(temperature)
        self._transposed: sparse.csr_matrix | None = None  # `_references_by_term`, made on first use

    def _references_by_term(self) -> sparse.csr_matrix:
        """The sparse references transposed, as CSR (terms x references), made once.

        Why: `query @ references.T` converts the whole reference matrix on every call (~30 ms
        for one query on the dev data), and `references @ query.T` walks every reference row
        (~17 ms); with the transpose at hand a query touches only the columns of its own terms
        (~1 ms). Costs one more copy of the references (~27 MB on the dev data)."""
        if self._transposed is None:
            self._transposed = sparse.csr_matrix(self.references.T)
        return self._transposed

    @property
    def dim(self) -> int:
        return int(self.references.shape[1])

    def predict_proba(self, queries: np.ndarray | sparse.spmatrix) -> np.ndarray:
        """(n, n_classes) float32 probabilities for (n, dim) query rows, rows summing to 1.

        Raises ValueError when the queries' width is not the references'."""
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have {queries.shape[1]} features, the references {self.dim}")
        n = queries.shape[0]
        out = np.full((n, self.n_classes), 1.0 / self.n_classes, np.float32)
        if n == 0 or len(self.labels) == 0:
            return out
        queries = unit_rows(queries)
        k = min(self.k, len(self.labels))
        for start in range(0, n, CHUNK):
            block = queries[start : start + CHUNK]
            if sparse.issparse(self.references):
                sims = (sparse.csr_matrix(block) @ self._references_by_term()).toarray()
            else:
                sims = np.asarray(block @ self.references.T)
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            best = np.take_along_axis(sims, top, axis=1)
            weights = np.exp((best - best.max(axis=1, keepdims=True)) / self.temperature)
            votes = np.full((len(sims), self.n_classes), PSEUDO_COUNT, np.float64)
            np.add.at(votes, (np.arange(len(sims))[:, None], self.labels[top]), weights)
            has_features = np.asarray(abs(block).sum(axis=1)).ravel() > 0
            out[start : start + CHUNK][has_features] = (votes / votes.sum(axis=1, keepdims=True))[
                has_features
            ]
        return out


def save_votes(path: Path, votes: Mapping[str, NeighbourVote]) -> None:
    """Write the members to one .npz: per member its labels, its references (CSR arrays or
    float16 rows) and a JSON config. Raises ValueError on a member name not in MEMBERS."""
    arrays: dict[str, np.ndarray] = {}
    config: dict[str, dict] = {}
    for name, vote in votes.items():
        if name not in MEMBERS:
            raise ValueError(f"unknown neighbour member {name!r} (known: {', '.join(MEMBERS)})")
        config[name] = {"k": vote.k, "temperature": vote.temperature, "n_classes": vote.n_classes,
                        "sparse": bool(sparse.issparse(vote.references))}  # fmt: skip
        arrays[f"{name}.labels"] = vote.labels.astype(np.int32)
        if sparse.issparse(vote.references):
            refs = sparse.csr_matrix(vote.references)
            arrays[f"{name}.data"] = refs.data.astype(np.float16)
            arrays[f"{name}.indices"] = refs.indices.astype(np.int32)
            arrays[f"{name}.indptr"] = refs.indptr.astype(np.int64)
            arrays[f"{name}.shape"] = np.asarray(refs.shape, np.int64)
        else:
            arrays[f"{name}.rows"] = np.asarray(vote.references, np.float16)
    arrays["config"] = np.asarray(dumps_json({"format": FORMAT, "members": config}))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_votes(path: Path) -> dict[str, NeighbourVote]:
    """The members saved by `save_votes`. Raises ValueError naming the file when it is not a
    readable neighbours file (truncated, foreign, a newer format, arrays that disagree)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        config = json.loads(str(arrays["config"]))
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(
                f"unknown neighbours format {config.get('format') if isinstance(config, dict) else config!r}"
            )
        votes = {}
        for name, spec in config["members"].items():
            if name not in MEMBERS:
                raise ValueError(f"unknown neighbour member {name!r}")
            if spec["sparse"]:
                shape = tuple(int(v) for v in arrays[f"{name}.shape"])
                references = sparse.csr_matrix(
                    (
                        arrays[f"{name}.data"].astype(np.float32),
                        arrays[f"{name}.indices"],
                        arrays[f"{name}.indptr"],
                    ),
                    shape=shape,
                )
            else:
                references = arrays[f"{name}.rows"].astype(np.float32)
            votes[name] = NeighbourVote(
                references,
                arrays[f"{name}.labels"],
                int(spec["n_classes"]),
                int(spec["k"]),
                float(spec["temperature"]),
            )
        return votes
    except (
        OSError,
        EOFError,
        zipfile.BadZipFile,
        KeyError,
        TypeError,
        ValueError,
        json.JSONDecodeError,
    ) as error:
        detail = (
            f"missing {error.args[0]!r}"
            if isinstance(error, KeyError)
            else f"{type(error).__name__}: {error}"
        )
        raise ValueError(f"{path}: not a readable neighbours file ({detail})") from error
