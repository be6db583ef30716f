"""Incremental ingest, formats, bad documents, restart, crash recovery, index mismatch.

The catalog's behaviours run on both backends: SQLite under the data dir, and PostgreSQL (a real
server, tests/pg_server.py; one new database per test).
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import pytest
from conftest import engines_like
from doc_helpers import write_docx, write_encrypted_pdf, write_pdf
from pg_server import close_pg_catalogs, pg_server  # noqa: F401 - fixtures; the server starts only for postgres

from common.errors import IndexMismatchError


@pytest.fixture()
def folder(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "orchard.md").write_text("# Orchard\n\nThe Kessel orchard has 312 apple trees and one pear tree.\n")
    (docs / "ferry.txt").write_text("The Lindholm ferry leaves every forty minutes from pier six.\n")
    return docs


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request):
    """Config overrides that put the catalog in SQLite (none) or in a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ()
    url = request.getfixturevalue("pg_server").create_database("ingest_" + uuid.uuid4().hex[:12])
    request.getfixturevalue("close_pg_catalogs")
    return ("catalog.backend=postgres", f"catalog.url={url}")


def _sources(engines, question):
    _, hits = engines.pipeline().search(question, k=3)
    return [h.source for h in hits], " ".join(h.text for h in hits)


def test_incremental_touch_change_delete(base_engines, folder, tmp_path, catalog):
    engines = engines_like(base_engines, tmp_path / "data", *catalog)
    first = engines.ingestor.ingest([str(folder)], progress=False)
    assert (first.added, first.unchanged, first.removed) == (2, 0, 0) and not first.errors
    generation = engines.index.catalog.generation()
    assert generation == 2                                                         # one bump per document
    assert (tmp_path / "data" / "index" / "catalog.sqlite").exists() == (not catalog)

    os.utime(folder / "ferry.txt", (time.time() + 5, time.time() + 5))           # touched, same content
    touched = engines.ingestor.ingest([str(folder)], progress=False)
    assert (touched.added, touched.updated, touched.unchanged) == (0, 0, 2)
    assert engines.index.catalog.generation() == generation                       # nothing changed

    (folder / "ferry.txt").write_text("The Lindholm ferry leaves every twenty minutes from pier nine.\n")
    changed = engines.ingestor.ingest([str(folder)], progress=False)
    assert (changed.updated, changed.unchanged) == (1, 1)
    assert engines.index.catalog.generation() == generation + 1
    sources, text = _sources(engines, "How often does the Lindholm ferry leave?")
    assert "twenty minutes" in text and "forty minutes" not in text

    (folder / "ferry.txt").unlink()
    removed = engines.ingestor.ingest([str(folder)], progress=False)
    assert removed.removed == 1
    sources, _ = _sources(engines, "How often does the Lindholm ferry leave?")
    assert "ferry.txt" not in sources
    assert engines.index.catalog.counts()[0] == 1


def test_duplicate_chunks_are_stored_once(base_engines, folder, tmp_path, catalog):
    shutil.copy(folder / "orchard.md", folder / "orchard-copy.md")
    engines = engines_like(base_engines, tmp_path / "data", *catalog)
    report = engines.ingestor.ingest([str(folder)], progress=False)
    assert report.added == 3 and report.embedded == report.chunks - 1
    docs, chunks = engines.index.catalog.counts()
    assert (docs, chunks) == (3, 2)


def test_formats_and_bad_documents(base_engines, folder, tmp_path):
    write_pdf(folder / "press.pdf", ["Introduction to the cider press.", "The cider press was built in 1888."])
    write_docx(folder / "notes.docx", "Beekeeping", ["The orchard keeps eleven beehives."])
    (folder / "page.html").write_text("<html><head><title>T</title></head><body><nav>menu</nav><article><h1>Market"
                                      "</h1><p>The farmers market runs every Thursday from May to September, on the"
                                      " green behind the old mill.</p></article></body></html>")
    (folder / "latin1.txt").write_bytes("Le café du port sert une crème brûlée célèbre.".encode("latin-1"))
    (folder / "empty.txt").write_text("")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    write_encrypted_pdf(folder / "locked.pdf", "secret")
    (folder / "long-line.txt").write_text("word " * 600_000)          # 3 MB on one line
    (folder / "image.png").write_bytes(b"\x89PNG\r\n")                 # unsupported: not even scanned
    engines = engines_like(base_engines, tmp_path / "data")
    report = engines.ingestor.ingest([str(folder)], progress=False)
    failed = {e["source"]: e["error"] for e in report.errors}
    assert set(failed) == {"empty.txt", "binary.txt", "broken.pdf", "locked.pdf"}, failed
    assert all("\n" not in msg and len(msg) < 200 for msg in failed.values())
    assert "password" in failed["locked.pdf"] and "binary" in failed["binary.txt"]
    assert report.added == 7
    _, hits = engines.pipeline().search("When was the cider press built?", k=3)
    assert hits[0].source == "press.pdf" and hits[0].location == "page 2"
    assert "crème brûlée" in _sources(engines, "crème brûlée café")[1]
    assert "Thursday" in _sources(engines, "When does the farmers market run?")[1]
    assert "eleven beehives" in _sources(engines, "How many beehives are there?")[1]


def test_restart_reload_and_crash_recovery(base_engines, folder, tmp_path):
    data = tmp_path / "data"
    engines = engines_like(base_engines, data)
    engines.ingestor.ingest([str(folder)], progress=False)
    before = _sources(engines, "apple trees")

    again = engines_like(base_engines, data)          # a restart: nothing re-ingested
    assert _sources(again, "apple trees") == before
    assert again.ingestor.ingest([str(folder)], progress=False).unchanged == 2

    (data / "index" / "vectors.faiss").write_bytes(b"truncated garbage")   # as if killed mid-write
    recovered = engines_like(base_engines, data)
    assert _sources(recovered, "apple trees") == before


def test_other_embedding_model_is_a_clear_error(base_engines, folder, tmp_path, catalog):
    data = tmp_path / "data"
    first = engines_like(base_engines, data, *catalog)
    first.ingestor.ingest([str(folder)], progress=False)
    if catalog:      # PostgreSQL keeps the manifest in its meta table, shared by every replica
        stored = json.loads(first.index.catalog.get_meta("manifest"))
        first.index.catalog.set_meta("manifest", json.dumps({**stored, "embedding_model": "all-mpnet-base-v2"}))
        assert not (data / "index" / "manifest.json").exists()
    else:
        manifest = data / "index" / "manifest.json"
        manifest.write_text(manifest.read_text().replace("all-MiniLM-L6-v2", "all-mpnet-base-v2"))
    with pytest.raises(IndexMismatchError, match="rebuild") as err:
        engines_like(base_engines, tmp_path / "other-replica" if catalog else data, *catalog).index
    assert "all-mpnet-base-v2" in str(err.value) and "\n" not in str(err.value)


def test_folder_scan_does_not_follow_symlinks(base_engines, folder, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("The secret vault code is 4711.")
    (folder / "link.txt").symlink_to(outside)
    engines = engines_like(base_engines, tmp_path / "data")
    report = engines.ingestor.ingest([str(folder)], progress=False)
    assert report.added == 2 and any("symbolic link" in e["error"] for e in report.errors)
    assert "4711" not in _sources(engines, "secret vault code")[1]


def test_a_pdf_loses_its_running_header_footer_and_line_end_hyphens(tmp_path):
    """Seen as a new user: every page's passage began with the house rules' title, "Page 2 of 3" was a
    sentence, and "con- tainer" matched no question about the container."""
    from rag.ingest.loaders import clean_pages, pdf_sections

    header = "Riverside Apartments - House Rules 2026"
    pages = [f"{header}\n1. Quiet hours\nQuiet hours are from 10 pm to 7 am.\nGlass goes in the green con-\ntainer.\nPage 1 of 3",
             f"{header}\n2. Laundry\nThe laundry room is open from 8 am.\nPage 2 of 3",
             f"{header}\n3. Bicycles\nBicycles are kept in the cellar, a well-\nKnown rule.\nPage 3 of 3"]
    path = write_pdf(tmp_path / "rules.pdf", pages)
    sections = pdf_sections(path.read_bytes(), "rules.pdf")
    assert [s.location for s in sections] == ["page 1", "page 2", "page 3"]
    text = "\n".join(s.text for s in sections)
    assert header not in text and "Page" not in text
    assert "green container." in text
    assert "a well-\nKnown rule" in text        # before a capital the hyphen stays: not a split word
    assert "1. Quiet hours\nQuiet hours are" in sections[0].text
    # A line repeated on one page of three is the text's own, and so is one that is not at a page's edge.
    assert clean_pages(["A\nB\nC\nD\nE", "A\nX\nY\nZ\nW", "Q\nR\nC\nS\nT"]) == \
        ["B\nC\nD\nE", "X\nY\nZ\nW", "Q\nR\nC\nS\nT"]

