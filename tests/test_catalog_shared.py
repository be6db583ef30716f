"""Replicas sharing one PostgreSQL catalog (in one process here; tests/test_replicas.py runs real ones):
each keeps only derived caches, rebuilt when the catalog's generation moves, and a shared Qdrant's
generation marker lives in Qdrant itself."""
from __future__ import annotations

import uuid

import pytest
from conftest import engines_like
from pg_server import close_pg_catalogs, pg_server  # noqa: F401 - fixtures

from rag.ingest.ingestor import wipe_index


@pytest.fixture()
def shared(pg_server, close_pg_catalogs):
    """Config overrides for a catalog in a fresh PostgreSQL database."""
    url = pg_server.create_database("shared_" + uuid.uuid4().hex[:12])
    return ("catalog.backend=postgres", f"catalog.url={url}", "documents.folder=null")


@pytest.fixture()
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owls.txt").write_text("Barn owls in the Vale of Fenwick nest in the church tower of Saint Aldhelm.")
    (docs / "bees.txt").write_text("The Fenwick beekeepers harvest heather honey in late August.")
    return docs


def count_calls(monkeypatch, cls, name: str) -> list:
    calls: list = []
    original = getattr(cls, name)

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, spy)
    return calls


def test_replicas_see_each_others_ingest_and_keep_only_caches(base_engines, folder, tmp_path, shared, monkeypatch):
    from rag.index.vectors import FaissStore

    replica_a = engines_like(base_engines, tmp_path / "a", *shared)
    replica_b = engines_like(base_engines, tmp_path / "b", *shared)
    assert replica_b.index.is_empty()
    assert replica_a.ingestor.ingest([str(folder)], progress=False).added == 2
    _, hits = replica_b.pipeline().search("Where do barn owls nest?", k=1)   # B refreshes from the catalog
    assert hits[0].source == "owls.txt"
    generation = replica_a.index.catalog.generation()
    for data in (tmp_path / "a", tmp_path / "b"):
        index = data / "index"
        assert not (index / "catalog.sqlite").exists() and not (index / "manifest.json").exists()
        assert (index / "vectors.generation").read_text() == str(generation)   # a cache, saved for restarts

    rebuilds = count_calls(monkeypatch, FaissStore, "rebuild")
    restarted = engines_like(base_engines, tmp_path / "b", *shared)
    assert restarted.pipeline().search("Where do barn owls nest?", k=1)[1][0].source == "owls.txt"
    assert rebuilds == []                                       # its saved cache is at the catalog's generation

    wipe_index(replica_a.cfg)                                   # ingest --rebuild on one replica...
    assert replica_a.index.catalog.counts() == (0, 0) and replica_a.index.catalog.generation() > generation
    assert replica_b.pipeline().search("Where do barn owls nest?", k=1)[1] == []   # ...empties every replica


def test_qdrant_generation_marker_lives_in_qdrant(base_engines, folder, tmp_path, shared, monkeypatch):
    pytest.importorskip("qdrant_client")
    from rag.index.vectors_qdrant import QdrantStore

    qdrant = (*shared, "vector_store.backend=qdrant")
    first = engines_like(base_engines, tmp_path / "a", *qdrant)
    assert first.ingestor.ingest([str(folder)], progress=False).added == 2
    store = first.index.store
    assert store.saved_generation() == first.index.catalog.generation()
    assert not list((tmp_path / "a" / "index").glob("*.generation"))        # no local marker file
    store.client.close()                                                    # embedded mode: one client at a time

    rebuilds = count_calls(monkeypatch, QdrantStore, "rebuild")
    again = engines_like(base_engines, tmp_path / "a", *qdrant)
    assert again.pipeline().search("Where do barn owls nest?", k=1)[1][0].source == "owls.txt"
    assert rebuilds == [] and len(again.index.store) == 2
    again.index.store.client.close()


def test_shared_qdrant_is_rebuilt_only_by_the_lock_holder(base_engines, folder, tmp_path, shared, monkeypatch):
    """A replica that finds a shared Qdrant behind the catalog while another replica writes leaves it to
    that writer (which saves the marker when done) and rebuilds it only once the lock is free."""
    pytest.importorskip("qdrant_client")
    from rag.index.vectors_qdrant import QdrantStore

    writer = engines_like(base_engines, tmp_path / "writer", *shared)
    writer.ingestor.ingest([str(folder)], progress=False)
    # Embedded Qdrant marked shared stands in for a server: the lock logic is what is tested here.
    original_init = QdrantStore.__init__

    def shared_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.shared = True

    monkeypatch.setattr(QdrantStore, "__init__", shared_init)
    with writer.index.catalog.writer():                     # another replica is ingesting
        reader = engines_like(base_engines, tmp_path / "reader", *shared, "vector_store.backend=qdrant")
        index = reader.index
        assert len(index.store) == 0 and index.store.saved_generation() is None
        assert index.lexical.search("barn owls", 1)          # BM25 comes from the catalog regardless
    index.refresh()                                          # the lock is free: now it is rebuilt
    assert len(index.store) == 2 and index.store.saved_generation() == index.catalog.generation()
    index.store.client.close()


def _drop_lock_connection(url: str) -> None:
    """Terminate the server connection that holds the catalog's writer lock (a dropped connection)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())")]
        assert len(pids) == 1
        conn.execute("SELECT pg_terminate_backend(%s)", (pids[0],))


def test_lost_lock_connection_does_not_hide_the_original_error(pg_server, close_pg_catalogs, caplog):
    from rag.index.catalog_pg import PostgresCatalog
    from common.errors import BackendError

    url = pg_server.create_database("unlock_" + uuid.uuid4().hex[:12])
    catalog = PostgresCatalog(url)
    with pytest.raises(ValueError, match="the ingest failed"), caplog.at_level("WARNING", "rag.index.catalog_pg"):
        with catalog.writer():
            _drop_lock_connection(url)
            raise ValueError("the ingest failed")
    assert "cannot unlock" in caplog.text

    with pytest.raises(BackendError, match="cannot unlock the document catalog") as failed:   # nothing else failed
        with catalog.writer():
            _drop_lock_connection(url)
    assert "\n" not in str(failed.value) and "s3cret" not in str(failed.value)

    with catalog.try_writer() as got:                        # the server released the lock with the connection
        assert got
