"""First come, first served turns on a model that serves one request at a time.

The embedded llama.cpp server answers one request at a time and queues the rest itself, but a
turn is several calls: if two turns' calls interleave, each call finds the other turn's prompt in
the model's context and reads its passages again (no shared prefix), and nobody can tell a waiting
user where they stand. So a turn holds the model for all its calls, in arrival order, and a
waiting turn hears its place in line whenever it changes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from knowledge.errors import LadderError

POLL_S = 1.0  # a waiting turn re-checks its place (and its deadline) at least this often


class QueueTimeout(LadderError, TimeoutError):
    """A turn waited longer than its limit for the model."""


class ModelQueue:
    """``slots`` turns at a time use the model; the others wait in arrival order."""

    def __init__(self, slots: int = 1, timeout_s: float = 900.0) -> None:
        self.slots = slots
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._waiting: list[int] = []
        self._running = 0

    def _ahead(self, ticket: int) -> int:
        """How many turns must start or finish before this one may run (0: it may run now)."""
        return max(0, self._waiting.index(ticket) + 1 - (self.slots - self._running))

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold a slot for the block; ``on_wait(n)`` hears each change of the turns ahead, then 0."""
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
        deadline = time.monotonic() + self.timeout_s
        told: int | None = None
        try:
            while True:
                with self._cond:
                    ahead = self._ahead(ticket)
                    if ahead == 0:
                        self._waiting.remove(ticket)
                        self._running += 1
                        break
                    if ahead == told:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise QueueTimeout(
                                f"the model is busy: {ahead} turn(s) still ahead after {self.timeout_s:.0f} s; "
                                "ask again later"
                            )
                        self._cond.wait(min(POLL_S, left))
                        continue
                told = ahead
                if on_wait is not None:  # outside the lock: a slow listener never holds up the queue
                    on_wait(ahead)
        except BaseException:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._cond.notify_all()
            raise
        if told is not None and on_wait is not None:
            on_wait(0)
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
