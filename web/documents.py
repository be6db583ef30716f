"""The documents tab's handlers: upload files, add a URL, list, remove, re-index.

Uploads are checked (count, size, type) before anything is read, copied under a sanitized name to
`<data_dir>/uploads/` (a free name: an upload never replaces another, see web/uploads.py), then
ingested like any file; the status line says the name each one got. Each source's outcome is reported on its own
line; one bad file never stops the rest. These run in their own queue group (see web/page.py), so
an ingest never holds up the chat.
"""
from __future__ import annotations

import logging
import os
import re
import unicodedata
from pathlib import Path

import gradio as gr

from common.errors import RagError, one_line
from rag.ingest.ingestor import is_url
from web.render import documents_choices, documents_rows, md_escape, report_markdown
from web.uploads import Stored, store_upload

log = logging.getLogger(__name__)


def sanitize_filename(name: str, max_len: int = 120) -> str:
    """A safe, readable file name: no folders, no control, shell or path characters, no leading dot.

    Letters (any script), digits, spaces and ._-()[],+&' stay, so the name users see in citations
    is theirs; anything else becomes "_"."""
    name = unicodedata.normalize("NFKC", Path(str(name).replace("\\", "/")).name)
    name = re.sub(r"\s+", " ", re.sub(r"[^\w.\-()\[\] ,+&']+", "_", name)).strip()
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:].lower()) if dot >= 0 and len(name) - dot <= 13 else (name, "")
    if not re.fullmatch(r"\.\w+", suffix):
        stem, suffix = name, ""
    stem = stem[: max_len - len(suffix)].strip(" .") or "document"
    return stem + suffix


def stored_label(original: str, stored: Stored) -> str:
    """How the status line names an upload: the name it got, and why when that is not the name sent."""
    sent = "".join(ch for ch in Path(str(original).replace("\\", "/")).name if ch.isprintable())[:200]
    name = stored.path.name
    if stored.existed:
        return f"{name} (the same file was already there, unchanged)"
    return name if sent == name else f"{sent} (stored as {name})"


def passages(n: int) -> str:
    return f"{n} passage" + ("" if n == 1 else "s")


class DocumentHandlers:
    def __init__(self, engines):
        self.engines = engines
        self.cfg = engines.cfg.documents
        self.uploads = (engines.cfg.data_path / "uploads").resolve()
        self.folder = Path(self.cfg.folder).resolve() if self.cfg.folder else None

    # -- listing ---------------------------------------------------------------------------------
    def _docs(self):
        return self.engines.index.catalog.documents()

    def listing(self):
        """(table rows, remove dropdown, chat's "Search in" filter) for the current index."""
        docs = self._docs()
        return (documents_rows(docs, self.folder, self.uploads),
                gr.update(choices=documents_choices(docs), value=None),
                gr.update(choices=sorted({d.source for d in docs})))

    def _chunks(self, uri: str) -> int | None:
        row = self.engines.index.catalog.document(uri)
        return row.n_chunks if row else None

    # -- adding ----------------------------------------------------------------------------------
    def add_files(self, files):
        """Check, copy and ingest uploaded files; returns (status, table, dropdown, cleared upload)."""
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if not paths:
            raise gr.Error("Choose one or more files to add first.", title="No files")
        limit = self.cfg.max_upload_files
        if len(paths) > limit:
            raise gr.Error(f"{len(paths)} files at once is more than the limit of {limit} "
                           "(documents.max_upload_files); add them in smaller groups.", title="Too many files")
        wanted = {e.lower() for e in self.cfg.extensions}
        max_bytes = int(self.cfg.max_file_mb * 1e6)
        errors, shown = [], {}
        for path in paths:
            name = sanitize_filename(Path(path).name)
            try:
                size = os.stat(path).st_size
            except OSError as err:
                errors.append({"source": name, "error": f"{name}: could not be read ({err.strerror})"})
                continue
            if Path(name).suffix.lower() not in wanted:
                errors.append({"source": name, "error": f"{name}: unsupported file type "
                               f"'{Path(name).suffix or '(none)'}'; supported: {' '.join(self.cfg.extensions)}"})
            elif size > max_bytes:
                errors.append({"source": name, "error": f"{name}: {size / 1e6:.1f} MB is over the "
                               f"{self.cfg.max_file_mb:g} MB limit (documents.max_file_mb)"})
            elif size == 0:
                errors.append({"source": name, "error": f"{name}: the file is empty"})
            else:
                stored = store_upload(Path(path), self.uploads, name, self._indexed_hash)
                shown[str(stored.path)] = stored_label(Path(path).name, stored)
        status = self._ingest(list(shown), "Added files", errors, shown)
        for stored in shown:          # a failed upload does not stay behind, unindexed and unremovable
            if self._indexed_hash(Path(stored)) is None:
                log.info("deleting the upload %s: it was not indexed", Path(stored).name)
                Path(stored).unlink(missing_ok=True)
        return (status, *self.listing(), None)

    def _indexed_hash(self, path: Path) -> str | None:
        row = self.engines.index.catalog.document(str(path.resolve()))
        return row.hash if row else None

    def add_url(self, url):
        url = str(url or "").strip()
        if not url:
            raise gr.Error("Paste a web address (http:// or https://) first.", title="No URL")
        if not url.lower().startswith(("http://", "https://")):
            raise gr.Error(f"'{url[:200]}' is not a web address; it must start with http:// or https://",
                           title="Not a URL")
        status = self._ingest([url], "Added web page", [], {url: url})
        return (status, *self.listing(), "")

    def reindex(self):
        """Re-scan the documents folder and the uploads folder (new, changed, deleted files)."""
        items = [str(p) for p in (self.folder, self.uploads) if p is not None and p.is_dir()]
        if not items:
            raise gr.Error("There is no documents folder to re-index (documents.folder).", title="Nothing to do")
        status = self._ingest(items, "Re-indexed " + ", ".join(f"`{Path(i).name}`" for i in items), [], {})
        return (status, *self.listing())

    def _ingest(self, items: list[str], title: str, errors: list[dict], names: dict[str, str]) -> str:
        report = None
        shown_items = ", ".join(names.get(i) or Path(i).name for i in items)     # never a server path
        if items:
            try:
                report = self.engines.ingestor.ingest(items, progress=False)
            except RagError as err:
                log.warning("ingest failed: %s", one_line(err))
                errors = errors + [{"source": shown_items, "error": one_line(err)}]
            except Exception as err:  # noqa: BLE001 - the page gets a line, the log the details
                log.exception("ingest failed")
                errors = errors + [{"source": shown_items, "error": f"internal error "
                                    f"({type(err).__name__}); see the server log"}]
        if report is not None:
            errors = errors + list(report.errors)
        failed = {e.get("source") for e in errors}
        done = []
        for item, name in names.items():
            if item in failed or (not is_url(item) and Path(item).name in failed):
                continue
            uri = item if is_url(item) else str(Path(item).resolve())
            n = self._chunks(uri)
            if n is not None:
                done.append(f"{name}: {passages(n)} indexed")
        summary = report.summary() if report is not None else ""
        if errors and not done and not (report and (report.added or report.updated)):
            gr.Warning(f"Nothing was added: {errors[0].get('error')}")
        return report_markdown(title, done, errors, summary)

    # -- removing --------------------------------------------------------------------------------
    def remove(self, choice):
        """Remove the document chosen in the list (its value is the catalog id: the page never holds a
        server path)."""
        if not choice:
            raise gr.Error("Pick a document to remove from the list first.", title="No document chosen")
        row = next((d for d in self._docs() if str(d.id) == str(choice)), None)
        if row is None:
            return ("That document is no longer in the index.", *self.listing())
        name, uri = row.source, row.uri
        try:
            removed = self.engines.ingestor.remove(uri)
        except RagError as err:
            raise gr.Error(one_line(err), title="Not removed") from None
        note = ""
        if removed and not is_url(uri):
            path = Path(uri).resolve()
            if path.parent == self.uploads:
                path.unlink(missing_ok=True)     # our own copy of an upload goes too
            elif self.folder is not None and self.folder in path.parents:
                note = (f" It is still in the documents folder, so **Re-index folder** (or a restart) "
                        f"adds it back; delete `{name}` from `{self.cfg.folder}` to drop it for good.")
        shown = md_escape(name)
        status = f"**Removed** {shown}.{note}" if removed else f"{shown} was not in the index."
        return (status, *self.listing())
