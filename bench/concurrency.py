"""Simultaneous questions through one Pipeline (threads), default profile, text only.

At each level (1, 2, 4, 8 questions at once; the same 8 questions at every level, in waves) the requests start together (a barrier) and every
timing is taken from that common start, so time spent queued behind the model's gate counts. The
local llama.cpp model writes one answer per context at once (`llm.contexts`, rag/models/llm.py), the
rest queue in the gate: aggregate tokens/s should rise up to the number of contexts (one per core),
then stay flat while first-token time grows with the queue. Questions are SQuAD questions the
retriever does not abstain on (an abstention skips the model and would flatter the figures).
--quick: levels 1 and 2, short prompts and answers.
"""
from __future__ import annotations

import threading
import time

from bench.common import (Context, Section, Table, answerable, engines, forget_prompt_cache, load_now, pct, quick_overrides,
                          spread, squad, squad_index, target)


def ask_all(pipeline, llm, questions: list[str]) -> tuple[list[dict], float]:
    from rag.events import fold
    from rag.pipeline import AskOptions

    barrier = threading.Barrier(len(questions) + 1)
    results: list[dict] = [{} for _ in questions]
    start = [0.0]

    def work(i: int, q: str) -> None:
        barrier.wait()
        outcome = fold(pipeline.ask(q, [], AskOptions(rewrite=False), t0=start[0]))
        if (done := outcome.done) is not None:
            results[i] = {"first_token": done.timings.get("first_token_s"), "done": done.timings.get("answer_done_s"),
                          "tokens": llm.count_tokens(done.answer), "abstained": done.abstained}
        elif outcome.failed is not None:
            results[i] = {"failed": outcome.failed.message}

    threads = [threading.Thread(target=work, args=(i, q)) for i, q in enumerate(questions)]
    for t in threads:
        t.start()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start[0]


def run(ctx: Context) -> Section:
    ev = squad(ctx)
    data = squad_index(ctx, ev)
    levels = [1, 2] if ctx.quick else [1, 2, 4, 8]
    eng = engines(data, *quick_overrides(ctx))
    pipeline, llm = eng.pipeline(), eng.llm
    pool = []
    for q in spread(answerable(ev.qa, ev), 200):   # questions the retriever answers (no abstention)
        if not pipeline.should_abstain(pipeline.search(q["question"], [], None, rewrite=False)[1]):
            pool.append(q["question"])
        if len(pool) >= 40:
            break
    contexts = getattr(llm, "gate").slots
    table = Table(f"The same {levels[-1]} questions at each level through one Pipeline ({eng.cfg.llm.backend}, {contexts} context(s) of "
                  f"{eng.cfg.llm.n_threads} thread(s), max {eng.cfg.llm.max_new_tokens} new tokens); times from "
                  "the common start",
                  ["simultaneous", "requests", "aggregate tokens/s", "first token p50 s", "first token p95 s",
                   "answer done p95 s", "failed"])
    section = Section("concurrency", "Concurrency: simultaneous questions", [table])
    asked = pool[:levels[-1]]     # every level asks the same questions, so answer lengths do not differ
    warm = [q for q in pool if q not in asked][-contexts:]
    for level in levels:
        waves = 1 if ctx.quick else max(1, len(asked) // level)
        rows, tokens, wall = [], 0, 0.0
        # Each level starts alike: no context holds a prompt of the questions below (llama.cpp would
        # reuse it), and every context has read the system part (untimed, other questions).
        forget_prompt_cache(llm)
        ask_all(pipeline, llm, warm)
        for wave in range(waves):
            questions = asked[wave * level:(wave + 1) * level]
            res, w = ask_all(pipeline, llm, questions)
            rows += res
            tokens += sum(r.get("tokens", 0) for r in res)
            wall += w
        ok = [r for r in rows if "failed" not in r]
        ft = [r["first_token"] for r in ok if r.get("first_token") is not None]
        table.add(level, len(rows), tokens / wall, pct(ft, 50), pct(ft, 95), pct([r["done"] for r in ok], 95),
                  len(rows) - len(ok))
        section.figures[level] = {"tok_s": tokens / wall, "ft_p95": pct(ft, 95)}
        print(f"  {level} at once: {tokens / wall:.1f} tok/s aggregate, first token p95 {pct(ft, 95):.2f} s "
              f"({load_now()})", flush=True)
    one, top = section.figures[levels[0]], section.figures[levels[-1]]
    section.notes.append(f"From 1 to {levels[-1]} simultaneous questions aggregate throughput changes "
                         f"{top['tok_s'] / one['tok_s']:.2f}× and p95 first-token time {top['ft_p95'] / one['ft_p95']:.1f}×: "
                         f"the local model writes {contexts} answer(s) at once (one llama.cpp context each), "
                         "the rest wait in the gate's queue with their position shown.")
    if 4 in section.figures:
        section.notes.append(target("aggregate tokens/s at 4 simultaneous questions vs 1",
                                    section.figures[4]["tok_s"] / one["tok_s"], 2.0, True, "×"))
    return section
