"""Copy a SQLite catalog (a single-machine data dir) into the configured catalog, vectors and all.

This is how an existing install moves to PostgreSQL without re-embedding (`app.py migrate
--catalog-from DIR`). Rows are copied as they are, ids included, so chunk ids, texts and vector bytes
are identical on both sides. The source is read in one SQLite read transaction (a consistent snapshot
even if an ingest writes to it meanwhile) and never written. The target is written under its write
lock in one transaction that also stores the manifest and moves the generation past both catalogs'
own: an interrupted copy leaves the target exactly as it was, and after a finished one every replica
sees a new generation and rebuilds its derived caches (FAISS files, a shared Qdrant, BM25).
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rag.index.catalog import CatalogStore, SqliteCatalog
from rag.index.registry import open_catalog
from common.errors import IndexMismatchError, UserInputError
from common.files import atomic_write

if TYPE_CHECKING:
    from rag.index.catalog_pg import PostgresCatalog
    from rag.config import Config

log = logging.getLogger(__name__)
BATCH = 500   # rows per statement: under SQLite's bound-variable limit, and bounded memory for big catalogs
TABLES = (    # parents first (refs reference both); ordered by id so the target's rows come in the same order
    ("documents", "id, uri, source, root, hash, size, mtime_ns, n_chunks, updated_at", "id"),
    ("chunks", "id, hash, text, embed_text, vector", "id"),
    ("refs", "doc_id, ord, chunk_id, location, start", "doc_id, ord"),
)
PG_TYPES = {   # unnest() needs each column's array type
    "documents": ("bigint", "text", "text", "text", "text", "bigint", "bigint", "int", "float8"),
    "chunks": ("bigint", "text", "text", "text", "bytea"),
    "refs": ("bigint", "int", "bigint", "text", "int"),
}
PG_TEXT = {"documents": (1, 2, 3), "chunks": (2, 3), "refs": (3,)}   # columns PostgreSQL text cannot hold NUL in


@dataclass(frozen=True)
class CopyReport:
    documents: int
    chunks: int
    seconds: float
    source: str
    target: str


def source_path(given: str | Path) -> Path:
    """DIR (a data dir, or its index/ folder) or the catalog.sqlite itself; UserInputError if there is none."""
    path = Path(given).expanduser()
    for candidate in (path / "index" / "catalog.sqlite", path / "catalog.sqlite", path):
        if candidate.is_file():
            return candidate.resolve()
    raise UserInputError(f"--catalog-from: no catalog at {given} (give a data dir holding index/catalog.sqlite, "
                         "or the path of a catalog.sqlite)")


def _open_source(path: Path) -> sqlite3.Connection:
    # Read-only: the install being moved away from stays as it was, to fall back to.
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=60, isolation_level=None)
        db.execute("SELECT 1 FROM documents, chunks, refs, meta LIMIT 0").fetchall()   # the tables are there
    except sqlite3.Error as err:
        raise UserInputError(f"--catalog-from: {path} is not a readable catalog: {err}") from None
    return db


def _source_manifest(path: Path, db: sqlite3.Connection) -> dict:
    """The manifest.json beside a SQLite catalog (where SqliteCatalog keeps it)."""
    file = path.parent / "manifest.json"
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"--catalog-from: {file} is missing, so which embedding model made the vectors is "
                             "unknown; ingest the documents again instead") from None
    except (OSError, ValueError) as err:
        raise UserInputError(f"--catalog-from: cannot read {file}: {err}") from None
    if not isinstance(manifest, dict):
        raise UserInputError(f"--catalog-from: {file} is not a manifest (a JSON object)")
    return manifest


def _check_model(have: dict, cfg: Config, where: Path) -> None:
    """Refuse a source embedded by another model than the config's (without loading the model)."""
    model = cfg.embeddings.model
    if have.get("embedding_model") != model:
        raise IndexMismatchError(f"--catalog-from: {where} was built with embedding model "
                                 f"'{have.get('embedding_model')}' ({have.get('dimension')}-d) but the config uses "
                                 f"'{model}'; migrate with that model in the config, or ingest the documents again")


def _check_dimension(have: dict, dim: int, where: Path) -> None:
    if have.get("dimension") != dim:
        raise IndexMismatchError(f"--catalog-from: {where} holds {have.get('dimension')}-d vectors but the config's "
                                 f"embedding model gives {dim}-d; ingest the documents again")


def _rows(src: sqlite3.Connection, table: str, columns: str, order: str) -> Iterator[list[tuple]]:
    cursor = src.execute(f"SELECT {columns} FROM {table} ORDER BY {order}")
    while rows := cursor.fetchmany(BATCH):
        yield rows


def _describe(target: CatalogStore) -> str:
    return f"PostgreSQL at {target.where}" if target.shared else str(getattr(target, "path", target.where))


def _refuse_if_full(documents: int, replace: bool, target: CatalogStore) -> None:
    if documents and not replace:
        raise UserInputError(f"the catalog in {_describe(target)} already holds {documents} documents; migrate "
                             "only into an empty catalog, or add --replace to drop them first")


def copy_catalog(cfg: Config, given: str | Path, *, dimension: Callable[[], int],
                 replace: bool = False) -> CopyReport:
    """Copy the SQLite catalog at `given` into `cfg`'s catalog. `dimension()` gives the config's
    embedding dimension (it loads the embedder, so it is called only once the cheap checks passed)."""
    path = source_path(given)
    if cfg.catalog.backend == "sqlite" and (cfg.data_path / "index" / "catalog.sqlite").resolve() == path:
        raise UserInputError(f"--catalog-from: {path} is the configured catalog itself; give another data dir")
    with closing(_open_source(path)) as src:
        src.execute("BEGIN")   # one snapshot for every read below, even if the source is being ingested into
        documents, chunks = src.execute("SELECT (SELECT COUNT(*) FROM documents), (SELECT COUNT(*) FROM chunks)"
                                        ).fetchone()
        if not documents:
            raise UserInputError(f"--catalog-from: {path} holds no documents; nothing to migrate")
        manifest = _source_manifest(path, src)
        _check_model(manifest, cfg, path)   # before the target is even opened
        row = src.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        source_generation = int(row[0]) if row else 0
        (cfg.data_path / "index").mkdir(parents=True, exist_ok=True)
        target = open_catalog(cfg, cfg.data_path / "index")
        try:
            _refuse_if_full(target.counts()[0], replace, target)   # early, cheap; checked again under the lock
            dim = dimension()              # loads the embedder: only once the cheap checks passed
            _check_dimension(manifest, dim, path)
            t0 = time.monotonic()          # the copy itself (including any wait for another writer)
            with target.writer():
                if target.shared:
                    _write_postgres(target, src, manifest, source_generation, replace, dim)
                else:
                    _write_sqlite(target, src, manifest, source_generation, replace, dim)
            where = _describe(target)
        finally:
            target.close()
    seconds = time.monotonic() - t0
    log.info("copied %d documents, %d chunks from %s to %s in %.2f s", documents, chunks, path, where, seconds)
    return CopyReport(documents, chunks, seconds, str(path), where)


def _check_vectors(rows: list[tuple], dim: int, path: object) -> None:
    bad = next((r for r in rows if len(r[4]) != 4 * dim), None)
    if bad is not None:
        raise IndexMismatchError(f"--catalog-from: chunk {bad[0]} of {path} has a vector of {len(bad[4]) // 4} "
                                 f"floats, not {dim}; ingest the documents again")


def _write_sqlite(target: SqliteCatalog, src: sqlite3.Connection, manifest: dict, source_generation: int,
                  replace: bool, dim: int) -> None:
    with target.transaction() as db:
        _refuse_if_full(db.execute("SELECT COUNT(*) FROM documents").fetchone()[0], replace, target)
        for table in ("refs", "documents", "chunks"):
            db.execute(f"DELETE FROM {table}")
        for table, columns, order in TABLES:
            marks = ",".join("?" * len(columns.split(",")))
            for rows in _rows(src, table, columns, order):
                if table == "chunks":
                    _check_vectors(rows, dim, "the source catalog")
                db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        own = int((db.execute("SELECT value FROM meta WHERE key='generation'").fetchone() or [0])[0])
        db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(max(own, source_generation) + 1),))
    # After the commit: a copy interrupted before it leaves no manifest claiming data that is not there.
    atomic_write(target.manifest_path, json.dumps(manifest, indent=2).encode())


def _write_postgres(target: PostgresCatalog, src: sqlite3.Connection, manifest: dict, source_generation: int,
                    replace: bool, dim: int) -> None:
    from rag.index.catalog_pg import _text

    # _tx: one transaction that adds 1 to the generation when it commits. DELETE rather than TRUNCATE:
    # replicas keep answering from the old rows until the commit instead of waiting on a table lock.
    with target._tx() as conn:
        _refuse_if_full(conn.execute("SELECT COUNT(*) FROM rag_documents").fetchone()[0], replace, target)
        for table in ("rag_refs", "rag_documents", "rag_chunks"):
            conn.execute(f"DELETE FROM {table}")
        for table, columns, order in TABLES:
            types, texts = PG_TYPES[table], PG_TEXT[table]
            unnest = ", ".join(f"%s::{t}[]" for t in types)
            # OVERRIDING SYSTEM VALUE: keep the source's ids (refs point at them; identity columns refuse them otherwise)
            insert = f"INSERT INTO rag_{table} ({columns}) OVERRIDING SYSTEM VALUE SELECT * FROM unnest({unnest})"
            for rows in _rows(src, table, columns, order):
                if table == "chunks":
                    _check_vectors(rows, dim, "the source catalog")
                values = [[_text(v) for v in col] if i in texts else list(col) for i, col in enumerate(zip(*rows))]
                conn.execute(insert, values)
        for table in ("rag_documents", "rag_chunks"):   # new rows must not collide with the copied ids
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
        conn.execute("INSERT INTO rag_meta VALUES ('manifest', %s) ON CONFLICT (key) DO UPDATE SET value = "
                     "EXCLUDED.value", (json.dumps(manifest, sort_keys=True),))
        row = conn.execute("SELECT value FROM rag_meta WHERE key='generation'").fetchone()
        generation = max(int(row[0]) if row else 0, source_generation)   # _tx adds 1 on commit
        conn.execute("INSERT INTO rag_meta VALUES ('generation', %s) ON CONFLICT (key) DO UPDATE SET value = "
                     "EXCLUDED.value", (str(generation),))
