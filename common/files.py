"""Writing files so that a crash or a full disk never leaves half of one behind, and keeping the data
dir private to the user that runs the app (it holds the documents' text and the chats)."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


PRIVATE_ENTRIES = ("index", "cache", "models", "uploads", "web", "history.sqlite", "history.sqlite-wal",
                   "history.sqlite-shm", "history.sqlite-journal")


def private_file(path: Path) -> Path:
    """Create `path` empty and readable by this user only (0600) unless it exists; a SQLite database
    made this way gives its -wal and -shm files the same mode."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    return path


def _tighten(path: Path, log) -> None:
    """Drop the group and other permission bits of `path` (never following a symbolic link)."""
    try:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except OSError as err:
        log.warning("could not make %s private (%s); other users of this machine may read it",
                    path, err.strerror)


def make_private(root: Path, entries: tuple[str, ...] = PRIVATE_ENTRIES) -> None:
    """Create the data dir `root` 0700, and tighten an existing one: `root` itself and what the app
    keeps in it (`entries`, recursively) lose their group and other bits, so files become 0600 and
    folders 0700. Other things in `root` are left alone (a data dir may be a folder with other uses);
    a sticky shared folder such as /tmp keeps its mode and gets a warning instead."""
    import logging

    log = logging.getLogger(__name__)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if root.stat().st_mode & stat.S_ISVTX:
        log.warning("the data dir %s is a shared folder (sticky bit): not changing its mode; "
                    "use a folder of its own (--data-dir)", root)
    else:
        _tighten(root, log)
    for name in entries:
        top = root / name
        if top.is_symlink() or not top.exists():
            continue
        _tighten(top, log)
        if top.is_dir():
            for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
                for name_ in dirnames + filenames:
                    _tighten(Path(dirpath) / name_, log)
