"""The default LLM's weight types side by side (`llm.requantize`): as shipped (Q4_1) and re-quantized by
llama.cpp to types its CPU kernels repack (rag/models/gguf_quantize.py), in one run.

1. Raw llama.cpp speed, the same synthetic tokens for each type: prompt reading (100 tokens) and
   decoding (48 steps) with 1 and 2 threads, and decoding 1, 2 and 4 sequences at once in one context
   (batched: what a batching engine would get).
2. Answers: held-out squad-train questions (bench/models.py's half B, all 40 documents indexed), the
   default profile with only the weights changed, each prompt read in full (no cache from the previous
   question): gold answer in the model's own words and in its first sentence, token F1, declined
   (false abstention here), answers identical to the shipped weights', seconds per answer, first token.
--quick: 6 questions, types as shipped and iq4_nl.
"""
from __future__ import annotations

import os
import time

import numpy as np

from bench.common import Context, Section, Table, engines, forget, forget_prompt_cache, load_now, pct, spread, squad, \
    squad_index

TYPES = ("none", "iq4_nl", "q4_0", "q4_k_s", "q8_0")
QUESTIONS = 120


def raw_speed(path: str, threads: int, batch: int, steps: int = 48) -> tuple[float, float]:
    """(decode tokens/s over all sequences, prompt tokens/s) with the low-level API, greedy-free: the
    tokens fed are fixed, so every type does the same work."""
    import logging

    import llama_cpp as L

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)    # not a line per tensor loaded
    params = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), params)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_seq_max, cp.n_threads, cp.n_threads_batch = 2048, 512, 4, threads, threads
    ctx = L.llama_init_from_model(model, cp)
    b = L.llama_batch_init(512, 0, 4)
    prompt = list(range(1000, 1100))
    try:
        read = 0.0
        for seq in range(batch):
            b.n_tokens = len(prompt)
            for i, tok in enumerate(prompt):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, i, 1, i == len(prompt) - 1
                b.seq_id[i][0] = seq
            t = time.perf_counter()
            assert L.llama_decode(ctx, b) == 0
            read += time.perf_counter() - t
        t = time.perf_counter()
        for step in range(steps):
            b.n_tokens = batch
            for seq in range(batch):
                b.token[seq], b.pos[seq], b.n_seq_id[seq], b.logits[seq] = 2000 + step, len(prompt) + step, 1, True
                b.seq_id[seq][0] = seq
            assert L.llama_decode(ctx, b) == 0
        decode = time.perf_counter() - t
        return batch * steps / decode, batch * len(prompt) / read
    finally:
        L.llama_batch_free(b)
        L.llama_free(ctx)
        L.llama_model_free(model)


def run(ctx: Context) -> Section:
    from bench.models import ask, held_out_pools, score
    from common.shipped import resolve
    from rag.models.gguf_quantize import ensure_quantized

    types = ("none", "iq4_nl") if ctx.quick else TYPES
    ev = squad(ctx)
    full = squad_index(ctx, ev)
    asked = spread(held_out_pools(ev)["eval"], ctx.n(6, QUESTIONS))
    base = engines(full)
    source = resolve(base.cfg.llm.model, base.cache_dir)
    speed = Table("llama.cpp alone: tokens/s by weight type (100-token prompt; 48 decoding steps; batched = several "
                  "sequences decoded together in one context)",
                  ["weights", "file MB", "prompt, 1 thread", "prompt, 2 threads", "decode, 1 thread",
                   "decode, 2 threads", "batched 2 seqs, 1 thread", "batched 4 seqs, 1 thread",
                   "batched 4 seqs, 2 threads"])
    answers: dict[str, list[dict]] = {}
    for kind in types:
        path = source if kind == "none" else ensure_quantized(source, kind, base.cache_dir)
        (d11, p1), (d21, p2) = raw_speed(path, 1, 1), raw_speed(path, 2, 1)
        (d12, _), (d14, _), (d24, _) = raw_speed(path, 1, 2), raw_speed(path, 1, 4), raw_speed(path, 2, 4)
        speed.add(label(kind), os.path.getsize(path) / 1e6, p1, p2, d11, d21, d12, d14, d24)
        eng = engines(full, f"llm.requantize={kind}")
        pipeline = eng.pipeline()
        ask(pipeline, asked[0]["question"])                 # warm-up
        rows = []
        for q in asked:
            forget_prompt_cache(eng.llm)
            rows.append(score(ask(pipeline, q["question"]), q["answers"]))
        answers[kind] = rows
        print(f"  {label(kind)}: {len(rows)} answers, gold {np.mean([r['gold'] for r in rows]):.3f} ({load_now()})",
              flush=True)
        forget("llm")
    t = Table(f"Answers by weight type: {len(asked)} held-out questions about half-B documents (all 40 indexed), "
              "default profile otherwise, greedy, each prompt read in full",
              ["weights", "gold in own words", "gold in first sentence", "token F1", "declined (false abstention)",
               "same answer as shipped", "s per answer p50", "first token p50 s", "first token p95 s", "failed"])
    shipped = [r["answer"] for r in answers["none"]]
    for kind, rows in answers.items():
        ft = [r["timings"].get("first_token_s") for r in rows]
        t.add(label(kind), np.mean([r["gold"] for r in rows]), np.mean([r["first"] for r in rows]),
              np.mean([r["f1"] for r in rows]), np.mean([r["abstained"] for r in rows]),
              np.mean([r["answer"] == a for r, a in zip(rows, shipped)]), pct([r["seconds"] for r in rows], 50),
              pct(ft, 50), pct(ft, 95), sum("failed" in r for r in rows))
    s = Section("weights", "LLM weight types: as shipped vs re-quantized (llm.requantize)", [speed, t])
    gold = {k: np.mean([r["gold"] for r in rows]) for k, rows in answers.items()}
    se = float(np.sqrt(gold["none"] * (1 - gold["none"]) / len(asked)))
    s.notes.append(f"One standard error of a gold share over {len(asked)} questions is about {se:.3f}; greedy "
                   "answers of a 135M model flip on small weight changes, so compare shares, not identical answers.")
    s.figures.update({k: {"gold": g} for k, g in gold.items()})
    return s


def label(kind: str) -> str:
    return "as shipped (Q4_1)" if kind == "none" else kind.upper()
