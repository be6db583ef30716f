"""The sentences of the retrieved passages that match the question, and the evidence line.

A 135 M model often answers beside the point even when the passage holds the answer, while the one
sentence of the passages closest to the question holds the answer far more often (squad-train:
0.60 of questions for the best sentence, against 0.25 for the model's answer; bench/RESULTS.md). So
after the model's answer the pipeline quotes that sentence, word for word, with the number of its
source: `Source [1]: "..."`. It makes a weak answer checkable, never invents text (it is a verbatim
copy of indexed text), and is shown but not spoken (voice answers stay short).

The same ranking gives rag/answer/abstain.py its "support" signal (the best sentence's similarity).
Pure functions around an `embed(texts) -> unit vectors` callable, so tests can pass a fake.
"""
from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.answer.abstain import question_terms, terms
from rag.answer.grounding import file_name, without_extension
from rag.events import Hit
from common.sentences import field_line, split_sentences, title_lines, without_quote_marks

Embed = Callable[[list[str]], np.ndarray]
_WORDS = re.compile(r"[A-Za-z0-9]+")
_SPACE = re.compile(r"\s+")
_HEADING = re.compile(r"(?m)^[ \t]{0,3}#{1,6}[ \t].*$")
_WRAP = re.compile(r"(?<=\S)[ \t]*\n(?![ \t]*\n)")
EVIDENCE_POOL = 5     # the quote is chosen among this many best-matching sentences...
WORD_BONUS = 0.5      # ...by cosine + this times the (IDF-weighted) share of the question's words it has
IN_CONTEXT = 0.5      # for the quote, a sentence's cosine is half its own, half read after the one before it
KIND_BONUS = 0.15     # ...and this when the question asks for an amount (money, a number) the sentence has

# What a question asks for, and how a sentence that has it looks (`asks_for`).
_ASKS_MONEY = re.compile(r"\bhow much\b.*\b(?:cost|costs|pay|paid|charge|charged|price|fee|fees|spend|worth|rent)\b"
                         r"|\b(?:what|which)(?: is| was| are)?(?: the)? (?:price|cost|fee|fees|rent|charge)\b", re.I)
_ASKS_NUMBER = re.compile(r"^\W*(?:and |so |but )?(?:how (?:much|many|long|old|far|big|large|tall|high|often|deep|wide)\b"
                          r"|(?:in |during |by )?(?:what|which) (?:year|decade|century|date|percentage|percent|number)\b"
                          r"|when\b)", re.I)
_MONEY = re.compile(r"[$€£¥]\s?\d|\d\s?[$€£¥]|\b(?:euros?|dollars?|pounds?|cents?|pence|francs?|yen|usd|eur|gbp|chf)\b"
                    r"|\bfree of charge\b|\bfor free\b|\bis free\b|\bare free\b", re.I)
_NUMBER = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
                     r"hundred|thousand|million|billion|dozen|half|twice|january|february|march|april|june|july|"
                     r"august|september|october|november|december|century)\b", re.I)


def asks_for(question: str) -> re.Pattern | None:
    """The pattern of what the question asks for: money ("How much does one share cost?"), a number or a
    date ("How many...", "When..."), or None."""
    if _ASKS_MONEY.search(question):
        return _MONEY
    return _NUMBER if _ASKS_NUMBER.search(question) else None


@dataclass(frozen=True)
class Sentence:
    source: int        # 1-based number of its passage among the sources given to the model
    position: int      # order within the passage
    text: str
    score: float       # best cosine similarity to the question (over the query texts)


def _layout_lines(text: str) -> str:
    """Plain-text layout read as the sentence breaks it means. Titles (common/sentences.py `title_lines`) are
    blanked out: joined to the next line as a hard wrap, "1. Swimming pool renovation" became one sentence
    with "The council approved...", which the model and the quote copied title and all (seen as a new user,
    in council minutes). A run of header fields (`field_line`) is a line each, closed: "From: Priya Nair
    To: Tom Berger Subject: ..." was one sentence, copied into an answer."""
    lines = text.split("\n")
    for i in title_lines(lines):
        lines[i] = ""
    for i, line in enumerate(lines):
        if field_line(line) and any(0 <= j < len(lines) and field_line(lines[j]) for j in (i - 1, i + 1)):
            lines[i] = _closed(line.rstrip()) + "\n"
    return "\n".join(lines)


def sentences_of(text: str) -> list[str]:
    """A passage's sentences, one line each. Markdown headings are dropped (a title states nothing, yet
    it is short and on topic, so it would outrank the sentence that answers), plain-text titles too
    (`_layout_lines`), and so are lines of fewer than four words ("Tyre pressure.", list debris). An
    e-mail's header fields stand a line each and its quote marks go ("From: Priya Nair To: Tom Berger
    Subject: ..." was one sentence, which the model copied; seen as a new user)."""
    out = []
    text = _layout_lines(without_quote_marks(_HEADING.sub("", text)))
    text = _WRAP.sub(" ", text)    # hard-wrapped lines (PDF, plain text) are not sentence ends; blank lines are
    for sentence in split_sentences(text, max_chars=400):
        sentence = _SPACE.sub(" ", sentence).strip()
        if len(_WORDS.findall(sentence)) >= 4:
            out.append(sentence)
    return out


class SentenceVectors:
    """`embed` with a memory: the vectors of texts seen before (the sentences of passages that keep
    being retrieved, repeated questions) are looked up, and only the new ones are embedded, in one
    batch. Every question ranks the sentences of its passages (the decline rule and the evidence
    quote); a server answering questions about the same documents embeds each sentence once. Keyed
    by the text itself, so a re-ingested document needs nothing invalidated (same text, same vector);
    bounded (least recently used out), so memory stays at `size` vectors (384 floats: 1.5 KB each).
    Shared by the threads of one server, hence the lock; embedding runs outside it."""

    def __init__(self, embed: Embed, size: int = 8192):
        self._embed, self.size = embed, size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            for t in found:
                self._vectors.move_to_end(t)
            self.hits += len(found)
        new = list(dict.fromkeys(t for t in texts if t not in found))
        if new:
            fresh = self._embed(new)
            found.update(zip(new, fresh))
            with self._lock:
                self.misses += len(new)
                self._vectors.update(zip(new, fresh))
                while len(self._vectors) > self.size:
                    self._vectors.popitem(last=False)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)


def rank_sentences(queries: Sequence[str], passages: Sequence[str], embed: Embed, mean: bool = False) -> list[Sentence]:
    """Every sentence of the passages, best match first. With several query texts a sentence scores its
    best match, or with `mean` its mean match: a follow-up read alone and with the earlier turns is
    best answered by the sentence about what it asks AND about the conversation's subject, not the one
    that matched an earlier turn, nor the one matching its words about another document."""
    queries = [q for q in queries if q.strip()]
    found = [(n, i, s) for n, passage in enumerate(passages, start=1) for i, s in enumerate(sentences_of(passage))]
    if not queries or not found:
        return []
    vectors = embed(list(queries) + [s for _, _, s in found])
    q, s = vectors[: len(queries)], vectors[len(queries):]
    scores = (s @ q.T).mean(axis=1) if mean else (s @ q.T).max(axis=1)
    ranked = [Sentence(n, i, text, float(score)) for (n, i, text), score in zip(found, scores)]
    return sorted(ranked, key=lambda x: (-x.score, x.source, x.position))


def in_context(ranked: Sequence[Sentence], queries: Sequence[str], embed: Embed, mean: bool = False,
               weight: float = IN_CONTEXT) -> list[Sentence]:
    """The sentences ranked again for the quote, each scored as (1 - weight) x its own match plus weight x
    the match of it read after the sentence before it in its passage. A sentence often names its
    subject only in the one before ("...Poland if Germans attacked." then "Polish officials refused...,
    they feared that once the Red Army entered their territories, it might never leave."). On
    squad-train (378 questions that get passages, all 40 documents indexed) the quote held the gold
    answer 0.680 -> 0.701 and 0.745 -> 0.761 on the two document halves (11 questions won, 4 lost);
    weights 0.5 / 0.7 were best on one half each and gain on the other. Only the quote: the decline rule
    and the sentences the model is shown keep the plain ranking, and this runs after the answer, so
    the pairs' embeddings (new texts, once each through `embed`'s memory) never delay the first token."""
    queries = [q for q in queries if q.strip()]
    if not ranked or not queries or weight <= 0:
        return list(ranked)
    at = {(s.source, s.position): s for s in ranked}
    pairs = [f"{at[s.source, s.position - 1].text} {s.text}" if (s.source, s.position - 1) in at else s.text
             for s in ranked]
    vectors = embed(list(queries) + pairs)
    q, v = vectors[: len(queries)], vectors[len(queries):]
    read = (v @ q.T).mean(axis=1) if mean else (v @ q.T).max(axis=1)
    rescored = [Sentence(s.source, s.position, s.text, float((1 - weight) * s.score + weight * r))
                for s, r in zip(ranked, read)]
    return sorted(rescored, key=lambda x: (-x.score, x.source, x.position))


def support(ranked: Sequence[Sentence]) -> float:
    """The best sentence's similarity to the question; -1 when there is no sentence."""
    return ranked[0].score if ranked else -1.0


def focus(hits: Sequence[Hit], ranked: Sequence[Sentence], keep: int) -> list[Hit]:
    """The sources cut to their sentences among the `keep` best matches (a 135 M model answers as well
    from 3 sentences as from 2 whole passages, and reads the prompt 2-3x faster: bench/RESULTS.md).
    Within a source the sentences keep their order, except that the best match of all comes first.
    Every source stays, so [n] still means the n-th source shown; one with no sentence among the best
    keeps its own best."""
    if not ranked:
        return list(hits)
    chosen = set(ranked[:keep]) | {next(s for s in ranked if s.source == n)
                                   for n in range(1, len(hits) + 1) if any(s.source == n for s in ranked)}
    top = ranked[0]
    out = []
    for n, hit in enumerate(hits, start=1):
        mine = sorted((s for s in chosen if s.source == n), key=lambda s: (s != top, s.position))
        out.append(Hit(hit.chunk_id, " ".join(_closed(s.text) for s in mine) or hit.text, hit.source, hit.location,
                       hit.score, hit.dense_score))
    return out


def _closed(sentence: str) -> str:
    """A sentence as the model is shown it beside others: a line with no closing punctuation (a one-line
    title, a list item) gets a full stop, or it ran into the next ("...of 3 March 2026 The next meeting")."""
    return sentence if re.search(r"[.!?:;…]['\")\]]*$", sentence) else sentence + "."


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def subject_words(names: Sequence[str]) -> set[str]:
    """The stemmed words that name the sources: their file names (without folder and extension) and
    the titles their locations start with ("Harbor Point Community Library > Opening hours")."""
    words: set[str] = set()
    for name in names:
        if name:
            words |= terms(without_extension(file_name(name.split(" > ")[0])))
    return words


def pick_evidence(answer: str, ranked: Sequence[Sentence], question: str = "",
                  subject: Sequence[str] = ()) -> Sentence | None:
    """The sentence to quote: among the EVIDENCE_POOL best matches to the question (from all the
    sources, whichever the answer cites: the 135 M model cites [1] by habit), the one that also has
    most of the question's rarer words. MiniLM alone ranks "The library opened in 1962" above "...the
    library abolished fines in 2019" for "When did the Harbor Point library abolish fines?"; the word
    bonus weights each question word by how few of the passages' sentences hold it (a local IDF), so
    "fines" counts and "library" hardly does. On squad-train (400 questions) it raised the quote's
    gold-answer rate from 0.58 to 0.65 and from 0.65 to 0.72 on the two document halves.

    `subject`: the sources' file names and locations. Question words that name the document ("Harbor
    Point", "Namibia") say which document, not which sentence: they are rare among the sentences, so
    they earned the bonus for the document's opening sentence ("The Harbor Point Community Library
    opened in 1962") over the one asked about ("...from 10 to 4 on Saturdays"). They get none; on
    squad-train the quote held the gold answer 0.672 -> 0.680 of 400 questions (both halves up).
    A sentence with the kind of answer the question asks for (`asks_for`: money, a number or a date)
    gets KIND_BONUS: the shipped txt/'s "How much does one share in the Millstream Energy Cooperative
    cost?" quoted the garden's opening sentence (it names the cooperative, and the year) over the
    share's price; on squad-train one question more of 378 (0.730 -> 0.733), none lost.
    None when there is no sentence or the answer already contains it word for word."""
    if not ranked:
        return None
    # the decline rule's stemmed content words, so both agree, less those that name the sources
    asked = set(question_terms(question)) - subject_words(subject)
    words = [terms(s.text) for s in ranked]
    weight = {w: math.log(1 + len(ranked) / (1 + sum(w in x for x in words))) for w in asked}
    total = sum(weight.values()) or 1.0
    kind = asks_for(question)
    pool = range(min(EVIDENCE_POOL, len(ranked)))
    best = ranked[max(pool, key=lambda i: ranked[i].score + WORD_BONUS * sum(weight[w] for w in asked & words[i])
                      / total + (KIND_BONUS if kind and kind.search(ranked[i].text) else 0.0))]
    if _norm(best.text) and _norm(best.text) in _norm(answer):
        return None
    return best


def evidence_line(sentence: Sentence, declined: bool = False) -> str:
    """The quote as it is appended to the answer (a paragraph of its own). After an answer that says
    the documents do not tell, it is offered as the closest passage, not as the source of an answer."""
    label = "Closest passage" if declined else "Source"
    return f'\n\n{label} [{sentence.source}]: "{sentence.text}"'
