"""The `asr:` section of config.yaml (README "Configuration")."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from common.settings import DEVICE_PATTERN, Section


class ASRConfig(Section):
    backend: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    model: str = "shipped:whisper-tiny.en"
    device: str = Field("cpu", pattern=DEVICE_PATTERN)   # as embeddings.device
    compute_type: str = "int8"             # auto: float16 on a GPU, int8 on the CPU
    language: str | None = "en"            # None: detect (any language); ignored when `languages` is set
    # The languages users speak (Whisper codes). Each utterance is detected among these only (short clips
    # otherwise come out as Latin or Welsh); one entry fixes the language. Also what typed questions are
    # detected among (rag/pipeline.py). None: `language` alone decides, as before.
    languages: tuple[str, ...] | None = Field(None, min_length=1)
    vad: bool = True
    beam_size: int = Field(1, ge=1)
    # Whisper decodes again at temperatures 0.2..1.0 when a result looks repetitive or unsure. On 40 short
    # spoken questions that took up to 1.8 s (p95 1.35 s against 0.37 s without) and never gave a better
    # transcript (bench/RESULTS.md, notes on the 2026-12-05 00:13 voice run), so it is off; true restores it.
    temperature_fallback: bool = False
    # faster-whisper pads every clip to Whisper's 30 s window, and the encoder's cost follows the window,
    # not the clip (0.27 s of a 3 s question's 0.4 s here). A clip shorter than this is encoded in a window
    # of max(this, clip + 1 s): 2.5x faster transcripts at the same word error on 120 spoken questions;
    # under ~10 s the decoder starts inventing words (bench/RESULTS.md). 30 restores the full window.
    # faster-whisper only (openai-whisper always uses 30 s).
    encoder_window_s: float = Field(10.0, ge=5, le=30)
    max_audio_s: float = Field(900, gt=0)
    threads: int = Field(2, ge=1)

    def temperature(self) -> float | tuple[float, ...]:
        """What both Whisper backends take: Whisper's own fallback list, or one greedy pass."""
        return (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if self.temperature_fallback else 0.0

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        codes = tuple(dict.fromkeys(str(v).strip().lower() for v in value))
        bad = [c for c in codes if not c.isalpha() or not 2 <= len(c) <= 3]
        if bad:
            raise ValueError(f"'{bad[0]}' is not a language code (use two letters such as en, de, es, fr)")
        return codes

    def allowed_languages(self) -> tuple[str, ...] | None:
        """What an utterance may be in: `languages`, else `language` alone, else None (anything)."""
        if self.languages:
            return self.languages
        return (self.language,) if self.language else None
