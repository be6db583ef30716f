"""Which language a text is in, and what the app says in each language it knows.

A stopword count: each language's commonest short words (articles, pronouns, auxiliaries, question
words) are counted in the text, and the language with the most wins. It needs no model, runs in
microseconds, and on a whole document or a full question it is right; on a text too short to say
(a name, "Melbourne population?") it returns None and the caller keeps its default. Only the languages
below are known: the ones the app answers in (issue 16). Words two languages share ("de", "la", "a",
"en") count for both, so they cannot decide on their own.
"""
from __future__ import annotations

import re

_STOPWORDS = {
    "en": """the a an of and to in is are was were be been has have had do does did what which who whom whose
        when where why how this that these those it its they their them he she his her with from for on at by
        not no or but if than as into about after before there many much can could would should will""",
    "de": """der die das den dem des ein eine einer eines einem einen und ist sind war waren wird wurde wurden
        hat hatte haben hatten nicht kein keine mit von zu zum zur im am auf aus bei für über unter nach vor
        wer was wann wo warum wie welche welcher welches wieviel viele es sie er ihr ihre sein seine seinen
        sich auch dass oder aber noch nur schon durch""",
    "es": """el la los las un una unos unas y es son era eran fue fueron ha han había del al de en con por para
        sin sobre entre qué quién quiénes cuándo dónde cómo cuál cuáles cuánto cuántos cuántas por qué se su
        sus lo le les que este esta estos estas ese esa muy más también pero como durante según tiene tienen hay""",
    "fr": """le la les un une des du de et est sont était étaient été a ont avait avaient au aux en dans avec
        par pour sur sous entre qui que quoi quel quelle quels quelles quand où comment pourquoi combien ce
        cette ces il elle ils elles leur leurs son sa ses se ne pas plus aussi mais comme pendant selon""",
}
STOPWORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
# Letters only one of the known languages writes: a weak hint that settles ties on short texts.
_LETTERS = {"de": "äöüß", "es": "ñ¿¡", "fr": "çèêëàâîïôûœ"}
LANGUAGES = tuple(STOPWORDS)

NAMES = {"en": "English", "de": "German", "es": "Spanish", "fr": "French"}
# "Answer in X" said in X: after English sources a small model slips back into English less often when
# the last words it reads are in the answer's language (bench multilingual: 10 of 16 answers in the
# question's language instead of 8 with the English line alone, Qwen2.5 0.5B).
ANSWER_IN = {
    "en": "Answer in English.",
    "de": "Antworte auf Deutsch, in eigenen Worten.",
    "es": "Responde en español, con tus propias palabras.",
    "fr": "Réponds en français, avec tes propres mots.",
}

# The app's own sentences, said in the answer's language: the decline (no supporting passage) and
# the model's "not in the sources" reply. English first; the others translated by hand.
NOT_FOUND = {
    "en": "The documents do not say.",
    "de": "Die Dokumente sagen dazu nichts.",
    "es": "Los documentos no lo dicen.",
    "fr": "Les documents ne le disent pas.",
}
NOT_FOUND_MORE = {
    "en": "I could not find this in your documents.",
    "de": "Ich konnte das in Ihren Dokumenten nicht finden.",
    "es": "No pude encontrarlo en sus documentos.",
    "fr": "Je n'ai pas trouvé cela dans vos documents.",
}

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def scores(text: str) -> dict[str, int]:
    """How many of the text's words are stopwords of each known language (plus a point per hint letter)."""
    words = [w.split("'")[-1] for w in _WORD.findall(text.lower())]
    out = {lang: sum(w in stop for w in words) for lang, stop in STOPWORDS.items()}
    lower = text.lower()
    for lang, letters in _LETTERS.items():
        out[lang] += sum(lower.count(c) for c in letters) > 0
    return out


def detect(text: str, allowed: tuple[str, ...] | list[str] | None = None, min_hits: int = 2) -> str | None:
    """The language of `text` among `allowed` (default: all known), or None when too few stopwords say
    it (under `min_hits`) or two languages tie: the caller then keeps its default."""
    counts = scores(text)
    candidates = [lang for lang in (allowed or LANGUAGES) if lang in counts]
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda lang: counts[lang], reverse=True)
    best = ranked[0]
    if counts[best] < min_hits or (len(ranked) > 1 and counts[ranked[1]] == counts[best]):
        return None
    return best


def name(code: str | None) -> str:
    """"German" for "de"; an unknown code is returned as it is (the model may still know it)."""
    return NAMES.get(code or "en", code or "English")


def says_not_found(text: str) -> bool:
    """Does `text` carry one of the app's not-found sentences in a language other than English?
    (The English forms are recognised by rag/answer/prompt.py `says_not_found`.)"""
    low = " ".join(text.lower().split())
    return any(phrase.lower().rstrip(".") in low for lang, phrase in NOT_FOUND.items() if lang != "en")
