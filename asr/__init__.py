"""Speech to text: decode any common audio, then transcribe it with a model loaded once.

    from asr import load_transcriber
    stt = load_transcriber(cfg.asr, cache_dir=cfg.data_path / "models")
    transcript = stt.transcribe("question.webm")   # -> Transcript(text, language, duration_s, timings)

Backends are imported only when chosen, so importing this package is cheap and never loads a model.
"""
from common.audio import load_audio
from asr.base import Transcriber, Transcript, load_transcriber

__all__ = ["Transcriber", "Transcript", "load_audio", "load_transcriber"]
