"""One PostgreSQL database as the chat history and the document catalog both use it.

`PgLink` checks the URL, says where it points for messages ("host:port/database", never the user
or the password), holds the connection settings, and turns every psycopg failure into a one-line
`BackendError` that names the database's role and the setting the URL came from.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from common.errors import BackendError, ConfigError


class PgLink:
    def __init__(self, url: str, *, role: str, url_from: str, timeout_s: float, application_name: str):
        """`role` names the database in messages ("chat history", "document catalog")."""
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as err:
            raise BackendError(f"a PostgreSQL {role} needs psycopg; run: pip install 'psycopg[binary]'") from err
        try:
            from psycopg_pool import PoolTimeout
        except ImportError:
            PoolTimeout = BackendError   # noqa: N806 - no pool installed: nothing raises it
        self.psycopg, self.pool_timeout = psycopg, PoolTimeout
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            raise ConfigError(f"{url_from} is not a valid PostgreSQL URL; expected "
                              "postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
        self.url, self.url_from, self.role, self.timeout_s = url, url_from, role, timeout_s
        self.secret = str(params.get("password") or os.environ.get("PGPASSWORD") or "")
        host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "")
        port = str(params.get("port") or os.environ.get("PGPORT") or 5432)
        db = str(params.get("dbname") or os.environ.get("PGDATABASE") or "")
        # "host:port/database" (host may be a socket folder); never the user or the password
        self.where = (f"{host}:{port}" if host else f"the local socket, port {port}") + (f"/{db}" if db else "")
        # libpq counts connect_timeout in whole seconds, 2 at least.
        self.kwargs = {"autocommit": True, "connect_timeout": max(2, math.ceil(timeout_s)),
                       "application_name": application_name}

    def reason(self, err: BaseException) -> str:
        """The first line of a psycopg error, without the password, in at most 200 characters."""
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        text = lines[0] if lines else type(err).__name__
        if "failed: " in text:                   # 'connection to server at "h", port 1 failed: Connection refused'
            text = text.rsplit("failed: ", 1)[1]
        if self.secret:
            text = text.replace(self.secret, "***")
        return " ".join(text.split())[:200]

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """psycopg and pool failures inside become one-line BackendErrors; `doing`: "cannot reach"..."""
        try:
            yield
        except BackendError:
            raise
        except self.psycopg.OperationalError as err:
            raise BackendError(f"{doing} the {self.role} database (PostgreSQL at {self.where}): "
                               f"{self.reason(err)}; check {self.url_from} and that the server is running") from None
        except self.psycopg.Error as err:
            raise BackendError(f"{self.role} database (PostgreSQL at {self.where}) failed: "
                               f"{type(err).__name__}: {self.reason(err)}") from None
        except self.pool_timeout:
            raise BackendError(f"cannot reach the {self.role} database (PostgreSQL at {self.where}) "
                               f"within {self.timeout_s:g} s; check {self.url_from} and that the server "
                               "is running") from None


class _UrlSettings(Protocol):
    url: str | None
    url_env: str


def configured_url(section: str, cfg: _UrlSettings) -> tuple[str, str]:
    """(URL, where it came from) for a `<section>.backend: postgres` setting: `<section>.url`, else the
    environment variable the section names, so passwords can stay out of files."""
    if cfg.url:
        return cfg.url, f"{section}.url"
    url = os.environ.get(cfg.url_env)
    if not url:
        raise ConfigError(f"{section}.backend is postgres but no URL is set: set {section}.url or the "
                          f"environment variable {cfg.url_env} (postgresql://USER:PASSWORD@HOST:5432/DATABASE)")
    return url, f"${cfg.url_env}"
