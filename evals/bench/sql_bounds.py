"""How much memory and time the SQL tools spend on results built to be huge: ``python -m evals.bench.sql_bounds``.

Runs the cases of issue 13 (a 400 000-row PostgreSQL result of 1 kB rows, and a SQLite value of
100 MB) through ``run_sql`` and prints, for each, the growth of this process's resident memory
(sampled every few milliseconds while the query runs), the seconds it took and what came back.
A temporary PostgreSQL is started from the embedded server's binaries unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

_PAGE = 4096
_SAMPLE_S = 0.002

CASES = {
    "postgres": (
        "SELECT g, repeat('x', 1000) FROM generate_series(1, 400000) g",
        "SELECT repeat('x', 200000000)",
    ),
    "sqlite": (
        "SELECT printf('%.*c', 100000000, 'x')",
        "SELECT length(printf('%.*c', 100000000, 'x'))",
        "SELECT length(printf('%.*c', 2147483647, 'x'))",
    ),
}


def current_rss() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * _PAGE


class PeakRSS:
    """Samples resident memory in a thread while the block runs: ``growth`` is peak minus start, in bytes.

    ``ru_maxrss`` would not do: it is the whole process's peak so far, blind to growth under an
    earlier high-water mark.
    """

    def __init__(self) -> None:
        self.start = self.peak = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_S):
            self.peak = max(self.peak, current_rss())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = current_rss()
        self._began = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        self.seconds = time.perf_counter() - self._began

    @property
    def growth(self) -> int:
        return self.peak - self.start


def measure(run: Callable[[], Any]) -> tuple[PeakRSS, str]:
    """Memory and time of ``run()``, and what it returned or raised, in a few words."""
    with PeakRSS() as peak:
        try:
            result = run()
            cut = getattr(result, "truncated_by", None) or ("rows" if result.truncated else "-")
            outcome = f"{len(result.rows)} rows, truncated={result.truncated} (by {cut})"
        except Exception as exc:  # the point is to see what each case does, refusals included
            outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
    return peak, outcome


def _report(engine: str, sql: str, peak: PeakRSS, outcome: str) -> None:
    print(f"{engine:8} +{peak.growth / 2**20:7.1f} MiB  {peak.seconds:6.2f} s  {sql}\n{'':8} -> {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL URL to use instead of a temporary server")
    parser.add_argument("--row-cap", type=int, default=200)
    parser.add_argument("--timeout-ms", type=int, default=5_000)
    args = parser.parse_args()
    from tools.sql.database import open_source

    folder = Path(tempfile.mkdtemp(prefix="ladder-sql-bounds-", dir="/tmp"))
    folder.chmod(0o711)
    server = None
    try:
        url = args.url
        if url is None:
            from knowledge.pgembed import EmbeddedPostgres, free_port

            server = EmbeddedPostgres(folder / "pg", port=free_port())
            url = server.start()
        pg = open_source("bounds", url, row_cap=args.row_cap, timeout_ms=args.timeout_ms)
        for sql in CASES["postgres"]:
            _report("postgres", sql, *measure(lambda sql=sql: pg.run_sql(sql)))
        path = folder / "empty.sqlite"
        sqlite3.connect(path).close()
        lite = open_source("bounds", f"sqlite://{path}", row_cap=args.row_cap, timeout_ms=args.timeout_ms)
        for sql in CASES["sqlite"]:
            _report("sqlite", sql, *measure(lambda sql=sql: lite.run_sql(sql)))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
