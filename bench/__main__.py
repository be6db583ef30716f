"""One entry point for the benchmarks.

    python -m bench all [--quick] [--no-record]     every benchmark, in order
    python -m bench NAME [NAME ...] [--quick]        some of them
    python -m bench --list

Each benchmark prints its tables and (unless --no-record) appends them to bench/RESULTS.md with the
commit, the machine and how busy the machine was while it ran.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
import warnings

from bench.common import Busy, Context, commit, machine, record

BENCHMARKS = {
    "generation": "time to first token and tokens/s per LLM backend at 300 / 1,200 / 3,000 prompt tokens",
    "voice": "end of speech -> first audio, p50/p95: the seed's order vs streamed sentence-by-sentence speech",
    "ingest": "200-document ingest, one-file re-ingest, and embedding runtimes (torch / onnx / onnx-int8)",
    "search": "flat vs HNSW latency and recall@10 at 10^3 .. 10^6 chunks",
    "concurrency": "1 / 2 / 4 / 8 simultaneous questions: aggregate tokens/s and p95 first token",
    "memory": "peak RSS of the default profile serving one spoken question (subprocess)",
    "quality": "answer-recall@k, accuracy, abstention (with the abstain_below sweep), citations",
    "recall": "bench/retrieval_recall.py alone: answer-recall@5, single questions and follow-ups",
    "models": "SmolLM2-135M, Qwen2.5-Coder 0.5B and 1.5B side by side on squad-train (held-out half B)",
    "prompts": "prompt settings per Qwen profile on squad-train half A (what bench models holds out)",
    "weights": "the default LLM as shipped (Q4_1) vs re-quantized (llm.requantize): llama.cpp speed, held-out answers",
    "multilingual": "de/es/fr questions about English documents: recall@5 beside English, answer language "
                    "(profiles/multilingual.yaml's LLM; not in `all`)",
}
ALL = ["search", "ingest", "generation", "voice", "concurrency", "memory", "quality"]   # quality includes recall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="'all' or benchmark names: " + ", ".join(BENCHMARKS))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke test)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave bench/RESULTS.md alone")
    ap.add_argument("--questions", type=int, help="override the number of questions where a benchmark asks some")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data dirs under bench/out/tmp")
    ap.add_argument("--list", action="store_true", help="list the benchmarks")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = ap.parse_args(argv)
    if args.list or not args.names:
        for name, text in BENCHMARKS.items():
            print(f"{name:<12} {text}")
        return 0 if args.list else 2
    names = ALL if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: all, {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:   # bm25s sets its own logger to DEBUG when imported (after rag/index/document_index.py quietened it)
        import bm25s  # noqa: F401
    except ImportError:
        pass
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    if not args.verbose:
        warnings.filterwarnings("ignore")
        for noisy in ("transformers", "sentence_transformers", "faster_whisper", "httpx"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    ctx = Context(quick=args.quick, record=not args.no_record, questions=args.questions, keep=args.keep)
    print(f"# bench {' '.join(names)} ({'quick' if ctx.quick else 'full'}) — commit {commit()}\n# {machine()}",
          flush=True)
    failed = []
    for name in names:
        print(f"\n=== {name}: {BENCHMARKS[name]}", flush=True)
        busy = Busy()
        t = time.perf_counter()
        try:
            section = importlib.import_module(f"bench.{name}").run(ctx)
        except Exception:   # noqa: BLE001 - one broken benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(name)
            continue
        b = busy.stop()
        print("\n" + section.markdown())
        print(f"\n({name}: {time.perf_counter() - t:.0f} s; {Busy.describe(b)}: {Busy.verdict(b)})", flush=True)
        record(section, b, ctx, list(BENCHMARKS))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
