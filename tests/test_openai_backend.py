"""`llm.backend: openai` against a real OpenAI-compatible server: llama-cpp-python's server on the
shipped SmolLM2 GGUF, started once for the module; plus a server that is down, one that is too slow,
one that cuts streams short, and four concurrent questions through the whole pipeline."""
from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from rag.config import LLMConfig, load_config
from rag.engines import Engines
from common.errors import BackendError
from rag.events import Done, Failed, TextDelta
from rag.models.llm import GenerationSettings, OpenAIModel
from common.shipped import resolve
from bench.common import free_port

pytestmark = pytest.mark.slow     # real models (the unit run leaves them out)

ROOT = Path(__file__).resolve().parents[1]
MAYOR = [{"role": "system", "content": "Answer from the context only."},
         {"role": "user", "content": "Context: The mayor is Helen Ward.\n\nQuestion: Who is the mayor?"}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
GREEDY = GenerationSettings(max_new_tokens=48, temperature=0.0)


def start_server(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """1 thread: robust on a shared 2-core machine (see tests/test_llm.py::llama)."""
    gguf = resolve("shipped:SmolLM2-135M-Instruct-Q4_1", tmp_path)
    port = free_port()
    log = (tmp_path / f"server-{port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/models", timeout=1):
                return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"llama_cpp.server did not start: {(tmp_path / f'server-{port}.log').read_text()[-2000:]}")
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # --interrupt_requests false: by default this server ends a running stream when another request
    # arrives (see test_a_stream_cut_short_is_an_error_not_a_short_answer).
    proc, base = start_server(tmp_path_factory.mktemp("server"), "--interrupt_requests", "false")
    yield base
    stop(proc)


def client(base_url: str, **kw) -> OpenAIModel:
    return OpenAIModel(LLMConfig(backend="openai", base_url=base_url, model="local", **kw), Path("."))


def test_streamed_answer_through_the_openai_backend(server):
    pieces = list(client(server).stream(MAYOR, GREEDY))
    assert len(pieces) > 1, pieces
    assert "Helen Ward" in "".join(pieces)


def test_a_server_that_is_down_is_a_clear_backend_error():
    base = f"http://127.0.0.1:{free_port()}/v1"      # nothing listens there
    with pytest.raises(BackendError, match=f"cannot reach the model server at {base}; is it running"):
        list(client(base).stream(MAYOR, GREEDY))


class _Slow(http.server.BaseHTTPRequestHandler):
    """Answers /v1/chat/completions too slowly: before the headers, or after the first chunk."""
    release = threading.Event()
    stall_after_headers = False

    def do_POST(self):   # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.stall_after_headers:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chunk = ('{"id":"x","object":"chat.completion.chunk","created":0,"model":"m",'
                     '"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}')
            self.wfile.write(f"data: {chunk}\n\n".encode())
            self.wfile.flush()
        self.release.wait(10)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("stall_after_headers", [False, True], ids=["no-answer", "stalls-mid-stream"])
def test_a_slow_server_is_a_timeout_backend_error(stall_after_headers):
    handler = type("Slow", (_Slow,), {"release": threading.Event(), "stall_after_headers": stall_after_headers})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda *a: None    # the client hangs up first: not an error here
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        t0 = time.perf_counter()
        got = []
        with pytest.raises(BackendError, match=f"server at {base} did not answer within 1 s"):
            for piece in client(base, timeout_s=1).stream(MAYOR, GREEDY):
                got.append(piece)
        assert time.perf_counter() - t0 < 5
        assert got == (["Hel"] if stall_after_headers else [])
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def test_a_stream_cut_short_is_an_error_not_a_short_answer(tmp_path):
    """llama-cpp-python's server, with its default interrupt_requests=true, ends a running stream with
    [DONE] and no finish_reason as soon as another request arrives. That must not look like an answer."""
    proc, base = start_server(tmp_path)
    try:
        model = client(base)
        outcome: dict[str, object] = {}
        first_piece = threading.Event()

        def long_answer():
            try:
                for piece in model.stream(STORY, GenerationSettings(max_new_tokens=400)):
                    first_piece.set()
                outcome["long"] = "finished"
            except BackendError as err:
                outcome["long"] = err
            finally:
                first_piece.set()

        t = threading.Thread(target=long_answer)
        t.start()
        assert first_piece.wait(60)
        assert "Helen Ward" in "".join(model.stream(MAYOR, GREEDY))   # the interrupting request is fine
        t.join(60)
        assert isinstance(outcome.get("long"), BackendError), outcome
        assert "ended the answer early" in str(outcome["long"]) and "--interrupt_requests false" in str(outcome["long"])
    finally:
        stop(proc)


# Facts the 135M model gets right from the retrieved passages (it misreads others, e.g. the library's year).
QUESTIONS = [("How many panels does the Millstream Solar Garden have?", "4,800"),
             ("Who was the first librarian of the Harbor Point library?", "Agnes Lindqvist"),
             ("How much does one share in the Millstream Energy Cooperative cost?", "250"),
             ("How many members does the Millstream Energy Cooperative have?", "640")]


def test_four_concurrent_pipeline_asks_each_get_their_own_answer(server, tmp_path):
    cfg = load_config(None, overrides=[
        "llm.backend=openai", f"llm.base_url={server}", "llm.model=local", "llm.max_new_tokens=48",
        "llm.timeout_s=300",   # this server answers one request at a time: the 4th waits for 3 answers
        "retrieval.k=2", "prompt.context_tokens=400",   # short prompts: a 2-core machine evaluates ~150-600 tok/s
        # The best passage alone: each answer then states its own fact whichever passage comes second (given
        # the garden's opening lines beside the share price, the 135M model wrote "built in 2017 ... 640 members").
        "prompt.max_sources=1",
        f"documents.folder={ROOT / 'txt'}", "memory.rewrite=false"], data_dir=str(tmp_path / "data"))
    engines = Engines(cfg)
    engines.ensure_documents(progress=False)
    pipeline = engines.pipeline()
    results: dict[int, list] = {}
    start = threading.Barrier(len(QUESTIONS))

    def worker(i):
        start.wait()
        results[i] = list(pipeline.ask(QUESTIONS[i][0]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for i, (question, fact) in enumerate(QUESTIONS):
        events = results[i]
        failed = [e for e in events if isinstance(e, Failed)]
        assert not failed, failed
        done = events[-1]
        assert isinstance(done, Done), events[-3:]
        streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert " ".join(streamed.split()) == " ".join(done.answer.split())
        assert fact in done.answer, (question, done.answer)
        assert not done.abstained and done.sources
