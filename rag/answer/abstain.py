"""Should the app decline ("The documents do not say.") instead of asking the model?

Four signals, each cheap and explainable, all computed on the passages that would go to the model:

- dense: the best cosine of a retrieved passage to the question (`retrieval.abstain_below`);
- support: the best cosine of one *sentence* of those passages to the question. A passage about the
  same broad topic scores well as a whole; a question the documents answer has one sentence that
  matches it closely. On squad-train this separates unanswerable from answerable questions better
  than the passage cosine (AUC 0.96 against 0.92, bench/RESULTS.md "quality");
- coverage: the share of the question's content words (stopwords removed, stemmed) found in
  those passages. A question about an unindexed topic names things the passages never mention.
  Weighted by inverse document frequency over the indexed chunks (`retrieval.abstain_coverage_idf`):
  a missing name or number is strong evidence, a missing "year" or "first" barely any; a word no
  chunk has gets the largest weight (the documents cannot answer about it).
- names: the words an English question capitalises after its first ("Swaziland", "Archimedes") that
  no passage has, not even in another form ("Greek"/"Greece": the first four letters, or the stem;
  accents aside: "Independants"/"Indépendants") and no indexed chunk has its stem either (the pipeline
  asks the index): a passage need not repeat its document's subject ("… the Millstream Energy Cooperative" over
  the "Ownership" section that says "the cooperative"). A question about a thing the documents never
  name is rarely one they answer: on squad-train this declines 6 of the 35 unanswerable questions the
  other signals let through, and none of the 225 answerable ones (bench/RESULTS.md).

The rule (`decide`): decline when the passage cosine is below `abstain_below` (unless one sentence is
close: at least `abstain_weak_sentence_below`); else, unless it is at least
`abstain_never_above` (the passage is about the question), when the best sentence is below
`abstain_sentence_below`, or the best sentence is only middling (below `abstain_weak_sentence_below`) AND
less than `abstain_coverage_below` of the question's words appear, or a name in it appears in no passage
(`abstain_missing_names`).
The second and third signals only act in the middling band, so a misheard name in a spoken question (which
lowers coverage) cannot on its own make a well-supported question decline.

Pure functions: the embedding of sentences happens in rag/answer/evidence.py; this module only sees numbers
and text.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.stemming import stem
from rag.config import RetrievalConfig

_WORD = re.compile(r"[a-z0-9]+")
# English function words plus the words every question has ("what", "name", "called"): they say
# nothing about whether the documents cover the question.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom whose why will with would you your yours yourself
yourselves many much may might must shall one ones called name named known kind type
""".split())


def stem_word(word: str) -> str:
    """Snowball's stem (common/stemming.py, as BM25 has it), so "built"/"builds", "wars"/"war" and "dog"/"dogs"
    meet: "Can I bring my dog?" found none of its words in the FAQ's "Dogs are welcome on Fridays" and was
    declined (seen as a new user)."""
    return stem(word)


def content_words(text: str) -> list[str]:
    """The question's words that carry its topic, in order, without repeats."""
    return [w for w in dict.fromkeys(_WORD.findall(text.lower())) if w not in STOPWORDS]


def terms(text: str) -> set[str]:
    """The stemmed words of a text: what coverage matches, and what document frequencies count
    (rag/index/document_index.py), so both see the same words."""
    return {stem_word(w) for w in _WORD.findall(text.lower())}


def question_terms(question: str) -> list[str]:
    """The question's content words, stemmed (repeats of a stem kept, as the unweighted share counted them)."""
    return [stem_word(w) for w in content_words(question)]


def coverage(question: str, passages: Sequence[str], idf: Mapping[str, float] | None = None) -> float:
    """Share of the question's content words that occur in the passages (after stemming); with `idf`
    (stemmed word -> weight, rag/index/document_index.py), each word counts by its weight instead of 1.
    1.0 when the question has no content words: there is nothing to check, so no evidence against."""
    words = question_terms(question)
    weights = [1.0 if idf is None else idf[w] for w in words]
    total = sum(weights)
    if not words or total <= 0:
        return 1.0
    found = terms(" ".join(passages))
    return sum(x for w, x in zip(words, weights) if w in found) / total


def _unaccented(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9'’\-]*")
_PREFIX = 4     # "Greek" finds "Greece", "Britain" "British", "Portugese" "Portuguese"


def names(question: str) -> list[str]:
    """The words an English question capitalises after its first, lower-cased ("Who founded Millbrook's
    library?" -> ["millbrook"]); none when most of its words are capitalised (a title-case or shouted
    question says nothing by its capitals)."""
    tokens = [re.sub(r"['’]s$", "", t) for t in _TOKEN.findall(question)][1:]
    capitals = [t for t in tokens if t[0].isupper()]
    if not tokens or len(capitals) * 2 > len(tokens):
        return []
    parts = (p for t in capitals for p in re.split(r"[-'’]", t.lower()))
    return list(dict.fromkeys(p for p in parts if len(p) >= 3 and p not in STOPWORDS))


def missing_names(question: str, passages: Sequence[str], language: str | None = None) -> tuple[str, ...]:
    """The question's names (`names`) that no passage has, as the stem or as a word with the same first
    letters. Only for a question in English (or of no known language): German capitalises every noun."""
    wanted = names(_unaccented(question)) if language in (None, "en") else []   # "Indépendants" whole
    if not wanted:
        return ()
    words = set(_WORD.findall(_unaccented(" ".join(passages).lower())))   # "Independants" finds "Indépendants"
    stems, heads = {stem_word(w) for w in words}, {w[:_PREFIX] for w in words if len(w) >= _PREFIX}
    return tuple(w for w in wanted if stem_word(w) not in stems and w[:_PREFIX] not in heads)


@dataclass(frozen=True)
class Signals:
    dense: float       # best passage cosine to the question
    support: float     # best sentence cosine to the question (-1: not measured)
    coverage: float    # share of the question's content words in the passages
    weighted: float = 1.0   # the same share, words weighted by idf over the indexed chunks
    unnamed: tuple[str, ...] = ()   # the question's names that no passage has (`missing_names`)


def decide(signals: Signals, cfg: RetrievalConfig) -> str | None:
    """Why the documents are taken not to hold the answer, or None to go on and ask the model."""
    # A passage about many things (a PDF page of house rules) matches a question about one of them weakly as a
    # whole: "Where does glass go?" scored 0.15 against the page whose sentence says it (0.69). A close
    # sentence outweighs the passage floor, as it does the word share; no squad-train question is both.
    close = 0 < cfg.abstain_weak_sentence_below <= signals.support
    if signals.dense < cfg.abstain_below and not close:
        return f"best passage similarity {signals.dense:.2f} < {cfg.abstain_below}"
    if signals.dense >= cfg.abstain_never_above:    # the passage is about the question: its sentences do not decide
        return None
    if signals.support < -0.999:    # support not measured (no sentences): the passage rule alone
        return None
    if signals.support < cfg.abstain_sentence_below:
        return f"best sentence similarity {signals.support:.2f} < {cfg.abstain_sentence_below}"
    share = signals.weighted if cfg.abstain_coverage_idf else signals.coverage
    if signals.support < cfg.abstain_weak_sentence_below and share < cfg.abstain_coverage_below:
        how = "idf-weighted " if cfg.abstain_coverage_idf else ""
        return (f"best sentence similarity {signals.support:.2f} < {cfg.abstain_weak_sentence_below} and only "
                f"{share:.0%} ({how}share) of the question's words in the passages (< {cfg.abstain_coverage_below:.0%})")
    if signals.support < cfg.abstain_weak_sentence_below and signals.unnamed and cfg.abstain_missing_names:
        return (f"best sentence similarity {signals.support:.2f} < {cfg.abstain_weak_sentence_below} and no passage "
                f"names {', '.join(signals.unnamed)}")
    return None
