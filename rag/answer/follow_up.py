"""Does a question lean on the conversation ("Why?", "When was it built?")? Then it is rewritten into a
standalone question and the previous turn weighs more in retrieval (rag/pipeline.py).

A word count, per language: pronouns and pointing words, a leading "and"/"but"/"why", or too few words of
its own to be understood alone. English keeps the rule it always had; German, Spanish and French (issue 16)
have their own lists, chosen by the question's language, so an English question is never read with them
(the river "Seine" is not "seine", "son" is not French "son").
"""
from __future__ import annotations

import re

from common.language import STOPWORDS

# Words that point back into the conversation ("that" is too often a conjunction to count alone).
_POINTING = re.compile(r"\b(this|these|those|former|latter)\b|^\s*(and|but|so|what about|how about)\b|"
                       r"\b(is|was|are|were|did|does|do|in|at|of|for|from|about|on|by|with|after|before)\s+that\b",
                       re.IGNORECASE)
# A possessive points back only when the question has not yet named something it can belong to:
# "Who was its first librarian?" leans on the conversation, "When do puppies get their rabies shot?" does
# not (read as a follow-up, the conversation before it, about a council, took its search and it was
# declined, seen as a new user). Other pronouns ("it", "him", "there") point back wherever they stand.
_PRONOUN = re.compile(r"\b(it|itself|they|them|theirs|themselves|he|him|himself|she|hers|herself|there)\b",
                      re.IGNORECASE)
_POSSESSIVE = re.compile(r"\b(its|their|his|her)\b", re.IGNORECASE)
_EXISTENTIAL = re.compile(r"\b(is|are|was|were)\s+there\b|\bthere\s+(is|are|was|were)\b", re.IGNORECASE)
NAMED_BEFORE = 2     # words of its own before a possessive that it may belong to
_STOP = frozenset("a an the of in on at to for from by with about as is are was were be been being do does did "
                  "what which who whom whose when where how many much can could would should will shall may "
                  "might must has have had not no or and but if than so".split())

# Other languages: (pointing words, leading words (a regex), phrases whose pronoun points at nothing).
# Articles that are also pronouns (German "die", Spanish "la", French "le") are left out: "Wann wurde die Brücke gebaut?"
# stands alone. The impersonal phrases ("gibt es", "il y a", "est-ce que") are removed before counting.
_OTHER = {
    "de": ("es er sie ihn ihm ihr ihre ihren ihrem ihrer sein seine seinen seinem seiner dort dorthin "
           "dies diese dieser dieses diesem diesen damals davon dafür dazu darüber danach davor daran darin",
           "und|aber|also|warum|wieso|weshalb",
           r"\bgibt es\b|\bes gibt\b|\bgab es\b|\bes gab\b"),
    "es": ("él ella ellos ellas lo le les su sus suyo suya allí allá ahí eso esto este esta estos estas ese esa "
           "esos esas aquel aquella aquello entonces",
           "y|pero|entonces|por qué",
           r"\bhay\b|\blo que\b"),
    "fr": ("il elle ils elles lui leur leurs son sa ses là ce cet cette ces celui celle ceux celles ça cela",
           "et|mais|alors|pourquoi",
           r"\bil y a\b|\by a-t-il\b|\bqu'est-ce\b|\best-ce\b|\bs'il\b|-t-(?:il|elle)s?\b"),
}
_WORDS = re.compile(r"[^\W\d_]+|\d+")
_EXTRA_STOP = {"de": {"wie", "wann", "wo", "wer", "was", "welche", "welcher", "welches", "viele", "viel"},
               "es": {"qué", "quién", "cuándo", "dónde", "cómo", "cuál", "cuánto", "cuántos", "cuántas"},
               "fr": {"quand", "où", "qui", "quoi", "combien", "comment", "quel", "quelle", "qu", "l", "t"}}


def _content(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP]


def looks_like_follow_up(question: str, language: str | None = None) -> bool:
    """Pronouns and pointing words ("it", "there", "that", "why"; "es", "dort"; "ella", "allí"; "il", "là")
    or too few words of its own to be understood alone. `language`: the question's (None: English); in
    English a pronoun after words that name what it may stand for is the question's own."""
    if language not in _OTHER:
        content = _content(question)
        if _POINTING.search(question) or len(content) <= 1:
            return True
        if re.match(r"\s*why\b", question, re.IGNORECASE) and len(content) <= 2:   # "Why is that so?"
            return True
        text = _EXISTENTIAL.sub(" ", question)       # "How many holidays are there?" points at nothing
        if _PRONOUN.search(text):
            return True
        return any(len(_content(text[:m.start()])) < NAMED_BEFORE for m in _POSSESSIVE.finditer(text))
    pointing, leading, impersonal = _OTHER[language]
    text = question.lower().replace("’", "'")
    if re.match(rf"[\W_]*(?:{leading})\b", text):
        return True
    words = _WORDS.findall(re.sub(impersonal, " ", text))
    if set(words) & set(pointing.split()):
        return True
    stop = STOPWORDS[language] | _EXTRA_STOP[language]
    return len([w for w in words if w not in stop]) <= 1


def sentence_queries(question: str, standalone: str, history, turns: int,
                     language: str | None = None) -> tuple[list[str], bool]:
    """What the passages' sentences are matched with (the decline rule, the prompt's sentences, the quote):
    the standalone question, and for a follow-up also its words after the last `turns` user turns, a
    sentence then scoring its mean match to both (True) rather than its best (rag/pipeline.py `support`
    says why)."""
    users = [m["content"] for m in history if m["role"] == "user"]
    if users and looks_like_follow_up(question, language):
        return [standalone, " ".join([*users[-max(1, turns):], question])], True
    return [standalone], False
