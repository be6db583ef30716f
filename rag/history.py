"""Per-session chat history in SQLite under the data dir (WAL: readers never block the writer)."""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, session TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session, id);
"""


def new_session_id() -> str:
    return uuid.uuid4().hex


class HistoryStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._db() as db:
            db.executescript(SCHEMA)

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
        return [{"role": r, "content": c, **({"extra": json.loads(e)} if e != "{}" else {})}
                for r, c, e in reversed(rows)]

    def history(self, session: str, limit: int = 40) -> list[dict[str, str]]:
        """Plain {role, content} messages for the pipeline."""
        return [{"role": m["role"], "content": m["content"]} for m in self.messages(session, limit)]

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
