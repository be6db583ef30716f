"""Add or refresh documents: files, folders and http(s) URLs, incrementally by content hash.

Unchanged files are skipped (same size and mtime, or same hash), changed ones replaced, and files
gone from a re-scanned folder removed. A bad source is reported with a one-line reason and skipped;
the rest still goes in. Folder scans never follow symlinks or leave the folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from common.language import detect
from rag.index.catalog import LANGUAGE_SAMPLE_CHUNKS, NewChunk
from rag.index.registry import open_catalog
from rag.ingest.chunking import chunk_sections, make_splitter
from rag.config import Config
from common.errors import SourceError, UserInputError, one_line
from rag.index.document_index import DocumentIndex
from rag.ingest.loaders import Section, read_limited, sections_from_bytes
from rag.ingest.fetch import fetch

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0                      # chunks of the documents added or updated
    embedded: int = 0                    # of those, chunks that were new and had to be embedded
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "removed": self.removed, "chunks": self.chunks, "embedded": self.embedded,
                "errors": list(self.errors)}

    def summary(self) -> str:
        text = (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.removed} removed; {self.chunks} chunks")
        return text + (f"; {len(self.errors)} failed" if self.errors else "")


@dataclass(frozen=True)
class _FileTarget:
    path: Path
    uri: str
    source: str
    root: str


def reading(source: str, step: Callable[[], T]) -> T:
    """Run one step of reading a source (download, parse, chunk). Whatever it raises becomes that
    source's SourceError, logged with its traceback: a crafted file makes a parser library raise
    types it does not document (pypdf's LimitReachedError, RecursionError, MemoryError), and one bad
    source must never stop the batch, `serve`, or a later re-index."""
    try:
        return step()
    except SourceError:
        raise
    except Exception as err:  # noqa: BLE001 - reported as this source's error, traceback logged
        log.exception("%s: could not be read", source)
        reason = one_line(err)
        reason = reason if len(reason) <= 200 else reason[:199] + "…"
        raise SourceError(f"{source}: could not be read ({reason}); details in the server log") from err


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


class Ingestor:
    def __init__(self, index: DocumentIndex, cfg: Config):
        self.index = index
        self.cfg = cfg
        embedder = index.embedder
        self.splitter = make_splitter(embedder.token_spans, cfg.chunking.chunk_tokens, cfg.chunking.overlap_tokens)
        self.max_bytes = int(cfg.documents.max_file_mb * 1e6)

    # -- planning ---------------------------------------------------------------------------------
    def _scan_folder(self, folder: Path, report: IngestReport) -> list[_FileTarget]:
        root = folder.resolve()
        wanted = {e.lower() for e in self.cfg.documents.extensions}
        targets = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.startswith(".") or path.suffix.lower() not in wanted:
                    continue
                rel = path.relative_to(root).as_posix()
                if path.is_symlink():
                    report.errors.append({"source": rel, "error": f"{rel}: symbolic link not followed"})
                    continue
                targets.append(_FileTarget(path, str(path), rel, str(root)))
        return targets

    def _plan(self, items: list[str], report: IngestReport) -> tuple[list[_FileTarget], list[str], list[Path]]:
        files, urls, folders = [], [], []
        for item in items:
            if is_url(item):
                urls.append(item)
                continue
            path = Path(item).expanduser()
            if path.is_dir():
                folders.append(path.resolve())
                files.extend(self._scan_folder(path, report))
            elif path.is_file():
                real = path.resolve()
                if path.suffix.lower() not in {e.lower() for e in self.cfg.documents.extensions}:
                    report.errors.append({"source": path.name, "error": f"{path.name}: unsupported file type "
                                          f"'{path.suffix or '(none)'}'; supported: "
                                          + " ".join(self.cfg.documents.extensions)})
                    continue
                files.append(_FileTarget(real, str(real), real.name, str(real.parent)))
            else:
                report.errors.append({"source": item, "error": f"{item}: no such file, folder or URL"})
        return files, urls, folders

    # -- doing --------------------------------------------------------------------------------------
    def ingest(self, items: list[str], progress: bool = True) -> IngestReport:
        if not items:
            raise UserInputError("nothing to ingest: name files, folders or http(s) URLs")
        report = IngestReport()
        files, urls, folders = self._plan(items, report)
        with self.index.writing():
            bar = tqdm(total=len(files) + len(urls), desc="ingest", unit="doc", disable=not progress,
                       file=sys.stderr, leave=False)
            for target in files:
                bar.set_postfix_str(target.source[-40:])
                try:
                    self._ingest_file(target, report)
                except SourceError as err:
                    report.errors.append({"source": target.source, "error": str(err)})
                bar.update(1)
            for url in urls:
                try:
                    self._ingest_url(url, report)
                except SourceError as err:
                    report.errors.append({"source": url, "error": str(err)})
                bar.update(1)
            bar.close()
            seen = {t.uri for t in files}
            for folder in folders:
                for doc in self.index.catalog.documents(root=str(folder)):
                    if doc.uri not in seen:
                        self.index.apply([], np.zeros((0, self.index.embedder.dimension), np.float32),
                                         self.index.catalog.remove_document(doc.uri))
                        report.removed += 1
            self.index.commit()
        log.info("ingest: %s", report.summary())
        return report

    def _ingest_file(self, target: _FileTarget, report: IngestReport) -> None:
        try:
            stat = target.path.stat()
        except OSError as err:
            raise SourceError(f"{target.source}: cannot read ({err.strerror})") from None
        known = self.index.catalog.document(target.uri)
        if known and known.size == stat.st_size and known.mtime_ns == stat.st_mtime_ns:
            report.unchanged += 1
            return
        data = read_limited(target.path, target.source, self.max_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if known and known.hash == digest:
            self.index.catalog.touch(target.uri, stat.st_mtime_ns)     # touched, not changed
            report.unchanged += 1
            return
        sections = reading(target.source, lambda: sections_from_bytes(data, target.source, target.path.suffix))
        self._store(target.uri, target.source, target.root, digest, stat.st_size, stat.st_mtime_ns,
                    sections, known, report)

    def _ingest_url(self, url: str, report: IngestReport) -> None:
        docs = self.cfg.documents
        page = reading(url, lambda: fetch(url, docs.url_timeout_s, int(docs.url_max_mb * 1e6),
                                          docs.allow_private_urls))
        sections = reading(url, lambda: sections_from_bytes(page.content, url, page.kind, url=page.url))
        if not sections:
            raise SourceError(f"{url}: no readable text")
        digest = hashlib.sha256(page.content).hexdigest()
        self._store(url, url, "", digest, len(page.content), 0, sections, self.index.catalog.document(url), report)

    def _store(self, uri, source, root, digest, size, mtime_ns, sections: list[Section], known, report) -> None:
        if known and known.hash == digest:
            self.index.catalog.touch(uri, mtime_ns)     # touched, not changed
            report.unchanged += 1
            return
        chars, limit = sum(len(s.text) for s in sections), self.cfg.documents.max_chars
        if chars > limit:
            raise SourceError(f"{source}: {chars:,} characters of text, over the {limit:,} a document may have "
                              "(documents.max_chars); split it or raise the limit")
        chunks = reading(source, lambda: chunk_sections(sections, source, self.splitter))
        if not chunks:
            raise SourceError(f"{source}: no text to index")
        # Deduplicate inside the document, then embed only what the catalog has never seen.
        unique = {c.hash: c for c in chunks}
        have = self.index.catalog.known_hashes(list(unique))
        fresh = [c for h, c in unique.items() if h not in have]
        vectors = self.index.embedder.embed([c.embed_text for c in fresh]) if fresh else None
        by_hash = {c.hash: vectors[i] for i, c in enumerate(fresh)} if fresh else {}
        new_chunks = [NewChunk(c.hash, c.text, c.embed_text, c.location, c.start) for c in chunks]
        added, orphans = self.index.catalog.put_document(uri, source, root, digest, size, mtime_ns,
                                                         new_chunks, by_hash)
        # The document's language (issue 16): a stopword count over its text, so a question in another
        # language knows what to be translated into.
        sample = " ".join(s.text[:4000] for s in sections[:LANGUAGE_SAMPLE_CHUNKS])
        self.index.catalog.set_language(uri, detect(sample))
        if added:
            hashes = self.index.catalog.chunk_hashes(added)   # the vectors of the added ids, in their order
            vecs = np.stack([by_hash[hashes[i]] for i in added])
        else:
            vecs = np.zeros((0, self.index.embedder.dimension), np.float32)
        self.index.apply(added, vecs, orphans)
        report.updated += 1 if known else 0
        report.added += 0 if known else 1
        report.chunks += len(chunks)
        report.embedded += len(fresh)

    def remove(self, uri: str) -> bool:
        with self.index.writing():
            if self.index.catalog.document(uri) is None:
                return False
            self.index.apply([], np.zeros((0, self.index.embedder.dimension), np.float32),
                             self.index.catalog.remove_document(uri))
            self.index.commit()
        return True


def wipe_index(cfg: Config) -> None:
    """For `ingest --rebuild`: drop the index so it is built fresh with the current settings.

    SQLite: the index folder goes. PostgreSQL: every replica's catalog is emptied (under the write lock,
    so no ingest is cut in two), and this replica's local caches go; the others rebuild theirs when they
    see the new generation."""
    folder = cfg.data_path / "index"
    if cfg.catalog.backend != "sqlite":
        catalog = open_catalog(cfg, folder)
        try:
            with catalog.writer():
                catalog.wipe()
        finally:
            catalog.close()
    shutil.rmtree(folder, ignore_errors=True)
