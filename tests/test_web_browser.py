"""The page in a real browser (headless Chromium via Playwright) against the real server and models.

Screenshots go to test-artifacts/ (page-answer.png, page-documents.png, page-mic.png).
"""
from __future__ import annotations

import re
import time
import pytest

pytest_plugins = ["tests.web_fixtures"]
pytestmark = pytest.mark.web
PLACEHOLDERS = ("Searching your documents", "Transcribing your recording", "The model is busy")
VIEWPORT = {"width": 1360, "height": 1000}


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


@pytest.fixture(scope="module")
def playwright_():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_, chromium_options):
    b = playwright_.chromium.launch(**chromium_options)
    yield b
    b.close()


def open_page(browser, url, **context):
    page = browser.new_context(viewport=VIEWPORT, **context).new_page()
    page.goto(url)
    page.wait_for_selector("#rag-question textarea", timeout=60_000)
    page.wait_for_function("document.querySelector('#rag-sources') !== null")
    return page


def messages(page, role: str) -> list[str]:
    return page.eval_on_selector_all(f"#rag-chat .message.{role}", "els => els.map(e => e.innerText.trim())")


def ask(page, server, question: str, press_enter: bool = True) -> int:
    """Type and send a question; returns the history mark before it (for wait_for_answer)."""
    mark = server.mark()
    page.fill("#rag-question textarea", question)
    if press_enter:
        page.keyboard.press("Enter")
    else:
        page.click("#rag-ask")
    return mark


def wait_for_answer(page, server, question: str, mark: int, timeout: float = 150) -> str:
    """Wait until the server saved an answer to `question` after `mark` and the page shows all of it;
    returns the answer."""
    _, answer = server.wait_exchange(question, mark, timeout)
    want = set(tokens(answer))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = messages(page, "bot")
        if shown and not shown[-1].startswith(PLACEHOLDERS) and len(want - set(tokens(shown[-1]))) <= 1:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"the page never showed the whole answer {answer!r}; it shows {messages(page, 'bot')}")


def sources_text(page) -> str:
    return page.inner_text("#rag-sources")


WATCH_LAST_BOT = """() => {
  window.__seen = [];
  const note = () => {
    const bots = document.querySelectorAll('#rag-chat .message.bot');
    const text = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
  };
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_typed_question_streams_a_cited_answer_with_sources(browser, web_server, web_artifacts):
    page = open_page(browser, web_server.url)
    page.evaluate(WATCH_LAST_BOT)
    question = "When did the Harbor Point library abolish fines?"
    mark = ask(page, web_server, question)
    answer = wait_for_answer(page, web_server, question, mark)
    assert "2019" in answer
    assert messages(page, "user")[-1] == question
    # Streamed: the answer was on the page in more than one piece before it was complete.
    seen = [t for t in page.evaluate("window.__seen") if not t.startswith(PLACEHOLDERS)]
    assert len(seen) >= 2, seen
    # Sources: numbered like the citations, with the document, its section and the passage.
    page.wait_for_function("document.querySelector('#rag-sources').innerText.includes('harbor-library.md')")
    text = sources_text(page)
    assert "[1]" in text and "Membership and borrowing" in text and "match " in text
    assert page.locator("#rag-sources details").count() >= 2
    assert "abolished fines in 2019" in page.inner_text("#rag-sources details[open] .rag-passage")
    page.locator("#rag-sources details summary").nth(1).click()
    assert page.locator("#rag-sources details[open]").count() == 2
    page.screenshot(path=str(web_artifacts / "page-answer.png"), full_page=True)

    # A reload restores this browser's chat and sources from the history store.
    page.reload()
    page.wait_for_function(f"(document.querySelector('#rag-chat')?.innerText || '').includes({question!r})",
                           timeout=30_000)
    assert "2019" in messages(page, "bot")[-1]
    page.wait_for_function("document.querySelector('#rag-sources').innerText.includes('harbor-library.md')")

    # A follow-up in the same chat goes through the session's history.
    follow = "Who was its first librarian?"
    mark = ask(page, web_server, follow, press_enter=False)
    session, _ = web_server.wait_exchange(follow, mark)
    assert web_server.exchanges(question)[-1][0] == session        # the same session
    wait_for_answer(page, web_server, follow, mark)
    assert "harbor-library.md" in sources_text(page)

    # A question sent while an answer is still being written is answered after it, in order (the page
    # dropped it before: the text stayed in the box and nothing happened).
    first = "Tell me about the Harbor Point library: its history, its rules and its opening hours."    # a long answer
    second = "When does the library open on Saturdays?"
    mark = ask(page, web_server, first)
    page.wait_for_function(f"(document.querySelector('#rag-chat')?.innerText || '').includes({first!r})")
    assert not web_server.exchanges(first, mark)         # still answering
    ask(page, web_server, second)
    wait_for_answer(page, web_server, second, mark)
    assert messages(page, "user")[-2:] == [first, second]
    assert [q for q, _ in web_server.questions(mark)] == [first, second]

    # Thanks are answered without a search: the panel keeps the last answer's sources.
    mark = ask(page, web_server, "Thanks!")
    assert wait_for_answer(page, web_server, "Thanks!", mark) == "You're welcome."
    assert "harbor-library.md" in sources_text(page)

    # A question refused (too long) leaves the chat and the sources panel as they were.
    page.fill("#rag-question textarea", "why " * 1200)
    page.click("#rag-ask")
    page.wait_for_function("document.body.innerText.includes('the limit is 4,000')", timeout=30_000)
    page.wait_for_function("!document.querySelector('#rag-sources').innerText.includes('Searching')", timeout=10_000)
    assert "harbor-library.md" in sources_text(page) and messages(page, "user")[-1] == "Thanks!"

    # New chat forgets it: the page and the stored history are both empty.
    page.click("#rag-new-chat")
    page.wait_for_function("document.querySelectorAll('#rag-chat .message').length === 0")
    assert web_server.engines.history.history(session) == []
    page.context.close()


def test_uploaded_document_is_listed_answerable_and_removable(browser, web_server, web_artifacts, tmp_path):
    good = tmp_path / "Quillfeather ferry (notes).md"
    good.write_text("# Quillfeather Ferry\n\nThe captain of the Quillfeather ferry is Marta Olsen. The ferry "
                    "crosses Lake Orvel every forty minutes, and a ticket costs six euros.\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    stored = good.name

    page = open_page(browser, web_server.url)
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_function("document.querySelector('#rag-doc-table').innerText.includes('harbor-library.md')")
    page.set_input_files("#rag-upload input[type=file]", [str(good), str(empty)])
    page.wait_for_function("document.querySelector('#rag-doc-status').innerText.includes(' indexed')",
                           timeout=120_000)
    status = page.inner_text("#rag-doc-status")
    assert f"{stored}: 1 passage indexed" in status
    assert "empty.txt: the file is empty" in status                 # per-file errors, the rest goes in
    page.wait_for_function(f"document.querySelector('#rag-doc-table').innerText.includes({stored!r})")
    table = page.inner_text("#rag-doc-table")
    assert "uploaded" in table and "documents folder" in table
    assert (web_server.engines.cfg.data_path / "uploads" / stored).is_file()
    page.screenshot(path=str(web_artifacts / "page-documents.png"), full_page=True)

    # A URL into the host's own network is refused, with the reason.
    page.fill("#rag-url textarea", web_server.url)
    page.click("#rag-add-url")
    page.wait_for_function("document.querySelector('#rag-doc-status').innerText.includes('Added web page')")
    status = page.inner_text("#rag-doc-status")
    assert "Not added" in status and "local or private address" in status

    page.get_by_role("tab", name="Chat").click()
    question = "Who is the captain of the Quillfeather ferry?"
    mark = ask(page, web_server, question)
    answer = wait_for_answer(page, web_server, question, mark)
    assert "Marta" in answer or "Olsen" in answer, answer
    page.wait_for_function(f"document.querySelector('#rag-sources').innerText.includes({stored!r})")

    page.get_by_role("tab", name="Documents").click()
    page.click("#rag-remove-choice input")
    page.get_by_role("option", name=re.compile(re.escape(stored))).click()
    page.click("#rag-remove")
    page.wait_for_function("document.querySelector('#rag-doc-status').innerText.includes('Removed')")
    page.wait_for_function(f"!document.querySelector('#rag-doc-table').innerText.includes({stored!r})")
    assert not (web_server.engines.cfg.data_path / "uploads" / stored).exists()
    assert all(d.source != stored for d in web_server.engines.index.catalog.documents())

    page.get_by_role("tab", name="Settings").click()
    page.wait_for_function("document.querySelector('#rag-profile').innerText.includes('Language model')")
    profile = page.inner_text("#rag-profile")
    assert "llamacpp" in profile and "faster-whisper" in profile and "3 documents" in profile
    # Voice and speaking rate for spoken answers: a dropdown of the voices that load here, and a slider.
    assert page.input_value("#rag-voice input") == "Natural (hibari)"
    assert page.get_attribute("#rag-rate input[type=range]", "min") == "0.75"
    assert page.get_attribute("#rag-rate input[type=range]", "max") == "1.5"
    assert page.input_value("#rag-rate input[type=range]") == "1"
    page.click("#rag-voice input")
    offered = " | ".join(page.get_by_role("option").all_inner_texts())     # the chosen one has a tick
    assert all(v in offered for v in ("Natural (hibari)", "Robot (espeak-ng, en-us)", "Robot (espeak-ng, en-gb)"))
    assert "piper" not in offered                                           # not installed here
    page.get_by_role("option", name="Robot (espeak-ng, en-gb)").click()     # a choice for this tab only
    page.wait_for_selector("[role=option]", state="detached")
    assert page.input_value("#rag-voice input") == "Robot (espeak-ng, en-gb)"
    page.screenshot(path=str(web_artifacts / "page-settings.png"), full_page=True)
    page.context.close()


def test_spoken_question_is_transcribed_answered_and_spoken(playwright_, chromium_options, web_server,
                                                            web_artifacts, spoken_question):
    said, wav = spoken_question
    options = dict(chromium_options)
    options["args"] = options["args"] + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                         f"--use-file-for-fake-audio-capture={wav}"]
    browser = playwright_.chromium.launch(**options)
    try:
        page = open_page(browser, web_server.url, permissions=["microphone"])
        assert page.is_checked("#rag-speak input")
        mark = web_server.mark()
        mic = page.locator("#rag-mic")
        mic.get_by_role("button", name="Record", exact=True).click()
        time.sleep(4)
        mic.get_by_role("button", name="Stop", exact=True).click()
        page.wait_for_function(
            "(() => { const u = document.querySelectorAll('#rag-chat .message.user');"
            " return u.length && !u[u.length - 1].innerText.includes('Transcribing'); })()", timeout=60_000)
        transcript = messages(page, "user")[-1]
        assert {"library", "fines"} <= set(tokens(transcript)), transcript
        answer = wait_for_answer(page, web_server, transcript, mark)
        assert "2019" in answer
        assert "harbor-library.md" in sources_text(page)
        # The spoken answer: an <audio> element with a source that plays by itself.
        page.wait_for_function(
            "(() => { const a = document.querySelector('#rag-spoken audio');"
            " return a && a.src && a.currentTime > 0.3; })()", timeout=60_000)
        page.screenshot(path=str(web_artifacts / "page-mic.png"), full_page=True)
    finally:
        browser.close()


def test_a_silent_recording_gives_a_plain_warning(browser, web_server, tmp_path):
    import numpy as np

    from common.wav import write_wav

    silence = write_wav(tmp_path / "silence.wav", np.zeros(32000, np.float32), 16000)
    page = open_page(browser, web_server.url)
    page.locator("#rag-mic").get_by_role("button", name="Upload file").click()
    page.set_input_files("#rag-mic input[type=file]", str(silence))
    page.wait_for_function("document.body.innerText.includes('No speech heard in the recording')", timeout=60_000)
    # Nothing half-done stays in the chat (the "Transcribing…" line goes away); the warning is one plain line.
    page.wait_for_function("document.querySelectorAll('#rag-chat .message').length === 0", timeout=10_000)
    toast = page.get_by_text("No speech heard in the recording").first.inner_text()
    assert "\n" not in toast.strip() and "Error" not in toast and "Traceback" not in toast, toast
    page.context.close()


def test_search_in_narrows_a_question_to_the_chosen_documents(browser, web_server):
    page = open_page(browser, web_server.url)
    page.click("#rag-search-in input")
    page.keyboard.type("harbor")
    page.get_by_role("option", name="harbor-library.md").click()
    page.keyboard.press("Escape")
    question = "How often should I oil my bicycle chain?"
    mark = ask(page, web_server, question)
    answer = wait_for_answer(page, web_server, question, mark)
    assert "could not find" in answer, answer           # the bicycle guide is outside the chosen documents
    assert "bicycle-care.txt" not in sources_text(page)
    page.locator("#rag-search-in").get_by_role("button", name=re.compile("remove|clear", re.I)).first.click()
    mark = ask(page, web_server, question)
    wait_for_answer(page, web_server, question, mark)
    page.wait_for_function("document.querySelector('#rag-sources').innerText.includes('bicycle-care.txt')")


def test_markup_in_a_document_never_loads_in_the_chat(browser, web_server, tmp_path):
    """A document's `<img src=...>` and `![x](...)` were fetched by the browser when the answer quoted
    them, and again when the chat was restored. A local server counts every request they make."""
    import http.server
    import threading

    fetched = []

    class Tracker(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            fetched.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    tracker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    base = f"http://localhost:{tracker.server_address[1]}"
    doc = tmp_path / "vellmar-bridge.txt"
    doc.write_text(f'The Vellmar bridge toll for bicycles is three crowns <img src="{base}/html.png"> '
                   f"![map]({base}/md.png) and cars pay nine crowns.\n", encoding="utf-8")
    engines = web_server.engines
    engines.ingestor.ingest([str(doc)], progress=False)
    try:
        page = open_page(browser, web_server.url)
        question = "What is the Vellmar bridge toll for bicycles?"
        mark = ask(page, web_server, question)
        session, answer = web_server.wait_exchange(question, mark)
        assert f"{base}/html.png" in answer and f"{base}/md.png" in answer     # the quote carries both
        page.wait_for_function("document.querySelector('#rag-sources').innerText.includes('vellmar-bridge.txt')")
        page.wait_for_function("(() => { const b = document.querySelectorAll('#rag-chat .message.bot');"
                               " return b.length && b[b.length - 1].innerText.includes('cars pay nine'); })()")
        time.sleep(1)
        assert fetched == [], "the browser loaded URLs a document named"
        # The model's own words may copy a document's markup too (or be a source sentence): restored here.
        engines.history.add_exchange(session, "And the map?", f'The map <img src="{base}/model.png"> '
                                     f"![x]({base}/model-md.png) shows the bridge [1].", {"sources": []})
        page.reload()                                                        # the chat is restored
        page.wait_for_function("(() => { const b = document.querySelectorAll('#rag-chat .message.bot');"
                               " return b.length > 1 && b[b.length - 1].innerText.includes('model-md.png'); })()")
        time.sleep(1)
        assert fetched == [], "the browser loaded URLs a document named, on restore"
        quoted, copied = messages(page, "bot")[-2:]
        assert f'<img src="{base}/html.png">' in quoted and f"![map]({base}/md.png)" in quoted   # as text
        assert f'<img src="{base}/model.png">' in copied and f"![x]({base}/model-md.png)" in copied
        assert page.locator("#rag-chat img").count() == 0
        page.context.close()
    finally:
        engines.ingestor.remove(str(doc.resolve()))
        tracker.shutdown()
