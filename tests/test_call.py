"""Hands-free conversation: turn-taking on real speech (hibari-tts voice, Silero VAD), then whole
recorded conversations through the call, follow-ups and barge-in included, on the real models."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from asr.turns import Paused, Resumed, SpeechStarted, TurnDetector, TurnEnded, TurnOptions
from bench.voice import Conversation, conversation
from conftest import ROOT

pytestmark = pytest.mark.slow     # real models


@pytest.fixture(scope="module")
def voice():
    from hibari import Hibari

    return Hibari()


@pytest.fixture(scope="module")
def follow_up(voice, tmp_path_factory) -> Conversation:
    """A question, 3 s of silence, a follow-up that leans on it, as the issue describes."""
    return conversation(["How many panels does the Millstream solar garden have?", 3.0, "When was it built?", 6.0],
                        tmp_path_factory.mktemp("call") / "follow-up.wav", voice)


def events(samples: np.ndarray, options: TurnOptions = TurnOptions()) -> list:
    detector, out = TurnDetector(options), []
    for i in range(0, samples.size, 1600):
        out += [(detector.now_s, e) for e in detector.feed(samples[i:i + 1600])]
    return out


def test_two_questions_are_two_turns_with_their_own_boundaries(follow_up):
    turns = [e for _, e in events(follow_up.samples) if isinstance(e, TurnEnded)]
    assert len(turns) == 2
    for turn, (start, end) in zip(turns, follow_up.speech):
        assert abs(turn.start_s - start) < 0.3 and abs(turn.end_s - end) < 0.3, (turn.start_s, turn.end_s, start, end)
        assert not turn.cut
    said = [t for t, e in events(follow_up.samples) if isinstance(e, TurnEnded)]
    for told, (_, end) in zip(said, follow_up.speech):      # the turn ends about end_silence_s after the speech
        assert 0.4 < told - end < 1.0, (told, end)


def test_noise_clicks_and_silence_make_no_turn():
    rng = np.random.default_rng(1)
    audio = rng.normal(0, 0.005, 16000 * 6).astype(np.float32)
    audio[16000 * 2:16000 * 2 + 800] += 0.8 * np.sign(rng.normal(size=800)).astype(np.float32)   # a 50 ms click
    audio = np.concatenate([np.zeros(16000 * 3, np.float32), audio])
    assert [e for _, e in events(audio)] == []


def test_a_pause_inside_a_sentence_does_not_end_the_turn(voice, tmp_path):
    talk = conversation(["The library opened in 1962", 0.4, "in a former sail loft on Quay Street.", 2.0],
                        tmp_path / "pause.wav", voice)
    found = [e for _, e in events(talk.samples)]
    assert sum(isinstance(e, TurnEnded) for e in found) == 1
    assert sum(isinstance(e, SpeechStarted) for e in found) == 1
    assert any(isinstance(e, Paused) for e in found) and any(isinstance(e, Resumed) for e in found)


@pytest.fixture(scope="module")
def smart_turn():
    from asr.turn_end import SmartTurn
    from common.shipped import resolve

    return SmartTurn(resolve("shipped:smart-turn-v3.2", ROOT / "data"))


def test_smart_turn_ends_a_finished_question_at_the_pause(follow_up, smart_turn):
    """The real model hears the first question finished: its turn ends at the pause (0.15 s of silence,
    plus the VAD's release), not after end_silence_s; without the model it is the 0.6 s as before."""
    question = np.concatenate([follow_up.samples[: int(follow_up.speech[0][1] * 16000)], np.zeros(32000, np.float32)])
    end = follow_up.speech[0][1]
    detector, told = TurnDetector(turn_end=smart_turn.complete), []
    for i in range(0, question.size, 1600):
        told += [detector.now_s for e in detector.feed(question[i:i + 1600]) if isinstance(e, TurnEnded)]
    assert len(told) == 1 and told[0] - end < 0.5, (told, end)
    assert len(detector.completions) == 1 and detector.completions[0][1] >= 0.5
    plain = [t for t, e in events(question) if isinstance(e, TurnEnded)]
    assert len(plain) == 1 and plain[0] - end >= 0.6


def test_a_turn_called_unfinished_waits_for_the_longer_silence(voice, tmp_path):
    """The detector's side of the contract, with a rule in place of the model: 'unfinished' at every
    pause keeps a 1 s pause inside the turn (0.6 s alone would end it) and ends it after 1.5 s."""
    talk = conversation(["The library opened in 1962", 1.0, "in a former sail loft.", 3.0], tmp_path / "p.wav", voice)
    detector, found = TurnDetector(TurnOptions(incomplete_silence_s=1.5), turn_end=lambda audio: 0.1), []
    for i in range(0, talk.samples.size, 1600):
        found += [(detector.now_s, e) for e in detector.feed(talk.samples[i:i + 1600])]
    ended = [(t, e) for t, e in found if isinstance(e, TurnEnded)]
    assert len(ended) == 1 and abs(ended[0][1].start_s - talk.speech[0][0]) < 0.3
    assert 1.5 <= ended[0][0] - talk.speech[1][1] < 1.9
    assert len([e for _, e in events(talk.samples) if isinstance(e, TurnEnded)]) == 2    # VAD alone: two turns


def test_a_damaged_smart_turn_file_is_refused_with_the_package_to_reinstall(tmp_path, monkeypatch):
    from common import shipped
    from common.errors import BackendError

    model = tmp_path / "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"\0" * shipped.SMART_TURN_BYTES)       # right size, wrong bytes
    monkeypatch.setattr(shipped, "_package_dir", lambda package, hint: tmp_path)
    with pytest.raises(BackendError, match="pip install --force-reinstall --no-deps pipecat-ai==1.14.0"):
        shipped.resolve("shipped:smart-turn-v3.2", tmp_path)


def test_a_monologue_longer_than_the_limit_is_cut(follow_up):
    first_question = follow_up.samples[: int(follow_up.speech[0][1] * 16000)]
    turns = [e for _, e in events(first_question, TurnOptions(max_turn_s=1.5)) if isinstance(e, TurnEnded)]
    assert turns and turns[0].cut and 1.4 < turns[0].end_s - turns[0].start_s < 1.7


def test_a_follow_up_is_answered_from_the_right_document(base_engines, follow_up):
    from rag.call import Call, SkippingClock, play_recording

    clock = SkippingClock()
    call = Call(base_engines, clock)
    call.warm_up()
    records = play_recording(call, follow_up.samples, clock)
    assert [r.turn for r in records] == [1, 2]
    first, second = records
    assert "panels" in first.transcript.lower() and "built" in second.transcript.lower()
    assert second.sources and second.sources[0]["source"] == "solar-garden.md", second.sources
    assert "2017" in second.answer, second.answer
    assert second.spoken and not second.barged_in
    t = second.timings
    assert follow_up.speech[1][1] < t["turn_end_s"] <= t["transcript_s"] <= t["first_token_s"] <= t["first_audio_s"] < t["audio_end_s"]
    assert call.history[2:] == [{"role": "user", "content": second.transcript},
                                {"role": "assistant", "content": second.answer}]


def test_speaking_over_the_answer_stops_it_and_takes_the_new_question(base_engines, voice, tmp_path):
    from rag.call import INTERRUPTED, Call, SkippingClock, play_recording

    talk = conversation(["What does the Harbor Point library hold in its collections?", 4.0,
                         "How many panels does the solar garden have?", 6.0], tmp_path / "barge.wav", voice)
    clock = SkippingClock()
    call = Call(base_engines, clock)
    call.warm_up()
    stops = []
    records = play_recording(call, talk.samples, clock)
    while not call.events.empty():
        event = call.events.get()
        stops += [event.turn] if event.kind == "stop" else []
    first, second = records
    assert first.barged_in and stops == [1]
    spoken_over = talk.speech[1][0]
    assert abs(first.timings["barge_in_s"] - spoken_over) < 0.3
    assert first.timings["stopped_s"] - spoken_over < 1.0            # stopped within a second of the speech
    if "first_audio_s" in first.timings:                              # it was playing: only what played counts
        assert first.timings["audio_end_s"] <= first.timings["stopped_s"] + 1e-6
        assert first.spoken != first.answer and first.answer.startswith(first.spoken.split(" [")[0][:20])
    assert call.history[1]["content"].endswith(INTERRUPTED.strip())
    assert not second.barged_in and "4,800" in second.answer and second.spoken


def test_converse_command_prints_one_json_line_per_turn(follow_up):
    done = subprocess.run([sys.executable, "app.py", "--data-dir", str(follow_up.path.parent / "data"),
                           "converse", str(follow_up.path), "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["turn"] for line in lines] == [1, 2]
    keys = {"turn", "speech_start_s", "speech_end_s", "transcript", "answer", "spoken", "sources", "abstained",
            "barged_in", "timings"}
    assert all(keys <= set(line) for line in lines)
    assert {"turn_end_s", "transcript_s", "first_token_s"} <= set(lines[1]["timings"])
    assert lines[1]["sources"][0]["source"] == "solar-garden.md"


def test_converse_with_a_bad_file_says_so(tmp_path):
    bad = tmp_path / "not-audio.wav"
    bad.write_bytes(b"this is not audio")
    done = subprocess.run([sys.executable, "app.py", "--data-dir", str(tmp_path / "data"), "converse", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error:") and "Traceback" not in done.stderr


def test_an_answer_started_during_a_pause_is_dropped_when_the_user_goes_on(base_engines, voice, tmp_path):
    """A 0.45 s pause: long enough to start answering the first half (speculate_after_s 0.15), too short
    to end the turn (end_silence_s 0.6). Whether or not this machine was quick enough to start it, the
    user sees one question, the whole one, and one answer."""
    from rag.call import Call, SkippingClock, play_recording

    talk = conversation(["How many panels", 0.45, "does the Millstream solar garden have?", 6.0],
                        tmp_path / "pause.wav", voice)
    clock = SkippingClock()
    call = Call(base_engines, clock)
    call.warm_up()
    records = play_recording(call, talk.samples, clock)
    assert len(records) == 1 and "garden" in records[0].transcript.lower(), records
    shown = []
    while not call.events.empty():
        event = call.events.get()
        shown += [event.value] if event.kind == "question" else []
    assert shown == [records[0].transcript]
    assert "4,800" in records[0].answer


def test_a_call_nobody_speaks_in_ends_by_itself(base_engines, tmp_path):
    from conftest import engines_like
    from rag.call import Call, SkippingClock, play_recording

    engines = engines_like(base_engines, tmp_path / "data", "call.idle_end_s=2")
    clock = SkippingClock()
    call = Call(engines, clock)
    play_recording(call, np.zeros(16000 * 3, np.float32), clock)
    assert call.ended == "idle" and call.records == []
    states = []
    while not call.events.empty():
        event = call.events.get()
        states += [event.value] if event.kind == "state" else []
    assert states == ["ended"]
