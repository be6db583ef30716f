"""Prompt settings per chat model, tuned on squad-train (issue 15): the system prompt (`prompt.system`),
the worked example (`prompt.example`) and the focus sentences (`prompt.focus_sentences`), for each
Qwen profile (SmolLM2-135M keeps the settings bench/quality.py chose for it).

Only questions about half A's documents (bench/quality.py `halves`; all 40 documents indexed) are asked
here: `python -m bench models` compares the models on half B's, so the choice is held out.
Measured per setting: the gold answer in the model's own words and in its first sentence, token F1,
declined (every one of these questions is answerable), seconds per answer. The chosen setting goes into
the profile by hand: the best gold in the model's own words, the faster one when within 0.05.
--quick: 3 questions, two settings.
"""
from __future__ import annotations

import numpy as np

from bench.common import Context, Section, Table, engines, forget, load_now, pct, quick_overrides, spread, squad, squad_index
from bench.models import PROFILES, ask, held_out_pools, score

GRID = [("default", False, 3), ("answer-first", False, 3), ("default", True, 3), ("answer-first", True, 3),
        ("default", False, None), ("answer-first", False, None)]
TUNE_N = {"Qwen2.5-Coder-0.5B": 20, "Qwen2.5-Coder-1.5B": 12}
GRID_N = {"Qwen2.5-Coder-0.5B": 6, "Qwen2.5-Coder-1.5B": 4}   # the 1.5B reads prompts at ~35 tok/s: no whole passages


def run(ctx: Context) -> Section:
    ev = squad(ctx)
    full = squad_index(ctx, ev)
    pool = held_out_pools(ev)["tune"]
    section = Section("prompts", "Prompt settings per chat model, tuned on squad-train half A (issue 15)")
    for label, profile in PROFILES[1:]:
        questions = spread(pool, ctx.n(3, TUNE_N[label]))
        table = Table(f"{label}: {len(questions)} questions about half-A documents (all 40 indexed), greedy",
                      ["prompt.system", "example", "focus_sentences", "gold, own words", "gold, first sentence",
                       "token F1", "declined", "s per answer p50"])
        for system, example, focus in GRID[:2 if ctx.quick else GRID_N[label]]:
            eng = engines(full, *quick_overrides(ctx), f"prompt.system={system}", f"prompt.example={str(example).lower()}",
                          f"prompt.focus_sentences={'null' if focus is None else focus}", config=profile)
            pipeline = eng.pipeline()
            rows = [score(ask(pipeline, q["question"]), q["answers"]) for q in questions]
            table.add(system, example, focus, *(float(np.mean([r[k] for r in rows])) for k in ("gold", "first", "f1", "abstained")),
                      pct([r["seconds"] for r in rows], 50))
            print(f"  {label} {system} example={example} focus={focus}: gold {table.rows[-1][3]:.2f}, "
                  f"first {table.rows[-1][4]:.2f} ({load_now()})", flush=True)
            for r in rows[:3]:
                print(f"    {r['words'][:140]!r}", flush=True)
        section.tables.append(table)
        forget("llm")
    return section
