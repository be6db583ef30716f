"""The web tests' server: real models, the real page, on loopback, started once per test session.

Loaded as a pytest plugin by the web test modules (`pytest_plugins = ["tests.web_fixtures"]`), so the
session-scoped server is shared by all of them instead of started once per module.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.common import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required"]


@dataclass
class WebServer:
    url: str
    engines: object
    folder: Path          # the documents folder (a copy of txt/)

    def _query(self, sql: str, args=()) -> list:
        with sqlite3.connect(self.engines.cfg.data_path / "history.sqlite", timeout=30) as db:
            return db.execute(sql, args).fetchall()

    def mark(self) -> int:
        """A point in the saved history: exchanges saved later have larger ids."""
        return self._query("SELECT COALESCE(MAX(id), 0) FROM messages")[0][0]

    def exchanges(self, question: str, after: int = 0) -> list[tuple[str, str]]:
        """(session, answer) of every exchange saved after `after` whose user message is `question`."""
        return self._query(
            "SELECT u.session, a.content FROM messages u JOIN messages a ON a.id = u.id + 1 "
            "AND a.session = u.session AND a.role = 'assistant' WHERE u.role = 'user' AND u.content = ? "
            "AND u.id > ? ORDER BY u.id", (question, after))

    def questions(self, after: int = 0) -> list[tuple[str, str]]:
        """(question, session) of every user message saved after `after`, in the order saved."""
        return [(q, s) for s, q in self._query(
            "SELECT session, content FROM messages WHERE role = 'user' AND id > ? ORDER BY id", (after,))]

    def wait_exchange(self, question: str, after: int = 0, timeout: float = 120) -> tuple[str, str]:
        """The first exchange for `question` saved after `after` (see `mark`), once it is saved."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.exchanges(question, after)
            if rows:
                return rows[0]
            time.sleep(0.25)
        raise AssertionError(f"no answer to {question!r} was saved within {timeout:.0f} s")


def _launch(config_overrides: list[str], data_dir: Path, share_models_with=None):
    from rag.config import load_config
    from rag.engines import Engines
    from web.page import launch

    cfg = load_config(ROOT / "config.yaml", config_overrides, data_dir=str(data_dir))
    engines = Engines(cfg)
    if share_models_with is not None:      # loading is the slow part: reuse what is loaded
        engines.share_models(share_models_with)
    demo, url = launch(engines, host="127.0.0.1", port=free_port(), block=False)
    return demo, url, engines


@pytest.fixture(scope="session")
def web_server(tmp_path_factory):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("web-docs") / "txt"
    shutil.copytree(ROOT / "txt", folder)
    demo, url, engines = _launch([f"documents.folder={folder}"], tmp_path_factory.mktemp("web-data"))
    try:
        yield WebServer(url.rstrip("/") + "/", engines, folder)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def web_server_with_login(web_server, tmp_path_factory):
    """A second page, with a login, on its own data dir; reuses the first one's loaded models."""
    demo, url, engines = _launch([f"documents.folder={web_server.folder}", "server.auth.username=alice",
                                  "server.auth.password=s3cret-pw"], tmp_path_factory.mktemp("web-auth"),
                                 share_models_with=web_server.engines)
    try:
        yield WebServer(url.rstrip("/") + "/", engines, web_server.folder), ("alice", "s3cret-pw")
    finally:
        demo.close()


@pytest.fixture(scope="session")
def chromium_options() -> dict:
    """Keyword arguments for playwright's `chromium.launch` (the system Chromium, offline)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    return {"executable_path": CHROMIUM, "args": list(CHROMIUM_ARGS), "headless": True}


@pytest.fixture(scope="session")
def web_artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def spoken_question(web_server, tmp_path_factory) -> tuple[str, Path]:
    """A spoken question as 16-bit 48 kHz mono PCM WAV (what Chromium's fake microphone reads), with
    silence around it so that a short recording holds the question once. Spoken by the page's own
    synthesizer (hibari, near-natural: Whisper tiny mishears espeak-ng's robotic voice too often)."""
    from common.wav import write_wav

    text = "When did the library abolish fines?"
    synth = web_server.engines.synthesizer
    folder = tmp_path_factory.mktemp("mic")
    raw, out = folder / "raw.wav", folder / "question.wav"
    write_wav(raw, synth.synthesize(text), synth.sample_rate)
    subprocess.run(["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", str(out), "pad", "0.5", "3"],
                   check=True, capture_output=True)
    return text, out
