"""The document catalog's two backends, SQLite and PostgreSQL (a real server, tests/pg_server.py), held
to the same semantics: dedup by chunk hash, refs, one generation bump per change, orphan collection,
the manifest, the writer lock, and clear errors."""
from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
from pg_server import PASSWORD, down_database_error, pg_server, pg_url  # noqa: F401 - pg_server: fixture

from rag.index.catalog import CatalogStore, NewChunk, SqliteCatalog
from rag.index.registry import open_catalog
from rag.config import CatalogConfig
from common.errors import ConfigError, IndexMismatchError

DIM = 4


def fresh_pg_url(server) -> str:
    """A database of its own: catalog tables are per database, and each test starts empty."""
    return server.create_database("cat_" + uuid.uuid4().hex[:12])


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request, tmp_path):
    """Opens a catalog on the same database each call (another process, or another machine)."""
    opened: list[CatalogStore] = []
    if request.param == "sqlite":
        def open_one() -> CatalogStore:
            opened.append(SqliteCatalog(tmp_path / "index" / "catalog.sqlite"))
            return opened[-1]
        (tmp_path / "index").mkdir()
    else:
        from rag.index.catalog_pg import PostgresCatalog

        url = fresh_pg_url(request.getfixturevalue("pg_server"))

        def open_one() -> CatalogStore:
            opened.append(PostgresCatalog(url, timeout_s=3))
            return opened[-1]
    yield open_one
    for catalog in opened:
        catalog.close()


def chunk(text: str, location: str = "") -> NewChunk:
    return NewChunk("h-" + text.encode().hex(), text, "embed " + text, location, 0)   # hashes are hex, as in ingest


def H(text: str) -> str:  # noqa: N802
    return chunk(text).hash


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


def put(catalog, uri, texts, source=None, root="/docs"):
    chunks = [chunk(t, f"part {i}") for i, t in enumerate(texts)]
    vectors = {c.hash: vec(sum(map(ord, c.text))) for c in chunks}
    return catalog.put_document(uri, source or uri.rsplit("/", 1)[-1], root, "d-" + "|".join(texts).encode().hex(),
                                10 * len(texts), 123, chunks, vectors)


def test_dedup_refs_generation_and_orphans(opener):
    catalog = opener()
    assert catalog.generation() == 0 and catalog.counts() == (0, 0) and catalog.catalog_id()
    added_a, orphans = put(catalog, "/docs/a.txt", ["alpha", "beta", "alpha"])
    assert len(added_a) == 2 and orphans == [] and catalog.generation() == 1
    added_b, _ = put(catalog, "/docs/b.txt", ["beta", "gamma"])       # beta is stored once
    assert len(added_b) == 1 and catalog.counts() == (2, 3) and catalog.generation() == 2
    assert catalog.known_hashes([H("alpha"), H("gamma"), H("nope")]) == {H("alpha"), H("gamma")}

    docs = {d.source: d for d in catalog.documents()}
    assert [d.source for d in catalog.documents()] == ["a.txt", "b.txt"]
    assert docs["a.txt"].n_chunks == 3 and catalog.document("/docs/a.txt") == docs["a.txt"]
    assert catalog.documents(root="/elsewhere") == [] and len(catalog.documents(root="/docs")) == 2
    assert catalog.document("/docs/missing.txt") is None
    hashes = catalog.chunk_hashes(added_a + added_b)
    assert sorted(hashes.values()) == sorted([H("alpha"), H("beta"), H("gamma")])
    by_hash = {h: i for i, h in hashes.items()}
    by_hash.update({t: by_hash[H(t)] for t in ("alpha", "beta", "gamma")})
    assert catalog.chunk_ids_for_documents([docs["b.txt"].id]) == sorted([by_hash["beta"], by_hash["gamma"]])
    assert catalog.chunk_ids_for_documents([docs["a.txt"].id, docs["b.txt"].id]) == sorted(set(by_hash.values()))
    assert catalog.chunk_ids_for_documents([]) == []

    refs = catalog.chunk_refs([by_hash["beta"], by_hash["gamma"]])
    assert refs[by_hash["beta"]].source == "a.txt"            # a shared chunk shows its first document
    assert (refs[by_hash["gamma"]].text, refs[by_hash["gamma"]].location) == ("gamma", "part 1")

    ids, vecs = catalog.all_vectors(DIM)
    assert list(ids) == sorted(set(by_hash.values())) and vecs.shape == (3, DIM) and vecs.dtype == np.float32
    assert np.allclose(vecs[list(ids).index(by_hash["gamma"])], vec(sum(map(ord, "gamma"))))
    ids, texts = catalog.all_texts()
    assert dict(zip(ids.tolist(), texts))[by_hash["alpha"]] == "embed alpha"

    # A new version of a.txt: alpha is orphaned and collected, beta survives (b.txt still uses it).
    added, orphans = put(catalog, "/docs/a.txt", ["beta", "delta"])
    assert orphans == [by_hash["alpha"]] and len(added) == 1 and catalog.counts() == (2, 3)
    assert catalog.generation() == 3
    assert catalog.remove_document("/docs/b.txt") == [by_hash["gamma"]] and catalog.generation() == 4
    assert catalog.remove_document("/docs/b.txt") == [] and catalog.generation() == 4   # nothing: no bump
    catalog.touch("/docs/a.txt", 999)
    assert catalog.document("/docs/a.txt").mtime_ns == 999

    again = opener()                       # another process sees the same catalog
    assert again.counts() == (1, 2) and again.generation() == 4 and again.catalog_id() == catalog.catalog_id()


def test_meta_manifest_and_wipe(opener):
    catalog = opener()
    catalog.set_meta("k", "v1")
    catalog.set_meta("k", "v2")
    assert catalog.get_meta("k") == "v2" and catalog.get_meta("missing") is None
    want = {"embedding_model": "m1", "dimension": 4}
    seen: list[dict] = []
    catalog.exchange_manifest(want, seen.append)
    assert seen == []                                     # nothing stored yet: nothing to check

    def refuse(have: dict) -> None:
        raise IndexMismatchError(f"built with {have['embedding_model']}")

    with pytest.raises(IndexMismatchError, match="built with m1"):
        opener().exchange_manifest({"embedding_model": "m2", "dimension": 8}, refuse)
    opener().exchange_manifest(want, seen.append)         # the refused one did not replace it
    assert seen == [want]

    put(catalog, "/docs/a.txt", ["alpha"])
    generation = catalog.generation()
    catalog.wipe()
    assert catalog.counts() == (0, 0) and catalog.generation() > generation   # never counts again from 0
    catalog.exchange_manifest({"embedding_model": "m2", "dimension": 8}, refuse)   # no manifest after a wipe


def test_writer_lock_is_exclusive_across_processes(opener):
    first, second = opener(), opener()
    with first.writer():
        with second.try_writer() as got:
            assert got is False
        entered = threading.Event()

        def wait_for_lock() -> None:
            with second.writer():
                entered.set()

        thread = threading.Thread(target=wait_for_lock)
        thread.start()
        time.sleep(0.5)
        assert not entered.is_set()                       # blocks while the first writer holds it
    thread.join(10)
    assert entered.is_set()
    with second.try_writer() as got:
        assert got is True


def test_nul_characters_do_not_break_the_catalog(opener):
    catalog = opener()
    added, _ = put(catalog, "/docs/n\x00ul.txt", ["te\x00xt"])
    assert catalog.chunk_refs(added)[added[0]].text in ("te\x00xt", "te\ufffdxt")


# -- configuration and failures (PostgreSQL) ------------------------------------------------------
def test_open_catalog_by_config(tmp_path, monkeypatch):
    from rag.config import Config

    assert isinstance(open_catalog(Config(), tmp_path), SqliteCatalog)
    assert (tmp_path / "catalog.sqlite").exists()
    monkeypatch.delenv("RAG_CATALOG_URL", raising=False)
    postgres = Config(catalog=CatalogConfig(backend="postgres"))
    with pytest.raises(ConfigError, match="RAG_CATALOG_URL"):
        open_catalog(postgres, tmp_path)
    bad = Config(catalog=CatalogConfig(backend="postgres", url=f"postgresql://u:{PASSWORD}@h:notaport/x?bogus"))
    with pytest.raises(ConfigError, match="catalog.url is not a valid PostgreSQL URL") as err:
        open_catalog(bad, tmp_path)
    assert PASSWORD not in str(err.value)


def test_down_database_is_a_backend_error_quickly(tmp_path, monkeypatch):
    from rag.config import Config

    message, port = down_database_error(monkeypatch, "RAG_CATALOG_URL", lambda: open_catalog(
        Config(catalog=CatalogConfig(backend="postgres", timeout_s=2)), tmp_path))
    assert "cannot reach the document catalog database" in message and f"127.0.0.1:{port}" in message
    assert "$RAG_CATALOG_URL" in message and "\n" not in message and PASSWORD not in message
