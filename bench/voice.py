"""Voice latency: end of speech -> first audio, the seed's order vs ours, and call mode (bench/call.py),
side by side in one run.

Spoken questions are SQuAD questions (about documents in the index) read by espeak-ng into WAV files;
the clock starts at the end of the recording (t0 = just before transcription), as a user hears it.
- seed order: transcribe, generate the WHOLE answer, then synthesize the whole answer: first audio
  is when that synthesis returns;
- ours: transcribe, then Pipeline.ask(speak=True): the answer streams, each finished sentence is
  synthesized on a worker thread while the model writes the next; first audio is the first sentence's
  audio (Done.timings["first_audio_s"], measured from the same t0).
Both use the same models, prompt (voice style) and questions; each question runs both ways, the order
alternating, so load changes hit both alike, and llama.cpp's prompt cache is cleared before each run
(otherwise the second run of a question would skip reading the prompt).
--quick: 2 questions.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import (Context, Section, Table, answerable, engines, forget_prompt_cache, load_now, pct, spread,
                          quick_overrides, squad, squad_index, target, temp_dir)


@dataclass(frozen=True)
class Conversation:
    """A recorded conversation: the file, its 16 kHz samples, and where each spoken part really is."""

    path: Path
    samples: np.ndarray
    speech: list[tuple[float, float]]      # (first, last audible sample) of each utterance, in seconds


def conversation(parts: list, path: Path, voice=None, quiet: float = 0.01) -> Conversation:
    """Strings are spoken (by `voice`, a loaded hibari.Hibari; espeak-ng when None), numbers are seconds
    of silence between them. Each utterance is trimmed to its audible part (samples above `quiet`), so
    the silences are exactly as given and `speech` holds each utterance's true start and end."""
    from common.audio import load_audio
    from common.wav import resample, write_wav

    pieces, speech, at = [], [], 0
    for n, part in enumerate(parts):
        if isinstance(part, str):
            if voice is None:
                audio = load_audio(speak_to_wav(part, path.with_suffix(f".{n}.wav")))
            else:
                from hibari import SAMPLE_RATE
                audio = resample(np.asarray(voice(part, seed=0), np.float32), SAMPLE_RATE, 16000)
            loud = np.flatnonzero(np.abs(audio) > quiet)
            audio = audio[loud[0]:loud[-1] + 1]
            speech.append((at / 16000, (at + audio.size) / 16000))
        else:
            audio = np.zeros(int(part * 16000), np.float32)
        pieces.append(audio)
        at += audio.size
    samples = np.concatenate(pieces)
    write_wav(path, samples, 16000)
    return Conversation(path, samples, speech)


def speak_to_wav(text: str, path: Path, words_per_minute: int = 160) -> Path:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def _transcribe_and_ask(eng, pipeline, wav: Path, speak: bool):
    """Both orders' shared part: t0 at the end of the recording, transcribe, then run the pipeline to
    Done. A Failed event raises (a failed question must not pass as a fast or abstained one).
    Returns (t0, transcription seconds, the transcript, Done or None)."""
    from rag.events import fold
    from rag.pipeline import AskOptions

    t0 = time.perf_counter()
    transcript = eng.transcriber.transcribe(wav)
    t_asr = time.perf_counter() - t0
    outcome = fold(pipeline.ask(transcript.text, [], AskOptions(voice=True, speak=speak), t0=t0))
    if outcome.failed is not None:
        raise RuntimeError(f"{wav.name}: {outcome.failed.message}")
    return t0, t_asr, transcript, outcome.done


def seed_order(eng, text_pipeline, wav: Path) -> dict:
    t0, t_asr, transcript, done = _transcribe_and_ask(eng, text_pipeline, wav, speak=False)
    t_text = time.perf_counter() - t0
    audio = eng.synthesizer.synthesize(done.answer) if done else []
    first_audio = time.perf_counter() - t0 if len(audio) else None
    return {"asr": t_asr, "first_token": done.timings.get("first_token_s") if done else None,
            "answer_done": t_text, "first_audio": first_audio, "abstained": bool(done and done.abstained),
            "text": transcript.text}


def our_order(eng, speak_pipeline, wav: Path) -> dict:
    _, t_asr, _, done = _transcribe_and_ask(eng, speak_pipeline, wav, speak=True)
    timings = done.timings if done else {}
    return {"asr": t_asr, "first_token": timings.get("first_token_s"), "first_sentence": timings.get("first_sentence_s"),
            "answer_done": timings.get("answer_done_s"), "first_audio": timings.get("first_audio_s"),
            "abstained": bool(done and done.abstained)}


def run(ctx: Context) -> Section:
    ev = squad(ctx)
    data = squad_index(ctx, ev)
    eng = engines(data, *quick_overrides(ctx))
    text_pipeline, speak_pipeline = eng.pipeline(speak=False), eng.pipeline(speak=True)
    n = ctx.n(2, 24)
    questions = spread(answerable(ev.qa, ev), n)
    folder = temp_dir("voice-wavs", ctx.keep)
    wavs = [speak_to_wav(q["question"], folder / f"q{i:03d}.wav") for i, q in enumerate(questions)]
    eng.transcriber, eng.synthesizer, eng.llm   # load before the clock starts
    our_order(eng, speak_pipeline, wavs[0])   # warm-up (first synthesis and generation are slower)
    seed, ours = [], []
    for i, wav in enumerate(wavs):
        pair = [("seed", seed_order, text_pipeline), ("ours", our_order, speak_pipeline)]
        for name, fn, pipe in (pair if i % 2 == 0 else pair[::-1]):
            forget_prompt_cache(eng.llm)   # else the second order reuses the first one's prompt
            (seed if name == "seed" else ours).append(fn(eng, pipe, wav))
        s, o = seed[-1], ours[-1]
        print(f"  q{i + 1:>2}: seed {s['first_audio'] or float('nan'):.2f} s, ours {o['first_audio'] or float('nan'):.2f} s"
              f"  (heard: {s['text'][:60]!r}) ({load_now()})", flush=True)

    def col(rows, key):
        return [r[key] for r in rows if r.get(key) is not None]

    table = Table(f"End of speech -> first audio over {len(wavs)} spoken questions (espeak-ng voice, "
                  f"{eng.cfg.asr.model}, {eng.cfg.llm.backend} {eng.cfg.llm.model}, {eng.cfg.tts.backend} voice)",
                  ["order", "first audio p50 s", "first audio p95 s", "transcribe p50 s", "first token p50 s",
                   "first sentence p50 s", "answer done p50 s", "abstained"])
    for name, rows in (("seed: transcribe, whole answer, whole-answer TTS", seed),
                       ("ours: transcribe, stream, sentence-by-sentence TTS", ours)):
        table.add(name, pct(col(rows, "first_audio"), 50), pct(col(rows, "first_audio"), 95), pct(col(rows, "asr"), 50),
                  pct(col(rows, "first_token"), 50), pct(col(rows, "first_sentence"), 50) if rows is ours else None,
                  pct(col(rows, "answer_done"), 50), sum(r["abstained"] for r in rows))
    section = Section("voice", "Voice: end of speech to first audio", [table])
    p50s, p50o = pct(col(seed, "first_audio"), 50), pct(col(ours, "first_audio"), 50)
    p95s, p95o = pct(col(seed, "first_audio"), 95), pct(col(ours, "first_audio"), 95)
    paired = [s["first_audio"] / o["first_audio"] for s, o in zip(seed, ours) if s["first_audio"] and o["first_audio"]]
    section.notes.append(f"Ours reaches first audio {p50s / p50o:.2f}× sooner at p50 ({p50s:.2f} -> {p50o:.2f} s) and "
                         f"{p95s / p95o:.2f}× at p95 ({p95s:.2f} -> {p95o:.2f} s); per question the median ratio is "
                         f"{pct(paired, 50):.2f}×.")
    section.notes.append("Both orders use the voice prompt style (short spoken answers), so the gap comes from "
                         "streaming and sentence-by-sentence synthesis alone; with the seed's longer text answers "
                         "the seed's whole-answer wait would be longer still.")
    section.notes.append(target("ours faster than the seed at p50", p50s / p50o, 1.0, True, "×"))
    section.figures.update(seed_p50=p50s, seed_p95=p95s, ours_p50=p50o, ours_p95=p95o)
    call_table, barge_table, figures = call_rows(eng, [q["question"] for q in questions], folder)
    from hibari import Hibari

    turn_table, turn_figures = turn_end_rows(eng, [q["question"] for q in questions], folder)
    hibari_table, _ = turn_end_rows(eng, [q["question"] for q in questions], folder, voice=Hibari())
    section.tables += [call_table, barge_table, turn_table, hibari_table]
    section.figures.update(figures, **turn_figures)
    section.notes.append("Smart Turn v3.2 is off by default (call.smart_turn): it ends finished turns about 0.4 s "
                         "sooner, but on these voices it calls most questions cut mid-way finished too, so a pause "
                         "that silence alone would have waited out ends the turn; and the first audio it saves is "
                         "small, because the answer already starts in the pause (speculation).")
    section.notes.append(target("call mode: end of speech -> first audio p50", figures["call_first_audio_p50"], 1.0,
                                False, " s"))
    section.notes.append(target("call mode: end of speech -> first audio p95", figures["call_first_audio_p95"], 1.6,
                                False, " s"))
    if figures["barge_in_p50"] is not None:
        section.notes.append(target("barge-in: speech over the answer -> playback stopped p50",
                                    figures["barge_in_p50"], 0.4, False, " s"))
    return section


# -- call mode ---------------------------------------------------------------------------------------
# Call mode's latencies, measured in the same run as push-to-talk (bench/voice.py calls `call_rows`).
#
# Each spoken question becomes a recording: 0.5 s of silence, the question, 6 s of silence; it goes
# through a real `rag.call.Call` (Silero VAD turn-taking, transcription while the user pauses, the
# same pipeline and voice) with the clock that runs in real time while anything is computed. The
# figure the issue sets a target on: from the end of the user's speech (the recording's own
# timestamp: its last audible sample) to the first answer audio, the turn-end silence included.
#
# Barge-in: the same question again, with a second utterance starting 1 s after that question's
# first audio was measured; from the start of that speech to playback stopped, counted only where the
# answer was already playing (else it is an interruption of the thinking, counted apart).
# CPU while listening: 20 s of quiet room noise fed at real-time pace to a call; process CPU seconds
# per second of audio.
VARIANTS = [("as configured: answer started in the pause, prompt read while speaking", {}),
            ("without reading the prompt while speaking", {"read_ahead": False}),
            ("without either: answer started at the turn end", {"read_ahead": False, "speculate_after_s": 0})]


def _call(eng, **options):
    from rag.call import Call, SkippingClock

    clock = SkippingClock()
    call = Call(eng, clock, **options)
    return call, clock


def _run(eng, samples: np.ndarray, stats: dict | None = None, **options):
    """The recording through a fresh call; `stats` counts the answers that kept a read-ahead ("kept")."""
    from rag.call import play_recording

    # Every run starts from the state a call is in at any turn: the model holds the answer prompt's
    # system part (Call.warm_up reads it; every earlier answer left it), and nothing of this question.
    forget_prompt_cache(eng.llm)
    call, clock = _call(eng, **options)
    call.pipeline.warm_system_prompt(voice=True)
    records = play_recording(call, samples, clock)
    call.end()
    if stats is not None:
        stats["kept"] = stats.get("kept", 0) + call.pipeline.read_aheads_kept
    return records


def final_turn(records: list, end: float):
    """The turn that took the end of the question (`end`, on the recording's clock). A pause inside the
    question can end a turn early (the call then answers the first half, and the rest barges in);
    what the user waits for after finishing is the answer to the last part, so that is what is timed."""
    heard = [r for r in records if r.speech_start_s < end]
    return heard[-1] if heard else None


def call_rows(eng, questions: list[str], folder: Path) -> tuple[Table, Table, dict]:
    on = eng.cfg.call.smart_turn
    variants = VARIANTS + [("without Smart Turn" if on else "with Smart Turn (turn ends at the pause when it says done)",
                            {"smart_turn": not on})]
    for smart in (False, True):          # load (and warm) both turn-taking setups before the clock starts
        warm, _ = _call(eng, smart_turn=smart)
        warm.warm_up()
        warm.end()
    first = {name: [] for name, _ in variants}
    stages, barge, thinking, kept, split = [], [], 0, {}, 0
    for i, question in enumerate(questions):
        talk = conversation([0.5, question, 6.0], folder / f"call{i:03d}.wav")
        end = talk.speech[0][1]
        order = variants if i % 2 == 0 else variants[::-1]     # load changes hit every variant alike
        timings = {}
        for name, options in order:
            records = _run(eng, talk.samples, kept if name == VARIANTS[0][0] else None, **options)
            last = final_turn(records, end)
            if name == VARIANTS[0][0] and len(records) > 1:
                split += 1
            if last is not None and "first_audio_s" in last.timings:
                timings[name] = last.timings
                first[name].append(last.timings["first_audio_s"] - end)
        t = timings.get(VARIANTS[0][0])
        if t is not None and t["turn_end_s"] > end:    # the barge-in needs the whole question in one turn
            stages.append({"turn end": t["turn_end_s"] - end, "transcript": t["transcript_s"] - t["turn_end_s"],
                           "first token": t.get("first_token_s", t["transcript_s"]) - t["transcript_s"],
                           "first audio": t["first_audio_s"] - t.get("first_token_s", t["transcript_s"])})
            # the same question, spoken over 1 s into its answer
            over = conversation([0.5, question, t["first_audio_s"] - end + 1.0, "Wait, stop.", 4.0],
                                folder / f"barge{i:03d}.wav")
            cut = _run(eng, over.samples)
            if cut and cut[0].barged_in:
                ct = cut[0].timings
                if "first_audio_s" in ct and ct["first_audio_s"] <= ct["barge_in_s"]:
                    barge.append(ct["stopped_s"] - over.speech[1][0])
                else:
                    thinking += 1
        print(f"  call q{i + 1}: first audio " + ", ".join(f"{timings[n]['first_audio_s'] - end:.2f}"
                                                           if n in timings else "-" for n, _ in variants)
              + f" s after the end of speech ({load_now()})", flush=True)
    main = first[VARIANTS[0][0]]
    table = Table(f"Call mode: end of the user's speech -> first answer audio over {len(main)} spoken questions "
                  f"(turn end after {eng.cfg.call.end_silence_s:g} s of silence"
                  f"{', or at the pause when Smart Turn says done' if on else ''}, included; the variants in turns)",
                  ["call mode", "p50 s", "p95 s"])
    for name, _ in variants:
        table.add(name, pct(first[name], 50), pct(first[name], 95))
    for name in ("turn end", "transcript", "first token", "first audio"):
        values = [s[name] for s in stages]
        table.add(f"  as configured, of which: {name}", pct(values, 50), pct(values, 95))
    table.add("  as configured: answers that kept the prompt read while the user spoke",
              f"{kept.get('kept', 0)} of {len(main)}", "")
    table.add("  as configured: questions taken as two turns (a pause inside; timed on the last)",
              f"{split} of {len(questions)}", "")
    cpu = listening_cpu(eng)
    other = Table("Call mode: barge-in and listening", ["measure", "value"])
    other.add("barge-in: speech over the answer -> playback stopped, p50 s", pct(barge, 50) if barge else None)
    other.add("barge-in: p95 s", pct(barge, 95) if barge else None)
    other.add("barge-ins measured while playing / while still thinking", f"{len(barge)} / {thinking}")
    other.add("CPU while listening to quiet noise, % of one core", round(100 * cpu, 1))
    figures = {"call_first_audio_p50": pct(main, 50), "call_first_audio_p95": pct(main, 95),
               "barge_in_p50": pct(barge, 50) if barge else None, "listening_cpu": cpu}
    return table, other, figures


# Turn ends with and without Smart Turn, on the same spoken questions (espeak-ng, as above), fed
# through the turn detector alone (no answers): how long after the speech a finished question's turn
# ends, and how often a pause in the middle of a question (cut at its quietest 60 ms between 35 % and
# 65 % of the way, so the words around it keep their mid-sentence prosody) is wrongly taken as the end.
def turn_end_rows(eng, questions: list[str], folder: Path, pauses=(0.3, 0.5, 1.0), voice=None) -> tuple[Table, dict]:
    """`voice`: a loaded hibari.Hibari to speak the questions; espeak-ng when None."""
    from asr.turns import TurnDetector, TurnEnded, TurnOptions
    cfg = eng.cfg.call
    options = TurnOptions(threshold=cfg.vad_threshold, min_speech_s=cfg.min_speech_s, end_silence_s=cfg.end_silence_s,
                          incomplete_silence_s=cfg.incomplete_silence_s)
    setups = {"VAD only": None, "Smart Turn": eng.turn_end.complete}

    def silence(seconds):
        return np.zeros(int(seconds * 16000), np.float32)

    def turns(samples, turn_end):
        detector, ends = TurnDetector(options, turn_end=turn_end), []
        for i in range(0, samples.size, 4000):
            ends += [detector.now_s for e in detector.feed(samples[i:i + 4000]) if isinstance(e, TurnEnded)]
        return ends, detector.completions

    delay = {name: [] for name in setups}
    whole = {(name, p): 0 for name in setups for p in pauses}
    probe_ms = []
    for i, question in enumerate(questions):
        audio = conversation([question], folder / f"turn{i:03d}.wav", voice).samples
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        audio = audio[loud[0]:loud[-1] + 1]
        for name, turn_end in setups.items():
            t0 = time.perf_counter()
            ends, asked = turns(np.concatenate([silence(0.5), audio, silence(3.0)]), turn_end)
            if asked:
                probe_ms.append(1000 * (time.perf_counter() - t0) / len(asked))
            if ends:
                delay[name].append(ends[0] - (0.5 + audio.size / 16000))
        level = np.convolve(np.abs(audio), np.ones(960) / 960, mode="same")
        lo, hi = int(audio.size * 0.35), int(audio.size * 0.65)
        gap = lo + int(np.argmin(level[lo:hi]))
        for p in pauses:
            split = np.concatenate([silence(0.5), audio[:gap], silence(p), audio[gap:], silence(3.0)])
            for name, turn_end in setups.items():
                whole[(name, p)] += len(turns(split, turn_end)[0]) == 1
    n = len(questions)
    table = Table(f"Turn ends over {n} questions spoken by {'hibari-tts' if voice else 'espeak-ng'}, turn detector alone (end_silence_s {cfg.end_silence_s:g}, "
                  f"Smart Turn: ends at the pause when it says done, else waits {cfg.incomplete_silence_s:g} s)",
                  ["measure"] + list(setups))
    table.add("finished question: speech end -> turn end, p50 s", *(pct(delay[k], 50) for k in setups))
    table.add("finished question: speech end -> turn end, p95 s", *(pct(delay[k], 95) for k in setups))
    for p in pauses:
        table.add(f"question with a {p:g} s pause in the middle kept as one turn",
                  *(f"{whole[(k, p)]} / {n}" for k in setups))
    table.add("Smart Turn run time per pause (incl. VAD of the clip), p50 ms", None, pct(probe_ms, 50) if probe_ms else None)
    figures = {"turn_end_vad_p50": pct(delay["VAD only"], 50), "turn_end_smart_p50": pct(delay["Smart Turn"], 50),
               **{f"kept_whole_{k.split()[0].lower()}_{p:g}": whole[(k, p)] / n for k in setups for p in pauses}}
    return table, figures


def listening_cpu(eng, seconds: float = 20.0) -> float:
    """Process CPU seconds per second of audio while a call hears only quiet noise, at real-time pace."""
    call, clock = _call(eng)
    noise = np.random.default_rng(0).normal(0, 0.003, int(seconds * 16000)).astype(np.float32)
    step = 4000                                   # 0.25 s: the page's stream_every
    cpu0 = time.process_time()
    for i in range(0, noise.size, step):
        while clock() < (i + step) / 16000:
            time.sleep(0.01)
        call.feed(noise[i:i + step])
    used = time.process_time() - cpu0
    call.end()
    return used / seconds
