"""A throwaway PostgreSQL server for tests (chat history, document catalog, replicas).

The server is Debian's (`postgresql` package: /usr/lib/postgresql/<v>/bin): a cluster is initialized
in a temporary folder, listens on 127.0.0.1 on a free port only, and is stopped and removed at the end
of the module that uses the `pg_server` fixture, even when a test fails. Root cannot run postgres, so
as root the server runs as the `postgres` system user that the package creates.

Use it by importing the fixture into a test module: `from pg_server import pg_server, pg_url`.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from bench.common import free_port

PASSWORD = "s3cret-Pw-" + uuid.uuid4().hex[:8]   # must never appear in an error message
USER = "rag"
DATABASE = "ragtest"


def pg_url(port: int, password: str = PASSWORD, database: str = DATABASE) -> str:
    return f"postgresql://{USER}:{password}@127.0.0.1:{port}/{database}"


class PgServer:
    def __init__(self, bindir: Path, root: Path, as_user: str | None):
        self.bindir, self.root, self.as_user = bindir, root, as_user
        self.data, self.sockets, self.log = root / "data", root / "sockets", root / "server.log"
        self.port = free_port()

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.as_user, "--"] if self.as_user else []
        out = subprocess.run(prefix + list(cmd), capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}, cwd=self.root)
        if out.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}\n{log}")
        return out

    def initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, self.as_user)
        self.sockets.mkdir()
        if self.as_user:
            shutil.chown(self.sockets, self.as_user)
        self.run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -k {self.sockets} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                 "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self.run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; returns its URL."""
        import psycopg

        with psycopg.connect(pg_url(self.port, database="postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return pg_url(self.port, database=name)


def find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def pg_server():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")

    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
                    "install the Debian package: apt-get install postgresql")
    as_user = None
    if os.geteuid() == 0:   # postgres refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' system user to run the server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root and runuser (util-linux) is missing")
        as_user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="rag-pg-"))
    if as_user:
        shutil.chown(root, as_user)
    server = PgServer(bindir, root, as_user)
    try:
        server.initdb()
        server.start()
        server.create_database(DATABASE)
        yield server
    finally:
        if server.running():
            try:
                server.stop("immediate")
            except Exception as err:  # noqa: BLE001 - still remove what can be removed
                print(f"stopping the test PostgreSQL server failed: {err}")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def close_pg_catalogs(monkeypatch):
    """Closes every PostgreSQL catalog a test opened (engines do not close theirs; a pool left to the
    garbage collector complains from its own thread)."""
    from rag.index.catalog_pg import PostgresCatalog

    opened: list[PostgresCatalog] = []
    original = PostgresCatalog.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PostgresCatalog, "__init__", init)
    yield
    for catalog in opened:
        catalog.close()


def down_database_error(monkeypatch, url_env: str, open_it) -> tuple[str, int]:
    """Point `url_env` at a port where nothing listens: `open_it()` must fail with a BackendError within
    5 s (the configured timeout, not the OS's). Returns the error's message and the port."""
    import time

    import pytest

    from common.errors import BackendError

    pytest.importorskip("psycopg")
    port = free_port()   # nothing listens there
    monkeypatch.setenv(url_env, pg_url(port))
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        open_it()
    assert time.monotonic() - t0 < 5
    return str(err.value), port
