"""Listing text -> lemma tokens, with spaCy and no model download (the text branch's input).

`spacy.blank("en")` gives spaCy's rule-based English tokeniser; the lookup lemmatiser
reads its table from the `spacy-lookups-data` package, so nothing is fetched at run
time. Scraped descriptions lose their line breaks ("cookingServes up to 4personBrand
new"), so camel-case joins and bracket runs are split before spaCy sees the text.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence

from tqdm.auto import tqdm

_CAMEL_JOIN = re.compile(r"(?<=[a-z])(?=[A-Z])")
_BREAKERS = re.compile(r"[()\[\]{}/\\|_*#~<>=+\"•·]")
_DROP = frozenset({"'s", "’s", "'", "’"})


def prepare(text: str) -> str:
    """Undo run-on joins and lower-case (the lookup table is keyed by lower-case forms)."""
    return _BREAKERS.sub(" ", _CAMEL_JOIN.sub(" ", text)).lower()


def _keep(token: str) -> bool:
    """A token carries meaning when it has a letter or digit; emoji and dashes do not."""
    return token not in _DROP and any(ch.isalnum() for ch in token)


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Silence a library's per-step INFO chatter (gensim logs every epoch) for one call."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.level))
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous, strict=True):
            logger.setLevel(old)


class Tokenizer:
    """Lower-case lemmas of the alphanumeric tokens of a text."""

    def __init__(self) -> None:
        import spacy

        with quiet_loggers("spacy"):
            self.nlp = spacy.blank("en")
            self.nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
            self.nlp.initialize()  # loads the lookup table from spacy-lookups-data (no download)

    def tokenize(self, text: str | None) -> list[str]:
        return self.tokenize_many([text or ""])[0]

    def tokenize_many(
        self, texts: Iterable[str | None], show_progress: bool = False, desc: str = "tokenising"
    ) -> list[list[str]]:
        texts = [prepare(t) if isinstance(t, str) else "" for t in texts]
        docs = self.nlp.pipe(texts, batch_size=256)
        if show_progress:
            docs = tqdm(docs, total=len(texts), desc=desc, unit="doc")
        return [[lemma for token in doc if _keep(lemma := (token.lemma_ or token.text))] for doc in docs]


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """One tokeniser per process: building the pipeline costs about a second."""
    return Tokenizer()


def join(tokens: Sequence[str]) -> str:
    """Tokens as the whitespace-separated string the Keras text layers split again."""
    return " ".join(tokens)


def tokenize_listings(
    titles: Iterable[str | None], descriptions: Iterable[str | None], show_progress: bool = False
) -> tuple[list[list[str]], list[list[str]]]:
    """Title and description tokens of many listings (kept apart: titles weigh more)."""
    tokenizer = get_tokenizer()
    return (
        tokenizer.tokenize_many(titles, show_progress, "tokenising titles"),
        tokenizer.tokenize_many(descriptions, show_progress, "tokenising descriptions"),
    )
