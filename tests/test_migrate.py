"""`migrate --catalog-from DIR`: a single-machine SQLite catalog moved into PostgreSQL without re-embedding."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from conftest import ROOT, engines_like, make_config
from pg_server import close_pg_catalogs, pg_server  # noqa: F401 - fixtures

QUESTIONS = ("Where do barn owls nest?", "When is heather honey harvested?", "What does the ferry carry?")


@pytest.fixture(scope="module")
def source(base_engines, tmp_path_factory):
    """A SQLite data dir with three small documents ingested (two share a paragraph: one chunk, two refs)."""
    docs = tmp_path_factory.mktemp("docs")
    shared = "The Fenwick ferry carries bicycles and sheep across the river every morning."
    (docs / "owls.txt").write_text("Barn owls in the Vale of Fenwick nest in the church tower of Saint Aldhelm.")
    (docs / "bees.txt").write_text("The Fenwick beekeepers harvest heather honey in late August.\n\n" + shared)
    (docs / "ferry.txt").write_text(shared)
    engines = engines_like(base_engines, tmp_path_factory.mktemp("sqlite-data"), "documents.folder=null")
    assert engines.ingestor.ingest([str(docs)], progress=False).added == 3
    return engines


@pytest.fixture()
def postgres(pg_server, close_pg_catalogs):
    url = pg_server.create_database("migrate_" + uuid.uuid4().hex[:12])
    return ("catalog.backend=postgres", f"catalog.url={url}", "documents.folder=null")


def migrate(source, target_cfg, **kwargs):
    from rag.index.catalog_copy import copy_catalog

    return copy_catalog(target_cfg, source.cfg.data_path, dimension=lambda: source.embedder.dimension, **kwargs)


def test_migrated_catalog_answers_the_same(base_engines, source, postgres, tmp_path):
    report = migrate(source, make_config(tmp_path / "target", *postgres))
    assert (report.documents, report.chunks) == source.index.catalog.counts()
    assert report.target.startswith("PostgreSQL at 127.0.0.1:")

    replica = engines_like(base_engines, tmp_path / "replica", *postgres)   # another data dir: nothing local
    catalog, original = replica.index.catalog, source.index.catalog
    dim = base_engines.embedder.dimension
    (ids, vectors), (src_ids, src_vectors) = catalog.all_vectors(dim), original.all_vectors(dim)
    assert ids.tolist() == src_ids.tolist() and vectors.tobytes() == src_vectors.tobytes()   # ids and bytes as-is
    assert catalog.chunk_hashes(ids.tolist()) == original.chunk_hashes(src_ids.tolist())
    assert ([(d.uri, d.source, d.hash, d.n_chunks) for d in catalog.documents()]
            == [(d.uri, d.source, d.hash, d.n_chunks) for d in original.documents()])
    assert catalog.chunk_refs(ids.tolist()) == original.chunk_refs(src_ids.tolist())
    assert catalog.generation() > original.generation()
    assert json.loads(catalog.get_meta("manifest")) == json.loads(
        (source.cfg.data_path / "index" / "manifest.json").read_text())
    for question in QUESTIONS:
        want = [(h.source, h.text) for h in source.pipeline().search(question, k=3)[1]]
        assert [(h.source, h.text) for h in replica.pipeline().search(question, k=3)[1]] == want
    generation = catalog.generation()

    # A later ingest into the migrated catalog gets fresh ids, after the copied ones.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "mill.txt").write_text("The old Fenwick mill grinds barley for the brewery on Thursdays.")
    assert replica.ingestor.ingest([str(extra)], progress=False).added == 1
    assert replica.index.catalog.all_vectors(dim)[0].max() > ids.max()

    # --replace: the same rows again, and a generation that only moves on (replicas rebuild their caches).
    again = migrate(source, make_config(tmp_path / "target", *postgres), replace=True)
    assert again.documents == 3 and catalog.counts() == original.counts() and catalog.generation() > generation


def test_interrupted_copy_leaves_the_target_as_it_was(source, postgres, tmp_path, monkeypatch):
    import rag.index.catalog_copy as copy
    from rag.index.registry import open_catalog

    cfg = make_config(tmp_path / "target", *postgres)
    rows = copy._rows

    def dying_rows(src, table, *args):
        if table == "refs":                  # documents and chunks are in, the refs never come
            raise KeyboardInterrupt
        return rows(src, table, *args)

    monkeypatch.setattr(copy, "_rows", dying_rows)
    with pytest.raises(KeyboardInterrupt):
        migrate(source, cfg)
    catalog = open_catalog(cfg, tmp_path / "target" / "index")
    assert catalog.counts() == (0, 0) and catalog.generation() == 0 and catalog.get_meta("manifest") is None
    with catalog.try_writer() as got:        # and the writer lock was released
        assert got


def run_migrate(data_dir, *args):
    out = subprocess.run([sys.executable, "app.py", "--data-dir", str(data_dir), "--set", "documents.folder=null",
                          *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout, out.stderr.strip()


def test_cli_migrates_and_refuses_clearly(source, postgres, tmp_path):
    sets = [arg for value in postgres for arg in ("--set", value)]
    target = tmp_path / "target"

    code, _, err = run_migrate(target, *sets, "migrate", "--catalog-from", str(tmp_path / "nowhere"))
    assert code == 2 and err.count("\n") == 0 and "no catalog at" in err, err

    migrate(source, make_config(target, *postgres))   # (in process: the model is already loaded here)
    code, out, err = run_migrate(target, *sets, "migrate", "--catalog-from", str(source.cfg.data_path))
    assert code == 2 and err.count("\n") == 0 and "already holds 3 documents" in err and "--replace" in err, err
    assert "s3cret" not in err and out == ""

    other = tmp_path / "other-model"
    (other / "index").mkdir(parents=True)
    (other / "index" / "catalog.sqlite").write_bytes((source.cfg.data_path / "index" / "catalog.sqlite").read_bytes())
    manifest = json.loads((source.cfg.data_path / "index" / "manifest.json").read_text())
    (other / "index" / "manifest.json").write_text(json.dumps({**manifest, "embedding_model": "another-model"}))
    code, _, err = run_migrate(tmp_path / "empty", *sets, "migrate", "--catalog-from", str(other), "--replace")
    assert code == 2 and err.count("\n") == 0 and "'another-model'" in err, err


def test_cli_migrate_json(source, postgres, tmp_path):
    """The whole command in its own process (loads the embedder once more): copy, then fill the vector store."""
    sets = [arg for value in postgres for arg in ("--set", value)]
    code, out, err = run_migrate(tmp_path / "target", *sets, "migrate", "--catalog-from",
                                 str(source.cfg.data_path / "index" / "catalog.sqlite"), "--json")
    assert code == 0, err
    result = json.loads(out)
    docs, chunks = source.index.catalog.counts()
    assert {k: result[k] for k in ("backend", "documents", "chunks", "vectors")} == {
        "backend": "faiss", "documents": docs, "chunks": chunks, "vectors": chunks}
    assert result["copied"]["documents"] == docs and result["copied"]["seconds"] >= 0
    code, out, err = run_migrate(tmp_path / "again", *sets, "migrate", "--catalog-from", str(source.cfg.data_path),
                                 "--replace")
    assert code == 0 and out.startswith(f"copied {docs} documents, {chunks} chunks from ") and out.count("\n") == 1


def test_into_another_sqlite_data_dir(base_engines, source, tmp_path):
    """The copy works into any configured catalog; into the source itself it is refused."""
    from common.errors import UserInputError

    migrate(source, make_config(tmp_path / "copy", "documents.folder=null"))
    copy = engines_like(base_engines, tmp_path / "copy", "documents.folder=null")
    dim = base_engines.embedder.dimension
    assert copy.index.catalog.all_vectors(dim)[1].tobytes() == source.index.catalog.all_vectors(dim)[1].tobytes()
    assert copy.index.catalog.generation() > source.index.catalog.generation()
    assert copy.pipeline().search(QUESTIONS[0], k=1)[1][0].source == "owls.txt"
    with pytest.raises(UserInputError, match="is the configured catalog itself"):
        migrate(source, source.cfg, replace=True)
