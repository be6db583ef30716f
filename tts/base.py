"""What every text-to-speech engine promises, and the fallback wrapper.

Engines are loaded once by `tts.registry.load_synthesizer` and passed to whoever speaks; nothing here
keeps a module-level model or knows the engines. A spoken answer should not go silent because the preferred voice is missing or
stumbles on one sentence, so by default the configured engine is wrapped in `FallbackSynthesizer`,
which uses espeak-ng instead and says so once in the log.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from common.errors import BackendError, RagError
from common.sentences import has_words, speakable
from common.wav import resample

log = logging.getLogger(__name__)


class Synthesizer(ABC):
    """Text to mono float32 samples in [-1, 1] at `sample_rate`."""

    name: str = "synthesizer"
    sample_rate: int = 0

    def synthesize(self, text: str) -> np.ndarray:
        """Speak `text` (markdown and [n] citations are dropped first); empty audio if nothing to say."""
        clean = speakable(text)
        if not has_words(clean):
            return np.zeros(0, np.float32)
        try:
            audio = self._render(clean)
        except RagError:
            raise
        except Exception as err:
            detail = " ".join(str(err).split())[:160] or type(err).__name__
            raise BackendError(f"text to speech ({self.name}) failed on a sentence: {detail}; see the log") from err
        return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)

    @abstractmethod
    def _render(self, text: str) -> np.ndarray:
        """Already-cleaned, non-empty text -> samples at self.sample_rate."""


Loader = Callable[[], Synthesizer]


class FallbackSynthesizer(Synthesizer):
    """Use `primary`; if it cannot load, or fails on a sentence, speak with `fallback` instead.

    Both are loaders (called at most once) so that the fallback costs nothing while unused. Output
    always comes at one sample rate (the primary's, when it loaded): fallback audio is resampled.
    """

    def __init__(self, primary: Loader, fallback: Loader, primary_name: str = "primary"):
        self._fallback_loader = fallback
        self._fallback: Synthesizer | None = None
        self._warned_sentence = False
        self.primary: Synthesizer | None = None
        self.primary_error: str | None = None  # why the primary could not load, for a status line
        try:
            self.primary = primary()
        except BackendError as err:
            self.primary_error = str(err)
            log.warning("text to speech: %s could not load (%s); speaking with the fallback instead",
                        primary_name, err)
            self.fallback()  # nothing to fall back from: if this fails too, loading fails now
        active = self.primary or self._fallback
        self.name = self.primary.name if self.primary else f"{active.name} (fallback for {primary_name})"
        self.sample_rate = active.sample_rate

    def fallback(self) -> Synthesizer:
        if self._fallback is None:
            try:
                self._fallback = self._fallback_loader()
            except BackendError as err:
                if self.primary is None:
                    raise BackendError(f"no text-to-speech engine could load: {self.primary_error} "
                                       f"Fallback: {err}") from err
                raise
        return self._fallback

    def synthesize(self, text: str) -> np.ndarray:
        if self.primary is not None:
            try:
                return self.primary.synthesize(text)
            except BackendError as err:
                if not self._warned_sentence:  # once: a broken engine would otherwise flood the log
                    log.warning("text to speech: %s failed on a sentence (%s); using the fallback for such "
                                "sentences", self.primary.name, err)
                    self._warned_sentence = True
                try:
                    engine = self.fallback()
                except BackendError:
                    raise err from None
        else:
            engine = self.fallback()
        return resample(engine.synthesize(text), engine.sample_rate, self.sample_rate)

    def _render(self, text: str) -> np.ndarray:  # pragma: no cover - synthesize() is overridden
        raise NotImplementedError
