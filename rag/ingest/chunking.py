"""Token-sized chunks split at paragraph and sentence boundaries, with overlap.

Sizes are counted in tokens of the embedding model's own tokenizer, because that model silently
truncates anything past its limit (256 word pieces for all-MiniLM-L6-v2): a chunk it cannot read
whole would be found only by its beginning.

The cuts are the ones LangChain's RecursiveCharacterTextSplitter made here before (separators in the
order of SEPARATORS, each kept at the end of its piece, pieces merged up to `chunk_tokens` with
whole pieces of up to `overlap_tokens` repeated), but each section is tokenized ONCE, with character
offsets, and a piece's size is the number of tokens that start inside it: a lookup, not a tokenizer
call. The recursive splitter asked the tokenizer about every piece it tried (about 50 chunks/s on
long text, minutes for a 5 MB one-line file).
"""
from __future__ import annotations

import bisect
import copy
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.ingest.loaders import Section

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
# A token spanning more characters than this is a word the tokenizer could not read (BERT's WordPiece
# makes one [UNK] of any word over 100 characters, so 300 KB of letters is ONE token): it counts as
# one token per character, as the recursive splitter counted it, so its chunks stay readable-sized.
LONG_TOKEN = 50

# text -> (start, end) character offsets of its tokens, in order, without special tokens
TokenSpans = Callable[[str], Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    text: str          # what the user sees and the model reads
    embed_text: str    # what is embedded and indexed: the text under its document title and heading
    location: str
    start: int         # character offset of the chunk in its section

    @property
    def hash(self) -> str:
        """Identity for deduplication: the passage itself, wherever (and under whatever title) it occurs."""
        return hashlib.sha1(self.text.encode("utf-8")).hexdigest()


def _token_starts(spans: Sequence[tuple[int, int]] | np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Start offset of each token, overlong tokens cut into one pseudo-token per character; and the
    (start, end) of those overlong tokens."""
    arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if not len(arr):
        return np.zeros(0, np.int64), []
    starts, ends = arr[:, 0], np.maximum(arr[:, 1], arr[:, 0])
    long = np.flatnonzero(ends - starts > LONG_TOKEN)
    runs = [(int(starts[i]), int(ends[i])) for i in long]
    if len(long):
        parts, prev = [], 0
        for i in long:
            parts += [starts[prev:i], np.arange(starts[i], ends[i], dtype=np.int64)]
            prev = i + 1
        parts.append(starts[prev:])
        starts = np.concatenate(parts)
    return np.maximum.accumulate(starts), runs    # offsets never go back (bisection needs them sorted)


class Splitter:
    """Splits a text into (start offset, chunk text) pairs; each chunk is a verbatim slice of the text."""

    def __init__(self, token_spans: TokenSpans, chunk_tokens: int, overlap_tokens: int):
        self.token_spans = token_spans
        self.size = chunk_tokens
        self.overlap = min(overlap_tokens, chunk_tokens // 2)
        self._patterns = {s: re.compile(re.escape(s)) for s in SEPARATORS if s}

    def split(self, text: str) -> list[tuple[int, str]]:
        run = copy.copy(self)     # this text's tokens live on a copy: one splitter may serve two threads
        run._starts, run._long = _token_starts(self.token_spans(text))
        run._text = text
        out = []
        for lo, hi in run._split(0, len(text), 0):
            piece = text[lo:hi]
            stripped = piece.strip()
            if stripped:
                out.append((lo + len(piece) - len(piece.lstrip()), stripped))
        return out

    def _tokens(self, bounds: np.ndarray) -> np.ndarray:
        """Tokens starting before each of `bounds` (character offsets)."""
        return np.searchsorted(self._starts, bounds, side="left")

    def _split(self, lo: int, hi: int, level: int) -> list[tuple[int, int]]:
        """RecursiveCharacterTextSplitter._split_text over text[lo:hi], on character ranges."""
        text = self._text
        while SEPARATORS[level] and text.find(SEPARATORS[level], lo, hi) < 0:
            level += 1
        sep = SEPARATORS[level]
        if sep:   # pieces end after each separator (keep_separator="end")
            cuts = [m.end() for m in self._patterns[sep].finditer(text, lo, hi)]
        else:     # no separator left: the pieces are the tokens themselves
            first, last = self._tokens(np.array([lo, hi]))
            cuts = self._starts[first + 1:last].tolist()
        bounds = np.array([lo] + [c for c in cuts if lo < c < hi] + [hi], dtype=np.int64)
        sizes = np.diff(self._tokens(bounds)).tolist()
        bounds = bounds.tolist()
        chunks: list[tuple[int, int]] = []
        good: list[int] = []      # indices of the pieces that fit, waiting to be merged
        for i, size in enumerate(sizes):
            if size < self.size or not SEPARATORS[level]:
                good.append(i)
                continue
            if good:
                chunks += self._merge(good, bounds, sizes, self.size)
                good = []
            chunks += self._split(bounds[i], bounds[i + 1], level + 1)
        if good:
            chunks += self._merge(good, bounds, sizes, self.size) if sep else self._merge_words(good, bounds, sizes)
        return chunks

    def _merge_words(self, pieces: list[int], bounds: list[int], sizes: list[int],
                     limit: int | None = None) -> list[tuple[int, int]]:
        """_merge of single tokens, for text without separators: such a chunk may start or end inside
        a word, and the word's remnant can take more tokens on its own than in context, so each chunk
        is counted again and one over the size is merged again, smaller."""
        out = []
        limit = self.size if limit is None else limit
        for lo, hi in self._merge(pieces, bounds, sizes, limit):
            if self._clean_cut(lo) and self._clean_cut(hi):
                out.append((lo, hi))
                continue
            excess = len(self.token_spans(self._text[lo:hi])) - self.size
            if excess <= 0 or limit <= 8:
                out.append((lo, hi))
                continue
            inner = list(range(bisect.bisect_left(bounds, lo), bisect.bisect_left(bounds, hi)))
            out += self._merge_words(inner, bounds, sizes, limit - excess)
        return out

    def _clean_cut(self, p: int) -> bool:
        """Whether a chunk edge at p leaves the tokens on both sides as they were in context: at the
        text's ends, next to whitespace, or inside a word read as one unknown token (its remnant takes
        at most one token per character, as it was counted)."""
        text = self._text
        if p <= 0 or p >= len(text) or text[p - 1].isspace() or text[p].isspace():
            return True
        i = bisect.bisect_right(self._long, (p, p)) - 1
        return i >= 0 and self._long[i][0] < p < self._long[i][1]

    def _merge(self, pieces: list[int], bounds: list[int], sizes: list[int], limit: int) -> list[tuple[int, int]]:
        """RecursiveCharacterTextSplitter._merge_splits: consecutive pieces up to `limit` tokens, the
        next chunk starting with the last whole pieces of at most `overlap` tokens."""
        out: list[tuple[int, int]] = []
        current: list[int] = []
        overlap = min(self.overlap, limit // 2)
        head, total = 0, 0         # current[head:] is the chunk being built, `total` its tokens
        for i in pieces:
            size = sizes[i]
            if total + size > limit and head < len(current):
                out.append((bounds[current[head]], bounds[current[-1] + 1]))
                while head < len(current) and (total > overlap or (total + size > limit and total > 0)):
                    total -= sizes[current[head]]
                    head += 1
            current.append(i)
            total += size
        if head < len(current):
            out.append((bounds[current[head]], bounds[current[-1] + 1]))
        return out


def make_splitter(token_spans: TokenSpans, chunk_tokens: int, overlap_tokens: int) -> Splitter:
    return Splitter(token_spans, chunk_tokens, overlap_tokens)


def title_of(source: str) -> str:
    """'docs/Samoa_history.txt' -> 'Samoa history': a document's name often says what it is about."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def chunk_sections(sections: list[Section], source: str, splitter: Splitter) -> list[Chunk]:
    title = title_of(source)
    chunks: list[Chunk] = []
    for section in sections:
        header = title if not section.location or section.location.startswith("page ") else \
            f"{title} > {section.location}"
        for start, text in splitter.split(section.text):
            chunks.append(Chunk(text=text, embed_text=f"{header}\n{text}", location=section.location, start=start))
    return chunks
