"""Two real app replicas (`app.py serve`, two processes, two data dirs) sharing one PostgreSQL for the
document catalog and the chat history: a document ingested through replica A answers on replica B,
and a conversation begun on A continues on B.

The server is a throwaway PostgreSQL (tests/pg_server.py); URLs reach the replicas only through the
environment (RAG_CATALOG_URL, RAG_HISTORY_URL), as in a deployment. Speech output is off to save time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import ROOT
from pg_server import free_port, pg_server  # noqa: F401 - pg_server: fixture

pytestmark = pytest.mark.web

SHARED = ["--set", "documents.folder=null", "--set", "tts.enabled=false", "--set", "history.backend=postgres",
          "--set", "catalog.backend=postgres", "--set", "llm.max_new_tokens=48"]
OBSERVATORY = ("The Quillfeather Observatory stands on Marram Hill above the town of Dunmere. It was founded "
               "in 1911 by the astronomer Maren Tull, who paid for its brass refractor by selling her family's "
               "orchard. The observatory opens to visitors on clear Friday nights.\n")
DECOY = ("The Brackwater Rowing Club keeps its boats in a timber shed on the River Lune. The club was founded "
         "in 1893 by six dock workers, and its crews race every summer at the Lune regatta.\n")


def _app(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "app.py", "--data-dir", str(data_dir), *SHARED, *args]


def _wait_up(proc: subprocess.Popen, url: str, log: Path, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"replica exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"replica at {url} not up within {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


@pytest.fixture(scope="module")
def replicas(pg_server, tmp_path_factory):
    """Replicas A and B, started together: (env, [(data_dir, url), ...]); both stopped at the end, even on failure."""
    url = pg_server.create_database("replicas_" + uuid.uuid4().hex[:12])
    env = {**os.environ, "RAG_CATALOG_URL": url, "RAG_HISTORY_URL": url, "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    root = tmp_path_factory.mktemp("replicas")
    procs: list[subprocess.Popen] = []
    started = []
    try:
        for name in ("a", "b"):
            data, port = root / name, free_port()
            log = root / f"{name}.log"
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(_app(data, "serve", "--port", str(port)), cwd=ROOT, env=env,
                                              stdout=out, stderr=subprocess.STDOUT))
            started.append((data, f"http://127.0.0.1:{port}/", log))
        for proc, (_, replica_url, log) in zip(procs, started):
            _wait_up(proc, replica_url, log)
        yield env, [(data, replica_url) for data, replica_url, _ in started]
    finally:
        for proc in procs:
            _stop(proc)


def _history(url: str, session: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT role, content FROM messages WHERE session=%s ORDER BY id", (session,)).fetchall()


def test_document_and_conversation_move_between_replicas(replicas, tmp_path):
    from gradio_client import Client

    env, [(data_a, url_a), (data_b, url_b)] = replicas
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "observatory.md").write_text(OBSERVATORY)
    (docs / "rowing-club.txt").write_text(DECOY)
    # Ingested through replica A's data dir only (a CLI job beside the running replica A).
    out = subprocess.run(_app(data_a, "ingest", str(docs), "--json"), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["added"] == 2

    session = "replica-" + uuid.uuid4().hex[:8]
    question = "Who founded the Quillfeather Observatory?"
    answer_a, sources_a = Client(url_a, verbose=False).predict(question, session, api_name="/ask")
    assert sources_a and sources_a[0]["source"] == "observatory.md", sources_a
    assert answer_a.strip()

    follow_up = "When was it founded?"      # "it" only makes sense with the conversation held in PostgreSQL
    answer_b, sources_b = Client(url_b, verbose=False).predict(follow_up, session, api_name="/ask")
    assert answer_b.strip()
    assert sources_b and sources_b[0]["source"] == "observatory.md", sources_b
    assert "1911" in sources_b[0]["text"]
    # The same words without the conversation rank the rowing club first, or are declined as unsupported
    # (no sources): either way B's answer above came from the conversation.
    _, alone = Client(url_b, verbose=False).predict(follow_up, "", api_name="/ask")
    assert not alone or alone[0]["source"] == "rowing-club.txt", alone

    assert _history(env["RAG_HISTORY_URL"], session) == [("user", question), ("assistant", answer_a),
                                                         ("user", follow_up), ("assistant", answer_b)]
    for data in (data_a, data_b):           # the catalog and the history are in PostgreSQL only
        assert not (data / "index" / "catalog.sqlite").exists() and not (data / "history.sqlite").exists()
    assert (data_b / "index" / "vectors.faiss").exists()      # B's own derived cache, rebuilt from the catalog
