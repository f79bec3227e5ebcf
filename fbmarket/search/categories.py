"""The fusion model's category heads as plain matrices, for search to read without Keras.

Similar listings should share a category, and the embedding alone groups unseen listings
by category less tightly than its own heads classify them (dev data, test listings
among themselves: similar-listing P@10 same root 0.685 from cosine neighbours, while
the root head is right 82% of the time). `CategorySpace.agreement` gives, for a listing
and each candidate, the probability that both fall in the same root (and leaf)
category if their predicted categories were independent: sum_c p(c | a) p(c | b).
`HybridSearcher.similar` adds it, weighted, to the embedding/BM25 blend. It uses only
what the model predicts from the listings' vectors, never their stored labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CategoryHead:
    """logits = scale * cos(vector, prototype) (cosine head), or vector @ kernel + bias (dense head)."""

    kernel: np.ndarray  # (embedding dim, classes)
    bias: np.ndarray | None = None
    scale: float = 0.0  # > 0: a cosine head at this scale

    def __post_init__(self) -> None:
        kernel = np.asarray(self.kernel, dtype=np.float32)
        if kernel.ndim != 2 or kernel.shape[1] == 0:
            raise ValueError(f"a category head's kernel is (dim, classes), got shape {kernel.shape}")
        if self.scale > 0:  # prototypes at unit length once, not per query
            kernel = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
        object.__setattr__(self, "kernel", kernel)

    @property
    def dim(self) -> int:
        return int(self.kernel.shape[0])

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Softmax class probabilities, one row per vector."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self.scale > 0:
            unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            logits = self.scale * (unit @ self.kernel)
        else:
            logits = vectors @ self.kernel + (0.0 if self.bias is None else self.bias)
        logits = logits - logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class CategorySpace:
    """The root-category head and, when the model has one, the leaf-category head."""

    root: CategoryHead
    leaf: CategoryHead | None = None

    def agreement(
        self, vector: np.ndarray, candidates: np.ndarray, root_probs: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(P(same root), P(same leaf)) of one vector with each candidate row; leaf 0 without a leaf head.

        `root_probs` replaces the vector's own root probabilities when the query's category
        is better estimated elsewhere (a photo query: the image-only head, in class order).
        """
        candidates = np.asarray(candidates, dtype=np.float32).reshape(-1, self.root.dim)
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        query_root = self.root.probabilities(vector)[0] if root_probs is None else np.asarray(root_probs)
        same_root = self.root.probabilities(candidates) @ query_root
        if self.leaf is None:
            return same_root, np.zeros(len(candidates))
        same_leaf = self.leaf.probabilities(candidates) @ self.leaf.probabilities(vector)[0]
        return same_root, same_leaf
