"""Connect to PostgreSQL (embedded by default, ``DATABASE_URL`` otherwise) and apply migrations."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolTimeout

from knowledge.errors import LadderError
from knowledge.pgembed import EmbeddedPostgres, EmbeddedPostgresError

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_MIGRATION_LOCK = 0x1ADDE2  # advisory lock id: one migrator at a time across processes


# SQLSTATEs that mean "the server is going or gone", not "this statement failed".
_GONE_STATES = {"57P01", "57P02", "57P03"}  # admin shutdown, crash shutdown, cannot connect now
PROBE_TIMEOUT_S = 3  # a probe connection: long enough for a loaded server, short enough for a chat user
POOL_TIMEOUT_S = 20.0  # waiting for a free connection; a server that is down fails at once instead


class DatabaseError(LadderError, RuntimeError):
    """A database problem with a message meant for the user."""


class DatabaseUnavailable(DatabaseError):
    """Ladder's database cannot be used right now (down, restarting, unreachable, or every connection
    busy); the same request may work later."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_url(text.splitlines()[0][:300]) if text else type(exc).__name__


def unavailable_message(reason: str) -> str:
    """What a user is told when Ladder's database is away."""
    return f"Ladder's database is not reachable ({reason}); it will reconnect when the database is back"


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the database connection or server went away (not that a statement failed)."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    # Client-side failures (connect refused, connection closed mid-query) carry no SQLSTATE.
    return state is None or state.startswith("08") or state in _GONE_STATES


def as_unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """``exc`` as a DatabaseUnavailable with the user's message, or None when it is another kind of error."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if connection_lost(exc):
        return DatabaseUnavailable(unavailable_message(f"the connection was lost: {_first_line(exc)}"))
    return None


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the database is and how to talk to it."""

    url: str | None = None
    data_dir: Path = Path(".")
    pool_min: int = 1
    pool_max: int = 8
    pool_timeout_s: float = POOL_TIMEOUT_S
    restart_interval_s: float = 10.0  # the embedded server is restarted at most this often
    statement_timeout_ms: int = 60_000
    maintenance_work_mem: str = "512MB"


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


# Each layer owns its tables: the knowledge base here, the turn log and users in agent.records, eval
# runs in evals.ladder. Every process applies the whole schema, so the owners are named here, as
# package names (not imports: this layer uses nothing above it). Versions are global across them.
MIGRATION_PACKAGES = ("knowledge", "agent.records", "evals.ladder")


def load_migrations() -> list[Migration]:
    """The SQL files of every migration package, in version order (versions are global)."""
    found: list[Migration] = []
    for package in MIGRATION_PACKAGES:
        folder = resources.files(package).joinpath("migrations")
        for entry in folder.iterdir() if folder.is_dir() else []:
            match = _MIGRATION_NAME.match(entry.name)
            if match:
                found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"duplicate migration versions in {versions}")
    return found


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied."""
    applied_now: list[int] = []
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            with conn.transaction():
                conn.execute(migration.sql.encode())  # bytes: run as a multi-statement script
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied_now.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


class _ServerDown(BaseException):
    """Raised by ResilientPool's check to leave psycopg_pool's retry loop, which retries on Exception
    until its timeout but hands any BaseException back at once; caught in ResilientPool.getconn."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ResilientPool(ConnectionPool):
    """A connection pool that checks each connection it lends, fails fast with a clear
    DatabaseUnavailable while the server is down, and can ask for the server to be started again.

    After a server restart every pooled connection is dead: the check on borrow discards them and the
    pool connects afresh. When a check fails, one probe connection tells "this connection was lost"
    (the pool replaces it) from "the server is down" (``revive`` may restart it; otherwise the
    borrower gets DatabaseUnavailable now instead of waiting out the pool's timeout).
    """

    def __init__(self, conninfo: str, *, revive: Callable[[], bool] | None = None, **kwargs: Any) -> None:
        self._revive = revive
        self._down: str | None = None  # why the last probe failed; cleared by a probe that connects
        kwargs.setdefault("reconnect_timeout", 10.0)  # give up soon: a borrower regrows the pool on demand
        super().__init__(conninfo, check=self._check_on_borrow, **kwargs)

    def getconn(self, timeout: float | None = None) -> Any:
        if self._down is not None and not self.closed:  # known down: one probe (perhaps a restart), no long wait
            reason = self.server_problem()
            if reason is not None:
                raise DatabaseUnavailable(unavailable_message(reason))
        try:
            return super().getconn(timeout)
        except _ServerDown as down:
            raise DatabaseUnavailable(unavailable_message(down.reason)) from None
        except PoolTimeout as exc:
            reason = self.server_problem()
            if reason is not None:
                raise DatabaseUnavailable(unavailable_message(reason)) from exc
            waited = self.timeout if timeout is None else timeout
            raise DatabaseUnavailable(
                f"Ladder's database is busy: none of its {self.max_size} connections came free within "
                f"{waited:g} s; try again in a moment"
            ) from exc

    def putconn(self, conn: Any) -> None:
        if conn.broken:  # lost under a borrower's statements: probe before the next borrow waits for it
            self._down = "the connection was lost"
        super().putconn(conn)

    def note_lost(self, exc: BaseException) -> None:
        """A borrower's query lost its connection: probe the server on the next borrow."""
        self._down = _first_line(exc)

    def server_problem(self) -> str | None:
        """Why the server cannot be reached now (after a restart, where ``revive`` can do one), or None."""
        reason = self._probe()
        if reason is not None and self._revive is not None:
            try:
                if self._revive():
                    reason = self._probe()
            except EmbeddedPostgresError as exc:
                reason = f"{reason}; restarting the embedded server failed: {_first_line(exc)}"
        self._down = reason
        return reason

    def _probe(self) -> str | None:
        try:
            with psycopg.connect(self.conninfo, connect_timeout=PROBE_TIMEOUT_S):
                return None
        except psycopg.Error as exc:
            return _first_line(exc)

    def _check_on_borrow(self, conn: psycopg.Connection) -> None:
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            reason = self.server_problem()
            if reason is not None:
                raise _ServerDown(reason) from None
            raise  # only this connection was lost: the pool drops it and lends or makes another


class Database:
    """A connection pool to Ladder's database, migrated and with pgvector types registered."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.embedded: EmbeddedPostgres | None = None
        if config.url:
            self.url = config.url
        else:
            self.embedded = EmbeddedPostgres(config.data_dir)
            self.url = self.embedded.start()
        self._revive_lock = threading.Lock()
        self._revived_at = float("-inf")
        self._check_and_migrate()
        self.pool = self.open_pool(
            min_size=config.pool_min,
            max_size=config.pool_max,
            configure=self._configure,
            kwargs={"connect_timeout": 10},
        )

    def open_pool(self, **options: Any) -> ResilientPool:
        """Another pool on this database (e.g. the checkpointer's) that, like the main one, reconnects
        after a restart and restarts the embedded server when it died; the caller closes it."""
        options.setdefault("timeout", self.config.pool_timeout_s)
        return ResilientPool(self.url, revive=self._revive if self.embedded is not None else None, open=True, **options)

    def _revive(self) -> bool:
        """Start the embedded server again if it is not running (a killed or crashed postmaster).

        True when the server runs now. At most one restart per ``restart_interval_s``, so a server
        that dies on start is not restarted in a loop by every borrower.
        """
        assert self.embedded is not None
        with self._revive_lock:
            if self.pool.closed:
                return False
            if not (self.embedded.pgdata / "PG_VERSION").exists():  # a restart, never a fresh empty cluster
                raise EmbeddedPostgresError(f"the embedded database's folder {self.embedded.pgdata} is gone")
            if self.embedded.running():
                return True  # another borrower restarted it, or it never stopped (the probe failed otherwise)
            if time.monotonic() - self._revived_at < self.config.restart_interval_s:
                return False
            self._revived_at = time.monotonic()
            log.warning("the embedded PostgreSQL in %s is not running; starting it again", self.embedded.pgdata)
            try:
                self.embedded.start()  # the same handle: start() registers this process once
            except EmbeddedPostgresError as exc:
                log.error("the embedded PostgreSQL in %s did not start again: %s", self.embedded.pgdata, exc)
                raise
            log.warning("the embedded PostgreSQL in %s is running again", self.embedded.pgdata)
            return True

    def _check_and_migrate(self) -> None:
        try:
            with psycopg.connect(self.url, connect_timeout=10) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                conn.commit()
                migrate(conn)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to {redact_url(self.url)}: {exc}") from exc
        except psycopg.errors.FeatureNotSupported as exc:
            raise DatabaseError(f"{redact_url(self.url)} has no pgvector extension available: {exc}") from exc

    def _configure(self, conn: psycopg.Connection) -> None:
        register_vector(conn)
        conn.execute(f"SET statement_timeout = {int(self.config.statement_timeout_ms)}")
        # HNSW builds with the 64 MB default measured 4x slower than with room to work.
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (self.config.maintenance_work_mem,))
        conn.commit()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """Borrow a pooled connection; commit on success, roll back on error.

        DatabaseUnavailable (a clear message for the user) when the server is down, or when it went
        away under the caller's statements.
        """
        with self.pool.connection() as conn:
            try:
                yield conn
            except psycopg.OperationalError as exc:
                if not conn.broken:
                    raise
                self.pool.note_lost(exc)
                raise DatabaseUnavailable(unavailable_message(f"the connection was lost: {_first_line(exc)}")) from exc

    def close(self) -> None:
        """Close the pool; the embedded server stops when its last user exits."""
        self.pool.close()
        if self.embedded is not None:
            self.embedded.release()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
