"""The `tts:` section of config.yaml (README "Configuration")."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from common.settings import Section


ENGINE_NAMES = ("hibari", "piper", "espeak-ng", "gtts")
DEFAULT_VOICES = {"de": "espeak-ng:de", "es": "espeak-ng:es", "fr": "espeak-ng:fr-fr"}


class TTSConfig(Section):
    enabled: bool = True
    backend: Literal["hibari", "piper", "espeak-ng", "gtts"] = "hibari"
    fallback: Literal["espeak-ng", "none"] = "espeak-ng"
    voice: str | None = None
    rate: float = Field(1.0, gt=0.25, le=4)
    threads: int = Field(1, ge=1)           # synthesis runs beside the LLM: keep it off the LLM's cores
    max_sentence_chars: int = Field(300, ge=40)
    # The first spoken piece of an answer may end at a clause (", " "; " ": ") once it has this many
    # characters: the voice starts before the whole first sentence is written (0: whole sentences).
    first_clause_chars: int = Field(20, ge=0)
    # The voice of answers in each language other than the configured engine's (tts/languages.py):
    # language code -> "engine" or "engine:voice". A language not listed is spoken by `backend`.
    voices: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VOICES))

    @field_validator("voices")
    @classmethod
    def _engines(cls, value: dict[str, str]) -> dict[str, str]:
        for code, entry in value.items():
            if entry.partition(":")[0] not in ENGINE_NAMES:
                raise ValueError(f"tts.voices.{code}: '{entry}' names no engine; use one of "
                                 f"{', '.join(ENGINE_NAMES)}, optionally with ':voice'")
        return value
