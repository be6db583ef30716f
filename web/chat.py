"""The chat's event handlers: typed and spoken questions, the `/ask` API, restore and clear.

Each handler is a plain generator over the pipeline's events (rag/pipeline.py) that yields what the
page shows next. Errors reach the user as one plain line in a `gr.Warning` (or `gr.Error` for the
API), never as an exception object in the chat; the server stays up. Chat history lives in
`engines.history` (SQLite) under a session id, so a page reload or another process sees it too.
"""
# No `from __future__ import annotations` here: gr.api reads `ask_api`'s annotations at runtime to
# describe the endpoint (two outputs, typed), and string annotations would hide that.
import logging
import re
import threading
import time
from collections.abc import Iterator

import gradio as gr

from rag.errors import AudioError, RagError, UserInputError, one_line
from rag.events import AudioChunk, Done, Failed, Notice, Queued, Retrieved, TextDelta
from rag.history import new_session_id
from rag.pipeline import AskOptions
from web.render import SOURCES_EMPTY, SOURCES_SEARCHING, sources_html, sources_json

log = logging.getLogger(__name__)
SESSION_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
SEARCHING = "_Searching your documents…_"
LISTENING = "_Transcribing your recording…_"


def _waiting(position: int) -> str:
    return ("_The model is busy with another question; yours is next…_" if position <= 1
            else f"_The model is busy; {position - 1} questions are ahead of yours…_")


def warn(message: str) -> None:
    """A toast with one plain line (the project's messages start lower-case: capitalized here)."""
    gr.Warning(message[:1].upper() + message[1:])


def _wav(chunk: AudioChunk) -> bytes:
    from tts.wav import to_wav_bytes

    return to_wav_bytes(chunk.samples, chunk.sample_rate)


class ChatHandlers:
    """Bound to one `Engines`; each method is wired to one page event (see web/page.py)."""

    def __init__(self, engines, transcriber_error: str | None = None):
        self.engines = engines
        self.transcriber_error = transcriber_error
        self.tts_enabled = engines.cfg.tts.enabled

    # -- sessions --------------------------------------------------------------------------------
    @staticmethod
    def session_of(value) -> str:
        """The browser's stored session id if it looks like one, else a fresh one."""
        return value if isinstance(value, str) and SESSION_RE.match(value) else new_session_id()

    def restore(self, session):
        """Page load: the session's chat and the last answer's sources, from the history store."""
        session = self.session_of(session)
        chat, sources = [], None
        for m in self.engines.history.messages(session):
            chat.append({"role": m["role"], "content": m["content"]})
            if m["role"] == "assistant":
                sources = (m.get("extra") or {}).get("sources")
        return session, chat, sources_html(sources, searched=bool(chat)) if chat else SOURCES_EMPTY

    def clear(self, session):
        """New chat: forget this session's history (the model never sees it again)."""
        session = self.session_of(session)
        self.engines.history.clear(session)
        return session, [], SOURCES_EMPTY, "", None

    # -- answering -------------------------------------------------------------------------------
    def _answer(self, question: str, session: str, chat: list, speak: bool, k, voice: bool,
                t0: float | None = None) -> Iterator[tuple]:
        """Yield (chat, sources html, audio chunk, question box, session) while the answer streams."""
        skip = gr.skip()
        speak = bool(speak) and self.tts_enabled
        history = self.engines.history.history(session)
        chat = list(chat or []) + [{"role": "user", "content": question},
                                   {"role": "assistant", "content": SEARCHING}]
        yield chat, SOURCES_SEARCHING, skip, "", session
        cancel = threading.Event()
        options = AskOptions(k=int(k) if k else None, voice=voice, speak=speak)
        # Timings count from the end of speech for a spoken question (t0 taken before transcription).
        events = self.engines.pipeline(speak=speak).ask(question, history, options, cancel=cancel, t0=t0)
        text, panel = "", skip
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    text += event.text
                    chat[-1] = {"role": "assistant", "content": text}
                    yield chat, panel, skip, skip, skip
                    panel = skip
                elif isinstance(event, AudioChunk):
                    yield chat, panel, _wav(event), skip, skip
                    panel = skip
                elif isinstance(event, Retrieved):
                    panel = sources_html(sources_json(event.hits))
                elif isinstance(event, Queued):
                    chat[-1] = {"role": "assistant", "content": _waiting(event.position)}
                    yield chat, panel, skip, skip, skip
                    panel = skip
                elif isinstance(event, Notice):
                    warn(event.message)
                elif isinstance(event, Failed):
                    warn(event.message)
                    # Nothing half-done stays: the question goes back in the box to try again.
                    yield chat[:-2], skip, skip, question, skip
                    return
                elif isinstance(event, Done):
                    sources = sources_json(event.sources)
                    chat[-1] = {"role": "assistant", "content": event.answer}
                    self.engines.history.add_exchange(session, question, event.answer,
                                                      {"sources": sources, "voice": voice,
                                                       "abstained": event.abstained})
                    yield chat, sources_html(sources), skip, skip, skip
        finally:
            cancel.set()
            events.close()

    def ask_text(self, question, chat, session, speak, k):
        """Typed question (Enter or the Ask button)."""
        session = self.session_of(session)
        question = " ".join(str(question or "").split())
        if not question:
            warn("Type a question first, or record one with the microphone.")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
            return
        yield from self._answer(question, session, chat, speak, k, voice=False)

    def ask_voice(self, audio_path, chat, session, speak, k):
        """Recorded or uploaded question: transcribe, show the transcript as the user's message, answer."""
        session = self.session_of(session)
        skip = gr.skip()
        if not audio_path:
            yield skip, skip, skip, skip, session, skip
            return
        if self.transcriber_error:
            warn(f"Speech recognition is not available: {self.transcriber_error}")
            yield skip, skip, skip, skip, session, None
            return
        pending = list(chat or []) + [{"role": "user", "content": LISTENING}]
        yield pending, skip, skip, skip, session, skip
        t0 = time.perf_counter()    # the recording has ended: the user now waits for the first audio
        try:
            transcript = self.engines.transcriber.transcribe(audio_path)
        except AudioError as err:            # includes NoSpeechError: the plain message, nothing else
            warn(str(err))
            yield chat or [], skip, skip, skip, skip, None
            return
        except RagError as err:
            log.warning("transcription failed: %s", one_line(err))
            warn(one_line(err))
            yield chat or [], skip, skip, skip, skip, None
            return
        log.info("transcribed %.1f s of speech in %.2f s: %r", transcript.duration_s,
                 time.perf_counter() - t0, transcript.text)
        first = True
        for state in self._answer(transcript.text, session, chat, speak, k, voice=True, t0=t0):
            yield (*state, None if first else skip)
            first = False

    # -- the API -----------------------------------------------------------------------------------
    def ask_api(self, question: str, session_id: str = "") -> tuple[str, list[dict]]:
        """Answer a question from the indexed documents, streaming the text.

        Yields (answer so far, sources); the last value is the whole answer and its sources, each
        {n, source, location, text, score} numbered like the answer's [n] citations. Calls with the
        same non-empty `session_id` share one chat history (follow-up questions work); an empty one
        starts a fresh conversation each call.
        """
        pipeline = self.engines.pipeline()
        try:
            question = pipeline.check_question(str(question or ""))
        except UserInputError as err:
            raise gr.Error(str(err), title="Bad question") from None
        session = str(session_id or "").strip()
        if session and not SESSION_RE.match(session):
            raise gr.Error("session_id must be 1-128 letters, digits or _.:@- characters", title="Bad session id")
        history = self.engines.history.history(session) if session else []
        cancel = threading.Event()
        t0 = time.perf_counter()
        events = pipeline.ask(question, history, AskOptions(), cancel=cancel, t0=t0)
        text, sources = "", []
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    text += event.text
                    yield text, sources
                elif isinstance(event, Retrieved):
                    sources = sources_json(event.hits)
                elif isinstance(event, Failed):
                    raise gr.Error(event.message, title="No answer")
                elif isinstance(event, Done):
                    sources = sources_json(event.sources)
                    if session:
                        self.engines.history.add_exchange(session, question, event.answer,
                                                          {"sources": sources, "api": True,
                                                           "abstained": event.abstained})
                    yield event.answer, sources
        finally:
            cancel.set()
            events.close()
