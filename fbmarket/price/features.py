"""The price models' inputs: one named numeric column per feature, the same at training and serving.

A listing is described by
- its fusion embedding, computed **without its price**: the fusion network reads the
  standardised log price as a tabular input (fusion/dataset.py TabularScaler), so the
  embedding of a priced listing carries its own price; a seller's draft has none, so the
  price models must learn from embeddings made the way a draft is embedded;
- root and leaf category as integer codes over the training vocabulary (LightGBM
  categorical features; an unseen category is -1, which LightGBM treats as missing);
- latitude and longitude (NaN when the place is unknown: the boosters route missing values);
- a few text features: title and description lengths, whether the title holds a number,
  a size/quantity word ("set", "pair", "x2"), and the photo count;
- optionally the amounts the seller states in the words ("£90 ono", "RRP £450";
  fbmarket/price/stated.py);
- optionally a text-only price estimate (ridge on TF-IDF, fbmarket/price/text_price.py),
  stacked: the trees cannot split on 100k sparse n-gram columns themselves;
- optionally the prices of the nearest training listings ("comparables", by fusion
  embedding and/or TF-IDF text; fbmarket/price/knn.py), leave-one-out on train.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fbmarket.data import schema as S
from fbmarket.price.knn import knn_columns
from fbmarket.price.stated import STATED_COLUMNS, stated_price_columns

ROOT = "root_category"
LEAF = "leaf_category"
CATEGORICAL = (ROOT, LEAF)
LOCATION_COLUMNS = ("latitude", "longitude")
TEXT_PRICE = "text_price_log"  # the stacked ridge's log1p(price) estimate
TEXT_COLUMNS = (
    "title_chars",
    "title_words",
    "description_chars",
    "description_words",
    "title_has_number",
    "title_has_bundle_word",
    "n_photos",
)
_NUMBER = re.compile(r"\d")
_BUNDLE = re.compile(r"\b(set|sets|pair|pairs|bundle|job lot|joblot|x\s?\d+|\d+\s?x)\b", re.IGNORECASE)


def embedding_columns(dim: int) -> list[str]:
    return [f"embedding_{i}" for i in range(dim)]


@dataclass
class PriceFeatureSpec:
    """Which columns the models read, and the category vocabularies that code roots and leaves.

    Saved as JSON in the bundle (price.json); `frame` rebuilds exactly these columns."""

    roots: list[str]
    leaves: list[str]
    embedding_dim: int = 0  # 0: no embedding columns
    text_features: bool = True
    text_price: bool = False
    stated_prices: bool = False  # the amounts named in the text (price/stated.py)
    knn_sources: list[str] = field(default_factory=list)  # "embedding", "text": comparables' prices
    knn_ks: list[int] = field(default_factory=lambda: [5, 20])
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = [
                *((TEXT_PRICE,) if self.text_price else ()),
                *knn_columns(self.knn_sources, self.knn_ks),
                *CATEGORICAL,
                *LOCATION_COLUMNS,
                *(TEXT_COLUMNS if self.text_features else ()),
                *(STATED_COLUMNS if self.stated_prices else ()),
                *embedding_columns(self.embedding_dim),
            ]

    @property
    def free_columns(self) -> list[str]:
        """The P(free) classifier's columns: all but the comparables' (on the dev val split they
        cut its average precision from 0.39 to 0.23 while helping the price quantiles)."""
        return [c for c in self.columns if not c.startswith("knn_")]

    @classmethod
    def fit(
        cls,
        products: pd.DataFrame,
        embedding_dim: int,
        text_features: bool = True,
        text_price: bool = False,
        knn_sources: Sequence[str] = (),
        knn_ks: Sequence[int] = (5, 20),
        stated_prices: bool = False,
    ) -> PriceFeatureSpec:
        """Vocabularies from the training listings (sorted: the codes do not depend on row order)."""
        roots = sorted(products[S.ROOT_CATEGORY].dropna().astype(str).unique().tolist())
        leaves = sorted(products[S.LEAF_CATEGORY].dropna().astype(str).unique().tolist())
        return cls(
            roots,
            leaves,
            embedding_dim,
            text_features,
            text_price,
            stated_prices,
            list(knn_sources),
            list(knn_ks),
        )

    def frame(
        self,
        products: pd.DataFrame,
        embeddings: np.ndarray | None,
        photo_counts: Sequence[int] | None = None,
        text_price: np.ndarray | None = None,
        neighbours: dict[str, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """The feature table for clean listings, in row order (columns exactly `self.columns`).

        `text_price` is the stacked ridge's log1p(price) per listing (needed when the spec
        has that column); `neighbours` the comparables' columns (knn.NeighbourPrices.features)."""
        n = len(products)
        out: dict[str, np.ndarray] = {}
        if self.text_price:
            if text_price is None or len(text_price) != n:
                raise ValueError(f"the price features need the text price estimate of all {n} listings")
            out[TEXT_PRICE] = np.asarray(text_price, dtype=float)
        for column in knn_columns(self.knn_sources, self.knn_ks):
            if neighbours is None or column not in neighbours or len(neighbours[column]) != n:
                raise ValueError(f"the price features need the neighbour column {column} of all {n} listings")
            out[column] = np.asarray(neighbours[column], dtype=float)
        out[ROOT] = _codes(products.get(S.ROOT_CATEGORY), self.roots, n)
        out[LEAF] = _codes(products.get(S.LEAF_CATEGORY), self.leaves, n)
        for column in LOCATION_COLUMNS:
            values = products[column] if column in products else pd.Series(np.nan, index=products.index)
            out[column] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        if self.text_features:
            titles = _text(products, S.TITLE)
            descriptions = _text(products, S.DESCRIPTION)
            out["title_chars"] = titles.str.len().to_numpy(dtype=float)
            out["title_words"] = titles.str.split().str.len().fillna(0).to_numpy(dtype=float)
            out["description_chars"] = descriptions.str.len().to_numpy(dtype=float)
            out["description_words"] = descriptions.str.split().str.len().fillna(0).to_numpy(dtype=float)
            out["title_has_number"] = titles.map(lambda t: bool(_NUMBER.search(t))).to_numpy(dtype=float)
            out["title_has_bundle_word"] = titles.map(lambda t: bool(_BUNDLE.search(t))).to_numpy(dtype=float)
            counts = np.zeros(n) if photo_counts is None else np.asarray(photo_counts, dtype=float)
            if len(counts) != n:
                raise ValueError(f"{len(counts)} photo counts for {n} listings")
            out["n_photos"] = counts
        if self.stated_prices:
            out.update(
                stated_price_columns(
                    _text(products, S.TITLE).tolist(), _text(products, S.DESCRIPTION).tolist()
                )
            )
        if self.embedding_dim:
            if embeddings is None or embeddings.shape != (n, self.embedding_dim):
                got = None if embeddings is None else embeddings.shape
                raise ValueError(f"the price features need ({n}, {self.embedding_dim}) embeddings, got {got}")
            for i, name in enumerate(embedding_columns(self.embedding_dim)):
                out[name] = embeddings[:, i].astype(float)
        frame = pd.DataFrame(out, index=range(n))
        return frame[self.columns]

    def to_json(self) -> dict:
        return {
            "roots": self.roots,
            "leaves": self.leaves,
            "embedding_dim": self.embedding_dim,
            "text_features": self.text_features,
            "text_price": self.text_price,
            "stated_prices": self.stated_prices,
            "knn_sources": self.knn_sources,
            "knn_ks": self.knn_ks,
            "columns": self.columns,
            "categorical": list(CATEGORICAL),
        }

    @classmethod
    def from_json(cls, payload: dict) -> PriceFeatureSpec:
        return cls(
            roots=list(payload["roots"]),
            leaves=list(payload["leaves"]),
            embedding_dim=int(payload["embedding_dim"]),
            text_features=bool(payload["text_features"]),
            text_price=bool(payload.get("text_price", False)),
            stated_prices=bool(payload.get("stated_prices", False)),
            knn_sources=list(payload.get("knn_sources", [])),
            knn_ks=list(payload.get("knn_ks", [5, 20])),
            columns=list(payload["columns"]),
        )


def _codes(values: pd.Series | None, vocabulary: list[str], n: int) -> np.ndarray:
    """Integer codes of `values` in `vocabulary`; -1 (missing to LightGBM) when unknown."""
    if values is None:
        return np.full(n, -1.0)
    index = {name: i for i, name in enumerate(vocabulary)}
    return np.array([index.get(str(v), -1) if isinstance(v, str) else -1 for v in values], dtype=float)


def _text(products: pd.DataFrame, column: str) -> pd.Series:
    if column not in products:
        return pd.Series([""] * len(products), index=products.index)
    return products[column].fillna("").astype(str)
