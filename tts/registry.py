"""Text-to-speech engines by name (`tts.backend`), each imported only when chosen, and the factory that
wraps the configured one in the espeak-ng fallback."""
from __future__ import annotations

from common.registry import backend
from tts.base import FallbackSynthesizer, Synthesizer
from tts.config import TTSConfig

ENGINES = {
    "hibari": "tts.backends:HibariSynthesizer",
    "piper": "tts.backends:PiperSynthesizer",
    "espeak-ng": "tts.backends:EspeakSynthesizer",
    "gtts": "tts.backends:GTTSSynthesizer",
}


def load_engine(name: str, voice: str | None = None, rate: float = 1.0, threads: int = 1) -> Synthesizer:
    """One engine by name, without fallback; BackendError if it cannot load."""
    return backend(ENGINES, "tts.backend", name)(voice=voice, rate=rate, threads=threads)


def load_synthesizer(cfg: TTSConfig, threads: int = 1) -> Synthesizer:
    """The configured engine, wrapped in the fallback unless `tts.fallback` is "none".

    `cfg.voice` applies to the configured engine only; the fallback speaks with its own default voice
    (a hibari voice name means nothing to espeak-ng). `cfg.enabled` is the caller's to check.
    """
    def primary() -> Synthesizer:
        return load_engine(cfg.backend, voice=cfg.voice, rate=cfg.rate, threads=threads)

    if cfg.fallback == "none" or cfg.fallback == cfg.backend:
        return primary()
    return FallbackSynthesizer(primary, lambda: load_engine(cfg.fallback, rate=cfg.rate),
                               primary_name=cfg.backend)
