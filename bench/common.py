"""Shared pieces of the benchmarks: machine facts, how busy the machine was, tables, percentiles,
temporary data dirs, the SQuAD eval set, shared model instances, and recording to bench/RESULTS.md.

The machine these run on is shared, so every benchmark compares its variants side by side in one run
(same load, same minute) and every recorded section says how busy the machine was: the load average
before and after, and how many cores other processes used on average while it ran.
"""
from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared" / "eval" / "squad-train"
RESULTS = ROOT / "bench" / "RESULTS.md"
OUT = ROOT / "bench" / "out"          # git-ignored: model cache shared by runs, temporary data dirs
CACHE = OUT / "cache"                 # float32 LLM copy, ONNX exports: made once, reused by every run
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    """A free TCP port on loopback (for servers the benchmarks and tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Context:
    quick: bool = False
    record: bool = True
    questions: int | None = None      # override of a benchmark's question count
    keep: bool = False                # keep temporary data dirs (debugging)

    def n(self, quick: int, full: int) -> int:
        return self.questions or (quick if self.quick else full)


# -- machine and load ---------------------------------------------------------------------------
def _proc_line(path: str, prefix: str) -> str | None:
    """The value after ':' of the first line of a /proc file that starts with `prefix`."""
    try:
        return next((line.split(":", 1)[1].strip() for line in Path(path).read_text().splitlines()
                     if line.startswith(prefix)), None)
    except OSError:
        return None


def gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine() -> str:
    cpu = _proc_line("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    ram = int((_proc_line("/proc/meminfo", "MemTotal") or "0 kB").split()[0]) / 2**20
    gpu = "; ".join(gpus()) or "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {ram:.1f} GiB RAM, {gpu}, Python {platform.python_version()}"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + (" (+ uncommitted changes)" if dirty else "")


def _cpu_busy_s() -> float | None:
    """Seconds of CPU time all processes on the machine have used since boot (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]   # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


class Busy:
    """How busy the machine was between start() and stop(): load average before/after and the cores
    other processes used on average (machine CPU time minus ours, over the wall time)."""

    def __init__(self) -> None:
        self.load0 = os.getloadavg()
        self.t0 = time.monotonic()
        self.machine0 = _cpu_busy_s()
        self.own0 = _own_cpu_s()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        load1 = os.getloadavg()
        machine1 = _cpu_busy_s()
        own = _own_cpu_s() - self.own0
        out = {"wall_s": wall, "load_before": self.load0[0], "load_after": load1[0], "own_cores": own / max(wall, 1e-9)}
        if machine1 is not None and self.machine0 is not None:
            others = (machine1 - self.machine0 - own) / max(wall, 1e-9)
            out["others_cores"] = min(float(os.cpu_count() or 1), max(0.0, others))
        return out

    @staticmethod
    def describe(b: dict[str, float]) -> str:
        cores = os.cpu_count() or 1
        text = (f"load average (1 min) {b['load_before']:.2f} before, {b['load_after']:.2f} after, on {cores} cores; "
                f"{b['wall_s']:.0f} s wall")
        if "others_cores" in b:
            text += (f"; other processes used {b['others_cores']:.2f} of {cores} cores on average "
                     f"(this benchmark {b['own_cores']:.2f})")
        return text

    @staticmethod
    def verdict(b: dict[str, float]) -> str:
        others, cores = b.get("others_cores", b["load_before"]), os.cpu_count() or 1
        if others < 0.5 * cores:
            return "idle" if others < 0.15 * cores else "partly busy"
        return "BUSY (shared with other runs: absolute times are pessimistic, ratios are what to compare)"


def load_now() -> str:
    return "load {:.2f}/{:.2f}".format(*os.getloadavg()[:2])


# -- numbers and tables -------------------------------------------------------------------------
def pct(values, p: float) -> float:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, p)) if values else float("nan")


def fmt(value, digits: int = 3) -> str:
    if isinstance(value, str):
        return value
    if value is None or value != value:   # None, NaN
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(1, digits - 1)}f}"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def markdown(self) -> str:
        cells = [[fmt(c) for c in row] for row in self.rows]
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)


@dataclass
class Section:
    """What a benchmark returns: its tables, and notes (target verdicts, explanations)."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)   # headline numbers, for the final summary

    def markdown(self) -> str:
        body = "\n\n".join(t.markdown() for t in self.tables)
        if self.notes:
            body += "\n\n" + "\n".join(f"- {n}" for n in self.notes)
        return body


def target(label: str, value: float, goal: float, higher_is_better: bool, unit: str = "", why: str = "") -> str:
    ok = value >= goal if higher_is_better else value <= goal
    sign = "≥" if higher_is_better else "≤"
    if ok:
        return f"Target {label} {sign} {goal:g}{unit}: **met** ({fmt(value)}{unit})."
    gap = (goal - value) if higher_is_better else (value - goal)
    return (f"Target {label} {sign} {goal:g}{unit}: **missed** by {fmt(gap)}{unit} ({fmt(value)}{unit})"
            + (f": {why}" if why else "."))


HEADER = """# Benchmark results

Every section below was appended by a run of the benchmarks in `bench/` (newest last). Rerun with

    .venv/bin/python -m bench all            # the full run (about an hour on 2 cores; HNSW on 10^6 takes minutes)
    .venv/bin/python -m bench all --quick    # small sizes, a few minutes (CI runs it with --no-record)
    .venv/bin/python -m bench NAME           # one of: {names}

Each section names the commit, the machine and how busy it was. The machine is shared with other
people's test runs, so absolute times vary from run to run: compare the figures measured side by side
in one section (the ratios), and read the load line before trusting a time.
"""


def record(section: Section, busy: dict[str, float], ctx: Context, names: list[str]) -> None:
    if not ctx.record:
        return
    if not RESULTS.exists() or not RESULTS.read_text().strip():
        RESULTS.write_text(HEADER.format(names=", ".join(names)))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if ctx.quick else "full"
    text = (f"\n\n## {section.title} — {stamp} ({mode} run)\n\n"
            f"- commit {commit()}\n- machine: {machine()}\n"
            f"- busy: {Busy.describe(busy)}: **{Busy.verdict(busy)}**\n\n"
            f"{section.markdown()}\n")
    with RESULTS.open("a") as f:
        f.write(text)


# -- data dirs, eval set, engines ---------------------------------------------------------------
_TEMPS: list[Path] = []


def _cleanup() -> None:
    for path in _TEMPS:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup)


def temp_dir(prefix: str, keep: bool = False) -> Path:
    (OUT / "tmp").mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=OUT / "tmp"))
    if not keep:
        _TEMPS.append(path)
    return path


def data_dir(prefix: str, ctx: Context | None = None) -> Path:
    """A fresh data dir whose model cache is the shared bench/out/cache (conversions happen once)."""
    path = temp_dir(f"data-{prefix}", keep=bool(ctx and ctx.keep))
    CACHE.mkdir(parents=True, exist_ok=True)
    (path / "cache").symlink_to(CACHE.resolve(), target_is_directory=True)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Eval:
    folder: Path            # docs/, qa.jsonl, followups.jsonl

    docs = property(lambda self: self.folder / "docs")
    qa = cached_property(lambda self: read_jsonl(self.folder / "qa.jsonl"))
    followups = cached_property(lambda self: read_jsonl(self.folder / "followups.jsonl"))

    def doc_names(self) -> list[str]:
        return sorted(p.name for p in self.docs.glob("*.txt"))


_EVAL: dict[int, Eval] = {}


def squad(ctx: Context, quick_docs: int = 4) -> Eval:
    """The SQuAD eval set; --quick: the `quick_docs` smallest documents with at least 3 questions (and
    a follow-up if one fits), and their questions."""
    n = quick_docs if ctx.quick else 0
    if n in _EVAL or not n:
        return _EVAL.setdefault(n, Eval(SQUAD))
    full = Eval(SQUAD)
    counts = Counter(q["source"] for q in full.qa)
    size = {name: (full.docs / name).stat().st_size for name in counts}
    with_followup = {f["source"] for f in full.followups}
    ranked = sorted((s for s in counts if counts[s] >= 3), key=lambda s: (size[s], s))
    followup_doc = min(with_followup & set(ranked), key=size.__getitem__)
    keep = ranked[:n] if followup_doc in ranked[:n] else ranked[:n - 1] + [followup_doc]
    folder = temp_dir("eval-quick")
    (folder / "docs").mkdir()
    for name in keep:
        shutil.copy2(full.docs / name, folder / "docs" / name)
    for fname, items in (("qa.jsonl", full.qa), ("followups.jsonl", full.followups)):
        chosen = [q for q in items if q["source"] in keep]
        (folder / fname).write_text("".join(json.dumps(q) + "\n" for q in chosen))
    _EVAL[n] = Eval(folder)
    return _EVAL[n]


# Loaded models are shared by every benchmark in one process (loading is slow); keyed by their config.
_SHARED: dict[tuple[str, Any], Any] = {}


def _shared(key: tuple[str, Any], factory: Callable[[], Any]) -> Any:
    if key not in _SHARED:
        _SHARED[key] = factory()
    return _SHARED[key]


def forget(kind: str) -> None:
    """Drop shared instances of one kind (e.g. "llm") so their memory can be freed."""
    for key in [k for k in _SHARED if k[0] == kind]:
        del _SHARED[key]


def quick_overrides(ctx: Context) -> list[str]:
    """--quick answers with a short prompt and answer: a smoke test, not a measurement."""
    return ["prompt.context_tokens=300", "llm.max_new_tokens=24"] if ctx.quick else []


def engines(data: Path, *overrides: str, config: Path = ROOT / "config.yaml"):
    """rag.engines.Engines over `data` with the default profile (config.yaml, or another profile) and
    `overrides`, reusing models already loaded by an earlier benchmark with the same settings."""
    from rag.config import load_config
    from rag.engines import Engines

    def shared(name: str, section: str) -> cached_property:
        def load(self):
            return _shared((name, getattr(self.cfg, section).model_dump_json()), lambda: getattr(Engines, name).func(self))
        return cached_property(load)

    # Each model property loads through the process-wide cache, keyed by its config section.
    BenchEngines = type("BenchEngines", (Engines,), {name: shared(name, section) for name, section in Engines.MODELS.items()})
    cfg = load_config(config, ["documents.folder=null", *overrides], str(data))
    return BenchEngines(cfg)


_INDEXED: dict[str, Path] = {}


def squad_index(ctx: Context, ev: Eval) -> Path:
    """A data dir holding the eval documents ingested with the default profile (made once per run)."""
    key = str(ev.folder)
    if key not in _INDEXED:
        data = data_dir("squad", ctx)
        t = time.perf_counter()
        report = engines(data).ingestor.ingest([str(ev.docs)], progress=False)
        print(f"  [squad index: {report.summary()} in {time.perf_counter() - t:.1f} s, {load_now()}]", flush=True)
        _INDEXED[key] = data
    return _INDEXED[key]


def copy_index(src: Path, ctx: Context, prefix: str) -> Path:
    data = data_dir(prefix, ctx)
    shutil.copytree(src / "index", data / "index")
    return data


def forget_prompt_cache(llm) -> None:
    """llama.cpp reuses the KV cache of the previous prompt's common prefix: asking the same question
    twice makes the second prompt nearly free. Benchmarks that compare two ways of asking the same
    question clear it first, so both pay the same prompt cost."""
    if hasattr(llm, "forget_prompts"):
        with llm.gate.held():         # never under a request that is using the model (a call's read-ahead)
            llm.forget_prompts()


def answerable(questions: list[dict], ev: Eval, docs: set[str] | None = None) -> list[dict]:
    names = set(ev.doc_names()) if docs is None else docs
    return [q for q in questions if q["source"] in names]


def spread(items: list, n: int) -> list:
    """n items spread evenly over the list (deterministic, not just the first n)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
