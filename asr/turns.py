"""Turn-taking for a spoken conversation: where the user's speech starts, pauses and ends.

Audio arrives in chunks (16 kHz mono float32, any size). Silero VAD (the ONNX model faster-whisper
ships) gives a speech probability per 32 ms window; a small state machine over those turns them into
events on the audio's own clock (seconds since the first sample fed):

- `SpeechStarted`: at least `min_speech_s` of speech: a burst shorter than that (a click, a cough, the
  echo of our own voice's first syllable) never starts a turn, so noise alone gives no turn;
- `Paused`: the speech stopped `pause_s` ago; if it stays stopped this is the end of the turn, so a
  caller can start transcribing now and have the text ready when the turn ends;
- `Resumed`: speech again after a `Paused`, before the turn ended (the pause was inside the sentence);
- `TurnEnded`: `end_silence_s` of silence after speech, or the turn reached `max_turn_s` (`cut`).

With a turn-end model (asr/turn_end.py: audio -> probability the speaker has finished), each pause
asks it once: a turn it calls finished ends at the pause (`pause_s` of silence), one it calls
unfinished waits for `incomplete_silence_s` of silence instead of `end_silence_s`.

Nothing here knows about Gradio, the pipeline, or threads: the page, `app.py converse` and the tests
feed it the same way.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RATE = 16_000
WINDOW = 512            # samples per VAD decision (32 ms): the window the Silero model was trained on
CONTEXT = 64            # samples of the previous window the model sees in front of each window


@dataclass(frozen=True)
class TurnOptions:
    threshold: float = 0.5          # speech probability that counts as speech...
    release: float = 0.35           # ...and below which, once speaking, a window counts as silence
    min_speech_s: float = 0.25      # speech needed to start a turn (and to resume one)
    pause_s: float = 0.15           # silence after speech that is reported as a pause (`Paused`)...
    end_silence_s: float = 0.6      # ...and that ends the turn
    pad_s: float = 0.2              # audio kept before the speech start and after its end
    max_turn_s: float = 900.0       # a longer monologue is cut here (asr.max_audio_s)
    complete_threshold: float = 0.5     # with a turn-end model: this probability or more ends the turn...
    incomplete_silence_s: float = 1.5   # ...and below it, the turn waits for this much silence


@dataclass(frozen=True)
class SpeechStarted:
    at_s: float                     # where the speech began (detected min_speech_s later)


@dataclass(frozen=True)
class Paused:
    at_s: float                     # where the speech stopped
    audio: np.ndarray               # the turn's audio so far, padded: what a final transcript will read


@dataclass(frozen=True)
class Resumed:
    at_s: float


@dataclass(frozen=True)
class TurnEnded:
    start_s: float                  # speech start
    end_s: float                    # speech end (the silence that ended the turn began here)
    audio: np.ndarray               # the speech, padded by pad_s on both sides
    cut: bool = False               # True: stopped at max_turn_s, not by silence


TurnEvent = SpeechStarted | Paused | Resumed | TurnEnded


class SileroVAD:
    """Speech probability per 32 ms window, for audio fed in chunks of any size."""

    def __init__(self):
        from faster_whisper.vad import get_vad_model   # the ONNX file faster-whisper ships; 1-3 ms a chunk

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)    # the model's recurrent state, carried across calls
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._rest, np.asarray(samples, np.float32).reshape(-1)])
        n = audio.size // WINDOW
        self._rest = audio[n * WINDOW:]
        if n == 0:
            return np.zeros(0, np.float32)
        windows = audio[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]])
        self._context = windows[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, windows], axis=1)
        # The model reads the batch as a sequence (its LSTM state runs through the windows in order),
        # so the state at the end of one chunk is where the next one starts.
        out, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(out, np.float32).reshape(-1)


class TurnDetector:
    """Feed audio, get turn events. `vad` maps samples to one probability per WINDOW samples."""

    def __init__(self, options: TurnOptions = TurnOptions(), vad=None,
                 turn_end: Callable[[np.ndarray], float] | None = None):
        self.options = options
        self.vad = vad if vad is not None else SileroVAD()
        self.turn_end = turn_end
        self.completions: list[tuple[float, float]] = []   # (pause start, probability finished), for measuring
        self._unfinished = False               # the turn-end model said the current pause is inside the turn
        self._fed = 0                          # samples fed so far: the clock
        self._windows = 0                      # VAD windows decided so far
        self._buffer = np.zeros(0, np.float32)  # audio from `_buffer_start` on
        self._buffer_start = 0
        self._speaking = False                 # inside a turn (started, not ended)
        self._paused_at: int | None = None     # window where the current silence began (inside a turn)
        self._pause_told = False               # `Paused` sent for the current silence
        self._run = 0                          # consecutive speech windows
        self._run_start = 0
        self._turn_start = 0

    @property
    def now_s(self) -> float:
        return self._fed / RATE

    @property
    def in_turn(self) -> bool:
        return self._speaking

    @property
    def turn_start_s(self) -> float:
        return self._secs(self._turn_start)

    @property
    def silent_for_s(self) -> float:
        """How long the current turn has been silent (0 while speaking or outside a turn)."""
        if not self._speaking or self._paused_at is None:
            return 0.0
        return self._secs(self._windows - self._paused_at)

    def turn_audio(self) -> np.ndarray:
        """The current turn's audio so far (empty outside a turn), for a transcript of the words so far."""
        return self._audio(self._turn_start, self._windows) if self._speaking else np.zeros(0, np.float32)

    def feed(self, samples: np.ndarray) -> list[TurnEvent]:
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._buffer = np.concatenate([self._buffer, samples])
        self._fed += samples.size
        events: list[TurnEvent] = []
        for p in self.vad(samples):
            events.extend(self._decide(float(p)))
            self._windows += 1
        if not self._speaking:                # keep only the pre-roll while nobody speaks
            keep = int(self.options.pad_s * RATE) + WINDOW * (self._run + 2)
            if self._buffer.size > keep:
                self._buffer_start += self._buffer.size - keep
                self._buffer = self._buffer[-keep:]
        return events

    def _secs(self, window: int) -> float:
        return window * WINDOW / RATE

    def _audio(self, start: int, end: int) -> np.ndarray:
        """Samples of windows [start, end), padded by pad_s on both sides where the buffer has them."""
        pad = int(self.options.pad_s * RATE)
        a = max(start * WINDOW - pad - self._buffer_start, 0)
        b = max(end * WINDOW + pad - self._buffer_start, 0)
        return self._buffer[a:b].copy()

    def _decide(self, p: float) -> list[TurnEvent]:
        o, w = self.options, self._windows
        min_windows = max(1, round(o.min_speech_s * RATE / WINDOW))
        speech = p >= o.threshold or (self._speaking and self._paused_at is None and p >= o.release)
        if speech:
            if self._run == 0:
                self._run_start = w
            self._run += 1
        else:
            self._run = 0
        if not self._speaking:
            if self._run >= min_windows:
                self._speaking, self._turn_start, self._paused_at = True, self._run_start, None
                return [SpeechStarted(self._secs(self._run_start))]
            return []
        if self._paused_at is None:
            if not speech:
                self._paused_at, self._pause_told = w, False
            elif self._secs(w + 1 - self._turn_start) >= o.max_turn_s:
                return [self._end(w + 1, cut=True)]
            return []
        if self._run >= min_windows or (speech and not self._pause_told):   # speech again
            told, self._paused_at, self._unfinished = self._pause_told, None, False
            return [Resumed(self._secs(self._run_start))] if told else []
        silent = self._secs(w + 1 - self._paused_at)
        end_silence = max(o.end_silence_s, o.incomplete_silence_s) if self._unfinished else o.end_silence_s
        if self._run == 0 and silent >= end_silence:
            return [self._end(self._paused_at)]
        if self._run == 0 and silent >= o.pause_s and not self._pause_told:
            self._pause_told = True
            paused = Paused(self._secs(self._paused_at), self._audio(self._turn_start, self._paused_at))
            if self.turn_end is None:
                return [paused]
            # What the model hears ends in the silence so far, as it was trained (speech, then a short stop).
            done = self.turn_end(self._audio(self._turn_start, w + 1))
            self.completions.append((paused.at_s, done))
            if done >= o.complete_threshold:
                return [paused, self._end(self._paused_at)]
            self._unfinished = True
            return [paused]
        return []

    def _end(self, end_window: int, cut: bool = False) -> TurnEnded:
        event = TurnEnded(self._secs(self._turn_start), self._secs(end_window),
                          self._audio(self._turn_start, end_window), cut)
        self._speaking, self._paused_at, self._run, self._unfinished = False, None, 0, False
        return event
