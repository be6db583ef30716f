"""A GGUF model re-quantized once to a weight type this CPU has fast llama.cpp kernels for (`llm.requantize`).

SmolLM2-135M ships as Q4_1 (common/shipped.py), which llama.cpp multiplies with its generic dot
products. Q8_0, IQ4_NL, Q4_0 and Q4_K weights get its faster AVX2/AVX-512 (and ARM) kernels, several
rows at a time: on the 2-core box Q8_0 reads prompts ~1.8x as fast as Q4_1 and holds the same values
to within 1/254 of each block's range, so its answers stay the shipped model's; IQ4_NL is faster still
but answers follow-ups after an interrupted answer worse (bench/RESULTS.md, "LLM weight types").
llama.cpp's own quantizer does the conversion (~1 s for 135M parameters), once per model under
`<cache_dir>/gguf/` (or `$RAG_GGUF_CACHE`), and redoes it when the source file or llama.cpp's version
changes; a file lock keeps two processes from converting at once, and a half-written file is never
used (written aside, then renamed).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from common.errors import BackendError

log = logging.getLogger(__name__)

# `llm.requantize` names -> llama.cpp's LLAMA_FTYPE_MOSTLY_* (the mix of types llama.cpp picks for each).
FTYPES = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL",
          "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
GGUF_CACHE_ENV = "RAG_GGUF_CACHE"    # one folder for every data dir's conversions (the tests set it)


def quantized_path(source: str, kind: str, cache_dir: Path) -> Path:
    shared = os.environ.get(GGUF_CACHE_ENV)
    folder = Path(shared).expanduser() if shared else Path(cache_dir) / "gguf"
    return folder / f"{Path(source).stem}.{kind}.gguf"


def ensure_quantized(source: str, kind: str, cache_dir: Path) -> str:
    """The path of `source` re-quantized to `kind` (a key of FTYPES), converting it the first time."""
    import llama_cpp
    from filelock import FileLock

    if kind not in FTYPES:
        raise BackendError(f"llm.requantize {kind!r} is not one of {', '.join(FTYPES)}")
    out = quantized_path(source, kind, cache_dir)
    stat = Path(source).stat()
    stamp = {"source": str(Path(source).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "type": kind, "llama_cpp": llama_cpp.__version__}
    stamp_file = out.with_suffix(".json")

    def current() -> bool:
        try:
            return json.loads(stamp_file.read_text()) == stamp and out.is_file()
        except (OSError, ValueError):
            return False

    if current():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.with_suffix(".lock"))):
        if current():
            return str(out)
        log.info("LLM %s: one-time conversion to %s into %s (a few seconds)", Path(source).name, kind, out.parent)
        started = time.monotonic()
        staging = out.with_suffix(".tmp")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, FTYPES[kind])
        params.allow_requantize = True      # the source is already quantized: that is the point
        params.nthread = os.cpu_count() or 1
        quiet = logging.getLogger("llama-cpp-python")   # llama.cpp prints a line per tensor otherwise
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            failed = llama_cpp.llama_model_quantize(str(source).encode(), str(staging).encode(), params)
        finally:
            quiet.setLevel(level)
        if failed or not staging.is_file():
            staging.unlink(missing_ok=True)
            raise BackendError(f"llama.cpp could not convert {source} to {kind}; set llm.requantize: none")
        os.replace(staging, out)
        stamp_file.write_text(json.dumps(stamp, indent=2))
        log.info("LLM %s: converted to %s in %.1f s", Path(source).name, kind, time.monotonic() - started)
    return str(out)
