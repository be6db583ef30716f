"""vector_store.backend=qdrant (embedded local mode): same answers as FAISS, migration without re-embedding."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, SQUAD, engines_like

pytestmark = pytest.mark.slow     # real models (the unit run leaves them out)

pytest.importorskip("qdrant_client")


@pytest.mark.slow
def test_qdrant_matches_faiss_on_squad(squad_engines, tmp_path):
    data = tmp_path / "qdrant-data"
    (data / "index").mkdir(parents=True)
    # Migration: only the catalog (truth, with vectors) is copied; Qdrant is filled from it.
    shutil.copy(squad_engines.cfg.data_path / "index" / "catalog.sqlite", data / "index" / "catalog.sqlite")
    shutil.copy(squad_engines.cfg.data_path / "index" / "manifest.json", data / "index" / "manifest.json")
    qdrant = engines_like(squad_engines, data, "vector_store.backend=qdrant", "documents.folder=null")
    assert len(qdrant.index.store) == squad_engines.index.catalog.counts()[1]
    questions = [json.loads(line)["question"] for line in (SQUAD / "qa.jsonl").read_text().splitlines()]
    same = 0
    for question in questions:
        a = squad_engines.pipeline().search(question, k=5)[1]
        b = qdrant.pipeline().search(question, k=5)[1]
        same += [h.text for h in a[:1]] == [h.text for h in b[:1]]
    assert same / len(questions) >= 0.95, same / len(questions)


def test_qdrant_incremental_ingest_and_delete(base_engines, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "owls.txt").write_text("Barn owls in the Vale of Fenwick nest in church towers.")
    (folder / "bees.txt").write_text("The Fenwick beekeepers harvest heather honey in late August.")
    engines = engines_like(base_engines, tmp_path / "data", "vector_store.backend=qdrant")
    assert engines.ingestor.ingest([str(folder)], progress=False).added == 2
    assert engines.pipeline().search("Where do barn owls nest?", k=1)[1][0].source == "owls.txt"
    (folder / "owls.txt").unlink()
    assert engines.ingestor.ingest([str(folder)], progress=False).removed == 1
    assert len(engines.index.store) == 1
    assert all(h.source != "owls.txt" for h in engines.pipeline().search("Where do barn owls nest?")[1])


def test_migrate_command(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The Ostrava tram museum opens on Sundays in summer.")
    base = [sys.executable, "app.py", "--data-dir", str(tmp_path / "d"), "--set", "documents.folder=null"]
    subprocess.run(base + ["ingest", str(folder)], cwd=ROOT, check=True, capture_output=True)
    out = subprocess.run(base + ["--set", "vector_store.backend=qdrant", "migrate", "--json"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"backend": "qdrant", "documents": 1, "chunks": 1, "vectors": 1}


def test_qdrant_rebuild_in_place(tmp_path, monkeypatch):
    """rebuild() upserts the catalog's points and deletes only leftovers: the collection is never dropped
    (replicas sharing it keep searching); only a changed vector size recreates it."""
    import numpy as np

    from rag.config import VectorStoreConfig
    from rag.index.vectors_qdrant import QdrantStore

    rng = np.random.default_rng(7)
    old_ids = np.arange(1, 1201, dtype=np.int64)               # over two delete batches of leftovers
    vectors = {int(i): v for i, v in zip(old_ids, rng.normal(size=(len(old_ids), 8)).astype(np.float32))}
    store = QdrantStore(VectorStoreConfig(backend="qdrant"), 8, tmp_path)
    store.rebuild(old_ids, np.stack([vectors[int(i)] for i in old_ids]))
    assert len(store) == len(old_ids)

    new_ids = np.concatenate([old_ids[old_ids % 3 != 0], np.arange(5000, 5010)])   # 400 gone, 10 new
    vectors.update({int(i): v for i, v in zip(new_ids[-10:], rng.normal(size=(10, 8)).astype(np.float32))})
    calls = []
    for name in ("delete_collection", "create_collection"):
        monkeypatch.setattr(store.client, name, lambda *a, _n=name, **k: calls.append(_n))
    during = []
    delete = store.client.delete

    def searching_delete(*args, **kwargs):   # a replica searching while leftovers are being deleted
        during.append(store.search(vectors[5000], 3)[0])
        return delete(*args, **kwargs)

    monkeypatch.setattr(store.client, "delete", searching_delete)
    store.rebuild(new_ids, np.stack([vectors[int(i)] for i in new_ids]))
    assert calls == []
    assert len(during) == 1 and during[0][0] == 5000        # the new point is in before any delete
    assert len(store) == len(new_ids)
    stored, offset = [], None
    while True:
        points, offset = store.client.scroll(store.collection, limit=500, offset=offset)
        stored += [int(p.id) for p in points]
        if offset is None:
            break
    assert sorted(stored) == sorted(int(i) for i in new_ids)
    catalog = {int(i) for i in new_ids}
    for probe in (3, 6, 7, 5003):                             # 3 and 6 were dropped, 7 and 5003 kept or added
        ids, _ = store.search(vectors[probe], 10)
        assert set(ids.tolist()) <= catalog
        assert (ids[0] == probe) == (probe in catalog)
    monkeypatch.undo()
    store.client.close()                                     # embedded mode: one client per folder

    wider = QdrantStore(VectorStoreConfig(backend="qdrant"), 16, tmp_path)   # another model's size: recreated
    wider.rebuild(np.array([1, 2]), rng.normal(size=(2, 16)).astype(np.float32))
    assert len(wider) == 2 and wider.search(np.ones(16, np.float32), 5)[0].tolist() in ([1, 2], [2, 1])
    wider.client.close()
