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
import secrets
import threading
import time
from collections.abc import Iterator

import gradio as gr

from common.errors import AudioError, RagError, UserInputError, one_line
from rag.events import AudioChunk, Done, Failed, Notice, Queued, Retrieved, TextDelta
from rag.answer.small_talk import is_reply
from rag.pipeline import AskOptions
from web.render import SOURCES_EMPTY, SOURCES_SEARCHING, chat_markdown, sources_html, sources_json
from web.turns import SessionTurns

log = logging.getLogger(__name__)
SESSION_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")     # an /ask session id (chosen by the client)
# A page's session id is issued here (new_page_session: 128 random bits), and the page's events take
# no other: an /ask session id ("my-session") cannot be read or cleared through the page's events,
# which any client can call. Ids issued before this change (uuid4 hex, no prefix) still restore.
PAGE_SESSION_RE = re.compile(r"^(page-)?[0-9a-f]{32}$")


def new_page_session() -> str:
    return "page-" + secrets.token_hex(16)
SEARCHING = "_Searching your documents…_"
LISTENING = "_Transcribing your recording…_"
WAITING_TURN = "_Your earlier question is still being answered; this one comes next…_"


def _waiting(position: int) -> str:
    return ("_The model is busy with another question; yours is next…_" if position <= 1
            else f"_The model is busy; {position - 1} questions are ahead of yours…_")


def warn(message: str) -> None:
    """A toast with one plain line (the project's messages start lower-case: capitalized here)."""
    gr.Warning(message[:1].upper() + message[1:])


# The voices offered in Settings: (label, engine, voice). Only those that load on this machine are listed
# (see `voice_choices`); gTTS needs the Internet, so it is offered only when it is the configured engine.
VOICES = [("Natural (hibari)", "hibari", None), ("Natural (piper)", "piper", None),
          ("Robot (espeak-ng, en-us)", "espeak-ng", "en-us"), ("Robot (espeak-ng, en-gb)", "espeak-ng", "en-gb")]


def language_tag(code: str, heard=None) -> str:
    """The line under a message that says its language; for a spoken question, how sure the detection was."""
    from common.language import name

    sure = f", heard with p = {heard.language_probability:.2f}" if heard and heard.language_probability else ""
    return f"\n\n_{name(code)}{sure}_"


ANSWER_LANGUAGES = [("Automatic (the question's)", ""), ("English", "en"), ("Deutsch", "de"), ("Español", "es"),
                    ("Français", "fr")]


def voice_value(backend: str, voice: str | None) -> str:
    """The dropdown's value for a voice choice: "engine|voice" (voice empty for the engine's default)."""
    return f"{backend}|{voice or ''}"


def parse_voice(value) -> tuple[str | None, str | None]:
    """(engine, voice) from a dropdown value; (None, None), the configured voice, if it is not one."""
    backend, _, voice = str(value or "").partition("|")
    return (backend, voice or None) if backend else (None, None)


def _installed(backend: str) -> bool:
    """Cheap check before loading an engine to offer it (a missing one would log a fallback warning)."""
    import importlib.util
    import shutil

    if backend == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    return importlib.util.find_spec({"hibari": "hibari", "piper": "piper"}.get(backend, backend)) is not None


def voice_choices(engines) -> list[tuple[str, str]]:
    """(label, value) for the Settings voice dropdown: the configured voice first, then every other
    voice in VOICES that loads here (an engine that only loads by falling back to espeak-ng is left out)."""
    from tts.base import FallbackSynthesizer

    tts = engines.cfg.tts
    default = voice_value(tts.backend, tts.voice)
    labels = {voice_value(b, v): label for label, b, v in VOICES}
    choices = [(labels.get(default, f"Configured ({tts.backend}, {tts.voice or 'default voice'})"), default)]
    for label, backend, voice in VOICES:
        value = voice_value(backend, voice)
        if value == default or not _installed(backend):
            continue
        try:
            synth = engines.synthesizer_for(backend, voice, tts.rate)
        except RagError as err:
            log.info("voice %s is not offered: %s", label, one_line(err))
            continue
        if isinstance(synth, FallbackSynthesizer) and synth.primary is None:
            continue
        choices.append((label, value))
    return choices


def _wav(chunk: AudioChunk) -> bytes:
    from common.wav import to_wav_bytes

    return to_wav_bytes(chunk.samples, chunk.sample_rate)


class ChatHandlers:
    """Bound to one `Engines`; each method is wired to one page event (see web/page.py)."""

    def __init__(self, engines, transcriber_error: str | None = None):
        self.engines = engines
        self.transcriber_error = transcriber_error
        self.tts_enabled = engines.cfg.tts.enabled
        self.turns = SessionTurns()

    # -- sessions --------------------------------------------------------------------------------
    @staticmethod
    def session_of(value) -> str:
        """The browser's stored session id if the server issued it to a page, else a fresh one."""
        return value if isinstance(value, str) and PAGE_SESSION_RE.match(value) else new_page_session()

    def restore(self, session):
        """Page load: the session's chat and the last answer's sources, from the history store.

        A browser with no session yet keeps none here: the first question makes it. Making one here
        too raced with a question asked while the page was still loading (two ids, and the follow-up
        went to the one without the first exchange)."""
        if not (isinstance(session, str) and PAGE_SESSION_RE.match(session)):
            return gr.skip(), [], SOURCES_EMPTY
        chat, sources, searched = [], None, False
        for m in self.engines.history.messages(session):
            shown = chat_markdown(m["content"]) if m["role"] == "assistant" else m["content"]
            code = (m.get("extra") or {}).get("language")
            if code and m["role"] == "assistant" and self.show_languages:   # the answer's language, as shown live
                shown += language_tag(code)
            chat.append({"role": m["role"], "content": shown})
            if m["role"] == "assistant" and not is_reply(m["content"]):   # a "You're welcome." searched nothing
                sources, searched = (m.get("extra") or {}).get("sources"), True
        return session, chat, sources_html(sources) if searched else SOURCES_EMPTY

    def clear(self, session):
        """New chat: forget this session's history (the model never sees it again)."""
        session = self.session_of(session)
        self.engines.history.clear(session)
        return session, [], SOURCES_EMPTY, "", None

    # -- answering -------------------------------------------------------------------------------
    def synthesizer(self, voice_choice, rate):
        """The session's chosen voice and rate; the configured voice (with a warning) if it cannot load."""
        backend, voice = parse_voice(voice_choice)
        try:
            return self.engines.synthesizer_for(backend, voice, float(rate) if rate else None)
        except (RagError, ValueError) as err:
            warn(f"The chosen voice is not available ({one_line(err)}); speaking with the default voice.")
            return self.engines.synthesizer

    def _answer(self, question: str, session: str, chat: list, *args, **kwargs) -> Iterator[tuple]:
        """`_answer_now`, after any answer of the same session still running (web/turns.py says why)."""
        turn = self.turns.enter(session)
        try:
            if not turn.acquire(blocking=False):
                yield (list(chat or []) + [{"role": "user", "content": question},
                                           {"role": "assistant", "content": WAITING_TURN}],
                       gr.skip(), gr.skip(), "", session)
                turn.acquire()
                chat = self.restore(session)[1]     # the stored history holds the earlier exchange whole
            try:
                yield from self._answer_now(question, session, chat, *args, **kwargs)
            finally:
                turn.release()
        finally:
            self.turns.leave(session)

    def _answer_now(self, question: str, session: str, chat: list, speak: bool, k, voice: bool,
                    t0: float | None = None, voice_choice=None, rate=None, search_in=None, answer_language=None,
                    heard=None) -> Iterator[tuple]:
        """Yield (chat, sources html, audio chunk, question box, session) while the answer streams.
        `heard`: the spoken question's Transcript (its language and how sure the detection was)."""
        skip = gr.skip()
        speak = bool(speak) and self.tts_enabled
        history = self.engines.history.history(session)
        chat = list(chat or []) + [{"role": "user", "content": question},
                                   {"role": "assistant", "content": SEARCHING}]
        yield chat, SOURCES_SEARCHING, skip, "", session
        cancel = threading.Event()
        options = AskOptions(k=int(k) if k else None, voice=voice, speak=speak,
                             sources=tuple(str(x) for x in search_in or ()),
                             language=heard.language if heard else None,
                             answer_language=str(answer_language) if answer_language else None)
        # Timings count from the end of speech for a spoken question (t0 taken before transcription).
        synthesizer = self.synthesizer(voice_choice, rate) if speak else None
        events = self.engines.pipeline(speak=speak, synthesizer=synthesizer).ask(question, history, options,
                                                                              cancel=cancel, t0=t0)
        text, panel = "", skip
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    text += event.text
                    chat[-1] = {"role": "assistant", "content": chat_markdown(text)}
                    yield chat, panel, skip, skip, skip
                    panel = skip
                elif isinstance(event, AudioChunk):
                    yield chat, panel, _wav(event), skip, skip
                    panel = skip
                elif isinstance(event, Retrieved):
                    # No passages: a decline or a greeting's reply; Done says which (the panel waits for it).
                    panel = sources_html(sources_json(event.hits)) if event.hits else skip
                    if self.show_languages and event.language:   # issue 16: the language of each message
                        chat[-2] = {"role": "user", "content": question + language_tag(event.language, heard)}
                elif isinstance(event, Queued):
                    chat[-1] = {"role": "assistant", "content": _waiting(event.position)}
                    yield chat, panel, skip, skip, skip
                    panel = skip
                elif isinstance(event, Notice):
                    warn(event.message)
                elif isinstance(event, Failed):
                    warn(event.message)
                    # Nothing half-done stays: the question goes back in the box to try again, and the
                    # sources panel shows the last answer's again (it said "Searching your documents…"
                    # for good after a question refused as too long, seen as a new user).
                    yield chat[:-2], self.restore(session)[2], skip, question, skip
                    return
                elif isinstance(event, Done):
                    sources = sources_json(event.sources)
                    tag = language_tag(event.language) if self.show_languages else ""
                    chat[-1] = {"role": "assistant", "content": chat_markdown(event.answer) + tag}
                    self.engines.history.add_exchange(session, question, event.answer,
                                                      {"sources": sources, "voice": voice,
                                                       "abstained": event.abstained, "language": event.language})
                    # A greeting or thanks searched nothing: the panel keeps the last answer's sources
                    # ("Thanks!" replaced them with "No passage matched this question", seen as a new user).
                    panel = self.restore(session)[2] if is_reply(event.answer) else sources_html(sources)
                    yield chat, panel, skip, skip, skip
        finally:
            cancel.set()
            events.close()

    @property
    def show_languages(self) -> bool:
        """Label messages with their language only where more than one is expected (issue 16)."""
        cfg = self.engines.cfg
        return len(cfg.asr.allowed_languages() or ("", "")) > 1 or bool(cfg.prompt.answer_language)

    def ask_text(self, question, chat, session, speak, k, voice_choice=None, rate=None, search_in=None,
                 answer_language=None):
        """Typed question (Enter or the Ask button)."""
        session = self.session_of(session)
        question = " ".join(str(question or "").split())
        if not question:
            warn("Type a question first, or record one with the microphone.")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), session
            return
        yield from self._answer(question, session, chat, speak, k, voice=False, voice_choice=voice_choice,
                                rate=rate, search_in=search_in, answer_language=answer_language)

    def ask_voice(self, audio_path, chat, session, speak, k, voice_choice=None, rate=None, search_in=None,
                  answer_language=None):
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
        for state in self._answer(transcript.text, session, chat, speak, k, voice=True, t0=t0,
                                  voice_choice=voice_choice, rate=rate, search_in=search_in,
                                  answer_language=answer_language, heard=transcript):
            yield (*state, None if first else skip)
            first = False

    # -- the API -----------------------------------------------------------------------------------
    def ask_api(self, question: str, session_id: str = "", sources: list[str] | None = None
                ) -> tuple[str, list[dict]]:
        """Answer a question from the indexed documents, streaming the text.

        Yields (answer so far, sources); the last value is the whole answer and its sources, each
        {n, source, location, text, score} numbered like the answer's [n] citations. Calls with the
        same non-empty `session_id` share one chat history (follow-up questions work); an empty one
        starts a fresh conversation each call. `sources` (optional) limits the search to documents
        whose source matches one of these patterns: a source, a folder, or a glob like "manuals/*.pdf".
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
        if sources is not None and (not isinstance(sources, list) or not all(isinstance(x, str) for x in sources)):
            raise gr.Error("sources must be a list of source patterns, like [\"manuals/*.pdf\"]", title="Bad sources")
        events = pipeline.ask(question, history, AskOptions(sources=tuple(sources or ())), cancel=cancel, t0=t0)
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


def voices_by_language(engines) -> str:
    """Settings: which voice speaks answers in each language (tts.voices, issue 16), and how to override."""
    tts = engines.cfg.tts
    codes = ["en", *[c for c in tts.voices if c != "en"]]
    lines = ", ".join(f"{c}: {engines.voices.describe(c)}" for c in codes)
    return (f"**Voice by answer language** (`tts.voices`): {lines}. With the configured voice chosen above, "
            f"each answer is spoken in its language's voice; choose another voice to use it for every answer.")
