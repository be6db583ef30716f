"""The hostile-input corpus (tests/hostile/) against the real ingest, page handlers and servers:
each input is one finding of the security review (issue 17), reproduced as the reviewer did it."""
from __future__ import annotations

import logging

import pytest
from conftest import engines_like
from hostile import page_tree_bomb_pdf, write


@pytest.fixture()
def engines(base_engines, tmp_path):
    return engines_like(base_engines, tmp_path / "data", "documents.folder=null")


def test_a_crafted_pdf_is_that_files_error_in_a_folder(base_engines, tmp_path, caplog):
    """The page-tree bomb used to escape the ingest (pypdf's LimitReachedError) and stop `serve`,
    and every later re-index of its folder."""
    from bench.common import free_port
    from web.page import launch

    folder = tmp_path / "docs"
    write(folder, "bomb.pdf", page_tree_bomb_pdf())
    write(folder, "mill.md", b"The Skarholm windmill was built in 1847 by Anders Lund.")
    engines = engines_like(base_engines, tmp_path / "data", f"documents.folder={folder}")
    with caplog.at_level(logging.ERROR, logger="rag.ingest.ingestor"):
        demo, _ = launch(engines, host="127.0.0.1", port=free_port(), load=False)     # `serve` starts
    demo.close()
    assert [d.source for d in engines.index.catalog.documents()] == ["mill.md"]
    logged = [r for r in caplog.records if "bomb.pdf" in r.getMessage()]
    assert logged and "LimitReachedError" in logged[0].exc_text          # with its traceback
    again = engines.ingestor.ingest([str(folder)], progress=False)       # re-indexing still works
    assert again.unchanged == 1 and [e["source"] for e in again.errors] == ["bomb.pdf"]
    assert "could not be read (LimitReachedError" in again.errors[0]["error"]
    assert "\n" not in again.errors[0]["error"]


def test_a_crafted_pdf_upload_is_refused_and_not_kept(engines, tmp_path):
    from web.documents import DocumentHandlers

    docs = DocumentHandlers(engines)
    bomb = write(tmp_path / "in", "bomb.pdf", page_tree_bomb_pdf())
    good = write(tmp_path / "in", "mill.md", b"The Skarholm windmill was built in 1847 by Anders Lund.")
    status, *_ = docs.add_files([str(bomb), str(good)])
    assert "Not added:** bomb\\.pdf: could not be read \\(LimitReachedError" in status
    assert "mill\\.md: 1 passage indexed" in status
    assert sorted(p.name for p in (engines.cfg.data_path / "uploads").iterdir()) == ["mill.md"]
    status, *_ = docs.reindex()
    assert "1 unchanged" in status and "failed" not in status
