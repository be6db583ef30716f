"""What every speech-to-text backend returns and promises.

The model is loaded once by `asr.registry.load_transcriber` and the object is passed to whoever needs
it; nothing here keeps a module-level model or knows its backends.
"""
from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from common.audio import TARGET_RATE, as_samples
from common.errors import BackendError, NoSpeechError, RagError

AudioInput = Union[str, Path, bytes, np.ndarray]

NO_SPEECH = "no speech heard in the recording; speak closer to the microphone and try again"
# Peak below -60 dBFS: digital silence or a muted microphone. Checked before the model runs because
# Whisper, given pure silence without VAD, tends to invent text ("Thank you.", "you").
_SILENT_PEAK = 1e-3


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)  # decode_s, transcribe_s
    # How sure the detection was, among the allowed languages (asr.languages); 1.0 when the language was
    # fixed, 0.0 when the backend does not say.
    language_probability: float = 0.0


class Transcriber(ABC):
    """Speech to text. `transcribe` accepts a path, the file's bytes, or a float32 16 kHz mono array."""

    name: str = "transcriber"

    def __init__(self, max_audio_s: float | None = None):
        self.max_audio_s = max_audio_s

    def transcribe(self, audio: AudioInput) -> Transcript:
        t0 = time.perf_counter()
        samples = as_samples(audio, TARGET_RATE, self.max_audio_s)
        decode_s = time.perf_counter() - t0
        duration_s = samples.size / TARGET_RATE
        if float(np.max(np.abs(samples))) < _SILENT_PEAK:
            raise NoSpeechError(NO_SPEECH)
        t1 = time.perf_counter()
        try:
            text, language, *rest = self._transcribe_samples(samples)
        except RagError:
            raise
        except Exception as err:  # a model failure (e.g. out of memory) is a backend problem, not the user's
            detail = " ".join(str(err).split())[:160]
            raise BackendError(f"speech recognition ({self.name}) failed: {detail}; check the asr settings "
                               f"and the log") from err
        transcribe_s = time.perf_counter() - t1
        text = " ".join(text.split())
        if not re.search(r"\w", text):  # empty, or only "..." / "-"
            raise NoSpeechError(NO_SPEECH)
        return Transcript(text=text, language=language or "", duration_s=round(duration_s, 3),
                          timings={"decode_s": round(decode_s, 4), "transcribe_s": round(transcribe_s, 4)},
                          language_probability=round(float(rest[0]), 4) if rest else 0.0)

    @abstractmethod
    def _transcribe_samples(self, samples: np.ndarray) -> tuple:
        """float32 16 kHz mono samples -> (text, language code) or (text, language code, probability)."""
