"""`python -m bench recall`: bench/retrieval_recall.py (answer-recall@5, single questions and follow-ups)
on the default profile's index of squad-train, recorded like the other benchmarks. `quality` runs
the same table as its first part.
--quick: the 4-document quick set, without the LLM rewrite rows.
"""
from __future__ import annotations

from bench.common import Context, Section, Table, squad, squad_index


def run(ctx: Context) -> Section:
    from bench.quality import recall_rows

    ev = squad(ctx)
    rows = recall_rows(ctx, ev, squad_index(ctx, ev))
    table = Table(f"Answer-recall@5 on {len(ev.qa)} questions / {len(ev.followups)} follow-ups "
                  "(bench/retrieval_recall.py)", ["retrieval", "recall@5"])
    for name, value in rows.items():
        table.add(name, value)
    return Section("recall", "Retrieval answer-recall", [table], figures=rows)
