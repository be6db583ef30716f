"""The `tts:` section of config.yaml (README "Configuration")."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.settings import Section


class TTSConfig(Section):
    enabled: bool = True
    backend: Literal["hibari", "piper", "espeak-ng", "gtts"] = "hibari"
    fallback: Literal["espeak-ng", "none"] = "espeak-ng"
    voice: str | None = None
    rate: float = Field(1.0, gt=0.25, le=4)
    threads: int = Field(1, ge=1)           # synthesis runs beside the LLM: keep it off the LLM's cores
    max_sentence_chars: int = Field(300, ge=40)
