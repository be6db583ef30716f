"""Call mode in a real browser: Chromium's fake microphone plays a recorded conversation into the page
after one click on Talk; the page must hear, answer and speak each turn, and stop speaking when the
user talks over it. Screenshot: test-artifacts/page-call.png."""
from __future__ import annotations

import time

import pytest

from bench.voice import conversation

pytest_plugins = ["tests.web_fixtures"]
pytestmark = pytest.mark.web


@pytest.fixture(scope="module")
def voice():
    from hibari import Hibari

    return Hibari()


def fake_microphone(talk, tmp_path) -> str:
    """The conversation as Chromium's fake capture device wants it: 48 kHz 16-bit mono, played once."""
    import subprocess

    out = tmp_path / "mic-48k.wav"
    subprocess.run(["sox", str(talk.path), "-r", "48000", "-b", "16", "-c", "1", str(out)], check=True,
                   capture_output=True)
    return f"{out}%noloop"


def call_page(playwright, chromium_options, url: str, mic: str):
    options = dict(chromium_options)
    options["args"] = options["args"] + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                         f"--use-file-for-fake-audio-capture={mic}"]
    browser = playwright.chromium.launch(**options)
    page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
    page.goto(url)
    page.wait_for_selector("#rag-talk", timeout=60_000)
    return browser, page


def wait_for_turns(page, server, mark: int, turns: int, timeout: float = 120) -> list[dict]:
    """The call's exchanges saved after `mark`, once `turns` of them are."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        saved = server._query("SELECT role, content, extra FROM messages WHERE id > ? ORDER BY id", (mark,))
        if len([r for r in saved if r[0] == "assistant"]) >= turns:
            return [{"role": r[0], "content": r[1], "extra": r[2]} for r in saved]
        time.sleep(0.5)
    raise AssertionError(f"fewer than {turns} turns answered within {timeout:.0f} s: {page.inner_text('#rag-call-status')}")


@pytest.fixture(scope="module")
def playwright_():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def test_a_call_answers_a_question_and_its_follow_up_without_a_click(playwright_, chromium_options, web_server,
                                                                     voice, tmp_path, web_artifacts):
    talk = conversation(["How many panels does the Millstream solar garden have?", 3.0, "When was it built?", 8.0],
                        tmp_path / "follow-up.wav", voice)
    browser, page = call_page(playwright_, chromium_options, web_server.url, fake_microphone(talk, tmp_path))
    try:
        mark = web_server.mark()
        page.click("#rag-talk")                       # the only click
        page.wait_for_function("document.querySelector('#rag-talk').innerText.includes('End call')", timeout=30_000)
        saved = wait_for_turns(page, web_server, mark, 2)
        users = [m["content"] for m in saved if m["role"] == "user"]
        assert "panels" in users[0].lower() and "built" in users[1].lower(), users
        assert "2017" in saved[-1]["content"], [(m["role"], m["content"][:300]) for m in saved]
        assert "solar-garden.md" in saved[-1]["extra"]
        page.wait_for_function("window.ragCall.played >= 2", timeout=60_000)     # both answers were heard
        page.wait_for_function("document.querySelector('#rag-sources').innerText.includes('solar-garden.md')")
        assert len(page.query_selector_all("#rag-chat .message.user")) == 2
        page.screenshot(path=str(web_artifacts / "page-call.png"), full_page=True)
        page.click("#rag-talk")                       # End call
        page.wait_for_function("document.querySelector('#rag-talk').innerText.trim() === 'Talk'", timeout=30_000)
    finally:
        browser.close()


def test_talking_over_the_answer_stops_it_and_answers_the_new_question(playwright_, chromium_options, web_server,
                                                                       voice, tmp_path):
    talk = conversation(["What does the Harbor Point library hold in its collections?", 4.0,
                         "How many panels does the solar garden have?", 8.0], tmp_path / "barge.wav", voice)
    browser, page = call_page(playwright_, chromium_options, web_server.url, fake_microphone(talk, tmp_path))
    try:
        mark = web_server.mark()
        page.click("#rag-talk")
        saved = wait_for_turns(page, web_server, mark, 2)
        assert '"interrupted": true' in saved[1]["extra"], saved[1]      # the first answer was cut short
        assert saved[1]["content"].endswith("[interrupted]")
        assert "4,800" in saved[3]["content"] and '"interrupted": false' in saved[3]["extra"]
        assert page.evaluate("window.ragCall.stops") >= 1                 # the page was told to stop playing
        page.wait_for_function("window.ragCall.played >= 1", timeout=60_000)   # the new answer was spoken
    finally:
        browser.close()


def test_talk_without_a_microphone_says_so(playwright_, chromium_options, web_server):
    """No fake microphone and no permission: the browser refuses getUserMedia; the page says why in one line
    and no call starts."""
    browser = playwright_.chromium.launch(**chromium_options)
    try:
        page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
        page.goto(web_server.url)
        page.wait_for_selector("#rag-talk", timeout=60_000)
        page.click("#rag-talk")
        page.wait_for_function("document.querySelector('#rag-call-status').innerText.includes('No microphone')",
                               timeout=30_000)
        assert page.inner_text("#rag-talk").strip() == "Talk"
        assert "Traceback" not in page.inner_text("body")
    finally:
        browser.close()


def test_two_tabs_in_call_mode_keep_their_own_conversations(playwright_, chromium_options, web_server, voice,
                                                          tmp_path):
    """Two tabs talk at once (the same fake microphone feeds both): each call answers into its own session."""
    talk = conversation(["When did the Harbor Point library open?", 8.0], tmp_path / "one.wav", voice)
    browser, first = call_page(playwright_, chromium_options, web_server.url, fake_microphone(talk, tmp_path))
    try:
        second = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
        second.goto(web_server.url)
        second.wait_for_selector("#rag-talk", timeout=60_000)
        mark = web_server.mark()
        first.click("#rag-talk")
        second.click("#rag-talk")
        deadline = time.time() + 120
        while time.time() < deadline:
            rows = web_server._query("SELECT session, role FROM messages WHERE id > ? ORDER BY id", (mark,))
            if len([r for r in rows if r[1] == "assistant"]) >= 2:
                break
            time.sleep(0.5)
        sessions = {}
        for session, role in rows:
            sessions.setdefault(session, []).append(role)
        assert len(sessions) == 2 and all(roles == ["user", "assistant"] for roles in sessions.values()), rows
        for page in (first, second):
            page.wait_for_function("document.querySelectorAll('#rag-chat .message.user').length === 1", timeout=30_000)
    finally:
        browser.close()


def test_closing_the_tab_stops_the_call(playwright_, chromium_options, web_server, voice, tmp_path):
    """The server's work for a call (its transcription and read-ahead threads) ends when the tab goes."""
    import threading

    def call_threads() -> int:
        return sum(t.name.startswith(("call-asr", "call-prefill", "call-turn")) for t in threading.enumerate())

    talk = conversation(["How many panels does the Millstream solar garden have?", 20.0], tmp_path / "long.wav",
                        voice)
    browser, page = call_page(playwright_, chromium_options, web_server.url, fake_microphone(talk, tmp_path))
    try:
        before = call_threads()
        page.click("#rag-talk")
        page.wait_for_function("document.querySelector('#rag-call-status').innerText.includes('Hearing')",
                               timeout=30_000)
        deadline = time.time() + 20                # its first transcription starts its threads
        while call_threads() <= before and time.time() < deadline:
            time.sleep(0.25)
        assert call_threads() > before
        page.context.close()                       # the tab goes, mid-call
        deadline = time.time() + 30
        while call_threads() > before and time.time() < deadline:
            time.sleep(0.5)
        assert call_threads() == before
    finally:
        browser.close()
