"""The security review's findings (issue 17), each reproduced as the reviewer did it, against the
real ingest, page handlers and servers; hostile inputs come from the corpus in tests/hostile/."""
from __future__ import annotations

import logging
import os
import sqlite3
import stat

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


def _modes(root):
    """{path relative to root: permission bits} for root and everything under it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_the_data_dir_is_private_to_its_user(base_engines, tmp_path):
    """history.sqlite, catalog.sqlite and uploads were 0644 in a 0755 data dir."""
    from web.documents import DocumentHandlers
    from web.page import _browser_secret

    umask = os.umask(0o022)                     # the usual umask, under which they were world-readable
    try:
        data = tmp_path / "data"
        engines = engines_like(base_engines, data, "documents.folder=null")
        mill = write(tmp_path / "in", "mill.md", b"The Skarholm windmill was built in 1847 by Anders Lund.")
        DocumentHandlers(engines).add_files([str(mill)])
        engines.history.add_exchange("s1", "Who built the windmill?", "Anders Lund.")
        _browser_secret(engines.cfg)
        with sqlite3.connect(data / "history.sqlite") as db:       # open: its -wal and -shm exist
            db.execute("SELECT COUNT(*) FROM messages").fetchone()
            modes = _modes(data)
        for name in ("index/catalog.sqlite", "index/vectors.faiss", "history.sqlite", "history.sqlite-wal",
                     "history.sqlite-shm", "uploads/mill.md", "web/browser-state.key", "index/write.lock"):
            assert name in modes, sorted(modes)
        assert modes["."] == 0o700
        assert {k: oct(m) for k, m in modes.items() if m & 0o077} == {}

        # An existing data dir made before this (everything world-readable) is tightened on start,
        # and still works; a file of the operator's own beside ours is left alone.
        for path in [data, *data.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        own = write(data, "README.txt", b"backups: see /srv/backup")
        engines = engines_like(base_engines, data, "documents.folder=null")
        modes = _modes(data)
        assert modes.pop("README.txt") == 0o644 and own.read_bytes()
        assert modes["."] == 0o700 and {k: oct(m) for k, m in modes.items() if m & 0o077} == {}
        _, hits = engines.pipeline().search("Who built the Skarholm windmill?", k=1)
        assert hits[0].source == "mill.md"
        assert engines.history.history("s1")[-1]["content"] == "Anders Lund."
    finally:
        os.umask(umask)
