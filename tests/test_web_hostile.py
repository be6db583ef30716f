"""The security review's findings against the running page (issue 17 #6, #10): real HTTP requests
and real concurrent clients to the real server on loopback."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
