"""The document catalog in PostgreSQL, shared by app replicas on several machines.

Same tables and semantics as the SQLite catalog (rag/index/catalog.py), prefixed `rag_` so they can live in
the database that also holds the chat history. Vectors are float32 bytes in BYTEA. What is a file
beside the SQLite catalog lives in the database here: the manifest is a `rag_meta` row, and the
writer lock is a PostgreSQL advisory lock held on its own connection, so two ingests on two machines
never interleave and a crashed writer's lock goes with its connection.

Connections come from a small pool (checked before each use, so a restarted server is no problem).
Every failure to reach or use the database is a `BackendError` naming host and port, never the password.
"""
from __future__ import annotations

from pathlib import Path

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from rag.index.catalog import LANGUAGE_SAMPLE_CHUNKS, CatalogStore, ChunkRef, DocumentRow, NewChunk, new_catalog_id
from common.errors import BackendError
from rag.pg import PgLink, configured_url

if TYPE_CHECKING:
    from rag.config import CatalogConfig

log = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rag_documents (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, uri TEXT UNIQUE NOT NULL, source TEXT NOT NULL,
    root TEXT NOT NULL, hash TEXT NOT NULL, size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL,
    n_chunks INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rag_chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, hash TEXT UNIQUE NOT NULL, text TEXT NOT NULL,
    embed_text TEXT NOT NULL, vector BYTEA NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rag_refs (
    doc_id BIGINT NOT NULL REFERENCES rag_documents(id) ON DELETE CASCADE, ord INTEGER NOT NULL,
    chunk_id BIGINT NOT NULL REFERENCES rag_chunks(id), location TEXT NOT NULL, start INTEGER NOT NULL,
    PRIMARY KEY (doc_id, ord))""",
    "CREATE INDEX IF NOT EXISTS rag_refs_chunk ON rag_refs(chunk_id)",
    "CREATE TABLE IF NOT EXISTS rag_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rag_doc_languages (
    doc_id BIGINT PRIMARY KEY REFERENCES rag_documents(id) ON DELETE CASCADE, language TEXT NOT NULL)""",
    "INSERT INTO rag_meta VALUES ('catalog_id', %(catalog_id)s) ON CONFLICT (key) DO NOTHING",
)
SCHEMA_LOCK = 0x7261675F63617473    # advisory lock ids ("rag_cats", "rag_catw"): replicas starting
WRITER_LOCK = 0x7261675F63617477    # together create the tables once; one writer at a time
DOC_COLUMNS = "id, uri, source, root, hash, size, mtime_ns, n_chunks"


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")   # PostgreSQL text cannot hold NUL; SQLite can


class PostgresCatalog(CatalogStore):
    shared = True

    def __init__(self, url: str, *, timeout_s: float = 5.0, pool_size: int = 4, url_from: str = "catalog.url"):
        try:
            from psycopg_pool import ConnectionPool
        except ImportError as err:
            raise BackendError("a PostgreSQL catalog needs psycopg and psycopg_pool; run: "
                               "pip install 'psycopg[binary]' psycopg_pool") from err
        link = PgLink(url, role="document catalog", url_from=url_from, timeout_s=timeout_s,
                      application_name="voice-rag-catalog")
        psycopg = link.psycopg
        self._link, self._psycopg, self._url, self._url_from = link, psycopg, link.url, url_from
        self._kwargs, self.where, self.timeout_s = link.kwargs, link.where, timeout_s
        with self._guard("cannot reach"), psycopg.connect(url, **self._kwargs) as conn:   # fail fast, clearly
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA:
                    conn.execute(statement, {"catalog_id": new_catalog_id()} if "%(" in statement else None)
        self._pool_lock = threading.Lock()
        self._pool = ConnectionPool(url, kwargs=self._kwargs, min_size=1, max_size=max(1, pool_size),
                                    timeout=timeout_s, check=ConnectionPool.check_connection, name="catalog",
                                    open=True)
        log.info("document catalog in PostgreSQL at %s", self.where)

    def __repr__(self) -> str:
        return f"PostgresCatalog({self.where!r})"

    # -- connections ------------------------------------------------------------------------
    def _guard(self, doing: str):
        return self._link.guard(doing)

    @contextmanager
    def _conn(self, doing: str = "cannot read from"):
        with self._guard(doing), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _tx(self):
        """One write transaction that bumps the generation (readers see the change and the new number at once)."""
        with self._conn("cannot write to") as conn, conn.transaction():
            yield conn
            conn.execute("INSERT INTO rag_meta VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE "
                         "SET value = (rag_meta.value::bigint + 1)::text")

    def close(self) -> None:
        with self._pool_lock:
            self._pool.close()

    # -- meta and manifest ----------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._conn() as conn:
            row = conn.execute("SELECT value FROM rag_meta WHERE key=%s", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._conn("cannot write to") as conn:
            conn.execute("INSERT INTO rag_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                         (key, _text(value)))

    def exchange_manifest(self, want: dict, check: Callable[[dict], None]) -> None:
        # Under a lock, so two replicas starting with different models cannot both pass the check.
        with self._conn("cannot write to") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            row = conn.execute("SELECT value FROM rag_meta WHERE key='manifest'").fetchone()
            if row is not None:
                check(json.loads(row[0]))
            if row is None or json.loads(row[0]) != want:
                conn.execute("INSERT INTO rag_meta VALUES ('manifest', %s) ON CONFLICT (key) DO UPDATE "
                             "SET value = EXCLUDED.value", (json.dumps(want, sort_keys=True),))

    # -- the writer lock -------------------------------------------------------------------------
    @contextmanager
    def _lock_connection(self):
        # Its own connection, not a pooled one: the lock is held for a whole ingest, which itself
        # needs pooled connections, and it must go away with this connection if the process dies.
        with self._guard("cannot lock"), self._psycopg.connect(self._url, **self._kwargs) as conn:
            yield conn

    @contextmanager
    def writer(self) -> Iterator[None]:
        with self._lock_connection() as conn:
            with self._guard("cannot lock"):
                t0 = time.monotonic()
                conn.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK,))
                if time.monotonic() - t0 > 1:
                    log.info("waited %.1f s for another writer of the catalog", time.monotonic() - t0)
            try:
                yield
            except BaseException:
                self._unlock(conn, failing=True)
                raise
            self._unlock(conn, failing=False)

    @contextmanager
    def try_writer(self) -> Iterator[bool]:
        with self._lock_connection() as conn:
            with self._guard("cannot lock"):
                got = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()[0])
            try:
                yield got
            except BaseException:
                if got:
                    self._unlock(conn, failing=True)
                raise
            if got:
                self._unlock(conn, failing=False)

    def _unlock(self, conn, *, failing: bool) -> None:
        """Release the writer lock. When the write already failed (`failing`), a failed release is only
        logged: the caller must see what stopped the write, not that the connection then dropped too."""
        try:
            with self._guard("cannot unlock"):
                conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK,))
        except BackendError as err:
            if not failing:
                raise BackendError(f"{err} (the work done under the catalog's write lock had finished; the server "
                                   "releases the lock when that connection ends)") from None
            log.warning("%s; the server releases the lock when that connection ends", err)

    # -- documents -------------------------------------------------------------------------------
    def documents(self, root: str | None = None) -> list[DocumentRow]:
        query = f"SELECT {DOC_COLUMNS} FROM rag_documents"
        with self._conn() as conn:
            rows = (conn.execute(query + " WHERE root=%s ORDER BY source", (_text(root),)) if root is not None
                    else conn.execute(query + " ORDER BY source")).fetchall()
        return [DocumentRow(*row) for row in rows]

    def document(self, uri: str) -> DocumentRow | None:
        with self._conn() as conn:
            row = conn.execute(f"SELECT {DOC_COLUMNS} FROM rag_documents WHERE uri=%s", (_text(uri),)).fetchone()
        return DocumentRow(*row) if row else None

    def known_hashes(self, hashes: list[str]) -> set[str]:
        with self._conn() as conn:
            return {r[0] for r in conn.execute("SELECT hash FROM rag_chunks WHERE hash = ANY(%s)", (list(hashes),))}

    def touch(self, uri: str, mtime_ns: int) -> None:
        with self._conn("cannot write to") as conn:
            conn.execute("UPDATE rag_documents SET mtime_ns=%s WHERE uri=%s", (mtime_ns, _text(uri)))

    def put_document(self, uri: str, source: str, root: str, digest: str, size: int, mtime_ns: int,
                     chunks: list[NewChunk], vectors: dict[str, np.ndarray]) -> tuple[list[int], list[int]]:
        uri, source, root = _text(uri), _text(source), _text(root)
        with self._tx() as conn:
            row = conn.execute("SELECT id FROM rag_documents WHERE uri=%s FOR UPDATE", (uri,)).fetchone()
            old: list[int] = []
            if row:
                doc_id = row[0]
                old = [r[0] for r in conn.execute("DELETE FROM rag_refs WHERE doc_id=%s RETURNING chunk_id", (doc_id,))]
                conn.execute("UPDATE rag_documents SET source=%s, root=%s, hash=%s, size=%s, mtime_ns=%s, "
                             "n_chunks=%s, updated_at=%s WHERE id=%s",
                             (source, root, digest, size, mtime_ns, len(chunks), time.time(), doc_id))
            else:
                doc_id = conn.execute("INSERT INTO rag_documents (uri, source, root, hash, size, mtime_ns, n_chunks, "
                                      "updated_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                                      (uri, source, root, digest, size, mtime_ns, len(chunks), time.time())
                                      ).fetchone()[0]
            hashes = list(dict.fromkeys(c.hash for c in chunks))
            ids = dict(conn.execute("SELECT hash, id FROM rag_chunks WHERE hash = ANY(%s)", (hashes,)).fetchall())
            fresh = {c.hash: c for c in chunks if c.hash not in ids}
            added: list[int] = []
            if fresh:   # one statement for all new chunks, in order, so ids grow with the document
                new = conn.execute(
                    "INSERT INTO rag_chunks (hash, text, embed_text, vector) SELECT * FROM "
                    "unnest(%s::text[], %s::text[], %s::text[], %s::bytea[]) RETURNING id, hash",
                    (list(fresh), [_text(c.text) for c in fresh.values()],
                     [_text(c.embed_text) for c in fresh.values()],
                     [vectors[h].astype(np.float32).tobytes() for h in fresh])).fetchall()
                ids.update((h, i) for i, h in new)
                added = sorted(i for i, _ in new)
            conn.execute("INSERT INTO rag_refs (doc_id, ord, chunk_id, location, start) SELECT %s, * FROM "
                         "unnest(%s::int[], %s::bigint[], %s::text[], %s::int[])",
                         (doc_id, list(range(len(chunks))), [ids[c.hash] for c in chunks],
                          [_text(c.location) for c in chunks], [c.start for c in chunks]))
            orphans = self._collect_orphans(conn, old)
        return added, orphans

    def remove_document(self, uri: str) -> list[int]:
        with self._conn("cannot write to") as conn:   # nothing to remove: no transaction, no new generation
            if conn.execute("SELECT 1 FROM rag_documents WHERE uri=%s", (_text(uri),)).fetchone() is None:
                return []
        with self._tx() as conn:
            row = conn.execute("SELECT id FROM rag_documents WHERE uri=%s FOR UPDATE", (_text(uri),)).fetchone()
            if row is None:
                return []
            old = [r[0] for r in conn.execute("DELETE FROM rag_refs WHERE doc_id=%s RETURNING chunk_id", (row[0],))]
            conn.execute("DELETE FROM rag_documents WHERE id=%s", (row[0],))
            return self._collect_orphans(conn, old)

    @staticmethod
    def _collect_orphans(conn, candidates: list[int]) -> list[int]:
        if not candidates:
            return []
        rows = conn.execute("DELETE FROM rag_chunks c WHERE c.id = ANY(%s) AND NOT EXISTS "
                            "(SELECT 1 FROM rag_refs r WHERE r.chunk_id = c.id) RETURNING c.id",
                            (sorted(set(candidates)),)).fetchall()
        return sorted(r[0] for r in rows)

    # -- reading everything ------------------------------------------------------------------------
    def all_vectors(self, dimension: int) -> tuple[np.ndarray, np.ndarray]:
        with self._conn() as conn, conn.cursor(binary=True) as cur:   # binary: BYTEA without hex decoding
            rows = cur.execute("SELECT id, vector FROM rag_chunks ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = (np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=np.float32).reshape(-1, dimension)
                if rows else np.zeros((0, dimension), dtype=np.float32))
        return ids, vecs

    def all_texts(self) -> tuple[np.ndarray, list[str]]:
        with self._conn() as conn:
            rows = conn.execute("SELECT id, embed_text FROM rag_chunks ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def chunk_refs(self, ids: list[int]) -> dict[int, ChunkRef]:
        if not ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT c.id, c.text, d.source, r.location FROM rag_chunks c JOIN rag_refs r ON r.chunk_id = c.id "
                "JOIN rag_documents d ON d.id = r.doc_id WHERE c.id = ANY(%s) ORDER BY r.doc_id, r.ord",
                ([int(i) for i in ids],)).fetchall()
        out: dict[int, ChunkRef] = {}
        for chunk_id, text, source, location in rows:
            out.setdefault(chunk_id, ChunkRef(chunk_id, text, source, location))
        return out

    def chunk_hashes(self, ids: list[int]) -> dict[int, str]:
        with self._conn() as conn:
            return dict(conn.execute("SELECT id, hash FROM rag_chunks WHERE id = ANY(%s)",
                                     ([int(i) for i in ids],)).fetchall())

    def chunk_ids_for_documents(self, doc_ids: list[int]) -> list[int]:
        with self._conn() as conn:
            rows = conn.execute("SELECT DISTINCT chunk_id FROM rag_refs WHERE doc_id = ANY(%s) ORDER BY chunk_id",
                                ([int(d) for d in doc_ids],)).fetchall()
        return [r[0] for r in rows]

    def counts(self) -> tuple[int, int]:
        with self._conn() as conn:
            return conn.execute("SELECT (SELECT COUNT(*) FROM rag_documents), (SELECT COUNT(*) FROM rag_chunks)"
                                ).fetchone()

    def wipe(self) -> None:
        # The generation is kept and bumped, never reset: a replica that saw generation N must not
        # mistake a rebuilt catalog that reaches N again for the one it mirrors.
        with self._tx() as conn:
            conn.execute("TRUNCATE rag_refs, rag_doc_languages, rag_documents, rag_chunks")
            conn.execute("DELETE FROM rag_meta WHERE key = 'manifest'")


    # -- document languages (issue 16; see CatalogStore.languages) ----------------------------------
    def set_language(self, uri: str, language: str | None) -> None:
        with self._conn("cannot write to") as conn:
            conn.execute("INSERT INTO rag_doc_languages SELECT id, %s FROM rag_documents WHERE uri=%s "
                         "ON CONFLICT (doc_id) DO UPDATE SET language = EXCLUDED.language",
                         (language or "", _text(uri)))

    def languages(self) -> dict[str, int]:
        from common.language import detect

        with self._conn() as conn:
            missing = [r[0] for r in conn.execute("SELECT id FROM rag_documents WHERE id NOT IN "
                                                  "(SELECT doc_id FROM rag_doc_languages)")]
            for doc_id in missing:
                texts = [r[0] for r in conn.execute(
                    "SELECT c.text FROM rag_refs r JOIN rag_chunks c ON c.id = r.chunk_id WHERE r.doc_id=%s "
                    "ORDER BY r.ord LIMIT %s", (doc_id, LANGUAGE_SAMPLE_CHUNKS))]
                conn.execute("INSERT INTO rag_doc_languages VALUES (%s, %s) ON CONFLICT (doc_id) DO NOTHING",
                             (doc_id, detect(" ".join(texts)) or ""))
            return dict(conn.execute("SELECT language, COUNT(*) FROM rag_doc_languages GROUP BY language").fetchall())


def open_postgres_catalog(cfg: CatalogConfig, folder: Path | None = None) -> PostgresCatalog:
    """`folder` is unused: the catalog lives in the server (the signature is the registry's)."""
    url, url_from = configured_url("catalog", cfg)
    return PostgresCatalog(url, timeout_s=cfg.timeout_s, pool_size=cfg.pool_size, url_from=url_from)
