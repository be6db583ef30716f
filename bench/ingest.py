"""Ingest speed, incremental re-ingest, and the embedding runtimes.

1. A 200-document folder (the 40 SQuAD documents, each cut into 5 files at paragraph boundaries; a
   document with fewer than 5 paragraphs is topped up with edited copies) is ingested into a fresh
   index with the default profile: documents/s and chunks/s.
2. The same folder again with nothing changed, then with ONE file edited: the re-ingest must take
   at most 5 % of the full ingest (target), because only the changed file is read, chunked and embedded.
3. Embedding runtimes, side by side in this run: torch (default), onnx, onnx-int8
   (`embeddings.runtime`, rag/models/embeddings.py). Pure embedding throughput on the same chunk texts, in
   interleaved rounds so every runtime sees the same load; a full ingest of the folder with each; and
   the answer-recall@5 each index keeps on squad-train (hybrid, as the app searches, and dense only).
--quick: the smallest document of the quick eval set -> 5 files, 12 questions.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from bench.common import Context, Eval, Section, Table, data_dir, engines, load_now, squad, target, temp_dir
from bench.retrieval_recall import found

RUNTIMES = ("torch", "onnx", "onnx-int8")
PARTS = 5


def split_documents(ev: Eval, names: list[str], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in names:
        text = (ev.docs / name).read_text(encoding="utf-8")
        title, _, body = text.partition("\n")
        paras = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
        groups: list[str] = []
        if len(paras) >= PARTS:
            total, acc, current = sum(map(len, paras)), 0, []
            for p in paras:   # contiguous groups of about equal size
                current.append(p)
                acc += len(p)
                if acc >= total * (len(groups) + 1) / PARTS and len(groups) < PARTS - 1:
                    groups.append("\n\n".join(current))
                    current = []
            groups.append("\n\n".join(current))
            groups = [g for g in groups if g]
        else:
            groups = list(paras)
        k = 0
        while len(groups) < PARTS:   # small documents: edited copies make the files distinct
            k += 1
            groups.append(f"(Copy {k} of this article, lightly edited.)\n\n" + "\n\n".join(paras))
        for i, group in enumerate(groups[:PARTS], start=1):
            (folder / f"{Path(name).stem}__part{i}.txt").write_text(f"{title.strip()} (part {i})\n\n{group}\n",
                                                                    encoding="utf-8")
            count += 1
    return count


def recall(eng, qa: list[dict], k: int = 5) -> tuple[float, float]:
    from rag.retrieve import Query

    r = eng.retriever
    hybrid = sum(found(r.search([Query(q["question"])], k), q["answers"]) for q in qa) / len(qa)
    dense = sum(found(r.search([Query(q["question"], lexical=False)], k), q["answers"]) for q in qa) / len(qa)
    return hybrid, dense


def run(ctx: Context) -> Section:
    ev = squad(ctx)
    names = ev.doc_names()
    if ctx.quick:
        names = sorted(names, key=lambda n: (ev.docs / n).stat().st_size)[:1]
    folder = temp_dir("ingest-docs", ctx.keep) / "docs"
    n_files = split_documents(ev, names, folder)
    qa = [q for q in ev.qa if q["source"] in set(names)][: 12 if ctx.quick else None]
    section = Section("ingest", "Ingest and embedding runtimes")

    # 1 + 2: the default profile
    eng = engines(data_dir("ingest", ctx))
    t = time.perf_counter()
    eng.embedder   # load before timing: the ingest measures work, not start-up
    torch_load_s = time.perf_counter() - t
    t = time.perf_counter()
    full = eng.ingestor.ingest([str(folder)], progress=False)
    t_full = time.perf_counter() - t
    print(f"  full ingest: {full.summary()} in {t_full:.1f} s ({load_now()})", flush=True)
    t = time.perf_counter()
    same = eng.ingestor.ingest([str(folder)], progress=False)
    t_same = time.perf_counter() - t
    edited = sorted(folder.glob("*.txt"))[len(names) // 2 * PARTS]
    edited.write_text(edited.read_text(encoding="utf-8") + "\nThis paragraph was added to test re-ingest.\n",
                      encoding="utf-8")
    t = time.perf_counter()
    one = eng.ingestor.ingest([str(folder)], progress=False)
    t_one = time.perf_counter() - t
    print(f"  re-ingest, one file changed: {one.summary()} in {t_one:.2f} s", flush=True)
    assert full.added == n_files and one.updated == 1 and same.unchanged == n_files, (full, same, one)
    table = Table(f"Ingest of {n_files} files ({len(names)} SQuAD documents cut in {PARTS}), default profile "
                  "(embeddings.runtime torch)",
                  ["run", "files added/updated", "chunks", "embedded", "seconds", "docs/s", "chunks/s", "% of full"])
    table.add("full ingest", full.added, full.chunks, full.embedded, t_full, full.added / t_full,
              full.chunks / t_full, 100.0)
    table.add("again, nothing changed", 0, 0, 0, t_same, None, None, 100 * t_same / t_full)
    table.add("again, one file edited", one.updated, one.chunks, one.embedded, t_one, None, None,
              100 * t_one / t_full)
    section.tables.append(table)
    section.notes.append(target("re-ingest of one changed file, % of the full ingest", 100 * t_one / t_full, 5,
                                False, " %", why="at --quick's 5 files the fixed costs (scan, BM25 rebuild, save) "
                                                 "dominate" if ctx.quick else ""))
    section.figures.update(full_s=t_full, docs_per_s=full.added / t_full, chunks_per_s=full.chunks / t_full,
                           reingest_pct=100 * t_one / t_full)

    # 3: embedding runtimes side by side
    _, texts = eng.index.catalog.all_texts()
    sample = texts[: (24 if ctx.quick else 480)]
    embedders, load_s = {}, {"torch": torch_load_s}
    from common.errors import BackendError

    for rt in RUNTIMES[1:]:
        t = time.perf_counter()
        try:
            embedders[rt] = engines(data_dir(f"ingest-{rt}", ctx), f"embeddings.runtime={rt}").embedder
        except BackendError as err:   # e.g. the onnx package (needed once, to export) is not installed
            section.notes.append(f"embeddings.runtime {rt} skipped: {err}")
            continue
        load_s[rt] = time.perf_counter() - t
    embedders["torch"] = eng.embedder
    available = [rt for rt in RUNTIMES if rt in embedders]
    rounds = 2 if ctx.quick else 3
    times: dict[str, list[float]] = {rt: [] for rt in available}
    for i in range(rounds):
        for rt in (available if i % 2 == 0 else available[::-1]):
            t = time.perf_counter()
            embedders[rt].embed(sample)
            times[rt].append(time.perf_counter() - t)
        print(f"  embedding round {i + 1}: " + ", ".join(f"{rt} {times[rt][-1]:.1f} s" for rt in available)
              + f" ({load_now()})", flush=True)
    best = {rt: min(v) for rt, v in times.items()}
    runtimes = Table(f"Embedding runtimes, same {len(sample)} chunk texts, best of {rounds} interleaved rounds; "
                     f"full ingest of the {n_files} files with each; answer-recall@5 on {len(qa)} questions",
                     ["runtime", "load s", "embed chunks/s", "speed vs torch", "full ingest s", "ingest docs/s",
                      "recall@5 hybrid", "recall@5 dense"])
    stats = {}
    for rt in available:
        if rt == "torch":
            e, t_ing = eng, t_full
        else:
            e = engines(data_dir(f"ingest-{rt}-idx", ctx), f"embeddings.runtime={rt}")
            t = time.perf_counter()
            e.ingestor.ingest([str(folder)], progress=False)
            t_ing = time.perf_counter() - t
        hybrid, dense = recall(e, qa)
        stats[rt] = {"speed": best["torch"] / best[rt], "hybrid": hybrid, "dense": dense, "ingest_s": t_ing}
        runtimes.add(rt, load_s[rt], len(sample) / best[rt], best["torch"] / best[rt], t_ing, n_files / t_ing,
                     hybrid, dense)
        print(f"  {rt}: ingest {t_ing:.1f} s, recall@5 hybrid {hybrid:.3f} dense {dense:.3f} ({load_now()})", flush=True)
    section.tables.append(runtimes)
    section.notes.append("The full ingests ran one runtime after another (torch first, in part 1), so load changes "
                         "between them show in that column; the interleaved embedding rounds are the fair comparison.")
    base = stats["torch"]
    for rt in available[1:]:
        s = stats[rt]
        section.notes.append(target(f"{rt} embedding throughput vs torch", s["speed"], 2.0, True, "×",
                                    why="onnxruntime's fp32 kernels are not much faster than torch's for this "
                                        "small model" if rt == "onnx" else ""))
        section.notes.append(target(f"{rt} answer-recall@5 loss vs torch (hybrid)", base["hybrid"] - s["hybrid"],
                                    0.01, False))
    if "onnx-int8" not in stats:
        return section
    win = stats["onnx-int8"]
    ok = win["speed"] >= 2.0 and base["hybrid"] - win["hybrid"] <= 0.01
    section.notes.append(
        f"Recommendation: embeddings.runtime **{'onnx-int8' if ok else 'torch'}** "
        f"(onnx-int8 embeds {win['speed']:.2f}× as fast as torch here, recall@5 {win['hybrid']:.3f} vs "
        f"{base['hybrid']:.3f}). Switching runtime keeps the index (same model name): int8 vectors are within "
        "cosine ~0.99 of the torch ones.")
    section.figures.update(runtimes=stats, recommend_int8=ok)
    return section
