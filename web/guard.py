"""DNS rebinding guard for the page: only known host names in `Host`, only the page's own origin.

A page on another site can point a name of its own at 127.0.0.1 (DNS rebinding) and then drive the
local app from the browser as a same-origin page would: every such request carries the attacker's
name in `Host`. So a request is served only if its `Host` names this server: a loopback name, the
address it binds (`server.host`) or a name in `server.allowed_hosts` ("*" turns the check off, for
a proxy that checks names itself). A request that carries an `Origin` (browsers send one on every
POST and on cross-origin reads) must come from the page itself: the origin's host and port are the
request's `Host`, or its host is one of `server.allowed_hosts` (a reverse proxy's public name).
Anything else is answered 403 before Gradio sees it.
"""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
ANY_HOST = "*"


def hostname(value: str) -> str | None:
    """'Example.org:7860' -> 'example.org', '[::1]:7860' -> '::1'; None when it is not a host."""
    value = value.strip().lower().rstrip(".")
    if value.startswith("["):                # an IPv6 address, with or without a port
        name, closed, rest = value[1:].partition("]")
        if not closed or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name or None
    name, _, port = value.partition(":")
    if not name or (port and not port.isdigit()) or ":" in port:
        return None
    return name


def _names(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(n.strip().lower().strip("[]").rstrip(".") for n in hosts if n.strip())


class HostGuard:
    """ASGI middleware in front of the Gradio app (`app_kwargs={"middleware": [...]}`):
    `allowed_hosts` is server.allowed_hosts, `bind_host` the address served on."""

    def __init__(self, app, allowed_hosts: Iterable[str], bind_host: str):
        self.app = app
        self.origins = _names(allowed_hosts)       # names accepted in a cross-origin Origin
        wildcard = bind_host in ("0.0.0.0", "::", "")
        self.hosts = self.origins | _names(LOOPBACK_NAMES) | (frozenset() if wildcard else _names([bind_host]))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        problem = self.problem(headers.get("host", ""), headers.get("origin"))
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send)

    def problem(self, host: str, origin: str | None) -> str | None:
        """Why a request with these headers is refused, or None."""
        name = hostname(host)
        if ANY_HOST not in self.hosts and name not in self.hosts:
            return "This server does not answer to that host name (see server.allowed_hosts)."
        if origin is None:
            return None                      # not from a browser page (curl, gradio_client), or same-origin GET
        parts = urlsplit(origin.strip().lower())
        if parts.scheme in ("http", "https") and parts.netloc and (
                parts.netloc == host.strip().lower() or ANY_HOST in self.origins
                or hostname(parts.netloc) in self.origins):
            return None
        return "Requests from other sites are refused (see server.allowed_hosts)."
