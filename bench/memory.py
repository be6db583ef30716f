"""Peak memory of the default profile serving one spoken question, measured in a fresh subprocess.

The child loads everything the voice app holds (embedder, index, LLM, speech-to-text, text-to-speech),
ingests the shipped txt/ folder, transcribes a spoken question (espeak-ng WAV) and answers it with
speech; it reports its resident memory after each step and the peak (VmHWM; getrusage ru_maxrss beside it). The same
is done with `embeddings.runtime=onnx-int8` beside it (full run), since the runtime changes what is loaded.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, Context, Section, Table, data_dir, target, temp_dir

QUESTION = "When does the Harbor Point library open on Saturdays?"
STEPS = ["start", "embedder", "ingest", "llm", "asr", "tts", "answered"]


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak (VmHWM), MB, from /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child(data: str, wav: str, overrides: list[str]) -> dict:
    """Runs in the subprocess: load, ingest, ask, and report."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rag.config import load_config
    from rag.engines import Engines
    from rag.events import fold
    from rag.pipeline import AskOptions

    rss = {"start": rss_mb()}
    cfg = load_config(ROOT / "config.yaml", [f"documents.folder={ROOT / 'txt'}", *overrides], data)
    eng = Engines(cfg)
    eng.embedder
    rss["embedder"] = rss_mb()
    report = eng.ensure_documents(progress=False)
    rss["ingest"] = rss_mb()
    eng.llm
    rss["llm"] = rss_mb()
    eng.transcriber
    rss["asr"] = rss_mb()
    eng.synthesizer
    rss["tts"] = rss_mb()
    t0 = time.perf_counter()
    text = eng.transcriber.transcribe(wav).text
    outcome = fold(eng.pipeline(speak=True).ask(text, [], AskOptions(voice=True, speak=True), t0=t0))
    audio_s = sum(len(chunk.samples) / chunk.sample_rate for chunk in outcome.audio)
    answer = outcome.done.answer if outcome.done else ""
    rss["answered"] = rss_mb()
    return {"rss_mb": rss, "peak_mb": rss_mb("VmHWM"), "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "chunks": report.chunks if report else 0, "heard": text, "answer": answer, "audio_s": audio_s}


def measure(ctx: Context, wav: Path, overrides: list[str]) -> dict:
    data = data_dir("memory", ctx)
    from rag.config import load_config
    from rag.models.embeddings import ensure_onnx

    cfg = load_config(ROOT / "config.yaml", overrides, str(data)).embeddings
    if cfg.runtime != "torch":   # the one-off export (~1 GB at its peak) is not what the app holds
        ensure_onnx(cfg.model, data / "cache", cfg.runtime == "onnx-int8")
    cmd = [sys.executable, "-m", "bench.memory", "--child", str(data), str(wav), *overrides]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"memory child failed ({out.returncode}): {out.stderr[-600:]}")
    return json.loads(lines[-1])


def run(ctx: Context) -> Section:
    from bench.voice import speak_to_wav

    wav = speak_to_wav(QUESTION, temp_dir("memory-wav", ctx.keep) / "question.wav")
    variants = {"default profile": []} if ctx.quick else {"default profile": [],
                                                          "embeddings.runtime=onnx-int8": ["embeddings.runtime=onnx-int8"]}
    results = {}
    for name, overrides in variants.items():
        results[name] = measure(ctx, wav, overrides)
        print(f"  {name}: peak RSS {results[name]['peak_mb']:.0f} MB", flush=True)
    table = Table("Resident memory (MB) of one process serving one spoken question (txt/ ingested; peak = VmHWM; "
                  "ru_maxrss also counts the parent's memory at fork, see below)",
                  ["profile", *[f"after {s}" for s in STEPS[1:]], "peak", "ru_maxrss"])
    for name, r in results.items():
        table.add(name, *[r["rss_mb"].get(s) for s in STEPS[1:]], r["peak_mb"], r["maxrss_mb"])
    section = Section("memory", "Memory: peak RSS serving one question", [table])
    r = results["default profile"]
    section.notes.append(f"Heard {r['heard']!r}; answered {r['answer'][:120]!r} with {r['audio_s']:.1f} s of speech.")
    section.notes.append(target("peak RSS, default profile", r["peak_mb"] / 1024, 3.0, False, " GB"))
    section.notes.append("The peak is the child's VmHWM (/proc/self/status): Linux carries the parent's resident "
                         "size at fork into the child's getrusage ru_maxrss across exec, so ru_maxrss reads high "
                         "when the benchmark process itself is large (after the search benchmark's 10^6 vectors).")
    section.figures.update({k: v["peak_mb"] for k, v in results.items()})
    return section


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(child(sys.argv[2], sys.argv[3], sys.argv[4:])))
    else:
        sys.exit("usage: python -m bench.memory --child DATA_DIR WAV [key=value ...] (run by `python -m bench memory`)")
