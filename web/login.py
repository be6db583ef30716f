"""Brute-force protection for the page's login (Gradio's POST /login), per client address.

A client gets FREE_FAILURES wrong passwords; after that it is locked out for 1 s, and the lockout
doubles with each further failure (2 s, 4 s, ... up to MAX_LOCKOUT_S). During a lockout every login
from that address is answered 429 with Retry-After and the password is not checked, so it cannot be
guessed meanwhile; one login at a time is checked per address (a burst of parallel guesses gets 429).
A successful login, or FORGET_S without a failure, clears the address's count. The address is the TCP
peer: behind a reverse proxy every client shares the proxy's (see README, Security).
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from starlette.responses import JSONResponse

FREE_FAILURES = 5
MAX_LOCKOUT_S = 300.0
FORGET_S = 900.0
MAX_CLIENTS = 10_000       # addresses remembered at most (the oldest are forgotten first)


class LoginThrottle:
    """ASGI middleware in front of the Gradio app (`demo.launch(app_kwargs={"middleware": [...]})`)."""

    def __init__(self, app, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float, float]] = {}   # address -> (count, locked until, last)
        self._checking: set[str] = set()

    async def __call__(self, scope, receive, send):
        if not (scope["type"] == "http" and scope.get("method") == "POST"
                and scope.get("path", "").rstrip("/").endswith("/login")):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown",))[0]
        wait = self._admit(client)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            refuse = JSONResponse({"detail": f"Too many failed logins from this address; try again in {seconds} s."},
                                  status_code=429, headers={"Retry-After": str(seconds)})
            await refuse(scope, receive, send)
            return
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._record(client, status.get("code"))

    def _admit(self, client: str) -> float | None:
        """None if a login from `client` may be checked now (it is then marked as being checked),
        else the seconds to wait."""
        now = self.clock()
        with self._lock:
            count, until, last = self._failures.get(client, (0, 0.0, 0.0))
            if count and now - last > FORGET_S:
                self._failures.pop(client, None)
                until = 0.0
            if client in self._checking:
                return max(1.0, until - now)
            if now < until:
                return until - now
            self._checking.add(client)
            return None

    def _record(self, client: str, code: int | None) -> None:
        now = self.clock()
        with self._lock:
            self._checking.discard(client)
            if code == 200:
                self._failures.pop(client, None)
            elif code == 400:               # Gradio's answer to wrong credentials
                count = self._failures.pop(client, (0, 0.0, 0.0))[0] + 1
                lockout = min(MAX_LOCKOUT_S, 2.0 ** (count - FREE_FAILURES)) if count >= FREE_FAILURES else 0.0
                self._failures[client] = (count, now + lockout, now)     # re-inserted: newest last
                while len(self._failures) > MAX_CLIENTS:
                    self._failures.pop(next(iter(self._failures)))
