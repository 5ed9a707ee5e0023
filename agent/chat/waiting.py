"""Questions a chat session asks while one of its turns runs: kept in order and asked one after another.

A browser session runs one turn at a time (its thread's history is one conversation); a question
typed during an answer waits here instead of being dropped, and the session's runner asks it when
the current turn ends. The runner shows the waiting questions in the chat; ``changes`` lets it see
that one arrived while its turn is silent.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

MAX_WAITING = 5  # questions a session may queue behind its running turn


@dataclass(frozen=True)
class Asked:
    """A question with the side panel's choices at the moment it was asked."""

    question: str
    collection: str
    database: str | None
    switches: dict[str, bool]
    model: str | None = None  # the picker's model (None: the chat's own)


@dataclass
class _Session:
    waiting: deque[Asked] = field(default_factory=deque)
    busy: bool = False  # a runner is asking this session's questions
    changes: int = 0


class SessionQuestions:
    """Each session's waiting questions and whether a runner is asking them (thread-safe)."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def add(self, key: str, asked: Asked, *, first: bool = False) -> bool:
        """Queue a question (``first``: ahead of the others); False when ``limit`` already wait."""
        with self._lock:
            session = self._sessions.setdefault(key, _Session())
            if len(session.waiting) >= self.limit:
                return False
            if first:
                session.waiting.appendleft(asked)
            else:
                session.waiting.append(asked)
            session.changes += 1
            return True

    def claim(self, key: str) -> bool:
        """Become the session's runner: True when questions wait and no runner asks them yet."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.busy or not session.waiting:
                return False
            session.busy = True
            return True

    def next(self, key: str) -> Asked | None:
        """The runner's next question; None (and the runner released) when none is left."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if not session.waiting:  # released under the same lock as add: a new question never strands
                del self._sessions[key]
                return None
            session.changes += 1
            return session.waiting.popleft()

    def release(self, key: str) -> None:
        """The runner stopped (its turn failed or the page went away); waiting questions stay for the next one."""
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                session.busy = False
                if not session.waiting:
                    del self._sessions[key]

    def waiting(self, key: str) -> list[Asked]:
        with self._lock:
            session = self._sessions.get(key)
            return list(session.waiting) if session else []

    def changes(self, key: str) -> int:
        """A number that changes whenever the session's waiting questions do."""
        with self._lock:
            session = self._sessions.get(key)
            return session.changes if session else 0

    def forget(self, key: str) -> None:
        """Drop a closed page's waiting questions."""
        with self._lock:
            self._sessions.pop(key, None)
