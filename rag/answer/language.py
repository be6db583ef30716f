"""Questions in another language than the documents (issue 16): which language a question is in, the
one model call that both translates it into the documents' language and makes a follow-up standalone,
and which language the answer is written in.

The documents stay as they are. The translation is fused with the original question in retrieval
(rag/pipeline.py `queries`), as the follow-up rewrite is: names, numbers and dates usually survive a
translation untouched, so the original still finds them through BM25 when the small model's
translation goes astray.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from common import language as lang

TRANSLATE_SYSTEM = ("You translate questions for a document search. Translate the user's last question into "
                    "{target}, keeping names, numbers and dates exactly as written. If there is a conversation, "
                    "also replace pronouns like it, he, she, they, there with the names they refer to. "
                    "Reply with the translated question only.")


@dataclass(frozen=True)
class Languages:
    """The languages one question involves (None: not known)."""

    question: str | None     # detected (typed) or heard (spoken)
    documents: str | None    # the indexed documents' main language
    answer: str              # what the answer is written and spoken in

    @property
    def translate_to(self) -> str | None:
        """The documents' language when the question must be brought to it for retrieval, else None."""
        if self.question and self.documents and self.question != self.documents:
            return self.documents
        return None

    @property
    def instruction(self) -> str | None:
        """The line that ends the answer prompt (rag/answer/prompt.py), or None where the plain English prompt
        already gets it right (English question, English answer): the default profile's prompt stays as it was."""
        if self.answer == "en" and self.question in (None, "en"):
            return None
        line = (f"Write the answer in {lang.name(self.answer)}; keep names, numbers and the [n] citations as "
                f"they are.")
        native = lang.ANSWER_IN.get(self.answer)
        return f"{line} {native}" if native and self.answer != "en" else line


def question_language(question: str, heard: str | None, allowed: Sequence[str] | None) -> str | None:
    """What the question is in: what speech recognition heard, else the stopword count among the allowed
    languages; one allowed language is taken as given (a fixed language is not second-guessed)."""
    if heard and (not allowed or heard in allowed):
        return heard
    if allowed and len(allowed) == 1:
        return allowed[0]
    return lang.detect(question, tuple(allowed) if allowed else None)


def choose(question: str | None, documents: str | None, picked: str | None) -> Languages:
    """The answer is in the language the user picked (Settings, prompt.answer_language), else the
    question's, else the documents', else English."""
    return Languages(question, documents, picked or question or documents or "en")


# Worked examples before the question (into English only): without them the 0.5B model often leaves
# words untranslated ("How many Vereines ..."); with them 19 of the 24 translated squad-train questions
# find their answer instead of 17 (bench multilingual). Invented, so nothing leaks into a real search.
SHOTS_EN = [("Wann wurde die Brücke über den Fluss gebaut?", "When was the bridge over the river built?"),
            ("¿Cuántos habitantes tenía la ciudad en 1900?", "How many inhabitants did the city have in 1900?"),
            ("Qui a écrit le premier livre sur l'histoire du port ?",
             "Who wrote the first book about the history of the port?")]


def translate_messages(question: str, history: Sequence[dict[str, str]], target: str) -> list[dict[str, str]]:
    system = TRANSLATE_SYSTEM.format(target=lang.name(target))
    convo = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in history)
    context = f"Conversation:\n{convo}\n\n" if convo else ""
    asked = f"{lang.name(target)} question:"
    shots = []
    for source, translated in SHOTS_EN if target == "en" else ():
        shots += [{"role": "user", "content": f"Last question: {source}\n\n{asked}"},
                  {"role": "assistant", "content": translated}]
    return [{"role": "system", "content": system}, *shots,
            {"role": "user", "content": f"{context}Last question: {question}\n\n{asked}"}]


def clean_translation(text: str, question: str, target: str) -> str | None:
    """The model's translation if it is one line of plausible length, else None (small models ramble or
    answer the question instead)."""
    line = text.strip().splitlines()[0].strip().strip('"') if text.strip() else ""
    line = re.sub(r"^(translated question|translation|question|\w+ question)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip('"')
    if len(line) < 3 or len(line) > 3 * len(question) + 120 or line.lower() == question.lower():
        return None
    return line


def not_found(language: str) -> str:
    """The app's decline, in the answer's language (English for a language it has no sentence for)."""
    code = language if language in lang.NOT_FOUND else "en"
    return f"{lang.NOT_FOUND[code]} {lang.NOT_FOUND_MORE[code]}"
