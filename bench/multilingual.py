"""`python -m bench multilingual`: questions in German, Spanish and French about English documents
(../shared/eval/multilingual/qa.jsonl, 24 hand translations of squad-train questions; issue 16).

- retrieval: answer-recall@5 of the translated questions beside their English originals, in one run on
  one index: the original alone (no translation), and the pipeline's way (the LLM's translation fused
  with the original). Target: >= 0.85 of the English recall.
- answers: each translated question asked in full with the multilingual profile's settings; the answer
  (without its quoted evidence) must be in the question's language, counted with the stopword detector
  (common/language.py). Target: >= 0.9.

The LLM is the profile's (profiles/multilingual.yaml); `BENCH_MULTILINGUAL_LLM=/path/to.gguf` points it at
another file (e.g. the Qwen GGUF joined by hand before its shipped entry exists).
--quick: 2 questions per language, short answers.

    python -m bench multilingual [--quick] [--no-record]
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import yaml

from bench.common import (ROOT, Context, Eval, Section, Table, copy_index, engines, fmt, load_now, read_jsonl,
                          squad, squad_index, target, temp_dir)

EVAL = ROOT.parent / "shared" / "eval" / "multilingual" / "qa.jsonl"
PROFILE = ROOT / "profiles" / "multilingual.yaml"
_EVIDENCE = re.compile(r"\n\n(Source|Closest passage) \[\d+\]: \".*\"\s*$", re.DOTALL)


def found(hits, answers) -> bool:
    text = " ".join(h.text.lower() for h in hits)
    return any(a.lower() in text for a in answers)


def answer_words(answer: str) -> str:
    """The model's own words: without the verbatim evidence quote, the [n] citations and what it quotes
    from the sources in quotation marks (verbatim source text stays in the source's language)."""
    return re.sub(r"\[\d+\]|\"[^\"]*\"|“[^”]*”", " ", _EVIDENCE.sub("", answer))


def models() -> list[str]:
    """The LLMs to measure: the profile's, or BENCH_MULTILINGUAL_LLM (several: comma-separated)."""
    profile = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    return [m.strip() for m in (os.environ.get("BENCH_MULTILINGUAL_LLM") or profile["llm"]["model"]).split(",")]


def overrides(llm: str) -> list[str]:
    """The profile's settings that matter here, over the default profile's index (same embedder, chunks)."""
    profile = yaml.safe_load(PROFILE.read_text(encoding="utf-8"))
    langs = ",".join(profile["asr"]["languages"])
    return [f"llm.model={llm}", f"asr.languages=[{langs}]", "memory.translate=true",
            f"prompt.max_sources={profile['prompt']['max_sources']}"]


def pick(items: list[dict], per_language: int | None) -> list[dict]:
    if per_language is None:
        return items
    out: list[dict] = []
    for code in dict.fromkeys(q["language"] for q in items):
        out += [q for q in items if q["language"] == code][:per_language]
    return out


def run(ctx: Context) -> Section:
    questions = pick(read_jsonl(EVAL), 2 if ctx.quick else None)
    ev = squad(ctx, quick_docs=0)          # all 40 documents: the full run searches among all of them
    if ctx.quick:                           # only the documents these questions are about
        folder = temp_dir("eval-multilingual")
        (folder / "docs").mkdir()
        for name in {q["source"] for q in questions}:
            shutil.copy2(ev.docs / name, folder / "docs" / name)
        ev = Eval(folder)
    data = copy_index(squad_index(ctx, ev), ctx, "multilingual")
    tables, notes, figures = [], [], {}
    for llm in models():
        t, n, f = measure(ctx, questions, data, llm)
        tables += t
        notes += n
        figures[Path(llm).name] = f
    return Section("multilingual", "Questions in other languages (issue 16)", tables, notes, figures=figures)


def measure(ctx: Context, questions: list[dict], data: Path, llm: str) -> tuple[list[Table], list[str], dict]:
    from common.language import detect
    from rag.events import fold
    from rag.pipeline import AskOptions, Pipeline

    extra = overrides(llm) + (["llm.max_new_tokens=48"] if ctx.quick else [])
    eng = engines(data, *extra)
    pipeline = eng.pipeline()
    k = 5
    english = [found(pipeline.search(q["english"], k=k)[1], q["answers"]) for q in questions]
    plain = Pipeline(eng.cfg.model_copy(update={"memory": eng.cfg.memory.model_copy(update={"translate": False})}),
                     eng.retriever, eng.llm)
    untranslated = [found(plain.search(q["question"], k=k)[1], q["answers"]) for q in questions]
    t = time.perf_counter()
    searched = [pipeline.search(q["question"], k=k) for q in questions]
    per_search = (time.perf_counter() - t) / len(questions)
    translated = [found(hits, q["answers"]) for (_, hits), q in zip(searched, questions)]

    retrieval = Table(f"Answer-recall@{k}: {len(questions)} translated squad-train questions and their English "
                      f"originals ({eng.cfg.embeddings.model}, LLM {Path(eng.cfg.llm.model).name})",
                      ["language", "questions", "English original", "translated, no translation step",
                       "translated, LLM translation fused with the original"])
    for code in [*dict.fromkeys(q["language"] for q in questions), "all"]:
        rows = [i for i, q in enumerate(questions) if code in ("all", q["language"])]
        retrieval.add(code, len(rows), *(sum(col[i] for i in rows) / len(rows)
                                          for col in (english, untranslated, translated)))

    answers = Table(f"Answers in the asker's language, LLM {Path(llm).name} (stopword count on the model's words, evidence quote "
                    "left out)", ["language", "questions", "in that language", "declined", "gold answer in it"])
    right, declined, gold, samples = [], [], [], []
    t = time.perf_counter()
    for q in questions:
        outcome = fold(pipeline.ask(q["question"], [], AskOptions(rewrite=False)))
        done = outcome.done
        words = answer_words(done.answer) if done else ""
        right.append(bool(done) and detect(words, ("en", "de", "es", "fr"), min_hits=1) == q["language"])
        declined.append(bool(done) and done.abstained)
        gold.append(bool(done) and any(a.lower() in words.lower() for a in q["answers"]))
        samples.append(f"{q['language']}: {q['question']} -> {' '.join(words.split())[:140]}")
    per_answer = (time.perf_counter() - t) / len(questions)
    for code in [*dict.fromkeys(q["language"] for q in questions), "all"]:
        rows = [i for i, q in enumerate(questions) if code in ("all", q["language"])]
        answers.add(code, len(rows), *(sum(col[i] for i in rows) / len(rows) for col in (right, declined, gold)))

    en_recall, x_recall = sum(english) / len(english), sum(translated) / len(translated)
    ratio = x_recall / en_recall if en_recall else 0.0
    in_language = sum(right) / len(right)
    name = Path(llm).name
    notes = [target(f"cross-language answer-recall@5 / English ({name})", ratio, 0.85, True),
             target(f"answers in the question's language ({name})", in_language, 0.9, True),
             f"Per question: translate + search {fmt(per_search)} s, whole answer {fmt(per_answer)} s ({load_now()}).",
             "Samples: " + " | ".join(samples[:: max(1, len(samples) // 6)])]
    return [retrieval, answers], notes, {"recall_en": en_recall, "recall_translated": x_recall, "ratio": ratio,
                                         "in_language": in_language}
