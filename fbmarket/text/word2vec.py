"""Word2Vec over all listing text, and the vocabulary the Keras text branch indexes by.

Saved without pickle: the vectors in word2vec's own binary format (readable by gensim
and most other tools) and the vocabulary with counts as JSON. Row i of the embedding
matrix is token i of `Vocabulary.tokens`; rows 0/1 are padding and out-of-vocabulary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gensim.models import KeyedVectors, Word2Vec

from fbmarket.config import TextSettings
from fbmarket.files import dumps_json
from fbmarket.text.tokenize import quiet_loggers

PAD = ""  # Keras TextVectorization's reserved padding token
OOV = "[UNK]"  # ... and its out-of-vocabulary token
VECTORS_FILE = "word2vec.bin"
VOCAB_FILE = "vocabulary.json"


def train_word2vec(sentences: Sequence[Sequence[str]], settings: TextSettings, seed: int) -> KeyedVectors:
    """CBOW vectors (sg=0) trained on every title and description given.

    w2v_workers=1 makes the result reproducible for a seed (gensim's threads race otherwise);
    on the 5k-listing dev data it costs well under a minute.
    """
    corpus = [list(s) for s in sentences if len(s) > 0]
    if not corpus:
        raise ValueError("Word2Vec needs some text: every title and description is empty")
    with quiet_loggers("gensim"):
        model = Word2Vec(
            sentences=corpus,
            vector_size=settings.w2v_dim,
            window=settings.w2v_window,
            min_count=1,  # the vocabulary's own min_count decides; rare words still get a vector
            sg=0,
            epochs=settings.w2v_epochs,
            workers=settings.w2v_workers,
            seed=seed,
        )
    return model.wv


@dataclass
class Vocabulary:
    """Tokens in id order (0 = padding, 1 = out-of-vocabulary) with their corpus counts."""

    tokens: list[str]
    counts: list[int]

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int, max_size: int) -> Vocabulary:
        counter = Counter(token for sentence in sentences for token in sentence)
        kept = [(t, c) for t, c in counter.most_common() if c >= min_count and t not in (PAD, OOV)]
        kept = kept[: max(0, max_size - 2)]
        return cls([PAD, OOV] + [t for t, _ in kept], [0, 0] + [c for _, c in kept])

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def words(self) -> list[str]:
        """The real tokens, without the two reserved ones (what TextVectorization takes)."""
        return self.tokens[2:]

    def embedding_matrix(self, vectors: KeyedVectors, seed: int) -> np.ndarray:
        """Word2Vec rows for known tokens, small random rows for the rest, zeros for padding."""
        rng = np.random.default_rng(seed)
        dim = vectors.vector_size
        matrix = rng.normal(0.0, 0.1, size=(len(self.tokens), dim)).astype(np.float32)
        matrix[0] = 0.0
        for i, token in enumerate(self.tokens[2:], start=2):
            if token in vectors.key_to_index:
                matrix[i] = vectors[token]
        return matrix

    def coverage(self, vectors: KeyedVectors) -> float:
        known = sum(1 for t in self.words if t in vectors.key_to_index)
        return known / max(1, len(self.words))

    def save(self, path: Path) -> None:
        path.write_text(dumps_json({"tokens": self.tokens, "counts": self.counts}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        payload = json.loads(Path(path).read_text())
        return cls(list(payload["tokens"]), list(payload["counts"]))


def save_vectors(vectors: KeyedVectors, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / VECTORS_FILE
    with quiet_loggers("gensim"):
        vectors.save_word2vec_format(str(path), binary=True)
    return path


def load_vectors(directory: Path) -> KeyedVectors:
    with quiet_loggers("gensim"):
        return KeyedVectors.load_word2vec_format(str(directory / VECTORS_FILE), binary=True)
