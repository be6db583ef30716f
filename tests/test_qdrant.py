"""vector_store.backend=qdrant (embedded local mode): same answers as FAISS, migration without re-embedding."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, SQUAD, engines_like

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
