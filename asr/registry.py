"""Speech-to-text backends by name (`asr.backend`), each imported only when chosen, so choosing
faster-whisper never imports torch and openai-whisper never imports ctranslate2."""
from __future__ import annotations

from pathlib import Path

from asr.base import Transcriber
from asr.config import ASRConfig
from common.registry import backend

BACKENDS = {
    "faster-whisper": "asr.faster_whisper_backend:FasterWhisperTranscriber",
    "openai-whisper": "asr.openai_whisper_backend:OpenAIWhisperTranscriber",
}


def load_transcriber(cfg: ASRConfig, cache_dir: Path, threads: int = 2) -> Transcriber:
    """Load the configured backend and model once; `cache_dir` holds rebuilt/converted model files."""
    return backend(BACKENDS, "asr.backend", cfg.backend)(cfg, Path(cache_dir), threads=threads)
