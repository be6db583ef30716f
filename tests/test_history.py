"""Chat history stores: SQLite (default) and PostgreSQL, the latter against a real server started here
(tests/pg_server.py: a throwaway cluster on loopback, removed at the end of the module).
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from conftest import make_config
from pg_server import DATABASE, PASSWORD, USER, down_database_error, pg_server, pg_url  # noqa: F401 - pg_server: fixture

from rag.config import HistoryConfig
from common.errors import BackendError, ConfigError
from rag.events import Done
from rag.history import HistoryStore, PostgresHistory, SqliteHistory, open_history


# -- a fresh store of either kind -----------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path):
    """A function that opens a store on the same database each time it is called (a "reopen")."""
    opened: list[HistoryStore] = []
    if request.param == "sqlite":
        def open_store() -> HistoryStore:
            opened.append(SqliteHistory(tmp_path / "history.sqlite"))
            return opened[-1]
    else:
        server = request.getfixturevalue("pg_server")

        def open_store() -> HistoryStore:
            opened.append(PostgresHistory(pg_url(server.port), timeout_s=3))
            return opened[-1]
    yield open_store
    for store in opened:
        store.close()


def sid() -> str:
    return "t-" + uuid.uuid4().hex   # sessions unique per test: the PostgreSQL database is shared


def test_sessions_order_limit_extra_clear(opener):
    store = opener()
    a, b = sid(), sid()
    assert store.messages(a) == [] and store.history(a) == []
    store.add_exchange(a, "Q1", "A1", {"sources": [{"source": "x.txt"}], "voice": True})
    store.add_exchange(b, "other question", "other answer")
    store.add_exchange(a, "Q2", "A2")
    store.add_exchange(a, "Q3 ünïcode ✓", "A3\nwith two lines")
    assert store.history(b) == [{"role": "user", "content": "other question"},
                                {"role": "assistant", "content": "other answer"}]
    messages = store.messages(a)
    assert [m["content"] for m in messages] == ["Q1", "A1", "Q2", "A2", "Q3 ünïcode ✓", "A3\nwith two lines"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert messages[1]["extra"] == {"sources": [{"source": "x.txt"}], "voice": True}
    assert "extra" not in messages[0] and "extra" not in messages[3]
    assert all(set(m) == {"role", "content"} for m in store.history(a))
    assert [m["content"] for m in store.history(a, limit=3)] == ["A2", "Q3 ünïcode ✓", "A3\nwith two lines"]
    store.clear(a)
    assert store.messages(a) == []
    assert len(store.messages(b)) == 2            # clearing one session leaves the others


def test_survives_reopen(opener):
    session = sid()
    first = opener()
    first.add_exchange(session, "When did the library open?", "In 1962 [1].", {"abstained": False})
    first.close()
    again = opener()
    assert again.history(session) == [{"role": "user", "content": "When did the library open?"},
                                      {"role": "assistant", "content": "In 1962 [1]."}]
    assert again.messages(session)[1]["extra"] == {"abstained": False}


def test_concurrent_exchanges_never_interleave(opener):
    """Two stores (two app processes) write exchanges to one session at once: each stays whole."""
    stores = [opener(), opener()]
    session = sid()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(15):
                stores[n].add_exchange(session, f"q{n}-{i}", f"a{n}-{i}")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    messages = stores[0].messages(session, limit=1000)
    assert len(messages) == 120
    for user, assistant in zip(messages[::2], messages[1::2]):
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"] == "a" + user["content"][1:]


def test_old_constructor_still_opens_sqlite(tmp_path):
    store = HistoryStore(tmp_path / "h" / "history.sqlite")
    assert isinstance(store, SqliteHistory)
    store.add_exchange("s", "q", "a")
    assert HistoryStore(tmp_path / "h" / "history.sqlite").history("s")[0]["content"] == "q"


# -- configuration --------------------------------------------------------------------------------
def test_open_history_by_config(tmp_path, monkeypatch):
    assert isinstance(open_history(HistoryConfig(), tmp_path), SqliteHistory)
    assert (tmp_path / "history.sqlite").exists()
    monkeypatch.delenv("RAG_HISTORY_URL", raising=False)
    with pytest.raises(ConfigError, match="RAG_HISTORY_URL"):
        open_history(HistoryConfig(backend="postgres"), tmp_path)
    with pytest.raises(ConfigError, match="not a valid PostgreSQL URL") as err:
        open_history(HistoryConfig(backend="postgres", url=f"postgresql://u:{PASSWORD}@h:notaport/x?bogus"),
                     tmp_path)
    assert PASSWORD not in str(err.value)
    with pytest.raises(ConfigError, match="unknown config key 'history.backnd'"):
        make_config(tmp_path, "history.backnd=postgres")


def test_engines_use_postgres_from_env(pg_server, tmp_path, monkeypatch):
    from rag.engines import Engines

    monkeypatch.setenv("RAG_HISTORY_URL", pg_url(pg_server.port))
    engines = Engines(make_config(tmp_path, "history.backend=postgres"))
    store = engines.history
    assert isinstance(store, PostgresHistory)
    assert store.where == f"127.0.0.1:{pg_server.port}/{DATABASE}" and PASSWORD not in repr(store)
    session = sid()
    store.add_exchange(session, "q", "a")
    assert len(store.history(session)) == 2
    assert not (tmp_path / "history.sqlite").exists()
    store.close()


# -- several replicas on one PostgreSQL -----------------------------------------------------------
def test_conversation_continues_on_another_replica(pg_server, base_engines, tmp_path):
    from rag.pipeline import Pipeline

    replica_a = PostgresHistory(pg_url(pg_server.port))
    replica_b = PostgresHistory(pg_url(pg_server.port))
    try:
        session = sid()
        # The shared engines with shorter answers (the first sentence is what a follow-up needs).
        pipeline = Pipeline(make_config(tmp_path, "llm.max_new_tokens=48"), base_engines.retriever,
                            base_engines.llm, None)
        question = "Who founded the Harbor Point Community Library?"
        done = [e for e in pipeline.ask(question, replica_a.history(session)) if isinstance(e, Done)]
        assert len(done) == 1 and done[0].answer
        replica_a.add_exchange(session, question, done[0].answer, {"abstained": done[0].abstained})

        history = replica_b.history(session)     # the follow-up lands on the other replica
        assert history == [{"role": "user", "content": question},
                           {"role": "assistant", "content": done[0].answer}]
        follow_up = "Who was its first librarian?"
        assert any(question in q.text for q in pipeline.queries(follow_up, follow_up, history))
        _, hits = pipeline.search(follow_up, history, rewrite=False)   # the LLM rewrite is tested elsewhere
        assert any("Agnes Lindqvist" in h.text for h in hits[:2]), [h.text[:80] for h in hits[:2]]
    finally:
        replica_a.close()
        replica_b.close()


# -- failures -------------------------------------------------------------------------------------
def test_down_database_is_a_backend_error_quickly(tmp_path, monkeypatch):
    message, port = down_database_error(monkeypatch, "RAG_HISTORY_URL",
                                        lambda: open_history(HistoryConfig(backend="postgres", timeout_s=2), tmp_path))
    assert f"127.0.0.1:{port}/{DATABASE}" in message and "$RAG_HISTORY_URL" in message
    assert "cannot reach the chat history database" in message
    assert "\n" not in message and PASSWORD not in message and f"{USER}:" not in message


def test_wrong_password_is_a_backend_error_without_the_password(pg_server):
    wrong = "wrong-" + PASSWORD
    with pytest.raises(BackendError) as err:
        PostgresHistory(pg_url(pg_server.port, password=wrong), timeout_s=3)
    message = str(err.value)
    assert f"127.0.0.1:{pg_server.port}" in message and "password authentication failed" in message
    assert wrong not in message and PASSWORD not in message and "\n" not in message


def test_server_restart_and_outage(pg_server):
    """Pooled connections survive a server restart; while it is down, operations fail fast and clearly."""
    store = PostgresHistory(pg_url(pg_server.port), timeout_s=2)
    session = sid()
    try:
        store.add_exchange(session, "before", "restart")
        pg_server.stop("fast")
        try:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match=f"127.0.0.1:{pg_server.port}") as err:
                store.history(session)
            assert time.monotonic() - t0 < 5 and PASSWORD not in str(err.value)
        finally:
            pg_server.start()
        store.add_exchange(session, "after", "restart")
        assert [m["content"] for m in store.history(session)] == ["before", "restart", "after", "restart"]
    finally:
        store.close()


def test_nul_characters_do_not_break_a_store(opener):
    store = opener()
    session = sid()
    store.add_exchange(session, "a\x00b", "c", {"note": "d\x00e"})
    user, assistant = store.messages(session)
    assert user["content"] in ("a\x00b", "a\ufffdb") and assistant["extra"]["note"] in ("d\x00e", "d\ufffde")
