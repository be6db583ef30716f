"""Greetings, thanks and goodbyes: a short reply instead of "The documents do not say."

A new user's first words in a call are often "Hello?", and a chat often ends with "Thanks!". Neither
asks the documents anything, so retrieval declines them, and the app said "The documents do not say.
I could not find this in your documents." (seen as a new user). Only a message that is nothing but
such words gets the reply, in the language of those words; "Hi, when was the library founded?" is
a question like any other.
"""
from __future__ import annotations

import re

# kind -> language -> the words (a regex each, matched against the whole message)
_SAID = {
    "hello": {
        "en": r"hi|hello|hey|hiya|good (?:morning|afternoon|evening|day)|greetings|howdy|hello there|hi there|hey there",
        "de": r"hallo|guten (?:morgen|tag|abend)|servus|moin|grüß gott|hallo zusammen",
        "es": r"hola|buen(?:os|as) (?:días|dias|tardes|noches)|saludos",
        "fr": r"bonjour|bonsoir|salut|coucou",
    },
    "thanks": {
        "en": r"thanks?(?: you)?(?: (?:so|very) much)?|thank you(?: (?:so|very) much)?|cheers|great,? thanks|ok(?:ay)?,? thanks",
        "de": r"danke(?: schön| sehr)?|vielen dank",
        "es": r"gracias|muchas gracias|mil gracias",
        "fr": r"merci(?: beaucoup)?",
    },
    "bye": {
        "en": r"bye|goodbye|good bye|bye bye|see you|see you later|that's all|that is all",
        "de": r"tschüss|tschüs|auf wiedersehen|bis bald",
        "es": r"adiós|adios|hasta luego|hasta pronto",
        "fr": r"au revoir|à bientôt|a bientot",
    },
}
REPLIES = {
    "hello": {"en": "Hello! Ask me anything about your documents.",
              "de": "Hallo! Fragen Sie mich etwas zu Ihren Dokumenten.",
              "es": "¡Hola! Pregúnteme lo que quiera sobre sus documentos.",
              "fr": "Bonjour ! Posez-moi une question sur vos documents."},
    "thanks": {"en": "You're welcome.", "de": "Gern geschehen.", "es": "De nada.", "fr": "Je vous en prie."},
    "bye": {"en": "Goodbye!", "de": "Auf Wiedersehen!", "es": "¡Adiós!", "fr": "Au revoir !"},
}
_FILLER = r"(?:\s+(?:there|everyone|all|bot|assistant|again))?"
_PATTERNS = [(kind, language, re.compile(rf"(?:{words}){_FILLER}", re.IGNORECASE))
             for kind, by_language in _SAID.items() for language, words in by_language.items()]
_ALL_REPLIES = frozenset(r for by_language in REPLIES.values() for r in by_language.values())


def small_talk(message: str) -> str | None:
    """The reply to a message that is only a greeting, thanks or goodbye (in its own language), else None."""
    text = " ".join(re.sub(r"[!?.,;:¡¿…\"()]+", " ", message).split())
    if not text or len(text) > 40:
        return None
    for kind, language, pattern in _PATTERNS:
        if pattern.fullmatch(text):
            return REPLIES[kind][language]
    return None


def is_reply(text: str) -> bool:
    """Is `text` one of the replies above (an exchange the model need not read again)?"""
    return text.strip() in _ALL_REPLIES
