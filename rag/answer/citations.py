"""Drop citation markers that point at no source, as the answer streams.

The 135 M model numbers its own lists and relabels passages: with two sources it wrote
"[3] (bicycle-care.txt, 2022) Dynamo lights…" and "[4] [1]" (seen as a new user, in a call). A "[3]"
the page cannot open is worse than none: the reader looks for a third source that does not exist.
Markers in range stay as written; "[1, 3]" keeps "[1]". Text is held only while a marker may be
forming (from "[" through digits, commas and spaces), so the stream is delayed by a few characters
at most.
"""
from __future__ import annotations

import re

from rag.answer.repetition import CITATION    # what a whole marker is, as the other filters see it

_FORMING = re.compile(r"\[[\d\s,]*")                 # what a marker looks like before its "]"
MAX_MARKER = 24                                      # longer than any marker: it is text, let it go


class CitationFilter:
    def __init__(self, n_sources: int):
        self.n_sources = n_sources
        self.held = ""
        self.dropped: list[str] = []

    def feed(self, delta: str) -> str:
        out = []
        for ch in delta:
            if not self.held:
                if ch == "[":
                    self.held = ch
                else:
                    out.append(ch)
                continue
            self.held += ch
            if ch == "]":
                out.append(self._settle(self.held))
                self.held = ""
            elif not _FORMING.fullmatch(self.held) or len(self.held) > MAX_MARKER:
                # not a marker after all; a "[" that ends it may begin one
                text, self.held = (self.held[:-1], "[") if ch == "[" else (self.held, "")
                out.append(text)
        return "".join(out)

    def _settle(self, marker: str) -> str:
        if not CITATION.fullmatch(marker):
            return marker
        numbers = [int(n) for n in re.findall(r"\d+", marker)]
        kept = [n for n in numbers if 1 <= n <= self.n_sources]
        if len(kept) == len(numbers):
            return marker
        self.dropped.append(marker)
        return f"[{', '.join(map(str, kept))}]" if kept else ""

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
