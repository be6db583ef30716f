"""One answer at a time per chat session.

The page has two listeners that ask: typed questions (Enter and Ask share one, so a second typed
question waits for the running answer) and the microphone. A question spoken while a typed answer
was still streaming ran beside it: both wrote into the same chat, the later one from the chat as it
was when it started, so the earlier answer was cut back to its first words on the page, and the
model read neither as the other's history. `SessionTurns` makes the second wait for the first and
then start from the session's stored history, which by then holds the first exchange whole.
"""
from __future__ import annotations

import threading


class SessionTurns:
    """A lock per session, kept only while some answer of that session runs or waits for one."""

    def __init__(self):
        self._guard = threading.Lock()
        self._turns: dict[str, tuple[threading.Lock, int]] = {}

    def enter(self, session: str) -> threading.Lock:
        """The session's lock (not acquired); pair every call with `leave`."""
        with self._guard:
            lock, users = self._turns.get(session, (None, 0))
            lock = lock or threading.Lock()
            self._turns[session] = (lock, users + 1)
            return lock

    def leave(self, session: str) -> None:
        with self._guard:
            lock, users = self._turns[session]
            if users <= 1:
                del self._turns[session]
            else:
                self._turns[session] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._turns)
