"""Speech to text: decode any common audio, then transcribe it with a model loaded once.

    from asr.registry import load_transcriber
    stt = load_transcriber(cfg.asr, cache_dir=cfg.data_path / "models")
    transcript = stt.transcribe("question.webm")   # -> Transcript(text, language, duration_s, timings)

Imports only common/. Backends are imported only when chosen (asr/registry.py), so importing this
package is cheap and never loads a model.
"""
