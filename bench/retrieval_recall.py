"""Answer-recall@k on ../shared/eval/squad-train: single questions and two-turn follow-ups.

Prints our hybrid retrieval beside its parts (dense only, BM25 only) and, for follow-ups, our
history-aware fusion (with and without the LLM rewrite) beside the no-history and
"prefix the previous user turn" baselines, all measured in one run on one index.

    python -m bench.retrieval_recall [--data-dir DIR] [--k 5] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rag.config import load_config
from rag.engines import Engines
from rag.retrieve import Query, Retriever

SQUAD = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "squad-train"


def found(hits, answers) -> bool:
    text = " ".join(h.text.lower() for h in hits)
    return any(a.lower() in text for a in answers)


def main(argv=None, engines=None) -> dict:
    """Prints the table and returns its rows. `engines` (optional): an Engines to use instead of
    loading new models (python -m bench passes its shared ones); its data dir is the one searched."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--eval", default=str(SQUAD))
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-rewrite", action="store_true", help="skip the LLM-rewrite row (no LLM load)")
    args = ap.parse_args(argv)
    if engines is None:
        data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench-recall-")
        cfg = load_config("config.yaml", args.set + ["documents.folder=null"], data_dir)
        engines = Engines(cfg)
    cfg = engines.cfg
    t = time.perf_counter()
    report = engines.ingestor.ingest([str(Path(args.eval) / "docs")], progress=False)
    print(f"ingest: {report.summary()} in {time.perf_counter() - t:.1f} s")
    qa = [json.loads(line) for line in (Path(args.eval) / "qa.jsonl").read_text().splitlines()]
    followups = [json.loads(line) for line in (Path(args.eval) / "followups.jsonl").read_text().splitlines()]
    retriever, pipeline, k = engines.retriever, engines.pipeline() if not args.no_rewrite else None, args.k
    index = engines.index

    rows: dict[str, float] = {}
    model_reads = cfg.prompt.max_sources or k
    other = "rrf" if cfg.retrieval.fusion == "relative" else "relative"
    fusions = {cfg.retrieval.fusion: retriever,
               other: Retriever(index, cfg.retrieval.model_copy(update={"fusion": other}))}
    for name, fused in fusions.items():   # the configured fusion first, the other beside it
        label = f"single: hybrid (dense+BM25, {name} fusion{'' if fused is retriever else ', not configured'})"
        rows[label] = sum(found(fused.search([Query(q["question"])], k), q["answers"]) for q in qa) / len(qa)
        rows[f"  same, {name}: the best {model_reads} (what the model reads)"] = sum(
            found(fused.search([Query(q["question"])], model_reads), q["answers"]) for q in qa) / len(qa)
    rows["single: dense only"] = sum(found(retriever.search([Query(q["question"], lexical=False)], k), q["answers"])
                                     for q in qa) / len(qa)
    lex = 0
    for q in qa:
        refs = index.refs([s.chunk_id for s in index.lexical_search(q["question"], k)])
        lex += found(list(refs.values()), q["answers"])
    rows["single: BM25 only"] = lex / len(qa)

    def users(item):
        return [m["content"] for m in item["history"] if m["role"] == "user"]

    rows["follow-up: no history"] = sum(found(retriever.search([Query(f["question"])], k), f["answers"])
                                        for f in followups) / len(followups)
    rows["follow-up: previous user turn prefixed"] = sum(
        found(retriever.search([Query(users(f)[-1] + " " + f["question"])], k), f["answers"])
        for f in followups) / len(followups)
    from rag.pipeline import Pipeline

    fusion = Pipeline(cfg, retriever, llm=None)   # search(rewrite=False) never touches the LLM
    rows["follow-up: history-aware fusion (no rewrite)"] = sum(
        found(fusion.search(f["question"], f["history"], k, rewrite=False)[1], f["answers"])
        for f in followups) / len(followups)
    if pipeline is not None:
        t = time.perf_counter()
        rewritten = [pipeline.search(f["question"], f["history"], k, rewrite=True) for f in followups]
        per = (time.perf_counter() - t) / len(followups)
        rows["follow-up: LLM rewrite alone"] = sum(
            found(retriever.search([Query(s)], k), f["answers"]) for (s, _), f in zip(rewritten, followups)
        ) / len(followups)
        rows["follow-up: fusion + LLM rewrite (default)"] = sum(
            found(h, f["answers"]) for (_, h), f in zip(rewritten, followups)) / len(followups)
        rows["(rewrite + search seconds per follow-up)"] = per
    width = max(map(len, rows))
    print(f"\nanswer-recall@{k} on {len(qa)} questions / {len(followups)} follow-ups ({cfg.embeddings.model}, "
          f"chunks {cfg.chunking.chunk_tokens}/{cfg.chunking.overlap_tokens} tokens)")
    for name, value in rows.items():
        print(f"  {name:<{width}}  {value:.3f}")
    return rows


if __name__ == "__main__":
    main()
