"""A spoken conversation ("call"): the user talks, pauses, hears the answer, talks over it to cut it short.

`Call.feed(samples)` takes microphone audio as it arrives (16 kHz mono float32). The turn detector
(asr/turns.py) finds where a turn ends; while the user pauses, the turn is already being transcribed
in the background, so the text is usually ready when the pause becomes the turn's end. Each turn is
then answered by the same pipeline as a typed question (history, sources, speech per sentence), on a
worker thread, so audio keeps coming in and the user can interrupt (barge-in): speech that starts
while an answer is being prepared or played (after `echo_guard_s` of playback, so the first syllable
of our own voice leaking into the microphone does not count) stops it, and only what was played stays
in the history, marked as interrupted.

Times are on the audio's clock: `now()` says where the call is, in seconds since its first sample.
The page passes the wall clock; `app.py converse` a clock that skips the stretches where nothing is
being computed (see `SkippingClock`), so a long recording runs fast and its timings stay honest.
What happens is reported as `CallEvent`s on `events` (a queue) for the page, and as one `TurnRecord`
per turn.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from asr.turns import Paused, Resumed, SpeechStarted, TurnDetector, TurnEnded, TurnOptions
from common.errors import NoSpeechError, RagError, one_line
from rag.events import AudioChunk, Done, Failed, TextDelta
from rag.pipeline import AskOptions

log = logging.getLogger(__name__)
INTERRUPTED = " [interrupted]"


@dataclass
class TurnRecord:
    """One question and its answer, as `app.py converse --json` prints it."""

    turn: int
    speech_start_s: float
    speech_end_s: float
    transcript: str = ""
    answer: str = ""
    spoken: str = ""
    sources: list[dict] = field(default_factory=list)
    abstained: bool = False
    barged_in: bool = False
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "error" or v}
        out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


@dataclass(frozen=True)
class CallEvent:
    """What the page shows next. kind: state (listening, hearing, thinking, speaking, ended), heard
    (the words so far), question (the turn's transcript), text (answer text), audio (an AudioChunk to
    play), stop (stop playing now: barge-in), finished (a TurnRecord), notice (one plain line)."""

    kind: str
    turn: int = 0
    value: Any = None


class _Hold:
    """The output gate of an answer started before its turn was sure to be over: what it produces
    waits here until the turn ends (`release`), or is dropped when the user speaks on."""

    def __init__(self, released: bool = True):
        self.open = threading.Event()
        self.waiting: list[Callable[[], None]] = []
        self._lock = threading.Lock()          # the worker and the feeding thread both flush
        if released:
            self.open.set()

    def out(self, show: Callable[[], None]) -> None:
        with self._lock:
            self.waiting.append(show)
        if self.open.is_set():
            self.flush()

    def release(self) -> None:
        self.open.set()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            while self.waiting:
                self.waiting.pop(0)()


@dataclass
class _Speculation:
    end_s: float                 # the speech end it assumed
    record: TurnRecord
    hold: _Hold
    cancel: threading.Event


class SkippingClock:
    """The call's clock for a recording: real time while work is in flight, and a jump over stretches
    where nothing is computed (the user talking to an idle app, silence, playback), so a recording runs
    as fast as its work allows and every measured delay is a real one."""

    def __init__(self):
        self._origin = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self._origin

    def skip_to(self, t: float) -> None:
        ahead = t - self()
        if ahead > 0:
            self._origin -= ahead


class Call:
    def __init__(self, engines, now: Callable[[], float], *, session: str | None = None, speak: bool = True,
                 synthesizer=None, partial_every_s: float | None = None, read_ahead: bool | None = None,
                 speculate_after_s: float | None = None, smart_turn: bool | None = None):
        cfg = engines.cfg
        self.cfg = cfg.call
        self.engines = engines
        self.now = now
        self.session = session
        self.speak = speak and cfg.tts.enabled
        self.pipeline = engines.pipeline(speak=self.speak, synthesizer=synthesizer)
        self.transcriber = engines.transcriber
        smart_turn = self.cfg.smart_turn if smart_turn is None else smart_turn
        self.detector = TurnDetector(TurnOptions(
            threshold=self.cfg.vad_threshold, min_speech_s=self.cfg.min_speech_s, pause_s=self.cfg.pause_s,
            end_silence_s=self.cfg.end_silence_s, max_turn_s=cfg.asr.max_audio_s,
            incomplete_silence_s=self.cfg.incomplete_silence_s),
            turn_end=engines.turn_end.complete if smart_turn else None)
        self.partial_every_s = self.cfg.partial_every_s if partial_every_s is None else partial_every_s
        self.read_ahead = self.cfg.read_ahead if read_ahead is None else read_ahead
        self.speculate_after_s = self.cfg.speculate_after_s if speculate_after_s is None else speculate_after_s
        self.events: queue.Queue[CallEvent] = queue.Queue()
        self.records: list[TurnRecord] = []           # finished turns, in order
        self.history: list[dict] = engines.history.history(session) if session else []
        self._asr = ThreadPoolExecutor(1, thread_name_prefix="call-asr")   # one transcription at a time
        self._guess: tuple[float, Future] | None = None     # (speech end it covers, transcript future)
        self._spec: _Speculation | None = None              # an answer started before the turn ended
        self._partial: Future | None = None
        self._llm_side = ThreadPoolExecutor(1, thread_name_prefix="call-prefill")
        self._prefilling: Future | None = None
        self._stop_prefill = threading.Event()   # set at a pause: the read-ahead gives the model back
        self._ahead = None                       # the last read-ahead's Plan (rag/pipeline.py), for this turn
        self._last_partial = 0.0
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()
        self._current: TurnRecord | None = None      # the turn being answered or played
        self._played: list[tuple[float, float, str]] = []   # (start, end, sentence) of the current answer
        self._play_end = 0.0
        self._last_activity = 0.0
        self._turns = 0
        self.ended: str | None = None

    def warm_up(self) -> None:
        """Run each model once before the first turn: first calls pay one-off costs (buffers, caches)
        that a user would otherwise wait through on their first question."""
        from rag.models.llm import GenerationSettings

        noise = np.random.default_rng(0).normal(0, 0.01, 8000).astype(np.float32)
        self._transcribe(noise)                 # Whisper hears nothing in it, or a word: either is fine
        self.detector.vad(noise)
        llm = self.engines.llm
        with llm.gate.held():                   # the model is shared: never beside another request
            llm.complete([{"role": "user", "content": "Say OK."}], GenerationSettings(2, 0.0))
        self.pipeline.warm_system_prompt(voice=True)   # the first turn then reads only its own part
        if self.speak and self.pipeline.synthesizer is not None:
            self.pipeline.synthesizer.synthesize("Ready.")
        if self.detector.turn_end is not None:
            self.detector.turn_end(noise)
        self.detector = TurnDetector(self.detector.options, turn_end=self.detector.turn_end)   # fresh VAD state

    # -- audio in --------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        if self.ended:
            return
        for event in self.detector.feed(samples):
            if isinstance(event, SpeechStarted):
                self._on_speech(event.at_s)
            elif isinstance(event, Paused):
                self._stop_prefill.set()        # the answer may start in this pause: it needs the model
                self._guess = (event.at_s, self._asr.submit(self._transcribe, event.audio))
            elif isinstance(event, Resumed):
                self._guess = None
                self._drop_speculation()
            elif isinstance(event, TurnEnded):
                self._on_turn(event)
        self._maybe_speculate()
        now = self.now()
        self._maybe_partial(now)
        self._finish_played(now)
        if self.detector.in_turn or self.busy() or now < self._play_end:
            self._last_activity = now
        elif now - self._last_activity >= self.cfg.idle_end_s:
            self.end("idle")

    def busy(self) -> bool:
        """Work in flight (transcribing or answering): a recording must then be fed in real time."""
        running = [f for f in (self._partial, self._prefilling, self._guess[1] if self._guess else None)
                   if f is not None]
        worker = self._worker is not None and self._worker.is_alive()
        return worker or any(not f.done() for f in running)

    def _transcribe(self, audio: np.ndarray) -> str:
        try:
            return self.transcriber.transcribe(audio).text
        except NoSpeechError:
            return ""

    def _prefill(self, words: str) -> None:
        try:
            plan = self.pipeline.prefill(words, self.history, AskOptions(voice=True), cancel=self._stop_prefill)
        except RagError as err:            # reading ahead is an optimisation: the answer will say what is wrong
            log.info("prefill skipped: %s", one_line(err))
            return
        if plan is not None:
            self._ahead = plan

    def _maybe_partial(self, now: float) -> None:
        """The words so far (for the page), and with them the answer's prompt read ahead of time
        (Pipeline.prefill), while nothing else needs the CPU."""
        if not self.partial_every_s or not self.detector.in_turn or self.busy():
            return
        if self._partial is not None and self._partial.done():
            if text := self._partial.result():
                self.events.put(CallEvent("heard", self._turns + 1, text))
                if (self.read_ahead and self._current is None and self._spec is None   # the model is free
                        and self.detector.silent_for_s == 0):                           # and not in a pause
                    self._stop_prefill = threading.Event()
                    self._prefilling = self._llm_side.submit(self._prefill, text)
            self._partial = None
        if self._partial is None and now - self._last_partial >= self.partial_every_s:
            self._last_partial = now
            self._partial = self._asr.submit(self._transcribe, self.detector.turn_audio())

    # -- turns -----------------------------------------------------------------------------------
    def _on_speech(self, at_s: float) -> None:
        self.events.put(CallEvent("state", self._turns + 1, "hearing"))
        with self._lock:
            current = self._current
            answering = current is not None and (self._worker_alive() or self.now() < self._play_end)
            echo = bool(self._played) and at_s < self._played[0][0] + self.cfg.echo_guard_s
        if answering and not echo:
            self._barge_in(at_s)

    def _worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _barge_in(self, at_s: float) -> None:
        """Stop the answer: nothing more is generated, spoken or played."""
        self._cancel.set()
        stop = self.now()
        with self._lock:
            record = self._current
            if record is None or record.barged_in:
                return
            record.barged_in = True
            record.timings["barge_in_s"] = at_s     # where the user's speech over the answer began
            record.timings["stopped_s"] = stop      # when playback (or the answer) was stopped
            self._play_end = min(self._play_end, stop) if self._played else stop
        self.events.put(CallEvent("stop", record.turn))

    def _maybe_speculate(self) -> None:
        """The user has paused for `speculate_after_s` and their words are transcribed: start answering
        now, unseen, so the first audio can follow the turn's end sooner."""
        after = self.speculate_after_s
        guess = self._guess
        if (not after or guess is None or self._spec is not None or self._current is not None
                or self.detector.silent_for_s < after or not guess[1].done() or not guess[1].result()):
            return
        record = TurnRecord(self._turns + 1, self.detector.turn_start_s, guess[0])
        self._spec = _Speculation(guess[0], record, _Hold(released=False), threading.Event())
        self._start(record, None, guess[1], self._spec.cancel, self._spec.hold)

    def _drop_speculation(self) -> None:
        spec, self._spec = self._spec, None
        if spec is None:
            return
        spec.cancel.set()                       # its worker stops and shows nothing
        with self._lock:
            if self._current is spec.record:
                self._current, self._worker, self._played, self._play_end = None, None, [], 0.0

    def _start(self, record: TurnRecord, audio, guess: Future | None, cancel: threading.Event, hold: _Hold) -> None:
        self._cancel = cancel
        with self._lock:
            self._current, self._played, self._play_end = record, [], 0.0
        ahead = self._ahead if self.read_ahead else None      # this turn's words so far, read ahead
        self._worker = threading.Thread(target=self._answer, args=(record, audio, guess, cancel, hold, ahead),
                                        name=f"call-turn-{record.turn}", daemon=True)
        self._worker.start()

    def _on_turn(self, turn: TurnEnded) -> None:
        self._partial = None                    # words so far of this turn: not the next one's
        spec = self._spec
        if spec is not None and spec.end_s == turn.end_s and not turn.cut:    # it guessed right: show it
            self._spec, self._guess, self._ahead = None, None, None
            self._turns += 1
            spec.record.timings["turn_end_s"] = self.now()
            self.events.put(CallEvent("state", spec.record.turn, "thinking"))
            spec.hold.release()
            return
        self._drop_speculation()
        # A whole turn spoken while the answer was still being written or played cuts it short, even
        # when its start fell inside the echo guard and so did not stop it at once.
        if self._worker_alive() or (self._current is not None and self.now() < self._play_end):
            self._barge_in(turn.start_s)
        if self._worker_alive():
            self._worker.join()
        self._finish_played(float("inf"))       # the previous answer is over (played, or cut short)
        if turn.cut:
            self.events.put(CallEvent("notice", self._turns + 1,
                                      f"you spoke for more than {self.detector.options.max_turn_s:g} s "
                                      "(asr.max_audio_s); your turn was cut there"))
        guess = self._guess[1] if self._guess and self._guess[0] == turn.end_s else None
        self._guess = None
        self._turns += 1
        record = TurnRecord(self._turns, turn.start_s, turn.end_s, timings={"turn_end_s": self.now()})
        self.events.put(CallEvent("state", record.turn, "thinking"))
        self._start(record, turn.audio, guess, threading.Event(), _Hold())
        self._ahead = None

    def _answer(self, record: TurnRecord, audio, guess: Future | None, cancel: threading.Event, hold: _Hold,
                ahead=None) -> None:
        """Transcribe (unless the pause already did), answer, speak. Everything the user sees or hears
        goes through `hold`, and is timed when it is shown: a speculative answer's first token counts
        from when the turn ended, not from when it was computed."""
        def show_question(text: str) -> None:
            record.timings["transcript_s"] = self.now()
            self.events.put(CallEvent("question", record.turn, text))

        def show_text(text: str) -> None:
            record.timings.setdefault("first_token_s", self.now())
            self.events.put(CallEvent("text", record.turn, text))

        try:
            text = guess.result() if guess is not None else self._asr.submit(self._transcribe, audio).result()
            record.transcript = text
            if not text or cancel.is_set():     # noise that Whisper heard no words in: no turn
                return
            hold.out(lambda: show_question(text))
            options = AskOptions(voice=True, speak=self.speak)
            for event in self.pipeline.ask(text, self.history, options, cancel=cancel, ahead=ahead):
                if cancel.is_set() and not hold.open.is_set():
                    return                      # a speculation the user talked over: nothing to show
                if isinstance(event, TextDelta):
                    record.answer += event.text
                    hold.out(lambda t=event.text: show_text(t))
                elif isinstance(event, AudioChunk):
                    hold.out(lambda c=event: self._play(record, c))
                elif isinstance(event, Done):
                    record.answer, record.abstained = event.answer, event.abstained
                    record.sources = [{"n": n, "source": h.source, "location": h.location, "text": h.text,
                                       "score": round(h.score, 6), "similarity": round(h.dense_score, 3)}
                                      for n, h in enumerate(event.sources, 1)]
                elif isinstance(event, Failed):
                    record.error = event.message
                    hold.out(lambda m=event.message: self.events.put(CallEvent("notice", record.turn, m)))
            while not hold.open.wait(0.05):     # written before the turn was over: wait for its end
                if cancel.is_set():
                    return
            hold.flush()
        except RagError as err:
            record.error = one_line(err)
            self.events.put(CallEvent("notice", record.turn, record.error))
        except Exception as err:   # noqa: BLE001 - the call goes on; the log has the details
            log.exception("answering turn %d failed", record.turn)
            record.error = f"internal error ({type(err).__name__}); see the server log"
            self.events.put(CallEvent("notice", record.turn, record.error))

    def _play(self, record: TurnRecord, chunk: AudioChunk) -> None:
        """Playback is modelled as back-to-back from the first chunk: what the user hears, and when."""
        now = self.now()
        with self._lock:
            if record.barged_in or record is not self._current:
                return
            start = max(now, self._play_end)
            self._play_end = start + len(chunk.samples) / chunk.sample_rate
            self._played.append((start, self._play_end, chunk.text))
            record.timings.setdefault("first_audio_s", now)
        if len(self._played) == 1:
            self.events.put(CallEvent("state", record.turn, "speaking"))
        self.events.put(CallEvent("audio", record.turn, chunk))

    def _finish_played(self, now: float) -> None:
        """Close the current turn once its answer is written and played (or stopped): record it, and put
        what the user actually heard into the history."""
        with self._lock:
            record = self._current
            if record is None or self._worker_alive() or now < self._play_end:
                return
            self._current = None
            heard = [text for start, _end, text in self._played if start < self._play_end]
            record.spoken = " ".join(heard) if self.speak else record.answer
            if self._played:
                record.timings["audio_end_s"] = self._play_end
        if record.transcript:
            said = record.spoken if record.barged_in else record.answer
            if record.barged_in:
                said = (said + INTERRUPTED).strip()
            self.history += [{"role": "user", "content": record.transcript}, {"role": "assistant", "content": said}]
            if self.session:
                self.engines.history.add_exchange(self.session, record.transcript, said,
                                                  {"sources": record.sources, "interrupted": record.barged_in,
                                                   "spoken": True})
            self.records.append(record)
            self.events.put(CallEvent("finished", record.turn, record))
        self.events.put(CallEvent("state", record.turn, "listening"))

    # -- the end ---------------------------------------------------------------------------------
    def drain(self) -> None:
        """The audio is over: let the last answer finish and play out."""
        if self._worker is not None:
            self._worker.join()
        self._finish_played(float("inf"))

    def end(self, reason: str = "ended") -> None:
        """Stop everything for this call (the user ended it, went idle, or closed the tab)."""
        if self.ended:
            return
        self.ended = reason
        self._cancel.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        self._finish_played(float("inf"))
        self._asr.shutdown(wait=False, cancel_futures=True)
        self._llm_side.shutdown(wait=True, cancel_futures=True)   # a read-ahead in flight ends within a second
        self.events.put(CallEvent("state", self._turns, "ended"))


def play_recording(call: Call, samples: np.ndarray, clock: SkippingClock, realtime: bool = False,
                   on_record: Callable[[TurnRecord], None] | None = None, step_s: float = 0.1) -> list[TurnRecord]:
    """Feed a whole recording (16 kHz mono) to `call` in `step_s` chunks, as a browser streams it.

    With `realtime`, chunk n is fed when the clock reaches its end; without, the clock jumps ahead
    whenever nothing is being computed, and runs in real time while something is (so work done while
    the user speaks counts as it would live). `on_record` gets each turn as it ends."""
    step = int(step_s * 16000)
    told = 0
    for i in range(0, samples.size, step):
        chunk_end = (i + step) / 16000
        if realtime or call.busy():
            while (ahead := chunk_end - clock()) > 0:     # the clock may pass chunk_end in between
                time.sleep(min(0.02, ahead))
        else:
            clock.skip_to(chunk_end)
        call.feed(samples[i:i + step])
        for record in call.records[told:]:
            if on_record is not None:
                on_record(record)
        told = len(call.records)
    call.drain()
    for record in call.records[told:]:
        if on_record is not None:
            on_record(record)
    return call.records
