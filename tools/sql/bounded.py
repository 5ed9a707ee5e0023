"""Results with bounds on rows, bytes and time, and the child process that runs model-written SQLite queries.

Standard library only: this file is also run on its own, as ``python -I -S bounded.py``, by
tools/sql/database.py. SQLite computes a function such as ``printf('%.*c', N, 'x')``, ``instr`` or
``LIKE`` in one C call that neither its progress handler nor ``sqlite3_interrupt`` can stop (a
2^31 wide printf takes 12 s; instr on two long strings is quadratic), so a query Ladder did not
write runs in a child with an address-space limit and a CPU limit, killed at its time limit. Inside,
the same bounds as in-process apply: ``SQLITE_LIMIT_LENGTH`` caps every value, each row is counted
as it is decoded, and fetching stops once the rows hold MAX_RESULT_BYTES.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

MAX_ROW_BYTES = 4 * 1024 * 1024  # one result row (PostgreSQL: as text; SQLite: each value, and the row decoded)
MAX_RESULT_BYTES = 32 * 1024 * 1024  # all the rows of one result held at once
FETCH_BATCH = 16  # rows per fetch: at most FETCH_BATCH * MAX_ROW_BYTES in flight
CHILD_MEMORY_BYTES = 512 * 1024 * 1024  # the SQLite child's whole address space
PROGRESS_OPS = 1_000  # SQLite VM instructions between two looks at the clock
MAX_ANSWER_BYTES = 2 * MAX_RESULT_BYTES  # the child's JSON answer (escapes make text longer)


class QueryStopped(Exception):
    """A bound stopped the query; ``kind`` is "cancelled" (time), "too_large" (a row or value) or "memory"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def value_bytes(value: Any) -> int:
    """About how many bytes a fetched value holds."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    return 8 if value is None or isinstance(value, bool | int | float) else len(str(value))


def fetch_bounded(
    fetch: Callable[[int], Sequence[Any]], cap: int, batch: int = FETCH_BATCH
) -> tuple[list[Any], str | None]:
    """Up to ``cap + 1`` rows, ``batch`` at a time; stops early once they hold MAX_RESULT_BYTES.

    Returns the rows and what cut them: None, "rows" (there was a row past the cap) or "bytes".
    """
    rows: list[Any] = []
    held = 0
    while len(rows) <= cap:
        chunk = fetch(min(batch, cap + 1 - len(rows)))
        if not chunk:
            return rows, None
        rows.extend(chunk)
        held += sum(value_bytes(v) for row in chunk for v in row)
        if held > MAX_RESULT_BYTES and len(rows) <= cap:
            return rows, "bytes"
    return rows, "rows"


def _too_large() -> QueryStopped:
    return QueryStopped("too_large", f"the query was stopped: a result row is over the {MAX_ROW_BYTES} byte limit")


class RowBudget:
    """SQLite's text decoder for one connection (``text_factory``): counts each row as it is decoded,
    so an over-long row is refused before Python holds all of it."""

    def __init__(self) -> None:
        self.row = 0

    def decode(self, data: bytes) -> str:
        self.row += len(data)
        if self.row > MAX_ROW_BYTES:
            raise _too_large()
        return data.decode("utf-8", "replace")

    def fetcher(self, cur: sqlite3.Cursor) -> Callable[[int], list[Any]]:
        def fetch(n: int) -> list[Any]:
            rows = []
            for _ in range(n):
                self.row = 0
                row = cur.fetchone()
                if row is None:
                    break
                self.row += sum(len(v) for v in row if isinstance(v, bytes))  # blobs are not decoded
                if self.row > MAX_ROW_BYTES:
                    raise _too_large()
                rows.append(row)
            return rows

        return fetch


def connect(path: Path) -> sqlite3.Connection:
    """The file opened read-only (``mode=ro``, ``query_only``), no value longer than MAX_ROW_BYTES."""
    conn = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True, timeout=5)
    # printf, replace, || and group_concat fail with SQLITE_TOOBIG instead of building hundreds of MB.
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_ROW_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 1000)  # LIKE costs text length x pattern length
    conn.execute("PRAGMA query_only = ON")
    return conn


def run(
    conn: sqlite3.Connection, statement: str, params: Sequence[Any], cap: int, timeout_ms: int
) -> tuple[list[str], list[Any], str | None]:
    """(columns, up to cap + 1 rows, what cut them) of one statement, within the time limit."""
    deadline = time.perf_counter() + timeout_ms / 1000
    budget = RowBudget()
    conn.text_factory = budget.decode
    conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, PROGRESS_OPS)
    try:
        cur = conn.execute(statement, tuple(params))
        columns = [d[0] for d in cur.description or []]
        fetched, cut = fetch_bounded(budget.fetcher(cur), cap) if cur.description else ([], None)
    except sqlite3.Error as exc:
        if isinstance(exc, sqlite3.OperationalError) and time.perf_counter() > deadline:
            raise QueryStopped("cancelled", "the time limit") from exc
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_TOOBIG:
            message = f"the query was stopped: a value in it would be over the {MAX_ROW_BYTES} byte limit"
            raise QueryStopped("too_large", message) from exc
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOMEM:
            raise QueryStopped("memory", "SQLite ran out of memory") from exc
        raise
    return columns, fetched, cut


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        conn = connect(Path(request["path"]))
    except sqlite3.Error as exc:
        return {"error": "open", "message": str(exc)}
    try:
        columns, rows, cut = run(conn, request["sql"], [], request["cap"], request["timeout_ms"])
        return {"columns": columns, "rows": [[_jsonable(v) for v in row] for row in rows], "cut": cut}
    except QueryStopped as exc:
        return {"error": exc.kind, "message": str(exc)}
    except MemoryError:
        return {"error": "memory", "message": "the query ran out of memory"}
    except sqlite3.Error as exc:
        return {"error": "sqlite", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def main() -> None:
    """The child: one JSON request on stdin, one JSON answer on stdout, inside memory and CPU limits."""
    request = json.loads(sys.stdin.buffer.read())
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))
    seconds = int(request["timeout_ms"] / 1000) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))  # if the parent is gone, this still ends it
    sys.stdout.buffer.write(_encoded(_answer(request)))


def _encoded(answer: dict[str, Any]) -> bytes:
    """The answer as JSON of at most MAX_ANSWER_BYTES: rows are halved (and the result marked cut) until it fits."""
    try:
        data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        while len(data) > MAX_ANSWER_BYTES and len(answer.get("rows", ())) > 1:
            answer["rows"], answer["cut"] = answer["rows"][: len(answer["rows"]) // 2], "bytes"
            data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
    except MemoryError:
        return json.dumps({"error": "memory", "message": "the result ran out of memory"}).encode()
    return data


if __name__ == "__main__":
    main()
