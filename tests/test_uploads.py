"""Uploads through the documents tab's handlers, on a data dir of their own: stored names, collisions,
what an interrupted upload leaves behind. Real files, the real embedder and catalog."""
from __future__ import annotations

import pytest
from conftest import engines_like


@pytest.fixture()
def uploads(base_engines, tmp_path):
    """(document handlers, engines) over a fresh data dir without a documents folder."""
    from web.documents import DocumentHandlers

    engines = engines_like(base_engines, tmp_path / "data", "documents.folder=null")
    return DocumentHandlers(engines), engines


def _file(folder, name: str, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_uploads_never_replace_each_other(uploads, tmp_path):
    docs, engines = uploads
    long_a, long_b = "q" * 130 + "-a.md", "q" * 130 + "-b.md"        # the same once cut to 120 characters
    texts = {
        ("a", "budget@2024.md"): "The roof repair budget for 2024 is 4,100 crowns, paid by the parish.",
        ("b", "budget=2024.md"): "The school garden budget for 2024 is 950 crowns, paid by the parents.",
        ("c", "minutes.md"): "Minutes of March: the choir will sing at the harbour festival on 12 June.",
        ("d", "minutes.md"): "Minutes of April: the bakery on Quay Street closes for repairs in July.",
        ("e", long_a): "The lighthouse keeper Ingrid Vass retired in 1998 after forty years.",
        ("f", long_b): "The tram to Nordby was replaced by a bus line in 1961.",
    }
    statuses = []
    for (person, name), text in texts.items():         # one upload each, as different people would
        status, *_ = docs.add_files([_file(tmp_path / person, name, text)])
        statuses.append(status)
    stored = {d.source: d for d in engines.index.catalog.documents()}
    assert set(stored) == {"budget_2024.md", "budget_2024 (2).md", "minutes.md", "minutes (2).md",
                           "q" * 117 + ".md", "q" * 113 + " (2).md"}, statuses
    assert all(len(name) <= 120 for name in stored)
    folder = engines.cfg.data_path / "uploads"
    assert sorted(p.name for p in folder.iterdir()) == sorted(stored)
    # every stored file holds what its uploader sent, and is what that document was indexed from
    assert (folder / "budget_2024.md").read_text().startswith("The roof")
    assert (folder / "budget_2024 (2).md").read_text().startswith("The school garden")
    assert (folder / "minutes.md").read_text().startswith("Minutes of March")
    assert (folder / "minutes (2).md").read_text().startswith("Minutes of April")
    # the status line names what each upload got (markdown-escaped)
    assert "budget@2024" in statuses[0] and "stored as budget\\_2024\\.md" in statuses[0]
    assert "stored as budget\\_2024 \\(2\\)\\.md" in statuses[1] and "1 passage indexed" in statuses[1]
    assert "stored as minutes \\(2\\)\\.md" in statuses[3]
    assert "0 updated" in statuses[3] and "1 added" in statuses[3]
    for question, source in (("What is the roof repair budget?", "budget_2024.md"),
                             ("What is the school garden budget?", "budget_2024 (2).md"),
                             ("When does the choir sing at the harbour festival?", "minutes.md"),
                             ("When does the bakery on Quay Street close?", "minutes (2).md")):
        _, hits = engines.pipeline().search(question, k=1)
        assert hits[0].source == source, question

    # The same file again is the same document: no new name, reported unchanged.
    again, *_ = docs.add_files([_file(tmp_path / "g", "minutes.md", texts[("c", "minutes.md")])])
    assert "1 unchanged" in again and "0 added" in again and "already there" in again
    assert len(list(folder.iterdir())) == 6 and len(engines.index.catalog.documents()) == 6


def test_an_interrupted_upload_is_picked_up_at_start(uploads, tmp_path):
    """A file copied to uploads/ whose ingest was killed is indexed when the page starts; the copy a
    killed upload left half-done, and a claimed but never filled name, are deleted."""
    from bench.common import free_port
    from web.page import launch

    docs, engines = uploads
    folder = engines.cfg.data_path / "uploads"
    docs.add_files([_file(tmp_path / "a", "kept.md", "The Ostvik ferry runs every forty minutes.")])
    (folder / "orphan.md").write_text("The Skarholm windmill was built in 1847 by Anders Lund.")
    (folder / ".upload-x1y2.tmp").write_text("half a copy")
    (folder / "claimed.md").touch()
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    demo, _ = launch(engines, host="127.0.0.1", port=free_port(), load=False)
    demo.close()
    assert sorted(p.name for p in folder.iterdir()) == ["kept.md", "orphan.md"]
    assert {d.source for d in engines.index.catalog.documents()} == {"kept.md", "orphan.md"}
    _, hits = engines.pipeline().search("Who built the Skarholm windmill?", k=1)
    assert hits[0].source == "orphan.md"


def test_the_documents_list_holds_no_server_paths(uploads, tmp_path):
    """The remove list's values were the absolute paths documents were read from, sent to every visitor."""
    import json

    docs, engines = uploads
    docs.add_files([_file(tmp_path / "a", "kept.md", "The Ostvik ferry runs every forty minutes.")])
    rows, remove_list, search_in = docs.listing()
    sent = json.dumps([rows, remove_list, search_in], default=str)
    assert "kept.md" in sent and str(tmp_path) not in sent and str(engines.cfg.data_path) not in sent
    (label, value), = remove_list["choices"]
    status, *_ = docs.remove(value)                     # what the page sends back removes it
    assert status.startswith("**Removed** kept\\.md")
    assert engines.index.catalog.documents() == [] and not list((engines.cfg.data_path / "uploads").iterdir())
    status, *_ = docs.remove(value)
    assert "no longer in the index" in status
