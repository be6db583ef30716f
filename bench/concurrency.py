"""Simultaneous questions through one Pipeline (threads), default profile, text only.

The same questions are asked at each level (1, 2, 4, 8 at once), two ways:
- in waves (the way this benchmark measured before): the questions start together (a barrier), the
  next wave only when the whole wave is done, so a wave's slowest answer leaves the cores idle;
- kept in flight: that many askers, each taking the next question as soon as its answer is done,
  so the level holds until the list runs out (what many users asking get in steady state).
Every timing is taken from the moment the question was asked, so time queued behind the model's gate
counts. The local llama.cpp model writes one answer per context at once (`llm.contexts`,
rag/models/llm.py), the rest queue in the gate. Beside each row, the cores this process kept busy:
what a lone question already uses bounds what any level can add on this machine. Questions are SQuAD
questions the retriever does not abstain on (an abstention skips the model and would flatter the figures).
--quick: levels 1 and 2, short prompts and answers.
"""
from __future__ import annotations

import os
import threading
import time

from bench.common import (Context, Section, Table, answerable, engines, forget_prompt_cache, load_now, pct, quick_overrides,
                          spread, squad, squad_index, target)
from common.cpu import cores as machine_cores


def ask_one(pipeline, llm, question: str, t0: float) -> dict:
    from rag.events import fold
    from rag.pipeline import AskOptions

    outcome = fold(pipeline.ask(question, [], AskOptions(rewrite=False), t0=t0))
    if (done := outcome.done) is not None:
        return {"first_token": done.timings.get("first_token_s"), "done": done.timings.get("answer_done_s"),
                "tokens": llm.count_tokens(done.answer), "abstained": done.abstained}
    return {"failed": outcome.failed.message if outcome.failed is not None else "no outcome"}


def ask_all(pipeline, llm, questions: list[str]) -> tuple[list[dict], float]:
    """All `questions` at once from a common start; (one result each, wall seconds)."""
    barrier = threading.Barrier(len(questions) + 1)
    results: list[dict] = [{} for _ in questions]
    start = [0.0]

    def work(i: int, q: str) -> None:
        barrier.wait()
        results[i] = ask_one(pipeline, llm, q, start[0])

    threads = [threading.Thread(target=work, args=(i, q)) for i, q in enumerate(questions)]
    for t in threads:
        t.start()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start[0]


def in_waves(pipeline, llm, questions: list[str], level: int) -> tuple[list[dict], float]:
    rows, wall = [], 0.0
    for wave in range(0, len(questions), level):
        res, w = ask_all(pipeline, llm, questions[wave:wave + level])
        rows += res
        wall += w
    return rows, wall


def in_flight(pipeline, llm, questions: list[str], level: int) -> tuple[list[dict], float]:
    """`level` askers, each asking the next question as soon as its answer is done."""
    todo = iter(enumerate(questions))
    lock = threading.Lock()
    results: list[dict] = [{} for _ in questions]

    def asker() -> None:
        while True:
            with lock:
                i, q = next(todo, (None, None))
            if q is None:
                return
            results[i] = ask_one(pipeline, llm, q, time.perf_counter())

    threads = [threading.Thread(target=asker) for _ in range(level)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


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
    n = levels[-1] if ctx.quick else 2 * levels[-1]
    table = Table(f"The same {n} questions at each level through one Pipeline ({eng.cfg.llm.backend}, {contexts} "
                  f"context(s) of {eng.cfg.llm.n_threads} thread(s), max {eng.cfg.llm.max_new_tokens} new tokens), "
                  "in waves and kept in flight; times from when each question was asked",
                  ["simultaneous", "asked", "requests", "aggregate tokens/s", "first token p50 s", "first token p95 s",
                   "answer done p95 s", "process CPU, cores", "failed"])
    section = Section("concurrency", "Concurrency: simultaneous questions", [table])
    asked = pool[:n]     # every level asks the same questions, so answer lengths do not differ
    warm = [q for q in pool if q not in asked][-contexts:]
    ways = {"in waves": in_waves, "kept in flight": in_flight}
    for level in levels:
        for way, ask in ways.items():
            # Each run starts alike: no context holds a prompt of the questions below (llama.cpp would
            # reuse it), and every context has read the system part (untimed, other questions).
            forget_prompt_cache(llm)
            ask_all(pipeline, llm, warm)
            before = os.times()
            rows, wall = ask(pipeline, llm, asked, level)
            after = os.times()
            cores = (after.user - before.user + after.system - before.system) / wall
            ok = [r for r in rows if "failed" not in r]
            tokens = sum(r.get("tokens", 0) for r in ok)
            ft = [r["first_token"] for r in ok if r.get("first_token") is not None]
            table.add(level, way, len(rows), tokens / wall, pct(ft, 50), pct(ft, 95), pct([r["done"] for r in ok], 95),
                      cores, len(rows) - len(ok))
            section.figures[f"{level} {way}"] = {"tok_s": tokens / wall, "ft_p95": pct(ft, 95), "cores": cores}
            print(f"  {level} at once, {way}: {tokens / wall:.1f} tok/s aggregate, first token p95 {pct(ft, 95):.2f} s, "
                  f"{cores:.2f} cores ({load_now()})", flush=True)
    cores = machine_cores()
    for way in ways:
        one, top = section.figures[f"{levels[0]} {way}"], section.figures[f"{levels[-1]} {way}"]
        section.notes.append(f"{way.capitalize()}: from 1 to {levels[-1]} simultaneous questions aggregate throughput "
                             f"changes {top['tok_s'] / one['tok_s']:.2f}× and p95 first-token time "
                             f"{top['ft_p95'] / one['ft_p95']:.1f}×.")
        if 4 in levels:
            section.notes.append(target(f"aggregate tokens/s at 4 simultaneous questions vs 1, {way}",
                                        section.figures[f"4 {way}"]["tok_s"] / one["tok_s"], 2.0, True, "×"))
    one = section.figures[f"{levels[0]} kept in flight"]
    section.notes.append(
        f"The local model writes {contexts} answer(s) at once (one llama.cpp context each); the rest wait in the "
        f"gate's queue with their position shown. One question alone keeps {one['cores']:.2f} of the machine's "
        f"{cores} cores busy (this process's CPU time over the wall time: a lone prompt is read with "
        "`llm.n_threads_batch_idle` threads, and retrieval, sentence ranking and Python run beside the model), so "
        f"with the same work per answer no number of simultaneous questions can get more than "
        f"{cores / one['cores']:.2f}× its aggregate tokens/s on this machine.")
    return section
