"""The security review's findings against the running page (issue 17 #6, #10, #11): real HTTP
requests and real concurrent clients to the real server on loopback."""
from __future__ import annotations

import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

pytest_plugins = ["tests.web_fixtures"]
pytestmark = pytest.mark.web


def client(url, **kwargs):
    from gradio_client import Client

    return Client(url, verbose=False, **kwargs)


def test_a_rebinding_name_or_another_site_is_refused(web_server):
    """#6: Gradio answered any Host and echoed any Origin, so a page on another site could drive the
    loopback instance through a name of its own that resolves to 127.0.0.1 (DNS rebinding). Now a
    Host must be a loopback name or a configured one, and an Origin the page's own: else 403."""
    base, port = web_server.url, urlsplit(web_server.url).port
    ask = {"json": {"data": ["", "", None]}}           # an empty question: answered at once with its error
    with httpx.Client(timeout=30) as http:
        for path in ("", "config", "gradio_api/info"):
            refused = http.get(base + path, headers={"Host": f"rebind.attacker.example:{port}"})
            assert refused.status_code == 403 and "host name" in refused.json()["detail"], path
        refused = http.post(base + "gradio_api/call/ask", headers={"Host": f"rebind.attacker.example:{port}"}, **ask)
        assert refused.status_code == 403
        for origin in ("http://attacker.example", f"http://127.0.0.1:{port + 1}", "null"):
            refused = http.post(base + "gradio_api/call/ask", headers={"Origin": origin}, **ask)
            assert refused.status_code == 403 and "other sites" in refused.json()["detail"], origin
        # the page itself: by its loopback names, and its own origin
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            assert http.get(base, headers={"Host": host}).status_code == 200, host
        own = http.post(base + "gradio_api/call/ask", headers={"Origin": base.rstrip("/")}, **ask)
        assert own.status_code == 200 and own.json()["event_id"]
    answer, sources = client(base).predict("When did the Harbor Point library open?", "", api_name="/ask")
    assert "1962" in answer and sources


def test_one_client_cannot_fill_the_answer_queue(web_server):
    """#10: 60 concurrent /ask calls from one client took all 32 queue places; another client got 503
    or waited 65 s. Now one client (its session id, else its address) has at most
    server.max_queue_per_client calls waiting or running; the rest are refused at once, and another
    client's question is queued and answered meanwhile."""
    limit = web_server.engines.cfg.server.max_queue_per_client
    question = "When did the Harbor Point library abolish fines?"

    def join(session):
        return httpx.post(web_server.url + "gradio_api/call/ask", json={"data": [question, session, None]}, timeout=60)

    with ThreadPoolExecutor(12) as pool:
        flood = list(pool.map(join, ["flooder"] * 12))
    codes = [r.status_code for r in flood]
    assert codes.count(200) == limit and codes.count(503) == 12 - limit, codes
    refused = next(r for r in flood if r.status_code == 503)
    assert "max_queue_per_client" in refused.json()["detail"]
    answer, sources = client(web_server.url).predict(
        "How many panels does the Millstream Solar Garden have?", "patient", api_name="/ask")
    assert answer.strip() and sources[0]["source"] == "solar-garden.md"


def _cache_files_holding(marker: bytes) -> list[Path]:
    from gradio.utils import get_upload_folder

    found = []
    for path in Path(get_upload_folder()).rglob("*"):
        try:
            if path.is_file() and marker in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def test_the_upload_route_keeps_no_more_than_the_limits(web_server):
    """#11: 100 files in one POST /gradio_api/upload were accepted and kept for 6 h; the 20-file
    limit applied only when indexing. Now a request over documents.max_upload_files files, or
    declaring more bytes than that many files may hold, is refused (413) and nothing of it is kept."""
    docs = web_server.engines.cfg.documents
    marker = uuid.uuid4().hex.encode()
    files = [("files", (f"note-{i}.md", marker + f" note {i}".encode(), "text/markdown"))
             for i in range(docs.max_upload_files + 10)]
    refused = httpx.post(web_server.url + "gradio_api/upload", files=files, timeout=60)
    assert refused.status_code == 413 and f"at most {docs.max_upload_files} files" in refused.json()["detail"]
    assert _cache_files_holding(marker) == []
    kept = httpx.post(web_server.url + "gradio_api/upload", files=files[:2], timeout=60)
    assert kept.status_code == 200 and len(kept.json()) == 2 and len(_cache_files_holding(marker)) == 2

    # A body declared bigger than max_upload_files x max_file_mb is refused before it is read.
    parts = urlsplit(web_server.url)
    declared = int(docs.max_upload_files * docs.max_file_mb * 1e6) + 2_000_000
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw:
        raw.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: multipart/"
                    f"form-data; boundary=b\r\nContent-Length: {declared}\r\n\r\n".encode())
        answer = raw.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_uploads_stop_while_the_cache_holds_upload_cache_mb(web_server, tmp_path):
    """#11, across requests: many small uploads, each within the limits, kept filling the disk. While
    Gradio's cache folder holds server.upload_cache_mb, uploads are refused (507); the page goes on."""
    from gradio.utils import get_upload_folder
    from tests.web_fixtures import _launch
    from web.upload_limit import folder_bytes

    room = folder_bytes(Path(get_upload_folder())) + 50_000          # what is there, and 50 KB more
    demo, url, _ = _launch(["documents.folder=null", f"server.upload_cache_mb={room / 1e6}"], tmp_path / "data",
                           share_models_with=web_server.engines)
    try:
        marker = uuid.uuid4().hex.encode()
        files = [("files", (f"part-{i}.md", marker + bytes(20_000) + str(i).encode(), "text/markdown"))
                 for i in range(3)]
        first = httpx.post(url + "gradio_api/upload", files=files, timeout=60)       # 60 KB: past the room
        assert first.status_code == 200 and len(first.json()) == 3
        refused = httpx.post(url + "gradio_api/upload", files=files[:1], timeout=60)
        assert refused.status_code == 507 and "upload_cache_mb" in refused.json()["detail"]
        assert httpx.get(url, timeout=30).status_code == 200
    finally:
        demo.close()

def _call_private_event(server, trigger: str, inputs_like: str, data: list) -> list:
    """Call one of the page's private events by its fn_index, as any client can (POST queue/join and
    read the event stream, or run/predict for an event that is not queued): the first event fired by `trigger` whose only input is a component
    of type `inputs_like`. Returns its output data."""
    import json

    config = httpx.get(server.url + "config", timeout=30).json()
    kinds = {c["id"]: c.get("type") for c in config["components"]}
    fn = next(d for d in config["dependencies"] if any(t[1] == trigger for t in d["targets"])
              and [kinds[i] for i in d["inputs"]] == [inputs_like])
    session_hash = uuid.uuid4().hex
    if fn.get("queue") is False:              # answered in the request itself
        answered = httpx.post(server.url + "gradio_api/run/predict", timeout=30,
                              json={"fn_index": fn["id"], "data": data, "session_hash": session_hash})
        assert answered.status_code == 200, answered.text
        return answered.json()["data"]
    joined = httpx.post(server.url + "gradio_api/queue/join", timeout=30,
                        json={"fn_index": fn["id"], "data": data, "session_hash": session_hash})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", server.url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    assert message.get("success"), message
                    return message["output"]["data"]
    raise AssertionError("the event never completed")


def test_an_api_session_cannot_be_read_or_cleared_through_the_page(web_server):
    """#5: the page's restore and clear events trusted any session id the client sent, and private
    events are callable by fn_index, so a client that knew or guessed an /ask session id ("my-session")
    read or deleted that chat. Now the page's events take only ids the server issued to a page."""
    history = web_server.engines.history
    history.add_exchange("my-session", "What is the safe's code?", "The code is 4711.")
    restored = _call_private_event(web_server, "load", "browserstate", ["my-session"])       # restore
    assert "4711" not in json_text(restored)
    _call_private_event(web_server, "click", "browserstate", ["my-session"])                 # New chat
    assert [m["content"] for m in history.history("my-session")] == ["What is the safe's code?", "The code is 4711."]
    from web.chat import PAGE_SESSION_RE, ChatHandlers

    chat = ChatHandlers(web_server.engines)         # a page's ids: issued here, 128 random bits
    issued = {chat.session_of("my-session") for _ in range(100)}
    assert len(issued) == 100 and all(PAGE_SESSION_RE.match(i) and i.startswith("page-") for i in issued)


def json_text(value) -> str:
    import json

    return json.dumps(value)
