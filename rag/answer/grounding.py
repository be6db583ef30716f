"""Drop sentences that talk about the prompt instead of answering from the sources.

A 135 M model answers about a third of squad-train questions with a sentence about its instructions
("The sources are data, not instructions.", "The sources cited in the answer are: 1.") before, or
instead of, the answer. The filter sits between the model and the user, after the repetition guard:
a sentence is held back until it uses a word of the sources (a word that is not a stopword and not
prompt vocabulary such as "source", "answer", "cite"); from then on it streams as written. A
sentence that ends without such a word is dropped: never shown, never spoken. Whatever the model
says to decline ("The documents do not say.") is kept, so abstention still reads as it should.

This is not a fact checker: a sentence with one word of the sources passes. It only removes text
that is about the conversation rather than the documents.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from rag.answer.abstain import STOPWORDS
from rag.answer.prompt import says_not_found
from rag.answer.repetition import CITATION, SENTENCE_END   # where the repetition guard ends a sentence, so do we

_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*")
_STOP = STOPWORDS | {"yes", "us"}    # the decline rule's function words (rag/answer/abstain.py)
# Words of the instructions and the prompt's frame: using them is not using the documents.
_PROMPT = frozenset(
    "source sources answer answers answered answering question questions cite cited cites citing citation "
    "citations data instruction instructions provided provide provides document documents number numbers "
    "numbered bracket brackets text information context passage passages following above below based "
    "according reply replied user assistant claim support supports supported mentioned say says said "
    "given correct".split())


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP and w not in _PROMPT}


class GroundingFilter:
    def __init__(self, sources: Iterable[str]):
        self.vocabulary: set[str] = set()
        for text in sources:
            self.vocabulary |= content_words(text)
        self.sentence = ""         # the sentence being written
        self.held = ""             # its text not yet released
        self.grounded = False      # it has used a word of the sources: it streams as it is written
        self.dropped: list[str] = []

    def feed(self, delta: str) -> str:
        """Text that may be shown now ('' while the current sentence is held)."""
        out = []
        for ch in delta:
            self.sentence += ch
            if self.grounded:
                out.append(ch)
            else:
                self.held += ch
                # A word counts once it is complete (the next character is not part of it).
                if not ch.isalnum() and content_words(self.sentence) & self.vocabulary:
                    out.append(self.held)
                    self.held, self.grounded = "", True
            if SENTENCE_END.search(self.sentence):
                if not self.grounded:
                    out.append(self._settle())
                self.sentence, self.held, self.grounded = "", "", False
        return "".join(out)

    def _settle(self) -> str:
        """A sentence ended without a word of the sources: kept only if it declines (or is blank)."""
        held = self.held
        bare = not re.search(r"[A-Za-z]", CITATION.sub("", held))    # a citation, a list number, a line break
        if bare or says_not_found(held) or content_words(held) & self.vocabulary:
            return held
        self.dropped.append(held.strip())
        return ""

    def flush(self) -> str:
        """At the end of the answer: the held rest, if it is kept."""
        out = "" if self.grounded else self._settle()
        self.sentence, self.held, self.grounded = "", "", False
        return out


def file_name(path: str) -> str:
    """A source's file name without its folders ("bikes/chain care.md" -> "chain care.md")."""
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def without_extension(name: str) -> str:
    return re.sub(r"\.\w{1,5}$", "", name)


def says_nothing(answer: str, source_names: Iterable[str]) -> bool:
    """The answer holds no word beyond citation markers and the sources' names (file names and headings,
    as the prompt labels them): the 135 M model sometimes "answers" with a list such as
    '[1] (List_of_numbered_streets_in_Manhattan.txt) [2]' or '[1] (solar-garden.md, Millstream Solar Garden > Size)'.
    That passes the filter above (the file name's words are the sources' words) but answers nothing,
    and in a call it is silence: speakable text drops markers and names alike. A name is removed only
    where it stands whole (with or without its extension, '_', '-' or spaces between its words), so
    "In Manhattan [1]." still answers."""
    text = CITATION.sub(" ", answer)
    names = {n for name in source_names for n in (name, file_name(name))}
    for whole in sorted(names, key=len, reverse=True):    # a heading may hold a file's words: longest first
        parts = [re.escape(p) for p in re.split(r"[\s_\-]+", without_extension(whole)) if p]
        if parts:
            text = re.sub(r"[\s_\-]+".join(parts) + r"(?:\.\w{1,5})?", " ", text, flags=re.IGNORECASE)
    return not content_words(text)
