"""A voice per answer language (issue 16): English answers keep the configured engine (hibari, piper);
an answer in another language is spoken by the engine `tts.voices` names for it (espeak-ng's German,
Spanish and French voices by default: no offline neural voice for them installs from the registries,
../shared/MODELS.md). Each such voice is loaded on first use, once, and resampled to the configured
engine's rate so that one answer's audio has one sample rate.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from common.errors import BackendError
from common.wav import resample
from tts.base import Synthesizer
from tts.config import TTSConfig

log = logging.getLogger(__name__)


def parse(entry: str) -> tuple[str, str | None]:
    """"espeak-ng:de" -> ("espeak-ng", "de"); "piper" -> ("piper", None)."""
    engine, _, voice = entry.partition(":")
    return engine, voice or None


class _AtRate(Synthesizer):
    """Another engine's speech at a fixed sample rate."""

    def __init__(self, engine: Synthesizer, sample_rate: int, label: str):
        self.engine, self.sample_rate, self.name = engine, sample_rate, label

    def synthesize(self, text: str) -> np.ndarray:
        return resample(self.engine.synthesize(text), self.engine.sample_rate, self.sample_rate)

    def _render(self, text: str) -> np.ndarray:  # pragma: no cover - synthesize() is overridden
        raise NotImplementedError


class LanguageVoices:
    """`for_language(code, default)`: the synthesizer for an answer in `code`, `default` where
    `tts.voices` names none. A voice that cannot load is logged once and `default` speaks instead."""

    def __init__(self, cfg: TTSConfig, threads: int = 1):
        self.cfg, self.threads = cfg, threads
        self._loaded: dict[tuple[str, int], Synthesizer] = {}
        self._failed: set[str] = set()
        self._lock = threading.Lock()

    def describe(self, code: str) -> str:
        """What speaks `code` as configured, for Settings: "espeak-ng (de)", or the configured engine."""
        entry = self.cfg.voices.get(code)
        if entry is None:
            return f"{self.cfg.backend} ({self.cfg.voice or 'default voice'})"
        engine, voice = parse(entry)
        return f"{engine} ({voice or 'default voice'})"

    def for_language(self, code: str | None, default: Synthesizer) -> Synthesizer:
        entry = self.cfg.voices.get(code or "")
        if entry is None or code in self._failed:
            return default
        from tts.registry import load_engine   # here: the registry imports every engine table

        key = (code, default.sample_rate)
        with self._lock:
            if key not in self._loaded:
                engine, voice = parse(entry)
                try:
                    loaded = load_engine(engine, voice=voice, rate=self.cfg.rate, threads=self.threads)
                except BackendError as err:
                    log.warning("text to speech: the %s voice %s could not load (%s); speaking %s answers with "
                                "%s", code, entry, err, code, default.name)
                    self._failed.add(code)
                    return default
                self._loaded[key] = _AtRate(loaded, default.sample_rate, f"{entry} ({code})")
            return self._loaded[key]
