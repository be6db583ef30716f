"""Where uploaded files are kept: `<data_dir>/uploads/`, one file per document, never replaced silently.

An upload is first copied to a hidden temporary file in that folder, then given its stored name: the
sanitized name when it is free, else `name (2).ext`, `name (3).ext`, ... A name is taken when a file
or an indexed document already has it; when that one holds the same bytes, it is the same document
(the ingest reports it unchanged) and nothing is copied. Names are claimed with O_EXCL, so two
uploads at once never get the same one. What an ingest killed half-way left behind is dealt with
at start by `recover_uploads`.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_PREFIX = ".upload-"
MAX_NAME = 120


@dataclass(frozen=True)
class Stored:
    path: Path
    existed: bool        # the same bytes were already stored under this name


def numbered(name: str, n: int, max_len: int = MAX_NAME) -> str:
    """`minutes.md` -> `minutes (2).md`, cut so that the result stays within `max_len` characters."""
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:]) if dot > 0 and re.fullmatch(r"\.\w+", name[dot:]) else (name, "")
    tag = f" ({n})"
    return stem[: max_len - len(suffix) - len(tag)].rstrip(" .") + tag + suffix


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_upload(src: Path, uploads: Path, name: str, indexed_hash: Callable[[Path], str | None]) -> Stored:
    """Copy `src` into `uploads` as `name`, or as the first free numbered variant of it.

    `indexed_hash(path)` is the content hash of the document indexed from that path, or None."""
    uploads.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=uploads, prefix=TEMP_PREFIX, suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:     # streamed: never the whole file in memory
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        digest = digest.hexdigest()
        for n in itertools.count(1):
            dest = uploads / (name if n == 1 else numbered(name, n))
            indexed = indexed_hash(dest)
            try:
                os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                if file_digest(dest) == digest and indexed in (None, digest):
                    return Stored(dest, existed=True)
                continue
            if indexed is not None and indexed != digest:      # indexed under this name, file gone
                dest.unlink()
                continue
            os.replace(tmp, dest)
            return Stored(dest, existed=False)
        raise AssertionError("unreachable")
    finally:
        tmp.unlink(missing_ok=True)


def stray_uploads(uploads: Path, indexed: Callable[[Path], bool]) -> list[Path]:
    """Files an ingest that was killed left in `uploads`: temporary copies and claimed-but-empty names
    are deleted; the files with content that no document was indexed from are returned."""
    if not uploads.is_dir():
        return []
    strays = []
    for path in sorted(uploads.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        if path.name.startswith(TEMP_PREFIX) or path.stat().st_size == 0:
            log.info("uploads: deleting %s, left by an upload that did not finish", path.name)
            path.unlink(missing_ok=True)
        elif not path.name.startswith(".") and not indexed(path):
            strays.append(path)
    return strays


def recover_uploads(ingestor, catalog, uploads: Path) -> None:
    """At start: index the files an interrupted upload copied to `uploads` but never indexed (they
    were accepted, so they are kept); one that cannot be indexed is deleted, as a failed upload is."""
    strays = stray_uploads(uploads, lambda p: catalog.document(str(p.resolve())) is not None)
    if not strays:
        return
    log.info("uploads: indexing %d file(s) an interrupted upload left: %s", len(strays),
             ", ".join(p.name for p in strays))
    report = ingestor.ingest([str(p) for p in strays], progress=False)
    for path in strays:
        if catalog.document(str(path.resolve())) is None:
            log.warning("uploads: deleting %s, it could not be indexed: %s", path.name,
                        next((e["error"] for e in report.errors if e.get("source") == path.name), "unknown"))
            path.unlink(missing_ok=True)
