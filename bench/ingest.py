"""Chunking, ingest speed, incremental re-ingest, and the embedding runtimes.

0. Chunking, LangChain's recursive splitter (the chunker before issue 15, kept here as
   `LangChainSplitter`) against rag/ingest/chunking.py, on the same texts in one run: one line of
   prose (SQuAD text without paragraph breaks), random words, text without any separator, and a 5 MB
   one-line file; then the 5 MB file ingested with the default profile, and the one-off ONNX export.
1. A 200-document folder (the 40 SQuAD documents, each cut into 5 files at paragraph boundaries; a
   document with fewer than 5 paragraphs is topped up with edited copies) is ingested into a fresh
   index with the default profile: documents/s and chunks/s.
2. The same folder again with nothing changed, then with ONE file edited: the re-ingest must take
   at most 5 % of the full ingest (target), because only the changed file is read, chunked and embedded.
3. Embedding runtimes, side by side in this run: torch, onnx, onnx-int8 (default)
   (`embeddings.runtime`, rag/models/embeddings.py). Pure embedding throughput on the same chunk texts, in
   interleaved rounds so every runtime sees the same load; a full ingest of the folder with each; and
   the answer-recall@5 each index keeps on squad-train (hybrid, as the app searches, and dense only).
--quick: the smallest document of the quick eval set -> 5 files, 12 questions.
"""
from __future__ import annotations

import random
import re
import string
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Context, Eval, Section, Table, data_dir, engines, load_now, squad, target, temp_dir
from bench.retrieval_recall import found

RUNTIMES = ("torch", "onnx", "onnx-int8")
PARTS = 5
BIG = 5_000_000           # characters of the one-line file (documents.max_chars allows exactly this)


def remembering_short(count_tokens: Callable[[str], int]) -> Callable[[str], int]:
    """The old chunker's length function: token counts of pieces up to 32 characters remembered."""
    counts: dict[str, int] = {}

    def count(text: str) -> int:
        if len(text) > 32:
            return count_tokens(text)
        found = counts.get(text)
        if found is None:
            if len(counts) >= 50_000:
                counts.clear()
            found = counts[text] = count_tokens(text)
        return found

    return count


class LangChainSplitter:
    """The chunker before issue 15: RecursiveCharacterTextSplitter measuring every piece it tries with
    the tokenizer. Same interface as rag.ingest.chunking.Splitter, so an Ingestor can use it."""

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int, overlap_tokens: int):
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        from rag.ingest.chunking import SEPARATORS

        self.inner = RecursiveCharacterTextSplitter(
            separators=SEPARATORS, keep_separator="end", chunk_size=chunk_tokens,
            chunk_overlap=min(overlap_tokens, chunk_tokens // 2), length_function=remembering_short(count_tokens),
            add_start_index=True, strip_whitespace=True)

    def split(self, text: str) -> list[tuple[int, str]]:
        docs = self.inner.create_documents([text])
        return [(int(d.metadata.get("start_index", 0)), d.page_content.strip()) for d in docs if d.page_content.strip()]


def one_line_prose(ev: Eval, chars: int) -> str:
    """SQuAD text without paragraph or line breaks; copy k of the corpus marks each sentence with (k),
    so no chunk of a long text repeats an earlier one (repeats would be deduplicated, not embedded)."""
    base = " ".join(" ".join((ev.docs / n).read_text(encoding="utf-8") for n in ev.doc_names()).split())
    parts, size, k = [], 0, 0
    while size < chars:
        k += 1
        part = base if k == 1 else base.replace(". ", f" ({k}). ")
        parts.append(part)
        size += len(part) + 1
    return " ".join(parts)[:chars]


def chunking(ctx: Context, ev: Eval, embedder, cfg) -> tuple[Table, dict, str]:
    """Old splitter and new chunker on the same texts, one after the other."""
    from rag.ingest.chunking import make_splitter

    size, overlap = cfg.chunking.chunk_tokens, cfg.chunking.overlap_tokens
    rng = random.Random(15)
    n = 20_000 if ctx.quick else 200_000
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(n // 5))
    big = one_line_prose(ev, 200_000 if ctx.quick else BIG)
    texts = {f"one line of prose, {n:,} characters": big[:n], f"random words, {n:,} characters": words[:n],
             f"no separator at all, {n:,} characters": "".join(rng.choices(string.ascii_lowercase + string.digits, k=n)),
             f"one line of prose, {len(big):,} characters": big}
    table = Table(f"Chunking, {size}-token chunks with {overlap} overlap: LangChain's recursive splitter (before) "
                  "against the chunker that tokenizes each section once (now), one after the other in this run",
                  ["text", "chunks before", "chunks now", "same chunk texts", "before: wrong start offsets",
                   "before s", "now s", "speed-up"])
    speedups = {}
    for name, text in texts.items():
        old, new = LangChainSplitter(embedder.count_tokens, size, overlap), make_splitter(embedder.token_spans, size,
                                                                                          overlap)
        t = time.perf_counter()
        before = old.split(text)
        t_old = time.perf_counter() - t
        t = time.perf_counter()
        now = new.split(text)
        t_new = time.perf_counter() - t
        assert all(text[s:s + len(c)] == c for s, c in now)
        same = sum(a[1] == b[1] for a, b in zip(before, now)) if len(before) == len(now) else 0
        wrong = sum(text[s:s + len(c)] != c for s, c in before)
        table.add(name, len(before), len(now), same, wrong, t_old, t_new, t_old / t_new)
        speedups[name] = {"before_s": t_old, "now_s": t_new, "speedup": t_old / t_new}
        print(f"  chunking {name}: before {t_old:.2f} s, now {t_new:.2f} s ({load_now()})", flush=True)
    return table, speedups, big


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

    # 0: one-off export of the embedder to ONNX int8, into an empty cache (every other run reuses bench/out/cache)
    from rag.models.embeddings import ensure_onnx

    eng = engines(data_dir("ingest", ctx))
    default_rt = eng.cfg.embeddings.runtime
    t = time.perf_counter()
    ensure_onnx(eng.cfg.embeddings.model, temp_dir("onnx-export", ctx.keep) / "cache", int8=True)
    export_s = time.perf_counter() - t
    print(f"  one-off ONNX int8 export: {export_s:.1f} s ({load_now()})", flush=True)
    t = time.perf_counter()
    eng.embedder   # load (and export, once per cache) before timing: the ingest measures work, not start-up
    default_load_s = time.perf_counter() - t

    table, speedups, big = chunking(ctx, ev, eng.embedder, eng.cfg)
    section.tables.append(table)
    first = next(iter(speedups))
    section.notes.append(target(f"chunking speed-up on {first}", speedups[first]["speedup"], 10, True, "×",
                                why="the floor is tokenizing the text once, and the old splitter's remembered "
                                    "short pieces already made it cost only about 3 tokenizations here"))
    big_file = temp_dir("ingest-big", ctx.keep) / "one-line.txt"
    big_file.write_text(big, encoding="utf-8")
    eng_big = engines(data_dir("ingest-big", ctx), "documents.folder=null")
    t = time.perf_counter()
    big_report = eng_big.ingestor.ingest([str(big_file)], progress=False)
    t_big = time.perf_counter() - t
    assert big_report.added == 1, big_report
    print(f"  {len(big):,}-character one-line file: {big_report.summary()} in {t_big:.1f} s ({load_now()})", flush=True)
    once = Table(f"One-off costs and the one-line file, default profile (embeddings.runtime {default_rt})",
                 ["what", "chunks", "embedded", "seconds"])
    once.add("export of the embedder to ONNX + int8 (once per data dir)", None, None, export_s)
    once.add(f"ingest of a {big_file.stat().st_size / 1e6:.1f} MB one-line text file", big_report.chunks,
             big_report.embedded, t_big)
    section.tables.append(once)
    chunk_s = speedups[list(speedups)[-1]]["now_s"]
    section.notes.append(target(f"ingest of the {big_file.stat().st_size / 1e6:.1f} MB one-line file", t_big, 60,
                                False, " s", why=f"chunking it takes {chunk_s:.1f} s; embedding its "
                                                 f"{big_report.embedded:,} chunks takes the rest "
                                                 f"({big_report.embedded / max(t_big - chunk_s, 1e-9):.0f} chunks/s)"))
    section.figures.update(export_s=export_s, big_ingest_s=t_big, chunking_speedup=speedups)

    # 1 + 2: the default profile
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
                  f"(embeddings.runtime {default_rt})",
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

    # 3: embedding runtimes side by side; torch's full ingest takes the path before issue 15 (LangChain splitter)
    _, texts = eng.index.catalog.all_texts()
    sample = texts[: (24 if ctx.quick else 480)]
    embedders, load_s = {default_rt: eng.embedder}, {default_rt: default_load_s}
    from common.errors import BackendError

    for rt in RUNTIMES:
        if rt == default_rt:
            continue
        t = time.perf_counter()
        try:
            embedders[rt] = engines(data_dir(f"ingest-{rt}", ctx), f"embeddings.runtime={rt}").embedder
        except BackendError as err:   # e.g. the onnx package (needed once, to export) is not installed
            section.notes.append(f"embeddings.runtime {rt} skipped: {err}")
            continue
        load_s[rt] = time.perf_counter() - t
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
                     f"full ingest of the {n_files} files with each (torch: with the LangChain splitter, the path "
                     f"before issue 15); answer-recall@5 on {len(qa)} questions",
                     ["runtime", "load s", "embed chunks/s", "speed vs torch", "full ingest s", "ingest docs/s",
                      "recall@5 hybrid", "recall@5 dense"])
    stats = {}
    ref = best.get("torch", best[default_rt])
    for rt in available:
        if rt == default_rt:
            e, t_ing = eng, t_full
        else:
            e = engines(data_dir(f"ingest-{rt}-idx", ctx), f"embeddings.runtime={rt}")
            if rt == "torch":
                e.ingestor.splitter = LangChainSplitter(e.embedder.count_tokens, e.cfg.chunking.chunk_tokens,
                                                        e.cfg.chunking.overlap_tokens)
            t = time.perf_counter()
            e.ingestor.ingest([str(folder)], progress=False)
            t_ing = time.perf_counter() - t
        hybrid, dense = recall(e, qa)
        stats[rt] = {"speed": ref / best[rt], "hybrid": hybrid, "dense": dense, "ingest_s": t_ing}
        runtimes.add(rt + (" (default)" if rt == default_rt else ""), load_s[rt], len(sample) / best[rt],
                     ref / best[rt], t_ing, n_files / t_ing, hybrid, dense)
        print(f"  {rt}: ingest {t_ing:.1f} s, recall@5 hybrid {hybrid:.3f} dense {dense:.3f} ({load_now()})", flush=True)
    section.tables.append(runtimes)
    section.notes.append(f"The full ingests ran one runtime after another ({default_rt} first, in part 1), so load "
                         "changes between them show in that column; the interleaved embedding rounds are the fair "
                         "comparison of the runtimes.")
    section.figures.update(runtimes=stats)
    if "torch" not in stats:
        return section
    base = stats["torch"]
    for rt in available:
        if rt == "torch":
            continue
        s = stats[rt]
        section.notes.append(target(f"{rt} embedding throughput vs torch", s["speed"], 2.0, True, "×",
                                    why="onnxruntime's fp32 kernels are not much faster than torch's for this "
                                        "small model" if rt == "onnx" else ""))
        section.notes.append(target(f"{rt} answer-recall@5 loss vs torch (hybrid)", base["hybrid"] - s["hybrid"],
                                    0.01, False))
    speedup = base["ingest_s"] / t_full
    section.notes.append(target(f"full ingest of the {n_files} files, default profile ({default_rt}) vs the path "
                                "before issue 15 (torch, LangChain splitter), same run", speedup, 3.0, True, "×"))
    section.figures.update(ingest_speedup=speedup)
    return section
