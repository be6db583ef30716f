"""One client cannot fill the answer queue (issue 17 #10).

Sixty concurrent /ask calls from one client took all of the queue's places (server.max_queue), and
another client got 503 or waited a minute. Every queued call enters through the Gradio queue's
`push`; PerClientLimit wraps it so that an /ask from a client that already has
server.max_queue_per_client /ask requests waiting or being answered is refused at once (503 with a
one-line reason), while other clients keep their places. A client is its session id when it sends
one, else its address (behind a reverse proxy every client has the proxy's address: see README,
Security). The count is read from the queue itself (waiting and running events), plus the calls
being admitted right now, so nothing is left to undo when a request ends or its client goes away.
"""
from __future__ import annotations

from collections import Counter


def client_key(data, request) -> str:
    """The client an /ask call is counted against: ('question', 'session id', ...) -> its session id,
    else the peer address."""
    session = data[1] if isinstance(data, (list, tuple)) and len(data) > 1 else None
    if isinstance(session, str) and session.strip():
        return "session:" + session.strip()
    peer = getattr(request, "client", None)
    return "address:" + (peer.host if peer else "unknown")


class PerClientLimit:
    """Installs itself as `queue.push`; counts only the functions in `fn_ids` (the /ask endpoint)."""

    def __init__(self, queue, fn_ids: set[int], limit: int):
        self.queue = queue
        self.fn_ids = frozenset(fn_ids)
        self.limit = limit
        self.entering: Counter[str] = Counter()      # admitted, not yet in the queue's lists
        self.push = queue.push
        queue.push = self

    def held(self, key: str) -> int:
        """/ask requests of `key` waiting, running, or being admitted."""
        waiting = [e for events in self.queue.event_queue_per_concurrency_id.values() for e in events.queue]
        running = [e for job in self.queue.active_jobs if job for e in job]
        mine = sum(1 for e in waiting + running
                   if e.data is not None and e.data.fn_index in self.fn_ids
                   and client_key(e.data.data, e.request) == key)
        return mine + self.entering[key]

    async def __call__(self, body, request, username):
        if body.fn_index not in self.fn_ids:
            return await self.push(body=body, request=request, username=username)
        key = client_key(body.data, request)
        held = self.held(key)
        if held >= self.limit:
            return (False, f"This client already has {held} questions waiting or being answered "
                           f"(server.max_queue_per_client is {self.limit}); ask again when one is done.",
                    "queue_full")
        self.entering[key] += 1
        try:
            return await self.push(body=body, request=request, username=username)
        finally:
            self.entering[key] -= 1
            if self.entering[key] <= 0:
                del self.entering[key]


def limit_per_client(demo, api_name: str, limit: int) -> PerClientLimit:
    """Limit `demo`'s named endpoint `api_name` (after `demo.queue(...)`)."""
    ids = {fn._id for fn in demo.fns.values() if fn.api_name == api_name}
    if not ids:
        raise ValueError(f"no endpoint named {api_name!r}")
    return PerClientLimit(demo._queue, ids, limit)
