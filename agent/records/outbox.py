"""Turn completions that could not be written because Ladder's database was away.

A turn's row is written as ``running`` before the graph runs. When the database goes away before
the turn is completed, the completion (``done``, or ``failed`` with the error) waits here, in
memory, and is written as soon as the database answers again: before the next log write of the
same agent, and by a background thread that retries with backoff meanwhile. The outbox is
bounded; a completion it cannot keep is logged as an error with its turn id, never dropped silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from agent.records.turns import TurnCompletion
from knowledge.db import connection_lost

log = logging.getLogger(__name__)

Writer = Callable[[str, TurnCompletion], None]  # writes one completion (turns.finish_turn)


class TurnOutbox:
    """Completions waiting for the database, oldest first, written by ``write(turn_id, completion)``."""

    def __init__(
        self, write: Writer, *, limit: int = 500, first_delay_s: float = 1.0, max_delay_s: float = 30.0
    ) -> None:
        self._write = write
        self.limit = limit
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._pending: OrderedDict[str, TurnCompletion] = OrderedDict()
        self._lock = threading.Lock()  # guards _pending and _retrier
        self._flushing = threading.Lock()  # one writer at a time, so a completion is written once
        self._retrier: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending(self) -> list[str]:
        """The turn ids waiting, oldest first."""
        with self._lock:
            return list(self._pending)

    def add(self, turn_id: str, completion: TurnCompletion) -> None:
        """Keep a completion to write later, and make sure a retry thread is on it."""
        with self._lock:
            if len(self._pending) >= self.limit and turn_id not in self._pending:
                log.error(
                    "turn %s stays 'running' in the turn log: %d completions already wait for the database",
                    turn_id,
                    len(self._pending),
                )
                return
            self._pending[turn_id] = completion
            if self._retrier is None or not self._retrier.is_alive():
                self._retrier = threading.Thread(target=self._retry, name="ladder-turn-outbox", daemon=True)
                self._retrier.start()

    def flush(self) -> int:
        """Write what waits, oldest first; stop at the first sign that the database is still away.

        Returns how many were written. Never raises: a completion that fails for another reason than
        the database being away is logged and given up (writing it again would fail the same way).
        """
        if not self._flushing.acquire(blocking=False):
            return 0  # another thread is writing them now
        written = 0
        try:
            while True:
                with self._lock:
                    if not self._pending:
                        return written
                    turn_id, completion = next(iter(self._pending.items()))
                try:
                    self._write(turn_id, completion)
                except Exception as exc:
                    if connection_lost(exc):
                        return written
                    log.error("could not complete turn %s in the log: %s", turn_id, exc)
                else:
                    written += 1
                    log.info("turn %s completed in the log after the database came back", turn_id)
                with self._lock:
                    self._pending.pop(turn_id, None)
        finally:
            self._flushing.release()

    def _retry(self) -> None:
        """Flush with backoff until nothing waits (then the thread ends; ``add`` starts another)."""
        delay = self.first_delay_s
        while True:
            time.sleep(delay)
            self.flush()
            with self._lock:
                if not self._pending:
                    self._retrier = None
                    return
            delay = min(delay * 2, self.max_delay_s)
