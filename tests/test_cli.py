"""The command-line contract of ../shared/CLI-CONTRACT.md, run as a user would run it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow     # real models (the unit run leaves them out)


def run(*args, data_dir, stdin=None, timeout=300):
    cmd = [sys.executable, "app.py", "--data-dir", str(data_dir), *args]
    return subprocess.run(cmd, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-data")


def test_ask_json_on_shipped_txt(data_dir):
    out = run("ask", "How many homes does the Millstream solar garden supply?", "--json", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)            # stdout is JSON only: logs and progress went to stderr
    assert set(result) >= {"answer", "standalone_question", "sources", "timings", "abstained"}
    assert result["sources"][0]["source"] == "solar-garden.md" and result["sources"][0]["n"] == 1
    assert {"text", "score"} <= set(result["sources"][0])
    assert set(result["timings"]) >= {"retrieve_s", "first_token_s", "answer_done_s"}
    assert "600" in result["answer"] and result["abstained"] is False


def test_search_json_and_batch(data_dir, tmp_path):
    out = run("search", "chain oil", "-k", "3", "--json", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert len(result["hits"]) == 3 and result["hits"][0]["source"] == "bicycle-care.txt"
    assert set(result["hits"][0]) >= {"text", "source", "score", "chunk_id"}

    lines = "\n".join([
        "When did the library open?",
        json.dumps({"question": "Who was its first librarian?",
                    "history": [{"role": "user", "content": "When did the Harbor Point library open?"},
                                {"role": "assistant", "content": "It opened in 1962."}]}),
    ]) + "\n"
    out = run("search", "-", "--json", data_dir=data_dir, stdin=lines)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(results) == 2
    assert "Agnes Lindqvist" in " ".join(h["text"] for h in results[1]["hits"][:2])

    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"role": "user", "content": "Tell me about the solar garden"}]))
    out = run("search", "When was it built?", "--history", str(history), "--json", data_dir=data_dir)
    assert "2017" in " ".join(h["text"] for h in json.loads(out.stdout)["hits"])


@pytest.mark.parametrize("args, message", [
    (["ask", "   "], "question is empty"),
    (["--set", "retrieval.kk=3", "search", "x"], "unknown config key 'retrieval.kk'"),
    (["--set", "retrieval.k=lots", "search", "x"], "retrieval.k"),
    (["--config", "nope.yaml", "search", "x"], "nope.yaml"),
    (["ingest", "/no/such/folder"], "no such file"),
    (["ask", "x", "--history", "/no/such.json"], "history file"),
    (["transcribe", "/no/such.wav"], "such.wav"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    out = run(*args, data_dir=tmp_path)
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_key_in_config_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("retrieval:\n  k: 5\n  top_p: 3\n")
    out = run("--config", str(cfg), "search", "x", data_dir=tmp_path)
    assert out.returncode == 2 and "unknown config key 'retrieval.top_p'" in out.stderr


def test_ingest_json_reports_bad_sources_and_keeps_good_ones(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("The lighthouse keeper feeds three cats named Ada, Bo and Cy.")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"")
    out = run("ingest", str(good), str(bad), "--json", data_dir=tmp_path / "d")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["added"] == 1 and report["errors"][0]["source"] == "bad.txt"
    assert set(report) >= {"added", "updated", "unchanged", "removed", "chunks", "errors"}


def test_say_then_ask_by_voice_with_spoken_answer(data_dir, tmp_path):
    question, answer = tmp_path / "question.wav", tmp_path / "answer.wav"
    out = run("say", "How many panels does the Millstream solar garden have?", "-o", str(question),
              data_dir=data_dir)
    assert out.returncode == 0 and question.stat().st_size > 20_000, out.stderr
    out = run("ask", "--audio", str(question), "--speak", str(answer), "--json", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert "panels" in result["question"].lower() and result["sources"][0]["source"] == "solar-garden.md"
    timings = result["timings"]
    assert 0 < timings["transcript_s"] < timings["retrieve_s"] <= timings["first_audio_s"]
    import wave
    with wave.open(str(answer)) as w:
        assert w.getnframes() / w.getframerate() > 1.0
