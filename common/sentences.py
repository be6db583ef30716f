"""Cut a streamed answer into sentences as soon as each is complete, and make text fit to be spoken.

Pure text code (no audio, no models) so it can be tested exhaustively.

`SentenceSplitter` receives the LLM's text deltas. A sentence is emitted when the character that
decides its end has arrived: the next non-space character after ". ", "? ", "! " (it must not be
lowercase, and the period must not belong to "Dr." or "e.g."), or a line break (list items, headings,
paragraphs). Every decision looks only at text already received and waits while the answer is still
open, so the result does not depend on how the stream was chunked: feeding "Hi. Yo" at once or
character by character gives the same sentences. Emitted sentences are the raw text (markdown and
[n] citations included, whitespace at the ends stripped); `speakable()` turns one into what the voice
should say. Pieces with nothing to say ("---", "[1]") are not emitted alone but carried into the next
sentence, so no text is lost.
"""
from __future__ import annotations

import re

TERMINATORS = ".!?…"
# Characters that close a sentence after its terminator: quotes, brackets, markdown emphasis.
CLOSERS = "\"'”’»)]}*_`"
# Never the end of a sentence: titles before a name and Latin abbreviations inside one.
NEVER_END = {
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "ft", "rev", "gen", "sen", "rep", "gov", "capt", "lt",
    "col", "sgt", "cpl", "vs", "cf", "approx", "e.g", "i.e", "eg", "ie", "viz", "esp",
}
# May end a sentence; only when the next word is capitalised ("etc. The" yes, "etc. and" no).
MAYBE_END = {"etc", "inc", "ltd", "co", "corp", "jr", "sr", "al", "a.m", "p.m", "bros"}
# Before a number they are abbreviations ("No. 5", "p. 12", "Fig. 3"); otherwise ordinary words.
BEFORE_NUMBER = {"no", "nos", "p", "pp", "vol", "ch", "sec", "art", "fig", "eq", "ref", "op"}
_DOTTED = re.compile(r"(?:[a-z]\.)+[a-z]", re.IGNORECASE)  # U.S, e.g, a.m
_CITATION = re.compile(r"\[\d+(?:\s*[,;–-]\s*\d+)*\]")
# What a citation can look like before its "]" arrives: "[", "[1", "[1 ", "[1, ", "[1, 2".
_CITATION_PREFIX = re.compile(r"\[(?:\d+(?:\s*[,;–-]\s*\d+)*(?:\s*(?:[,;–-]\s*)?)?)?")
_WORD = re.compile(r"\w")

_UNDECIDED = "undecided"
_NO = "no"


def _match_citation(buf: str, k: int, final: bool):
    """At buf[k] == "[": end index of a complete [n] / [n, m] marker, _UNDECIDED, or None (not one)."""
    m = _CITATION.match(buf, k)
    if m:
        return m.end()
    p = _CITATION_PREFIX.match(buf, k)
    if p and p.end() == len(buf) and not final:
        return _UNDECIDED  # "[1" so far: could still become a citation
    return None


def _word_before(buf: str, i: int) -> str:
    start = i
    while start > 0 and not buf[start - 1].isspace() and buf[start - 1] not in "([{\"'“‘*_":
        start -= 1
    return buf[start:i]


def _at_line_start(buf: str, start: int) -> bool:
    j = start - 1
    while j >= 0 and buf[j] in " \t>":
        j -= 1
    return j < 0 or buf[j] == "\n"


def _period_allows_end(buf: str, i: int, nxt: str) -> bool:
    """Whether "." at buf[i] can end a sentence when the next word starts with `nxt`."""
    word = _word_before(buf, i)
    low = word.lower()
    if low in NEVER_END or low.rstrip(".") in NEVER_END:
        return False
    if low in MAYBE_END:
        return nxt.isupper()
    if low in BEFORE_NUMBER and nxt.isdigit():
        return False
    if len(word) == 1 and word.isupper():  # an initial: "J. K. Rowling"
        return False
    if _DOTTED.fullmatch(word):  # "U.S. Army": merging two sentences is cheaper than a wrong pause
        return False
    if word.isdigit() and len(word) <= 3 and _at_line_start(buf, i - len(word)):
        return False  # a numbered list marker "1. "
    return True


def _decide(buf: str, i: int, final: bool):
    """Terminator at buf[i]: (sentence_end, rest_start) if the sentence ends here, _NO, or _UNDECIDED."""
    n = len(buf)
    if i + 1 < n and buf[i + 1] in TERMINATORS:
        return _NO  # "..." or "?!": the last of the run decides
    j = i + 1
    while j < n and buf[j] in CLOSERS:
        j += 1
    end = j  # the sentence ends after the closers and any citation markers
    while True:
        k = j
        newline = False
        while k < n and buf[k].isspace():
            newline = newline or buf[k] == "\n"
            k += 1
        if newline:
            return end, k
        if k == n:
            return (end, n) if final else _UNDECIDED
        if buf[k] == "[":
            cited = _match_citation(buf, k, final)
            if cited is _UNDECIDED:
                return _UNDECIDED
            if cited is not None:  # "...in 1742. [1]": the marker belongs to this sentence
                end = j = cited
                continue
        break
    if k == end:
        return _NO  # no space after: "3.14", "e.g.x", "example.com"
    nxt = buf[k]
    if nxt.islower():
        return _NO
    if buf[i] == "." and not _period_allows_end(buf, i, nxt):
        return _NO
    return end, k


def _soft_cut(buf: str, limit: int) -> tuple[int, int]:
    """Where to cut a run-on longer than `limit`: after the last clause comma, else at the last space.

    Looks only at buf[:limit + 1] (the caller knows that much has arrived) and never cuts inside
    brackets, so a citation or a link is not split in two.
    """
    depth = 0
    clause = space = -1
    for p in range(limit):
        ch = buf[p]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and ch.isspace():
            space = p
        elif depth == 0 and ch in ",;:—" and buf[p + 1].isspace():
            clause = p + 1
    floor = limit // 3  # do not cut off a tiny first piece just because a comma came early
    if clause >= floor:
        return clause, clause
    if space >= floor:
        return space, space + 1
    return limit, limit  # no usable space at all (a long URL): a hard cut


def _next_cut(buf: str, final: bool, limit: int, clause: int = 0):
    """The first sentence in `buf`: (end, rest_start), or None while it is not yet decided. With
    `clause`, a clause ending at a comma, semicolon or colon followed by a space counts as a sentence
    once it is at least that many characters long (never inside brackets: "[1, 2]")."""
    depth = 0
    for i, ch in enumerate(buf):
        if i >= limit:
            return _soft_cut(buf, limit)
        if ch == "\n":
            return i, i + 1
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif (clause and depth == 0 and ch in ",;:" and i + 1 >= clause and i + 1 < len(buf)
              and buf[i + 1].isspace() and buf[i + 1] != "\n"):
            return i + 1, i + 2
        if ch in TERMINATORS:
            decided = _decide(buf, i, final)
            if decided is _UNDECIDED:
                return None
            if decided is not _NO:
                return decided
    if final and buf.strip():
        return len(buf), len(buf)
    return None


def has_words(text: str) -> bool:
    """Whether `text` has anything to say once markup and citations are removed."""
    return bool(_WORD.search(speakable(text)))


class SentenceSplitter:
    """Feed text deltas, get back the sentences they complete.

    max_chars: a sentence running longer than this without an end is cut at a comma or space so that
    speech can start. clean: return `speakable()` text instead of the raw sentence. first_clause: the
    first piece may end at a clause (", " "; " ": ") once it has this many characters, so the voice can
    start before the whole first sentence is written (0: whole sentences only).
    """

    def __init__(self, max_chars: int = 300, clean: bool = False, first_clause: int = 0):
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = max_chars
        self.clean = clean
        self.first_clause = first_clause
        self._emitted = False
        self._buf = ""
        self._carry = ""  # pieces with no words, waiting to be prefixed to the next sentence

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """Everything left, at the end of the stream; the splitter is then ready for a new stream."""
        out = self._drain(final=True)
        self._buf = self._carry = ""
        self._emitted = False
        return out

    def _drain(self, final: bool) -> list[str]:
        out: list[str] = []
        while True:
            cut = _next_cut(self._buf, final, self.max_chars, 0 if self._emitted else self.first_clause)
            if cut is None:
                return out
            end, rest = cut
            piece, self._buf = self._buf[:end].strip(), self._buf[rest:]
            if piece:
                # A line break keeps the carried "---" on its own line, where speakable() drops it.
                sentence = f"{self._carry}\n{piece}" if self._carry else piece
                if has_words(piece):
                    self._carry = ""
                    self._emitted = True
                    out.append(speakable(sentence) if self.clean else sentence)
                else:
                    self._carry = sentence
            if not self._buf:
                return out


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """All sentences of a complete text (the same cut the streaming splitter makes)."""
    splitter = SentenceSplitter(max_chars=max_chars)
    return splitter.feed(text) + splitter.flush()


# --- speakable -----------------------------------------------------------------------------------
_CITATIONS = r"(?:\[\d+(?:\s*[,;–-]\s*\d+)*\])+"
_SUBS = [
    (re.compile(r"```[^\n]*"), " "),                                   # code fences (their language tag too)
    (re.compile(r"!?\[([^\]\n]*)\]\([^)\s]*\)"), r"\1"),                # [text](url), ![alt](src) -> text
    # A source label copied from the prompt ("[1] (solar-garden.md, paragraph 3)"): a small model
    # sometimes repeats it, and a file name read aloud is noise. Only parentheses naming a file go.
    (re.compile(r"\s*(?:" + _CITATIONS + r")?\s*\([^()\n]*?\b[\w.-]+\.(?:txt|md|markdown|pdf|html?|docx)\b[^()\n]*\)"),
     " "),
    (re.compile(r"\s*" + _CITATIONS), " "),                             # [1] [1][3] [1, 2] [2-4]
    (re.compile(r"(?m)^\s{0,3}#{1,6}\s+"), ""),                        # # headings
    (re.compile(r"(?m)^\s*>\s?"), ""),                                  # > quotes
    (re.compile(r"(?m)^\s*(?:[-*_]\s*){3,}$"), " "),                    # --- rules
    (re.compile(r"(?m)^\s*(?:[-*+•]|\d{1,3}[.)])\s+"), ""),            # list bullets and numbers
    (re.compile(r"(\*{1,3})(?=\S)(.+?)(?<=\S)\1"), r"\2"),              # **bold**, *em*
    (re.compile(r"(?<!\w)(_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)"), r"\2"),   # __bold__, _em_ (not snake_case)
    (re.compile(r"`+([^`]*)`+"), r"\1"),                                # `code`
    (re.compile(r"(?<=\S)\*+|\*+(?=\S)"), ""),                          # leftover emphasis stars
    (re.compile(r"https?://\S+"), " link "),                            # a URL read out letter by letter is noise
    (re.compile(r"\s+([.,;:!?])"), r"\1"),                              # space left before punctuation
]


def speakable(text: str) -> str:
    """Text as it should be spoken: no citation markers, no markdown, one line, single spaces."""
    for pattern, repl in _SUBS:
        text = pattern.sub(repl, text)
    return " ".join(text.split())


def title_lines(lines: list[str]) -> set[int]:
    """Indexes of plain-text title lines: a short line with no closing punctuation, after a blank line, a
    sentence's end (a PDF's text has no blank lines) or at the start, shorter than the line after it, which
    starts a sentence ("1. Swimming pool renovation" over "The council approved..."). Read as a hard wrap,
    the title ran into the sentence under it.
    Shorter than the next line: a paragraph's first line in a narrow PDF column is as long as the rest."""
    found = set()
    for i, line in enumerate(lines[:-1]):
        after = lines[i + 1].strip()
        if (0 < len(re.findall(r"[A-Za-z0-9]+", line)) <= 8 and len(line.strip()) <= min(60, 0.7 * len(after))
                and not re.search(r"[.!?:;,]\W*$", line)
                and (i == 0 or not lines[i - 1].strip() or re.search(r"[.!?]\W*$", lines[i - 1]))
                and re.match(r"[A-Z0-9\"'(]", after)):
            found.add(i)
    return found


_FIELD = re.compile(r"^[A-Z][\w-]{0,20}: \S.{0,80}$")


def field_line(line: str) -> bool:
    """A header field of an e-mail or a form, "From: Priya Nair" or "Subject: Re: Offsite planning": in a
    run of them each is a line of its own (as a table's rows are), not a hard wrap of one sentence."""
    return bool(_FIELD.match(line))


_QUOTE_MARKS = re.compile(r"(?m)^[ \t]*(?:>[ \t]?)+")


def without_quote_marks(text: str) -> str:
    """An e-mail's quoted lines without their "> " marks ("> The budget we agreed is 9,000 pounds.")."""
    return _QUOTE_MARKS.sub("", text)

