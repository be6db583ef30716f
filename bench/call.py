"""Call mode's latencies, measured in the same run as push-to-talk (bench/voice.py calls `call_rows`).

Each spoken question becomes a recording: 0.5 s of silence, the question, 6 s of silence; it goes
through a real `rag.call.Call` (Silero VAD turn-taking, transcription while the user pauses, the
same pipeline and voice) with the clock that runs in real time while anything is computed. The
figure the issue sets a target on: from the end of the user's speech (the recording's own
timestamp: its last audible sample) to the first answer audio, the turn-end silence included.

Barge-in: the same question again, with a second utterance starting 1 s after that question's
first audio was measured; from the start of that speech to playback stopped, counted only where the
answer was already playing (else it is an interruption of the thinking, counted apart).
CPU while listening: 20 s of quiet room noise fed at real-time pace to a call; process CPU seconds
per second of audio.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import Table, pct


def _call(eng):
    from rag.call import Call, SkippingClock

    clock = SkippingClock()
    call = Call(eng, clock)
    return call, clock


def _run(eng, samples: np.ndarray, realtime: bool = False):
    from rag.call import play_recording

    call, clock = _call(eng)
    records = play_recording(call, samples, clock, realtime=realtime)
    call.end()
    return records


def call_rows(eng, questions: list[str], folder: Path) -> tuple[Table, Table, dict]:
    from bench.voice import conversation

    warm, _ = _call(eng)
    warm.warm_up()
    warm.end()
    first, stages, barge, thinking = [], [], [], 0
    for i, question in enumerate(questions):
        talk = conversation([0.5, question, 6.0], folder / f"call{i:03d}.wav")
        records = _run(eng, talk.samples)
        if not records:
            print(f"  call q{i + 1}: no turn heard", flush=True)
            continue
        r, end = records[0], talk.speech[0][1]
        t = r.timings
        if "first_audio_s" in t:
            first.append(t["first_audio_s"] - end)
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
        print(f"  call q{i + 1}: first audio {first[-1] if first else float('nan'):.2f} s after the end of speech "
              f"(heard: {r.transcript[:60]!r})", flush=True)
    table = Table(f"Call mode: end of the user's speech -> first answer audio over {len(first)} spoken questions "
                  f"(turn end after {eng.cfg.call.end_silence_s:g} s of silence, included)",
                  ["stage", "p50 s", "p95 s"])
    table.add("end of speech -> first audio (the target)", pct(first, 50), pct(first, 95))
    for name in ("turn end", "transcript", "first token", "first audio"):
        values = [s[name] for s in stages]
        table.add(f"  of which: {name}", pct(values, 50), pct(values, 95))
    cpu = listening_cpu(eng)
    other = Table("Call mode: barge-in and listening", ["measure", "value"])
    other.add("barge-in: speech over the answer -> playback stopped, p50 s", pct(barge, 50) if barge else None)
    other.add("barge-in: p95 s", pct(barge, 95) if barge else None)
    other.add("barge-ins measured while playing / while still thinking", f"{len(barge)} / {thinking}")
    other.add("CPU while listening to quiet noise, % of one core", round(100 * cpu, 1))
    figures = {"call_first_audio_p50": pct(first, 50), "call_first_audio_p95": pct(first, 95),
               "barge_in_p50": pct(barge, 50) if barge else None, "listening_cpu": cpu}
    return table, other, figures


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
