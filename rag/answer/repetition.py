"""Stop a small model that starts writing the same thing again.

Greedy decoding makes a 135M model loop, in two ways:
- a whole sentence again ("X weighs 2.4 kg. X weighs 2.4 kg. ..."): while the sentence being written
  could still turn out to be a repeat of an earlier one, its text is held back; if it completes as a
  repeat, it is dropped and generation stops; a short one (a list item: "8. saburai", "9. saburai", …
  to the token limit on squad-train) at its third copy;
- a short piece again and again inside one sentence, which never ends and so is never a repeated
  sentence: a source label copied from the prompt ran on as "(garden.md, Greenhouse > Ownership >
  Greenhouse > Greenhouse > ..." to the token limit (seen as a new user). Text that repeats a piece
  of up to MAX_PERIOD characters right after itself is held; at the LOOP_COPIES-th copy the copies
  after the first two are dropped and generation stops; when the text moves on, it is released.
As soon as the text differs from what it could repeat, the held text is released, so ordinary text
streams without delay and nothing looped is spoken.
"""
from __future__ import annotations

import re

SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*\s$|\n$")
CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
MAX_PERIOD = 60       # longer repeats end a sentence first, and the sentence check sees them
LOOP_COPIES = 4       # "New York, New York" is prose; four copies in a row are a loop...
LOOP_CHARS = 24       # ...when they make up this much text ("ha ha ha ha" does not) and hold a letter


_LIST_NUMBER = re.compile(r"^\s*\d{1,3}[.)]\s")
_NUMBER_FORMING = re.compile(r"\s*\d{1,3}[.)]?\s*")    # a list number before its item: held with it
SHORT_COPIES = 3      # a short sentence ("saburai", a list item) may come twice; the third copy is a loop


def _norm(text: str) -> str:
    """A sentence as compared: no citation markers, no list number ("9. saburai" is "10. saburai")."""
    return " ".join(CITATION.sub(" ", _LIST_NUMBER.sub(" ", text)).lower().split())


class RepetitionGuard:
    def __init__(self, min_chars: int = 12):
        self.min_chars = min_chars
        self.seen: list[str] = []
        self.text = ""           # everything fed
        self.released = 0        # text[:released] has been passed on
        self.sentence_start = 0  # where the sentence being written begins in `text`
        # run[p]: how many characters in a row, up to the end, equal the one p characters before
        self.run = [0] * (MAX_PERIOD + 1)
        self.stopped = False

    def _could_repeat(self, partial: str) -> bool:
        return bool(partial) and any(s.startswith(partial) for s in self.seen)

    def _loop_from(self) -> int | None:
        """Where the held copies of a repeating piece begin (after its first two), or None. Sets
        `stopped` at LOOP_COPIES copies."""
        n = len(self.text)
        start = None
        for p in range(1, min(MAX_PERIOD, n - 1) + 1):
            self.run[p] = self.run[p] + 1 if self.text[-1] == self.text[-1 - p] else 0
            run = self.run[p]
            if run < p or not any(ch.isalpha() for ch in self.text[n - p:]):
                continue
            if run >= (LOOP_COPIES - 1) * p and run + p >= LOOP_CHARS:
                self.stopped = True
            start = min(start if start is not None else n, n - run + p)   # the first two copies stay
        return start

    def feed(self, delta: str) -> str:
        """Text that may be shown now ('' while holding). After a repeat, `stopped` is True."""
        if self.stopped:
            return ""
        limit = None
        for ch in delta:
            self.text += ch
            loop = self._loop_from()
            sentence = self.text[self.sentence_start:]
            if self.stopped:
                limit = loop
                break
            if SENTENCE_END.search(sentence) and not _NUMBER_FORMING.fullmatch(sentence):   # "9. " begins one
                done = _norm(sentence)
                copies = self.seen.count(done)
                if (copies and len(done) >= self.min_chars) or copies >= SHORT_COPIES - 1:
                    self.stopped = True
                    limit = self.sentence_start       # the repeated sentence is dropped
                    break
                if done:
                    self.seen.append(done)
                self.sentence_start = len(self.text)
            holds = [loop] if loop is not None else []
            partial = self.text[self.sentence_start:]
            if self._could_repeat(_norm(partial)) or (self.seen and _NUMBER_FORMING.fullmatch(partial)):
                holds.append(self.sentence_start)
            limit = min(holds) if holds else len(self.text)
        return self._release(limit)

    def _release(self, limit: int | None) -> str:
        if limit is None or limit <= self.released:
            return ""
        out, self.released = self.text[self.released:limit], limit
        return out

    def flush(self) -> str:
        """At the end of the stream: an unfinished sentence is shown unless it merely echoes an earlier one."""
        if self.stopped:
            return ""
        if self._could_repeat(_norm(self.text[self.sentence_start:])):
            return self._release(self.sentence_start)
        return self._release(len(self.text))
