"""The catalog of documents and chunks: the source of truth of the index, behind one interface.

Chunks are keyed by a hash of their text, so a passage that appears in several documents (or in
two versions of one) is stored and embedded once; `refs` says where each chunk occurs. Every change
is one transaction that bumps `generation`, which the derived search structures compare against.

Two backends share these semantics: SQLite under the data dir (one machine; this module) and
PostgreSQL (rag/index/catalog_pg.py), which app replicas on several machines share.
`rag.index.registry.open_catalog` picks one from the config.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout

from common.files import atomic_write, private_file

if TYPE_CHECKING:
    from rag.config import CatalogConfig

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
CREATE TABLE IF NOT EXISTS doc_languages (
    doc_id INTEGER PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE, language TEXT NOT NULL);
"""
# doc_languages came later (issue 16) as a table of its own: CREATE IF NOT EXISTS is the whole migration
# of an older data dir, and documents indexed before it get their language on first use (`languages`).
LANGUAGE_SAMPLE_CHUNKS = 20     # chunks of a document read to tell its language



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


def new_catalog_id() -> str:
    return uuid.uuid4().hex


class CatalogStore(ABC):
    """Documents, deduplicated chunks with their vectors, and a meta table, in one database.

    `where` names the database for messages (never a password). `shared` is True when other
    machines may use the same catalog, so locks and markers must live in it rather than in files.
    """

    where: str = ""
    shared: bool = False

    # -- meta -------------------------------------------------------------------------------
    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def catalog_id(self) -> str:
        """A random id made when the catalog was created: tells a derived store which catalog it mirrors."""
        return self.get_meta("catalog_id") or ""

    def exchange_manifest(self, want: dict, check: Callable[[dict], None]) -> None:
        """Store `want` as the index manifest after `check(stored)` accepted the stored one (if any);
        an exception from `check` leaves the stored manifest as it was."""
        have = self.get_meta("manifest")
        if have is not None:
            check(json.loads(have))
        if have is None or json.loads(have) != want:
            self.set_meta("manifest", json.dumps(want, sort_keys=True))

    # -- the writer lock ---------------------------------------------------------------------
    @abstractmethod
    def writer(self) -> AbstractContextManager[None]:
        """Hold the lock every writer takes, across processes (and machines, when shared)."""

    @abstractmethod
    def try_writer(self) -> AbstractContextManager[bool]:
        """Take the writer lock if it is free right now: yields whether it was taken."""

    # -- documents and chunks ------------------------------------------------------------------
    @abstractmethod
    def documents(self, root: str | None = None) -> list[DocumentRow]: ...

    @abstractmethod
    def document(self, uri: str) -> DocumentRow | None: ...

    @abstractmethod
    def known_hashes(self, hashes: list[str]) -> set[str]: ...

    @abstractmethod
    def touch(self, uri: str, mtime_ns: int) -> None: ...

    @abstractmethod
    def put_document(self, uri: str, source: str, root: str, digest: str, size: int, mtime_ns: int,
                     chunks: list[NewChunk], vectors: dict[str, np.ndarray]) -> tuple[list[int], list[int]]:
        """Replace a document's chunks in one transaction. Returns (added chunk ids, orphaned chunk ids)."""

    @abstractmethod
    def remove_document(self, uri: str) -> list[int]:
        """Drop a document in one transaction; returns the chunk ids no document references any more."""

    @abstractmethod
    def all_vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def all_texts(self) -> tuple[np.ndarray, list[str]]: ...

    @abstractmethod
    def chunk_refs(self, ids: list[int]) -> dict[int, ChunkRef]:
        """Text and first location of each chunk id (a shared chunk shows its first document)."""

    @abstractmethod
    def chunk_hashes(self, ids: list[int]) -> dict[int, str]: ...

    @abstractmethod
    def chunk_ids_for_documents(self, doc_ids: list[int]) -> list[int]:
        """The distinct chunk ids referenced by these documents (a metadata filter's allowed set)."""

    @abstractmethod
    def counts(self) -> tuple[int, int]: ...

    @abstractmethod
    def wipe(self) -> None:
        """Forget every document, chunk and the manifest (`ingest --rebuild`); the generation still grows."""

    def close(self) -> None:
        """Release connections (the catalog is not used afterwards)."""

    # -- document languages (issue 16) ----------------------------------------------------------
    def set_language(self, uri: str, language: str | None) -> None:
        """Record the language a document is written in (None: not known; nothing stored)."""

    def languages(self) -> dict[str, int]:
        """How many documents are in each language. Documents without one (indexed before languages were
        recorded) are read once, a few chunks each, and stored; "" counts those no language was found for."""
        return {}


class SqliteCatalog(CatalogStore):
    """<data_dir>/index/catalog.sqlite, with manifest.json and a lock file beside it."""

    def __init__(self, path: Path):
        self.path = private_file(Path(path))     # 0600; SQLite gives its -wal and -shm the same mode
        self.where = str(self.path.parent)
        self.manifest_path = self.path.parent / "manifest.json"
        self._lock = FileLock(str(self.path.parent / "write.lock"), mode=0o600)
        with self.connect() as db:
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('catalog_id', ?)", (new_catalog_id(),))

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

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction: committed when the block ends, rolled back when it
        raises (also on KeyboardInterrupt), so a killed ingest never leaves half a document."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def get_meta(self, key: str) -> str | None:
        with self.connect() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def exchange_manifest(self, want: dict, check: Callable[[dict], None]) -> None:
        # A file, as before the catalog had a meta manifest: existing data dirs keep working.
        if self.manifest_path.exists():
            try:
                have = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                have = {}
            check(have if isinstance(have, dict) else {})
        atomic_write(self.manifest_path, json.dumps(want, indent=2).encode())

    @contextmanager
    def writer(self) -> Iterator[None]:
        with self._lock:
            yield

    @contextmanager
    def try_writer(self) -> Iterator[bool]:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            self._lock.release()

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

    def _in_parts(self, query: str, values: list) -> list[tuple]:
        """Run `query` (with one `{marks}` IN list) over values in parts of 500 (SQLite's bound-variable limit)."""
        rows: list[tuple] = []
        with self.connect() as db:
            for i in range(0, len(values), 500):
                part = values[i:i + 500]
                rows.extend(db.execute(query.format(marks=",".join("?" * len(part))), part).fetchall())
        return rows

    def known_hashes(self, hashes: list[str]) -> set[str]:
        return {r[0] for r in self._in_parts("SELECT hash FROM chunks WHERE hash IN ({marks})", list(hashes))}

    def touch(self, uri: str, mtime_ns: int) -> None:
        with self.connect() as db:
            db.execute("UPDATE documents SET mtime_ns=? WHERE uri=?", (mtime_ns, uri))

    def put_document(self, uri: str, source: str, root: str, digest: str, size: int, mtime_ns: int,
                     chunks: list[NewChunk], vectors: dict[str, np.ndarray]) -> tuple[list[int], list[int]]:
        added: list[int] = []
        with self.transaction() as db:
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
        return added, orphans

    def remove_document(self, uri: str) -> list[int]:
        with self.transaction() as db:
            row = db.execute("SELECT id FROM documents WHERE uri=?", (uri,)).fetchone()
            if not row:
                return []
            old = {r[0] for r in db.execute("SELECT chunk_id FROM refs WHERE doc_id=?", (row[0],))}
            db.execute("DELETE FROM refs WHERE doc_id=?", (row[0],))
            db.execute("DELETE FROM documents WHERE id=?", (row[0],))
            orphans = self._collect_orphans(db, old)
            self._bump(db)
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

    def chunk_hashes(self, ids: list[int]) -> dict[int, str]:
        return dict(self._in_parts("SELECT id, hash FROM chunks WHERE id IN ({marks})", [int(i) for i in ids]))

    def chunk_ids_for_documents(self, doc_ids: list[int]) -> list[int]:
        rows = self._in_parts("SELECT DISTINCT chunk_id FROM refs WHERE doc_id IN ({marks})", [int(d) for d in doc_ids])
        return sorted({r[0] for r in rows})

    def counts(self) -> tuple[int, int]:
        with self.connect() as db:
            docs = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return docs, chunks

    def wipe(self) -> None:
        with self.transaction() as db:
            for table in ("refs", "documents", "chunks"):
                db.execute(f"DELETE FROM {table}")
            self._bump(db)
        self.manifest_path.unlink(missing_ok=True)


    def set_language(self, uri: str, language: str | None) -> None:
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO doc_languages SELECT id, ? FROM documents WHERE uri=?",
                       (language or "", uri))

    def languages(self) -> dict[str, int]:
        from common.language import detect

        with self.connect() as db:
            missing = [r[0] for r in db.execute("SELECT id FROM documents WHERE id NOT IN "
                                                "(SELECT doc_id FROM doc_languages)")]
            for doc_id in missing:
                texts = [r[0] for r in db.execute("SELECT c.text FROM refs r JOIN chunks c ON c.id = r.chunk_id "
                                                  "WHERE r.doc_id=? ORDER BY r.ord LIMIT ?",
                                                  (doc_id, LANGUAGE_SAMPLE_CHUNKS))]
                db.execute("INSERT OR REPLACE INTO doc_languages VALUES (?, ?)",
                           (doc_id, detect(" ".join(texts)) or ""))
            return dict(db.execute("SELECT language, COUNT(*) FROM doc_languages GROUP BY language").fetchall())


def open_sqlite_catalog(cfg: CatalogConfig, folder: Path) -> SqliteCatalog:
    return SqliteCatalog(Path(folder) / "catalog.sqlite")
