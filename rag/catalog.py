"""SQLite catalog of documents and chunks: the source of truth of the index.

Chunks are keyed by a hash of their text, so a passage that appears in several documents (or in
two versions of one) is stored and embedded once; `refs` says where each chunk occurs. Every change
is one transaction that bumps `generation`, which the derived search structures compare against.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, uri TEXT UNIQUE NOT NULL, source TEXT NOT NULL, root TEXT NOT NULL,
    hash TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, n_chunks INTEGER NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, hash TEXT UNIQUE NOT NULL, text TEXT NOT NULL, embed_text TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS refs (
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE, ord INTEGER NOT NULL,
    chunk_id INTEGER NOT NULL, location TEXT NOT NULL, start INTEGER NOT NULL,
    PRIMARY KEY (doc_id, ord));
CREATE INDEX IF NOT EXISTS refs_chunk ON refs(chunk_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class DocumentRow:
    id: int
    uri: str
    source: str
    root: str
    hash: str
    size: int
    mtime_ns: int
    n_chunks: int


@dataclass(frozen=True)
class ChunkRef:
    chunk_id: int
    text: str
    source: str
    location: str


@dataclass(frozen=True)
class NewChunk:
    hash: str
    text: str
    embed_text: str
    location: str
    start: int


class Catalog:
    def __init__(self, path: Path):
        self.path = path
        with self.connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection per operation: safe across threads and processes."""
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    def get_meta(self, key: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def documents(self, root: str | None = None) -> list[DocumentRow]:
        query = "SELECT id, uri, source, root, hash, size, mtime_ns, n_chunks FROM documents"
        with self.connect() as db:
            rows = (db.execute(query + " WHERE root=? ORDER BY source", (root,)) if root is not None
                    else db.execute(query + " ORDER BY source")).fetchall()
        return [DocumentRow(*row) for row in rows]

    def document(self, uri: str) -> DocumentRow | None:
        with self.connect() as db:
            row = db.execute("SELECT id, uri, source, root, hash, size, mtime_ns, n_chunks FROM documents "
                             "WHERE uri=?", (uri,)).fetchone()
        return DocumentRow(*row) if row else None

    def known_hashes(self, hashes: list[str]) -> set[str]:
        found: set[str] = set()
        with self.connect() as db:
            for i in range(0, len(hashes), 500):
                part = hashes[i:i + 500]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in db.execute(f"SELECT hash FROM chunks WHERE hash IN ({marks})", part))
        return found

    def touch(self, uri: str, mtime_ns: int) -> None:
        with self.connect() as db:
            db.execute("UPDATE documents SET mtime_ns=? WHERE uri=?", (mtime_ns, uri))

    def put_document(self, uri: str, source: str, root: str, digest: str, size: int, mtime_ns: int,
                     chunks: list[NewChunk], vectors: dict[str, np.ndarray]) -> tuple[list[int], list[int]]:
        """Replace a document's chunks in one transaction. Returns (added chunk ids, orphaned chunk ids)."""
        added: list[int] = []
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT id FROM documents WHERE uri=?", (uri,)).fetchone()
                old_chunks: set[int] = set()
                if row:
                    doc_id = row[0]
                    old_chunks = {r[0] for r in db.execute("SELECT chunk_id FROM refs WHERE doc_id=?", (doc_id,))}
                    db.execute("DELETE FROM refs WHERE doc_id=?", (doc_id,))
                    db.execute("UPDATE documents SET source=?, root=?, hash=?, size=?, mtime_ns=?, n_chunks=?, "
                               "updated_at=? WHERE id=?",
                               (source, root, digest, size, mtime_ns, len(chunks), time.time(), doc_id))
                else:
                    doc_id = db.execute("INSERT INTO documents (uri, source, root, hash, size, mtime_ns, n_chunks, "
                                        "updated_at) VALUES (?,?,?,?,?,?,?,?)",
                                        (uri, source, root, digest, size, mtime_ns, len(chunks), time.time())
                                        ).lastrowid
                for ord_, chunk in enumerate(chunks):
                    hit = db.execute("SELECT id FROM chunks WHERE hash=?", (chunk.hash,)).fetchone()
                    if hit:
                        chunk_id = hit[0]
                    else:
                        vector = vectors[chunk.hash].astype(np.float32).tobytes()
                        chunk_id = db.execute("INSERT INTO chunks (hash, text, embed_text, vector) VALUES (?,?,?,?)",
                                              (chunk.hash, chunk.text, chunk.embed_text, vector)).lastrowid
                        added.append(chunk_id)
                    db.execute("INSERT INTO refs VALUES (?,?,?,?,?)",
                               (doc_id, ord_, chunk_id, chunk.location, chunk.start))
                orphans = self._collect_orphans(db, old_chunks)
                self._bump(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added, orphans

    def remove_document(self, uri: str) -> list[int]:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT id FROM documents WHERE uri=?", (uri,)).fetchone()
                if not row:
                    db.execute("ROLLBACK")
                    return []
                old = {r[0] for r in db.execute("SELECT chunk_id FROM refs WHERE doc_id=?", (row[0],))}
                db.execute("DELETE FROM refs WHERE doc_id=?", (row[0],))
                db.execute("DELETE FROM documents WHERE id=?", (row[0],))
                orphans = self._collect_orphans(db, old)
                self._bump(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return orphans

    @staticmethod
    def _collect_orphans(db: sqlite3.Connection, candidates: set[int]) -> list[int]:
        orphans = [c for c in candidates
                   if db.execute("SELECT 1 FROM refs WHERE chunk_id=? LIMIT 1", (c,)).fetchone() is None]
        db.executemany("DELETE FROM chunks WHERE id=?", [(c,) for c in orphans])
        return orphans

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO meta VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE "
                   "SET value = CAST(value AS INTEGER) + 1")

    def all_vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        with self.connect() as db:
            rows = db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = (np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dimension)
                if rows else np.zeros((0, dimension), dtype=np.float32))
        return ids, vecs

    def all_texts(self) -> tuple[np.ndarray, list[str]]:
        with self.connect() as db:
            rows = db.execute("SELECT id, embed_text FROM chunks ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def chunk_refs(self, ids: list[int]) -> dict[int, ChunkRef]:
        """Text and first location of each chunk id (a shared chunk shows its first document)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.connect() as db:
            rows = db.execute(
                f"SELECT c.id, c.text, d.source, r.location FROM chunks c JOIN refs r ON r.chunk_id = c.id "
                f"JOIN documents d ON d.id = r.doc_id WHERE c.id IN ({marks}) ORDER BY r.doc_id, r.ord",
                [int(i) for i in ids]).fetchall()
        out: dict[int, ChunkRef] = {}
        for chunk_id, text, source, location in rows:
            out.setdefault(chunk_id, ChunkRef(chunk_id, text, source, location))
        return out

    def chunk_ids_for_documents(self, doc_ids: list[int]) -> list[int]:
        """The distinct chunk ids referenced by these documents (a metadata filter's allowed set)."""
        found: set[int] = set()
        with self.connect() as db:
            for i in range(0, len(doc_ids), 500):
                part = [int(d) for d in doc_ids[i:i + 500]]
                marks = ",".join("?" * len(part))
                found.update(r[0] for r in db.execute(f"SELECT DISTINCT chunk_id FROM refs WHERE doc_id IN ({marks})",
                                                      part))
        return sorted(found)

    def counts(self) -> tuple[int, int]:
        with self.connect() as db:
            docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks
