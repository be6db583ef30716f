"""The `asr:` section of config.yaml (README "Configuration")."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.settings import DEVICE_PATTERN, Section


class ASRConfig(Section):
    backend: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    model: str = "shipped:whisper-tiny.en"
    device: str = Field("cpu", pattern=DEVICE_PATTERN)   # as embeddings.device
    compute_type: str = "int8"             # auto: float16 on a GPU, int8 on the CPU
    language: str | None = "en"            # None: detect
    vad: bool = True
    beam_size: int = Field(1, ge=1)
    max_audio_s: float = Field(900, gt=0)
    threads: int = Field(2, ge=1)
