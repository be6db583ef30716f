"""The benchmarks must not rot: `python -m bench all --quick --no-record` runs every benchmark at tiny
sizes and prints its tables, without touching bench/RESULTS.md. Plus the pure helpers, checked directly."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"

# One title per benchmark: each must be printed.
TABLES = {
    "search": "**Single-query dense search",
    "chunking": "**Chunking, ",
    "ingest": "**Ingest of 5 files",
    "embedding runtimes": "**Embedding runtimes",
    "generation": "**Time to first token and decode speed",
    "voice": "**End of speech -> first audio",
    "turn ends": "**Turn ends over",
    "concurrency": "**The same 2 questions at each level through one Pipeline",
    "memory": "**Resident memory (MB)",
    "recall": "**Answer-recall@5",
    "answers": "**Answers to 3 questions",
    "abstention": "**abstain_below sweep",
}


def _digest() -> str | None:
    return hashlib.sha256(RESULTS.read_bytes()).hexdigest() if RESULTS.exists() else None


@pytest.mark.slow     # about 4 minutes: every benchmark loads its own models
def test_bench_all_quick_prints_every_table_and_records_nothing():
    before = _digest()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    done = subprocess.run([sys.executable, "-m", "bench", "all", "--quick", "--no-record"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=840)
    out = done.stdout
    assert done.returncode == 0, (out[-3000:], done.stderr[-3000:])
    missing = [name for name, title in TABLES.items() if title not in out]
    assert not missing, (missing, out[-3000:])
    assert "| llamacpp |" in out and "Target peak RSS" in out and "Recommended retrieval.abstain_below" in out
    assert _digest() == before, "--no-record must leave bench/RESULTS.md alone"


def test_bandwidth_fraction_and_gpu_table():
    from bench.generation import GPU_BANDWIDTH_GBS, bandwidth_fraction

    # 100 tokens/s over 1 GB of weights on a 2 TB/s card: 5 % of the ceiling
    assert bandwidth_fraction(100, 1e9, 2e12) == pytest.approx(0.05)
    assert GPU_BANDWIDTH_GBS["H100"] > GPU_BANDWIDTH_GBS["A100"] > GPU_BANDWIDTH_GBS["T4"]


def test_squad_normalisation_f1_and_containment():
    from bench.quality import contains_gold, f1, normalize

    assert normalize("The  Eiffel Tower!") == "eiffel tower"
    assert f1("It is the Eiffel Tower.", ["Eiffel Tower"]) == pytest.approx(2 * 0.5 * 1 / 1.5)   # "it is eiffel tower"
    assert f1("nothing", ["Eiffel Tower"]) == 0.0
    assert contains_gold("Built in 1889 [1].", ["1889"]) and not contains_gold("Built in 1890.", ["1889", "the"])


def test_abstain_sweep_and_recommendation():
    from bench.quality import recommend, sweep

    held = [{"score": s, "llm_abstained": False} for s in (0.1, 0.15, 0.2, 0.25, 0.45)]
    ans = [{"score": s, "llm_abstained": s > 0.7} for s in (0.4, 0.5, 0.6, 0.8, 0.9)]
    rows = sweep(held, ans, [round(t * 0.05, 2) for t in range(15)])
    at_03 = next(r for r in rows if r["t"] == 0.3)
    assert at_03["abst_retrieval"] == 0.8 and at_03["false_retrieval"] == 0.0
    assert at_03["false_with_llm"] == 0.4          # the model declined two answerable questions
    best = recommend(rows)
    assert best["false_with_llm"] > 0.1 or best["t"] <= 0.4   # nothing fits the budget here: the best balance


def test_split_documents_makes_200_distinct_files(tmp_path):
    from bench.common import SQUAD, Eval
    from bench.ingest import split_documents

    ev = Eval(SQUAD)
    n = split_documents(ev, ev.doc_names(), tmp_path)
    files = sorted(tmp_path.glob("*.txt"))
    assert n == len(files) == 5 * len(ev.doc_names()) == 200
    assert len({f.read_text() for f in files}) == 200


def test_percentiles_and_busy_line():
    from bench.common import Busy, pct

    assert pct([1, 2, 3, 4, 5], 50) == 3 and pct([], 50) != pct([], 50)   # NaN when empty
    b = Busy().stop()
    assert {"load_before", "load_after", "wall_s"} <= set(b) and "load average" in Busy.describe(b)
