"""Chat models side by side on squad-train (issue 15): SmolLM2-135M (config.yaml), Qwen2.5-Coder-0.5B and
-1.5B (profiles/cpu-qwen-0.5b.yaml, profiles/cpu-qwen-1.5b.yaml), each with its own profile's prompt
settings, in one run, on the same questions.

Held out: the 40 documents are split into halves A and B (bench/quality.py `halves`). Prompts are tuned on
questions about half A's documents (`python -m bench prompts`); this benchmark asks only about half B's:
- answers: EVAL_N questions about half-B documents, all 40 documents indexed: the gold answer in the
  model's own words (the evidence quote the pipeline appends left out) and in its first sentence,
  token F1, the cited source holding the gold answer, seconds per answer and first token (text mode);
  a declined question here is a false abstention (its document is indexed);
- abstention: UNANSWERABLE_N questions about half-B documents that are NOT indexed (the 20-document
  index of bench/quality.py): declined by the rule or by the model;
- follow-ups: the 20 two-turn follow-ups (all of them; no prompt setting was tuned on them): answer-recall@5
  of the model's standalone rewrite alone, of the history-aware fusion without it, and of both (what
  `memory.rewrite: true` does), and the answer to the follow-up with its history (gold in own words,
  in the first sentence);
- voice: VOICE_N of the answer questions spoken by espeak-ng, transcribed and answered with
  sentence-by-sentence speech (bench/voice.py `our_order`, push to talk): end of recording -> first audio.
The subset is fixed (the same questions for every model, `spread` over the file's order).
--quick: 4 questions of each kind, 1 spoken.
"""
from __future__ import annotations

import time

import numpy as np

from bench.common import (ROOT, Context, Section, Table, copy_index, engines, forget, forget_prompt_cache, load_now,
                          pct, quick_overrides, spread, squad, squad_index, target, temp_dir)

PROFILES = (("SmolLM2-135M", ROOT / "config.yaml"),
            ("Qwen2.5-Coder-0.5B", ROOT / "profiles" / "cpu-qwen-0.5b.yaml"),
            ("Qwen2.5-Coder-1.5B", ROOT / "profiles" / "cpu-qwen-1.5b.yaml"))
EVAL_N, UNANSWERABLE_N, VOICE_N = 50, 50, 8
GOLD_GOAL = 0.60


def first_sentence(text: str) -> str:
    from common.sentences import split_sentences

    parts = split_sentences(text)
    return parts[0] if parts else ""


def ask(pipeline, question: str, history=()) -> dict:
    """One question through the pipeline, text mode, with its timings; a Failed event is a failure row."""
    from bench.quality import model_words
    from rag.answer.prompt import cited_numbers
    from rag.events import fold
    from rag.pipeline import AskOptions

    t = time.perf_counter()
    outcome = fold(pipeline.ask(question, list(history), AskOptions()))
    seconds = time.perf_counter() - t
    done = outcome.done
    if done is None:
        return {"answer": "", "words": "", "abstained": False, "sources": (), "cited": [], "seconds": seconds,
                "timings": {}, "failed": outcome.failed.message if outcome.failed else "no Done"}
    return {"answer": done.answer, "words": model_words(done.answer), "abstained": done.abstained,
            "sources": done.sources, "cited": cited_numbers(done.answer, len(done.sources)), "seconds": seconds,
            "timings": done.timings}


def score(r: dict, answers: list[str]) -> dict:
    from bench.quality import contains_gold, f1

    words = r["words"]
    r.update(gold=contains_gold(words, answers), first=contains_gold(first_sentence(words), answers),
             f1=f1(words, answers), gold_any=contains_gold(r["answer"], answers),
             cite_ok=any(contains_gold(r["sources"][n - 1].text, answers) for n in r["cited"]))
    return r


def held_out_pools(ev) -> dict[str, list[dict]]:
    """Questions by role: 'tune' (half A, indexed), 'eval' (half B, indexed), 'unanswerable' (half B,
    not in the 20-document index)."""
    from bench.quality import halves

    names = ev.doc_names()
    half_a, half_b = halves(names)
    held_out = set(names[1::2])
    return {"tune": [q for q in ev.qa if q["source"] in half_a],
            "eval": [q for q in ev.qa if q["source"] in half_b],
            "unanswerable": [q for q in ev.qa if q["source"] in half_b & held_out]}


def run(ctx: Context) -> Section:
    from bench.voice import our_order, speak_to_wav

    ev = squad(ctx)
    full = squad_index(ctx, ev)
    half = copy_index(full, ctx, "models-half")
    held_out = set(ev.doc_names()[1::2])
    pools = held_out_pools(ev)
    asked = spread(pools["eval"], ctx.n(4, EVAL_N))
    unanswerable = spread(pools["unanswerable"], ctx.n(4, UNANSWERABLE_N))
    spoken = spread(asked, 1 if ctx.quick else VOICE_N)
    folder = temp_dir("models-wavs", ctx.keep)
    wavs = [speak_to_wav(q["question"], folder / f"q{i:03d}.wav") for i, q in enumerate(spoken)]
    removed = False
    rows = {}
    for label, profile in PROFILES:
        t_model = time.perf_counter()
        eng = engines(full, *quick_overrides(ctx), config=profile)
        cfg = eng.cfg
        t = time.perf_counter()
        eng.llm                                    # loaded (and joined, the first time) before any clock
        load_s = time.perf_counter() - t
        pipeline = eng.pipeline()
        ask(pipeline, asked[0]["question"])        # warm-up
        answers = []
        for i, q in enumerate(asked):
            answers.append(score(ask(pipeline, q["question"]), q["answers"]))
            if (i + 1) % 10 == 0 or i + 1 == len(asked):
                print(f"  {label}: answers {i + 1}/{len(asked)} ({load_now()})", flush=True)
        follow = followups(pipeline, ev.followups, ctx)
        print(f"  {label}: follow-ups {len(ev.followups)} ({load_now()})", flush=True)
        heng = engines(half, *quick_overrides(ctx), config=profile)
        if not removed:                            # the half index is shared by every profile
            for name in held_out:
                assert heng.ingestor.remove(str((ev.docs / name).resolve())), name
            removed = True
        hpipe = heng.pipeline()
        declined = [ask(hpipe, q["question"])["abstained"] for q in unanswerable]
        print(f"  {label}: unanswerable {len(declined)} ({load_now()})", flush=True)
        speak = eng.pipeline(speak=True)
        eng.transcriber, eng.synthesizer
        our_order(eng, speak, wavs[0])             # warm-up
        voice = []
        for wav in wavs:
            forget_prompt_cache(eng.llm)           # every spoken question reads its whole prompt
            voice.append(our_order(eng, speak, wav))
        rows[label] = {"answers": answers, "declined": declined, "follow": follow, "voice": voice, "load_s": load_s, "cfg": cfg,
                       "wall_s": time.perf_counter() - t_model}
        print(f"  {label}: done in {rows[label]['wall_s']:.0f} s ({load_now()})", flush=True)
        forget("llm")                               # free the model before the next one loads
    return section(rows, len(asked), len(unanswerable), len(wavs))


def followups(pipeline, items: list[dict], ctx: Context, k: int = 5) -> dict:
    """Follow-ups: recall@k of rewrite alone / fusion alone / both (bench/retrieval_recall.py's rows, with
    this model), and the answers given with the history."""
    from bench.retrieval_recall import found
    from rag.retrieve import Query

    items = items[:3] if ctx.quick else items
    out = {"rewrite": [], "fusion": [], "both": [], "rewrite_s": [], "answers": []}
    for f in items:
        out["fusion"].append(found(pipeline.search(f["question"], f["history"], k, rewrite=False)[1], f["answers"]))
        t = time.perf_counter()
        standalone, hits = pipeline.search(f["question"], f["history"], k, rewrite=True)
        out["rewrite_s"].append(time.perf_counter() - t)
        out["both"].append(found(hits, f["answers"]))
        out["rewrite"].append(found(pipeline.retriever.search([Query(standalone)], k), f["answers"]))
        out["answers"].append(score(ask(pipeline, f["question"], f["history"]), f["answers"]))
    return out


def _mean(rows: list[dict], key: str, where=lambda r: True) -> float:
    chosen = [r[key] for r in rows if where(r)]
    return float(np.mean(chosen)) if chosen else float("nan")


def section(rows: dict, n: int, m: int, v: int) -> Section:   # noqa: C901 - one table, row by row
    labels = list(rows)
    t = Table(f"Chat models side by side on squad-train, held out: {n} questions about half-B documents (all 40 "
              f"indexed), {m} about half-B documents not indexed (20-document index), {v} spoken; greedy, each "
              "model with its profile's prompt settings", ["measure", *labels])

    def add(name: str, fn) -> None:
        t.add(name, *(fn(rows[k]) for k in labels))

    add("profile", lambda r: f"{r['cfg'].llm.model.removeprefix('shipped:')}; system {r['cfg'].prompt.system}, "
                             f"focus {r['cfg'].prompt.focus_sentences}, example {r['cfg'].prompt.example}")
    add("gold answer in the model's own words", lambda r: _mean(r["answers"], "gold"))
    add("gold answer in the first sentence", lambda r: _mean(r["answers"], "first"))
    add("gold answer in the whole answer (with the evidence quote)", lambda r: _mean(r["answers"], "gold_any"))
    add("token F1, model's own words", lambda r: _mean(r["answers"], "f1"))
    add("answers citing a source (of those not declined)",
        lambda r: float(np.mean([bool(a["cited"]) for a in r["answers"] if not a["abstained"]] or [np.nan])))
    add("cited source holds the gold answer (of answers citing)",
        lambda r: _mean(r["answers"], "cite_ok", lambda a: bool(a["cited"]) and not a["abstained"]))
    add("abstention (unanswerable declined)", lambda r: float(np.mean(r["declined"])))
    add("false abstention (answerable declined)", lambda r: _mean(r["answers"], "abstained"))
    add("seconds per answer, p50 / p95",
        lambda r: f"{pct([a['seconds'] for a in r['answers']], 50):.2f} / {pct([a['seconds'] for a in r['answers']], 95):.2f}")
    add("first token, s, p50 / p95",
        lambda r: "{:.2f} / {:.2f}".format(*(pct([a["timings"].get("first_token_s") for a in r["answers"]], p)
                                             for p in (50, 95))))
    add("voice (push to talk): end of recording -> first audio, s, p50 / p95",
        lambda r: "{:.2f} / {:.2f}".format(*(pct([x["first_audio"] for x in r["voice"]], p) for p in (50, 95))))
    add("  of which transcription, s, p50", lambda r: pct([x["asr"] for x in r["voice"]], 50))
    add("follow-ups: answer-recall@5, the model's rewrite alone", lambda r: float(np.mean(r["follow"]["rewrite"])))
    add("follow-ups: answer-recall@5, history-aware fusion without the rewrite",
        lambda r: float(np.mean(r["follow"]["fusion"])))
    add("follow-ups: answer-recall@5, fusion + rewrite (memory.rewrite: true)", lambda r: float(np.mean(r["follow"]["both"])))
    add("follow-ups: rewrite + search, s, p50", lambda r: pct(r["follow"]["rewrite_s"], 50))
    add("follow-ups: gold in own words / in the first sentence",
        lambda r: f"{_mean(r['follow']['answers'], 'gold'):.2f} / {_mean(r['follow']['answers'], 'first'):.2f}")
    add("model load, s (GGUF already joined)", lambda r: r["load_s"])
    add("failed", lambda r: sum("failed" in a for a in r["answers"]))
    s = Section("models", "Chat models side by side (issue 15)", [t])
    for label in labels:
        r = rows[label]
        gold = _mean(r["answers"], "gold")
        abst, false = float(np.mean(r["declined"])), _mean(r["answers"], "abstained")
        voice50 = pct([x["first_audio"] for x in r["voice"]], 50)
        voice95 = pct([x["first_audio"] for x in r["voice"]], 95)
        s.notes.append(f"{label}: " + " ".join([
            target("gold in own words", gold, GOLD_GOAL, True),
            target("gold in the first sentence", _mean(r["answers"], "first"), GOLD_GOAL, True),
            target("abstention", abst, 0.80, True), target("false abstention", false, 0.10, False),
            target("push-to-talk first audio p50", voice50, 1.0, False, " s"),
            target("p95", voice95, 1.6, False, " s")]))
    s.figures.update({k: {"gold": _mean(r["answers"], "gold"), "first": _mean(r["answers"], "first")}
                      for k, r in rows.items()})
    return s
