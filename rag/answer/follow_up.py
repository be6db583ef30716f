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

_ANAPHORA = re.compile(   # words that point back into the conversation ("that" is too often a conjunction)
    r"\b(it|its|itself|they|them|their|theirs|themselves|he|him|his|himself|she|her|hers|herself|"
    r"there|this|these|those|former|latter)\b|^\s*(and|but|so|what about|how about|why)\b|"
    r"\b(is|was|are|were|did|does|do|in|at|of|for|from|about|on|by|with|after|before)\s+that\b", re.IGNORECASE)
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


def looks_like_follow_up(question: str, language: str | None = None) -> bool:
    """Pronouns and pointing words ("it", "there", "that", "why"; "es", "dort"; "ella", "allí"; "il", "là")
    or too few words of its own to be understood alone. `language`: the question's (None: English)."""
    if language not in _OTHER:
        content = [w for w in re.findall(r"[a-z0-9']+", question.lower()) if w not in _STOP]
        return bool(_ANAPHORA.search(question)) or len(content) <= 1
    pointing, leading, impersonal = _OTHER[language]
    text = question.lower().replace("’", "'")
    if re.match(rf"[\W_]*(?:{leading})\b", text):
        return True
    words = _WORDS.findall(re.sub(impersonal, " ", text))
    if set(words) & set(pointing.split()):
        return True
    stop = STOPWORDS[language] | _EXTRA_STOP[language]
    return len([w for w in words if w not in stop]) <= 1
