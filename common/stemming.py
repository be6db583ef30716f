"""English stemming (Snowball), shared by BM25 (rag/index/document_index.py) and the decline rule's word share
(rag/answer/abstain.py), so both see the same words: "dogs" meets "dog", "built" meets "builds"."""
from __future__ import annotations

import functools
import threading

_LOCAL = threading.local()


def _stemmer():
    """One per thread: a Snowball stemmer keeps the word it is working on in itself."""
    stemmer = getattr(_LOCAL, "stemmer", None)
    if stemmer is None:
        import snowballstemmer

        stemmer = _LOCAL.stemmer = snowballstemmer.stemmer("english")
    return stemmer


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A lower-case word's stem (cached: the same words come back with every question)."""
    return _stemmer().stemWord(word)


def stem_words(words: list[str]) -> list[str]:
    return [stem(w) for w in words]
