"""The page's named `/ask` endpoint through gradio_client, against the real server and models."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

pytest_plugins = ["tests.web_fixtures"]
pytestmark = pytest.mark.web


def client(url, **kwargs):
    from gradio_client import Client

    return Client(url, verbose=False, **kwargs)


def names(sources) -> list[str]:
    return [s["source"] for s in sources]


def test_ask_returns_answer_and_numbered_sources(web_server):
    answer, sources = client(web_server.url).predict(
        "When did the Harbor Point library abolish fines?", "api-one", api_name="/ask")
    assert "2019" in answer
    assert "harbor-library.md" in names(sources)
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert set(sources[0]) == {"n", "source", "location", "text", "score", "similarity"}
    assert any("fines" in s["text"] for s in sources)
    assert isinstance(sources[0]["score"], float)
    saved = web_server.engines.history.history("api-one")
    assert [m["role"] for m in saved] == ["user", "assistant"] and saved[1]["content"] == answer


def test_api_is_listed_with_its_parameters(web_server):
    info = client(web_server.url).view_api(print_info=False, return_format="dict")
    ask = info["named_endpoints"]["/ask"]
    assert [p["parameter_name"] for p in ask["parameters"]] == ["question", "session_id", "sources"]
    assert [p["parameter_has_default"] for p in ask["parameters"]] == [False, True, True]   # (question) still works
    assert len(ask["returns"]) == 2
    assert list(info["named_endpoints"]) == ["/ask"]     # the page's own events are not public API


def test_concurrent_sessions_get_their_own_answers(web_server):
    questions = {"api-solar": ("How many panels does the Millstream Solar Garden have?", "solar-garden.md"),
                 "api-bike": ("What tyre pressure do city bicycle tyres need?", "bicycle-care.txt")}
    with ThreadPoolExecutor(2) as pool:
        jobs = {session: client(web_server.url).submit(q, session, api_name="/ask")
                for session, (q, _) in questions.items()}
        results = {session: job.result(timeout=240) for session, job in jobs.items()}
    for session, (question, doc) in questions.items():
        answer, sources = results[session]
        assert answer.strip(), session
        assert sources[0]["source"] == doc, (session, names(sources))
        saved = web_server.engines.history.history(session)
        assert [m["content"] for m in saved] == [question, answer]
    assert results["api-solar"][0] != results["api-bike"][0]


def test_follow_up_uses_the_sessions_history(web_server):
    c = client(web_server.url)
    c.predict("When was the Millstream Solar Garden built?", "api-follow", api_name="/ask")
    answer, sources = c.predict("How many members does it have?", "api-follow", api_name="/ask")
    assert answer.strip()
    assert sources[0]["source"] == "solar-garden.md", names(sources)
    assert len(web_server.engines.history.history("api-follow")) == 4
    # No (or an empty) session id keeps nothing: each such call starts fresh.
    mark = web_server.mark()
    answer, sources = c.predict("Where is the solar garden?", api_name="/ask")
    assert answer.strip() and "solar-garden.md" in names(sources)
    assert web_server.mark() == mark


def test_sources_filter(web_server):
    from gradio_client.exceptions import AppError

    c = client(web_server.url)
    _, sources = c.predict("How often should I oil the chain?", "", ["bicycle*"], api_name="/ask")
    assert sources and {s["source"] for s in sources} == {"bicycle-care.txt"}
    answer, sources = c.predict("How often should I oil the chain?", "", ["harbor-library.md"], api_name="/ask")
    assert "bicycle-care.txt" not in names(sources)
    with pytest.raises(AppError, match="no document matches 'manuals/\\*'"):
        c.predict("How often should I oil the chain?", "", ["manuals/*"], api_name="/ask")


def test_bad_input_is_a_clear_error_and_the_server_goes_on(web_server):
    from gradio_client.exceptions import AppError

    c = client(web_server.url)
    with pytest.raises(AppError, match="question is empty"):
        c.predict("   ", "api-bad", api_name="/ask")
    with pytest.raises(AppError, match="session_id"):
        c.predict("Hello?", "bad session id with spaces", api_name="/ask")
    with pytest.raises(AppError, match="limit"):
        c.predict("why " * 2000, "api-bad", api_name="/ask")
    answer, sources = c.predict("When did the Harbor Point library open?", "api-bad", api_name="/ask")
    assert "1962" in answer and "harbor-library.md" in names(sources)


def test_login_protects_the_page_and_the_api(web_server_with_login):
    import httpx

    server, login = web_server_with_login
    for path in ("config", "gradio_api/info"):
        assert httpx.get(server.url + path, timeout=30).status_code == 401, path
    call = httpx.post(server.url + "gradio_api/call/ask", json={"data": ["When did it open?", ""]}, timeout=30)
    assert call.status_code == 401
    from gradio_client.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError, match="credentials were not provided"):   # no API description
        client(server.url).predict("When did the Harbor Point library open?", "", api_name="/ask")
    answer, sources = client(server.url, auth=login).predict(
        "When did the Harbor Point library open?", "", api_name="/ask")
    assert "1962" in answer and "harbor-library.md" in names(sources)


@pytest.mark.parametrize("name, safe", [
    ("notes (v2).md", "notes (v2).md"), ("../../etc/passwd", "passwd"), ("..hidden.md", "hidden.md"),
    ("a\\b\\c.TXT", "c.txt"), ("é café.md", "é café.md"), ("rm -rf $(x);<y>.md", "rm -rf _(x)_y_.md"),
    ("   .md", "document.md"), ("\x00\x01.md", "_.md"), ("x" * 300 + ".pdf", "x" * 116 + ".pdf")])
def test_upload_names_are_made_safe(name, safe):
    from web.documents import sanitize_filename

    assert sanitize_filename(name) == safe


def test_page_load_does_not_make_a_session_of_its_own(web_server):
    """A question sent while the page was still loading used to get one session id and the page-load
    handler another; the follow-up then went to the session without the first exchange. Now only a
    question makes the id, and page load keeps what the browser has."""
    import gradio as gr

    from web.chat import ChatHandlers

    chat = ChatHandlers(web_server.engines)
    session, history, _ = chat.restore("")
    assert session == gr.skip() and history == []           # the browser's (empty) id is left alone
    made = list(chat.ask_text("Where is the solar garden?", [], "", False, 3))[0][4]   # its first state sets the id
    assert made and web_server.engines.history.history(made)
    assert chat.restore(made)[0] == made and len(chat.restore(made)[1]) == 2


def test_a_question_spoken_while_a_typed_answer_streams_waits_for_it(web_server, spoken_question):
    """Typed and spoken questions are two listeners on the page. A question spoken while a typed answer
    was streaming ran beside it, from the chat as it was then: the typed answer was cut back to its
    first words on the page. Now the spoken one waits for the typed one, then starts from the stored
    history. The typed answer is held mid-stream here (its generator not advanced) while the spoken
    question is transcribed, so the spoken one always finds it running."""
    import threading
    import time

    from web.chat import SEARCHING, WAITING_TURN, ChatHandlers

    chat = ChatHandlers(web_server.engines)
    typed = chat.ask_text("Where is the solar garden?", [], "", False, 3)
    state = next(typed)
    session = state[4]
    while state[0][-1]["content"] == SEARCHING:      # until the answer's first words are on the page
        state = next(typed)
    shown_then = [dict(m) for m in state[0]]     # what the page held then (the list is changed in place)
    spoken: list[tuple] = []
    voice = threading.Thread(target=lambda: spoken.extend(
        chat.ask_voice(str(spoken_question[1]), shown_then, session, False, 3)))
    voice.start()
    deadline = time.monotonic() + 120
    while not any(s[0] and s[0][-1]["content"] == WAITING_TURN for s in spoken) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(s[0][-1]["content"] == WAITING_TURN for s in spoken), spoken
    last_typed = [s for s in typed][-1][0]         # the typed answer goes on to its end
    voice.join(120)
    final = spoken[-1][0]
    assert [m["role"] for m in final] == ["user", "assistant", "user", "assistant"]
    assert final[1]["content"] == last_typed[1]["content"] != shown_then[1]["content"]   # whole, not cut back
    assert "library" in final[2]["content"].lower()
    stored = web_server.engines.history.history(session)
    assert [m["content"] for m in stored if m["role"] == "user"][0] == "Where is the solar garden?"
    assert len(stored) == 4 and len(chat.turns) == 0


def test_login_guessing_is_locked_out_per_address(web_server_with_login):
    """300 wrong passwords went through in 2 s. Now an address gets 5, then waits (1 s, 2 s, ...) and
    its logins are refused unchecked meanwhile; other addresses log in as usual. The guesses come
    from 127.0.0.2 and 127.0.0.3 (loopback too) so that this test's lockout touches no other test."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    server, (user, password) = web_server_with_login
    url = server.url + "login"

    def attacker(address):
        return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)

    with attacker("127.0.0.2") as guesser:
        codes, start = [], time.monotonic()
        while time.monotonic() - start < 2 and len(codes) < 300:
            codes.append(guesser.post(url, data={"username": user, "password": f"guess-{len(codes)}"}).status_code)
        checked = codes.count(400)
        assert 5 <= checked <= 7 and codes.count(429) == len(codes) - checked, codes[:12]
        refused = guesser.post(url, data={"username": user, "password": password})     # locked: not checked
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "Too many failed logins" in refused.json()["detail"]
    with attacker("127.0.0.3") as burst, ThreadPoolExecutor(20) as pool:           # parallel guesses
        codes = list(pool.map(lambda i: burst.post(url, data={"username": user, "password": f"p{i}"}).status_code,
                              range(40)))
        assert codes.count(400) <= 5 and codes.count(429) >= 35, codes
    assert httpx.post(url, data={"username": user, "password": password}, timeout=30).status_code == 200


def test_the_page_sends_no_key_of_the_server(web_server):
    """A key made per data dir (web/browser-state.key) went to every visitor in the page config, where
    it protected nothing; the browser-stored session id now uses a public constant."""
    import httpx

    config = httpx.get(web_server.url + "config", timeout=30).json()
    keys = [c["props"].get("secret") for c in config["components"] if c.get("type") == "browserstate"]
    assert len(keys) == 1 and not (web_server.engines.cfg.data_path / "web" / "browser-state.key").exists()
    from web.page import BROWSER_STATE_KEY

    assert keys == [BROWSER_STATE_KEY]
