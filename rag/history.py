"""Per-session chat history behind one interface: SQLite under the data dir (default) or PostgreSQL.

`open_history(cfg.history, data_dir)` picks the backend from the config. Both keep the same table
(one row per message, ordered by id) and the same semantics: an exchange (question + answer) is
written in one transaction, so a reader never sees a question without its answer, and two exchanges
of one session never interleave. SQLite (WAL: readers never block the writer) serves the processes of
one machine; PostgreSQL lets several app replicas on several machines share conversations, so a
follow-up may land on any replica.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.files import private_file
from rag.pg import PgLink, configured_url

if TYPE_CHECKING:
    from rag.config import HistoryConfig

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, session TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session, id);
"""

PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, session TEXT NOT NULL, role TEXT NOT NULL,
    content TEXT NOT NULL, extra TEXT NOT NULL DEFAULT '{}', created DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS messages_session ON messages(session, id)",
)
PG_SCHEMA_LOCK = 0x7261675F68697374   # advisory lock id: replicas starting together create the table once


def _rows_to_messages(rows) -> list[dict]:
    """Newest-first (role, content, extra) rows -> oldest-first messages; `extra` only when not empty."""
    return [{"role": r, "content": c, **({"extra": json.loads(e)} if e != "{}" else {})}
            for r, c, e in reversed(rows)]


class HistoryStore(ABC):
    """Chat history of many sessions. `HistoryStore(path)` still opens the SQLite store (older callers)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is HistoryStore:
            cls = SqliteHistory
        return super().__new__(cls)

    @abstractmethod
    def messages(self, session: str, limit: int = 200) -> list[dict]:
        """The newest `limit` messages, oldest first: {role, content[, extra]}."""

    def history(self, session: str, limit: int = 40) -> list[dict[str, str]]:
        """Plain {role, content} messages for the pipeline."""
        return [{"role": m["role"], "content": m["content"]} for m in self.messages(session, limit)]

    @abstractmethod
    def add_exchange(self, session: str, question: str, answer: str, extra: dict | None = None) -> None:
        """Append the question and its answer together (one transaction)."""

    @abstractmethod
    def clear(self, session: str) -> None:
        """Forget one session."""

    def close(self) -> None:
        """Release connections (the store is not used afterwards)."""


class SqliteHistory(HistoryStore):
    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = private_file(path)
        with self._db() as db:
            db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteHistory({str(self.path)!r})"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def messages(self, session: str, limit: int = 200) -> list[dict]:
        with self._db() as db:
            rows = db.execute("SELECT role, content, extra FROM messages WHERE session=? ORDER BY id DESC LIMIT ?",
                              (session, limit)).fetchall()
        return _rows_to_messages(rows)

    def add_exchange(self, session: str, question: str, answer: str, extra: dict | None = None) -> None:
        now = time.time()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO messages (session, role, content, created) VALUES (?, 'user', ?, ?)",
                       (session, question, now))
            db.execute("INSERT INTO messages (session, role, content, extra, created) VALUES (?, 'assistant', ?, ?, ?)",
                       (session, answer, json.dumps(extra or {}), now))
            db.execute("COMMIT")

    def clear(self, session: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM messages WHERE session=?", (session,))


class PostgresHistory(HistoryStore):
    """The same table in PostgreSQL, shared by any number of app processes.

    Connections come from a small pool (psycopg_pool, checked before each use so a restarted server
    is no problem), or one per operation when psycopg_pool is not installed. Every failure to reach
    or use the database is a `BackendError` naming host and port, never the password.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0, pool_size: int = 4, url_from: str = "history.url"):
        link = PgLink(url, role="chat history", url_from=url_from, timeout_s=timeout_s,
                      application_name="voice-rag-history")
        self._link, self._psycopg, self._url, self._kwargs = link, link.psycopg, link.url, link.kwargs
        self.where, self.timeout_s = link.where, timeout_s
        self._pool = None
        self._pool_lock = threading.Lock()
        self._pool_size = pool_size
        with self._guard("cannot reach"), self._psycopg.connect(url, **self._kwargs) as conn:   # fail fast
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_SCHEMA_LOCK,))
                for statement in PG_SCHEMA:
                    conn.execute(statement)
        log.info("chat history in PostgreSQL at %s", self.where)

    def __repr__(self) -> str:
        return f"PostgresHistory({self.where!r})"

    # -- connections ------------------------------------------------------------------------
    def _guard(self, doing: str):
        return self._link.guard(doing)

    def _get_pool(self):
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    try:
                        from psycopg_pool import ConnectionPool
                    except ImportError:
                        self._pool = False
                    else:
                        self._pool = ConnectionPool(self._url, kwargs=self._kwargs, min_size=1,
                                                    max_size=max(1, self._pool_size), timeout=self.timeout_s,
                                                    check=ConnectionPool.check_connection, name="history",
                                                    open=True)
        return self._pool

    @contextmanager
    def _conn(self, doing: str):
        with self._guard(doing):
            pool = self._get_pool()
            if pool:
                with pool.connection() as conn:
                    yield conn
            else:
                with self._psycopg.connect(self._url, **self._kwargs) as conn:
                    yield conn

    def close(self) -> None:
        with self._pool_lock:
            if self._pool:
                self._pool.close()
            self._pool = False

    # -- the store --------------------------------------------------------------------------
    @staticmethod
    def _text(value: str) -> str:
        return value.replace("\x00", "\ufffd")   # PostgreSQL text cannot hold NUL; SQLite can

    def messages(self, session: str, limit: int = 200) -> list[dict]:
        with self._conn("cannot read from") as conn:
            rows = conn.execute("SELECT role, content, extra FROM messages WHERE session=%s ORDER BY id DESC "
                                "LIMIT %s", (self._text(session), limit)).fetchall()
        return _rows_to_messages(rows)

    def add_exchange(self, session: str, question: str, answer: str, extra: dict | None = None) -> None:
        now = time.time()
        session = self._text(session)
        with self._conn("cannot write to") as conn, conn.transaction():
            # One exchange at a time per session, so the two rows of concurrent exchanges never interleave.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (session,))
            conn.execute("INSERT INTO messages (session, role, content, extra, created) VALUES "
                         "(%s, 'user', %s, '{}', %s), (%s, 'assistant', %s, %s, %s)",
                         (session, self._text(question), now,
                          session, self._text(answer), self._text(json.dumps(extra or {})), now))

    def clear(self, session: str) -> None:
        with self._conn("cannot write to") as conn:
            conn.execute("DELETE FROM messages WHERE session=%s", (self._text(session),))


def open_history(cfg: HistoryConfig, data_dir: Path) -> HistoryStore:
    """The configured store: SQLite at <data_dir>/history.sqlite, or PostgreSQL at history.url / $url_env."""
    if cfg.backend == "sqlite":
        return SqliteHistory(Path(data_dir) / "history.sqlite")
    url, url_from = configured_url("history", cfg)
    return PostgresHistory(url, timeout_s=cfg.timeout_s, pool_size=cfg.pool_size, url_from=url_from)
