"""Metadata filters: search and ask restricted to some documents, on FAISS (flat and HNSW), BM25 and Qdrant."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import engines_like
from test_cli import run

from rag.config import VectorStoreConfig
from common.errors import UserInputError
from rag.events import Done
from rag.index.document_index import source_matches
from rag.pipeline import AskOptions
from rag.index.vectors import FaissStore

PANELS = "How many panels does the solar garden have?"


@pytest.mark.parametrize("source, pattern, expected", [
    ("harbor-library.md", "harbor-library.md", True),
    ("harbor-library.md", "harbor", False),            # a bare word is not a prefix match on names...
    ("harbor-library.md", "harbor*", True),            # ...a glob is
    ("manuals/bike/chain.pdf", "manuals", True),       # a folder covers everything under it
    ("manuals/bike/chain.pdf", "manuals/", True),
    ("manuals-old/chain.pdf", "manuals", False),
    ("manuals/bike/chain.pdf", "*.pdf", True),
    ("https://example.org/a.html", "https://example.org/*", True),
    ("notes.txt", "  ", False),
])
def test_source_matches(source, pattern, expected):
    assert source_matches(source, pattern) is expected


def test_filtered_search_keeps_to_the_chosen_documents(base_engines):
    pipeline = base_engines.pipeline()
    assert pipeline.search(PANELS)[1][0].source == "solar-garden.md"
    hits = pipeline.search(PANELS, sources=("harbor-library.md", "bicycle*"))[1]
    assert hits and {h.source for h in hits} <= {"harbor-library.md", "bicycle-care.txt"}
    assert pipeline.search(PANELS, sources=("solar-garden.md",))[1][0].source == "solar-garden.md"


def test_filter_that_matches_nothing_says_so(base_engines):
    with pytest.raises(UserInputError, match="no document matches 'manuals/\\*'.*solar-garden.md"):
        base_engines.pipeline().search(PANELS, sources=("manuals/*",))


def test_filtered_ask_answers_only_from_the_filter(base_engines):
    options = AskOptions(sources=("bicycle-care.txt",))
    done = [e for e in base_engines.pipeline().ask("How often should I oil the chain?", options=options)][-1]
    assert isinstance(done, Done) and done.sources
    assert {h.source for h in done.sources} == {"bicycle-care.txt"}


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_faiss_filter_is_exact(kind, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(10_000, 13_000, dtype=np.int64)
    store = FaissStore(VectorStoreConfig(index=kind), 16, tmp_path)
    store.rebuild(ids, vectors)
    assert store.is_hnsw == (kind == "hnsw")
    store.remove(ids[:1])                               # a removed chunk never comes back, filtered or not
    allowed = ids[[0, 7, 500, 1999, 2999]]
    query = vectors[7] + 0.5 * vectors[500]
    got_ids, got_scores = store.search(query, 10, allowed)
    truth = sorted(((float(vectors[i - 10_000] @ query), int(i)) for i in allowed[1:]), reverse=True)
    assert list(got_ids) == [i for _, i in truth]       # all four, best first (plain HNSW with a selector lost some)
    assert np.allclose(got_scores, [s for s, _ in truth], atol=1e-5)
    assert len(store.search(query, 10, np.zeros(0, dtype=np.int64))[0]) == 0


def test_qdrant_filter(base_engines, tmp_path):
    folder = tmp_path / "docs"
    (folder / "birds").mkdir(parents=True)
    (folder / "birds" / "owls.txt").write_text("Barn owls in the Vale of Fenwick nest in church towers.")
    (folder / "bees.txt").write_text("The Fenwick beekeepers harvest heather honey in late August.")
    engines = engines_like(base_engines, tmp_path / "data", "vector_store.backend=qdrant")
    engines.ingestor.ingest([str(folder)], progress=False)
    pipeline = engines.pipeline()
    assert pipeline.search("Where do barn owls nest?", k=1)[1][0].source == "birds/owls.txt"
    hits = pipeline.search("Where do barn owls nest?", sources=("bees.txt",))[1]
    assert [h.source for h in hits] == ["bees.txt"]
    assert [h.source for h in pipeline.search("honey", sources=("birds",))[1]] == ["birds/owls.txt"]


@pytest.mark.slow     # the CLI in subprocesses, on real models
def test_cli_source_flag(tmp_path):
    out = run("search", PANELS, "--source", "bicycle-care.txt", "--json", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert {h["source"] for h in json.loads(out.stdout)["hits"]} == {"bicycle-care.txt"}
    out = run("ask", PANELS, "--source", "nothing-here/*", data_dir=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: no document matches")
