"""Drop the sources' labels the model copies from its prompt into the answer.

The prompt heads each passage with its label, "[1] (kettle-manual.md, Aurora K2 Electric Kettle — User
Manual > Temperature settings)". The 135 M model often writes such a label back as if it were part
of the answer: "The source is [1] (kettle-manual.md, Aurora K2 … > Temperature settings)" or a list of
"1. [1] (vaccination-schedule.pdf, page 1)" before (or instead of) the answer, 4 of 8 answers over a
manual, a PDF and a web page (seen as a new user). The page already shows every source with its name
and heading, so a label in the text says nothing; and its words are the sources' words, so the
grounding filter after this one would let "The source is …" through.

A parenthesis is held from its "(" while everything in it could still be a label: the sources' file
names (with or without extension), their headings and locations (page numbers), separators and
digits. It is dropped when it closes (or the answer ends) as nothing but those; the first word that
cannot belong to a label releases it as written, so "(about 80 degrees)" streams with a few
characters' delay at most. A file name written out with its extension outside any parenthesis
("1. Alaska.txt", "from the History_of_science.txt", squad-train) is dropped the same way: a word
is held only while it could still become one.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from rag.answer.grounding import content_words, file_name, name_pattern

# What a label holds besides names: "page 3", "pages 3-4", "p. 3", "section", "chapter", separators.
_LABEL_WORDS = frozenset("page pages p section chapter part heading file".split())
_WORD = re.compile(r"[A-Za-z0-9]+")


class LabelFilter:
    def __init__(self, names: Iterable[str]):
        """`names`: each source's name and location as the prompt labels them."""
        whole: set[str] = set()
        for name in names:
            if not name:
                continue
            whole |= {name, file_name(name)}
            whole |= {part.strip() for part in re.split(r"\s*[>/|]\s*", name) if part.strip()}
        patterns = [p for p in (name_pattern(n) for n in sorted(whole, key=len, reverse=True)) if p]
        self._names = re.compile("|".join(patterns), re.IGNORECASE) if patterns else None
        self._vocabulary = {w.lower() for n in whole for w in _WORD.findall(n)} | _LABEL_WORDS
        self._longest = max((len(n) for n in whole), default=0) * 2 + 40
        self.held = ""            # from an open "(" on, while it may be a label
        self.space = ""           # whitespace not yet passed on
        self.word = ""            # a word that may be a file name written out, while it may
        self.last = " "           # the last character passed on (a file name starts a word)
        # file names as written with their extension (lower case): a word like that names a source
        self._files = {file_name(n).lower() for n in names if n and re.search(r"\.\w{1,5}$", file_name(n))}
        self.dropped: list[str] = []

    def is_label(self, group: str) -> bool:
        """`group` ("(…)" or an unclosed "(…") names sources and nothing else."""
        if self._names is None:
            return False
        inner = group.strip().lstrip("(").rstrip(")").strip()
        if not inner or not self._names.search(inner):
            return False
        rest = self._names.sub(" ", inner)
        return not {w for w in content_words(rest) if w not in _LABEL_WORDS and not w.isdigit()}

    def _may_be_label(self, held: str) -> bool:
        """Every complete word so far could belong to a label (the last may still be growing)."""
        if len(held) > self._longest or "\n" in held:
            return False
        words = _WORD.findall(held)
        if held[-1:].isalnum():
            words = words[:-1]
        return all(w.lower() in self._vocabulary or w.isdigit() for w in words)

    def feed(self, delta: str) -> str:
        out = []
        for ch in delta:
            if piece := self._char(ch):
                out.append(piece)
                self.last = piece[-1]
        return "".join(out)

    def _char(self, ch: str) -> str:
        if self.word:
            return self._in_file_name(ch)
        if self.held:
            self.held += ch
            if ch == ")":
                return self._settle()
            if not self._may_be_label(self.held.lstrip()):
                if ch != "(":
                    text, self.held = self.held, ""
                    return text
                text, self.held, self.last = self.held[:-1], "", self.held[-2]
                return text + self._char(ch)
            return ""
        if ch == "(":
            # the space in front goes with a dropped label: "12 weeks (x.pdf)." -> "12 weeks."
            self.held, self.space = self.space + ch, ""
            return ""
        if ch.isspace():
            self.space += ch          # held one character, to know whether a label follows
            return ""
        if ch.isalnum() and (self.space or not self.last.isalnum()) and self._file_name_prefix(ch):
            self.word, self.space = self.space + ch, ""
            return ""
        out, self.space = self.space + ch, ""
        return out

    def _file_name_prefix(self, text: str) -> bool:
        low = text.lower()
        return any(f.startswith(low) for f in self._files)

    def _in_file_name(self, ch: str) -> str:
        """A word that may be a source's file name written out ("Alaska.txt"): dropped when it is one."""
        word = self.word + ch
        bare = word.lstrip()
        if bare.lower() in self._files:
            self.dropped.append(bare)
            self.word = ""
            return ""
        if self._file_name_prefix(bare):
            self.word = word
            return ""
        self.word, self.last = "", word[-2]
        return word[:-1] + self._char(ch)

    def _settle(self) -> str:
        held, self.held = self.held, ""
        if self.is_label(held):
            self.dropped.append(held.strip())
            return ""
        return held

    def flush(self) -> str:
        """At the end of the answer: an unclosed parenthesis that is a label is dropped too (a label the
        repetition guard cut off while it looped)."""
        out = self._settle() if self.held else ""
        out, self.space, self.word = out + self.word + self.space, "", ""
        return out
