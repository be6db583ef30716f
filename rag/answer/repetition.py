"""Stop a small model that starts writing the same sentence again.

Greedy decoding makes a 135M model loop ("X weighs 2.4 kg. X weighs 2.4 kg. ..."). The guard sits
between the model and the user: while the sentence being written could still turn out to be a
repeat of an earlier one, its text is held back; if it completes as a repeat, it is dropped and
generation stops; as soon as it differs, the held text is released. So nothing repeated is ever
shown or spoken, and ordinary text streams without delay.
"""
from __future__ import annotations

import re

SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*\s$|\n$")
CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")


def _norm(text: str) -> str:
    return " ".join(CITATION.sub(" ", text).lower().split())


class RepetitionGuard:
    def __init__(self, min_chars: int = 12):
        self.min_chars = min_chars
        self.seen: list[str] = []
        self.sentence = ""      # the sentence being written: released part + held part
        self.held = ""
        self.stopped = False

    def _could_repeat(self, partial: str) -> bool:
        return bool(partial) and any(s.startswith(partial) for s in self.seen)

    def feed(self, delta: str) -> str:
        """Text that may be shown now ('' while holding). After a repeat, `stopped` is True."""
        out = []
        for ch in delta:
            if self.stopped:
                break
            self.sentence += ch
            self.held += ch
            if SENTENCE_END.search(self.sentence):
                done = _norm(self.sentence)
                if len(done) >= self.min_chars and done in self.seen:
                    self.stopped = True
                    self.held = ""
                    break
                if done:
                    self.seen.append(done)
                out.append(self.held)
                self.held, self.sentence = "", ""
            elif not self._could_repeat(_norm(self.sentence)):
                out.append(self.held)
                self.held = ""
        return "".join(out)

    def flush(self) -> str:
        """At the end of the stream: an unfinished sentence is shown unless it merely echoes an earlier one."""
        rest, self.held = self.held, ""
        if self.stopped or (_norm(self.sentence) and self._could_repeat(_norm(self.sentence))):
            return ""
        return rest
