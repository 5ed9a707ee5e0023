"""Structured-data tools: list_tables, describe_table and run_sql over PostgreSQL and SQLite.

Defence in depth: every statement first passes tools/sql/safety.check_sql (one read-only query on
Ladder's allowlist, re-rendered by the parser); then PostgreSQL runs it in a READ ONLY transaction
with a statement timeout, and SQLite opens the file read-only (``mode=ro``, ``query_only``), in a
child process with memory and CPU limits that is killed at the time limit (a progress handler
cancels it sooner where it can).

Results are bounded in memory, not only in rows: PostgreSQL streams a query through a server-side
cursor (at most ``row_cap + 1`` rows ever reach Ladder) and refuses, on the server, a row whose text
is over MAX_ROW_BYTES; SQLite caps every value with ``SQLITE_LIMIT_LENGTH`` and each row as it is
decoded. Both stop fetching once the rows hold MAX_RESULT_BYTES (tools/sql/bounded.py), and say
that the result was cut.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import psycopg
from psycopg import sql as pgsql

from knowledge.db import redact_url
from knowledge.errors import LadderError
from tools.sql import bounded
from tools.sql.bounded import MAX_ROW_BYTES, QueryStopped, fetch_bounded
from tools.sql.safety import SQLRefused, check_sql

SAMPLE_ROWS = 3
METADATA_CAP = 10_000  # tables and columns are listed whole; only query results are capped
_CURSOR = "ladder_result"
_CHILD_GRACE_S = 1.0  # starting the SQLite child (~40 ms) and reading its answer, on a loaded machine
_CHILD_MIB = bounded.CHILD_MEMORY_BYTES // 2**20
_ROW_OVER = "ladder: result row over the limit, bytes: "
# The checked query inside a guard that fails, on the server, a row whose text is too long: so
# no row over the limit is ever sent. The THEN branch depends on the row, so PostgreSQL cannot
# fold it into an error at plan time; quals on whole-row references are never pushed down.
_ROW_GUARD = (
    "SELECT ladder_q.* FROM ({query}) AS ladder_q WHERE CASE WHEN octet_length(ladder_q::text) > {limit}"
    " THEN CAST('" + _ROW_OVER + "' || octet_length(ladder_q::text) AS integer) = 0 ELSE true END"
)
# Per transaction: the time limit; string literals read as the parser rendered them; built-in
# functions found first, whatever the role's search_path puts before pg_catalog.
_SESSION = (
    "SELECT set_config('statement_timeout', %s, true), set_config('standard_conforming_strings', 'on', true),"
    " set_config('search_path', concat_ws(', ', 'pg_catalog', nullif(current_setting('search_path'), '')), true)"
)


class DataSourceError(LadderError, RuntimeError):
    """A data source could not be opened or queried; the message says why."""


class ResultTooLarge(DataSourceError):
    """A result row is over MAX_ROW_BYTES: refused before it is held whole."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    sql: str
    truncated: bool = False
    seconds: float = 0.0
    truncated_by: str | None = None  # "rows" (the row cap) or "bytes" (MAX_RESULT_BYTES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "sql": self.sql,
            "truncated": self.truncated,
            "truncated_by": self.truncated_by,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class TableInfo:
    name: str
    columns: list[dict[str, Any]]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[dict[str, str]] = field(default_factory=list)
    samples: list[list[Any]] = field(default_factory=list)


class DataSource(Protocol):
    name: str
    dialect: str

    def list_tables(self) -> list[str]: ...
    def describe_table(self, table: str) -> TableInfo: ...
    def run_sql(self, text: str) -> QueryResult: ...


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)


def _result(
    columns: list[str], fetched: list[Any], cap: int, statement: str, started: float, cut: str | None
) -> QueryResult:
    """At most ``cap`` rows as JSON-friendly lists, and whether (and why) there were more."""
    return QueryResult(
        columns=columns,
        rows=[[_jsonable(v) for v in row] for row in fetched[:cap]],
        sql=statement,
        truncated=cut is not None,
        seconds=time.perf_counter() - started,
        truncated_by=cut,
    )


def _cancelled(timeout_ms: int) -> str:
    return f"the query was cancelled at the time limit: it ran past the {timeout_ms} ms limit"


# What the connecting role could do beyond reading, each row (what, how many, a few names).
# pg_has_role(..., 'MEMBER') counts roles it may SET ROLE to as well as those it inherits. The
# privilege functions sit in CASE so that the planner cannot call them on the wrong kind of relation.
_USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
_RELATION = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
_PRIVILEGES = f"""
SELECT what, count(*), (array_agg(name ORDER BY name))[1:3] FROM (
  SELECT 1 AS rank, 'is a superuser (as role {{}})' AS what, rolname AS name FROM pg_roles
   WHERE rolsuper AND pg_has_role(current_user, oid, 'MEMBER')
  UNION ALL SELECT 2, 'is a member of {{}}', rolname FROM pg_roles
   WHERE rolname IN ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program',
                     'pg_signal_backend') AND pg_has_role(current_user, oid, 'MEMBER')
  UNION ALL SELECT 3, 'may create roles (as role {{}})', rolname FROM pg_roles
   WHERE rolcreaterole AND pg_has_role(current_user, oid, 'MEMBER')
  UNION ALL SELECT 4, 'may create databases (as role {{}})', rolname FROM pg_roles
   WHERE rolcreatedb AND pg_has_role(current_user, oid, 'MEMBER')
  UNION ALL SELECT 5, 'may replicate the whole server (as role {{}})', rolname FROM pg_roles
   WHERE rolreplication AND pg_has_role(current_user, oid, 'MEMBER')
  UNION ALL SELECT 6, 'may INSERT, UPDATE, DELETE or TRUNCATE {{}}', {_RELATION}
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE {_USER_SCHEMA} AND CASE WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f')
     THEN has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') ELSE false END
  UNION ALL SELECT 7, 'owns {{}}', {_RELATION}
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_USER_SCHEMA}
     AND pg_has_role(current_user, c.relowner, 'MEMBER')
  UNION ALL SELECT 8, 'may advance the sequence {{}}', {_RELATION}
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE {_USER_SCHEMA} AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'UPDATE') ELSE false END
  UNION ALL SELECT 9, 'owns or may create tables in the schema {{}}', quote_ident(n.nspname) FROM pg_namespace n
   WHERE {_USER_SCHEMA}
     AND (pg_has_role(current_user, n.nspowner, 'MEMBER') OR has_schema_privilege(n.oid, 'CREATE'))
  UNION ALL SELECT 10, 'owns or may create schemas in the database {{}}', quote_ident(datname) FROM pg_database
   WHERE datname = current_database()
     AND (pg_has_role(current_user, datdba, 'MEMBER') OR has_database_privilege(oid, 'CREATE'))
) found GROUP BY what ORDER BY min(rank)
"""


class PostgresSource:
    """A PostgreSQL database, queried only inside READ ONLY transactions."""

    dialect = "postgres"

    def __init__(self, name: str, url: str, *, timeout_ms: int = 10_000, row_cap: int = 200) -> None:
        self.name, self.url, self.timeout_ms, self.row_cap = name, url, timeout_ms, row_cap

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, connect_timeout=10)
        except psycopg.Error as exc:
            raise DataSourceError(f"cannot connect to {self.name} ({redact_url(self.url)}): {exc}") from exc
        conn.read_only = True  # every transaction on this connection is READ ONLY
        return conn

    def _error(self, exc: psycopg.Error) -> str:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.errors.QueryCanceled):
            if "statement timeout" in message:
                return _cancelled(self.timeout_ms)
            return f"the query was cancelled by the server ({message})"
        return f"{type(exc).__name__}: {message}"

    def _fetch(
        self, statement: str | pgsql.Composable, params: Any, cap: int, stream: bool
    ) -> tuple[list[str], list[Any], str | None]:
        """(columns, up to cap + 1 rows as psycopg gives them, what cut them) of one READ ONLY statement."""
        with self._connect() as conn:
            try:
                conn.execute(_SESSION, (str(self.timeout_ms),))
                if stream:  # a named cursor: rows stay on the server until they are fetched
                    with conn.cursor(name=_CURSOR) as cur:
                        cur.execute(statement, params)  # type: ignore[arg-type]
                        columns = [c.name for c in cur.description or []]
                        fetched, cut = fetch_bounded(cur.fetchmany, cap)
                        return columns, fetched, cut
                cur = conn.execute(statement, params)  # type: ignore[arg-type]
                fetched = cur.fetchmany(cap + 1) if cur.description else []
                return [c.name for c in cur.description or []], fetched, "rows" if len(fetched) > cap else None
            except psycopg.errors.InvalidTextRepresentation as exc:
                if _ROW_OVER not in str(exc):
                    raise DataSourceError(self._error(exc)) from exc
                size = str(exc).split(_ROW_OVER, 1)[1].split('"', 1)[0]
                raise ResultTooLarge(
                    f"the query was stopped: a result row is {size} bytes; the limit is {MAX_ROW_BYTES}"
                ) from exc
            except psycopg.Error as exc:
                raise DataSourceError(self._error(exc)) from exc
            finally:
                conn.rollback()

    def _query(
        self, statement: str | pgsql.Composable, params: Any = None, cap: int | None = None, *, stream: bool = False
    ) -> QueryResult:
        """Run one statement read-only; ``stream``: through a server-side cursor, fetched in small batches."""
        cap = cap or self.row_cap
        started = time.perf_counter()
        columns, fetched, cut = self._fetch(statement, params, cap, stream)
        shown = statement if isinstance(statement, str) else statement.as_string(None)
        return _result(columns, fetched, cap, shown, started, cut)

    def _bounded(self, query: str) -> QueryResult:
        """A query Ladder did not write (or whose rows it does not know), with every memory bound."""
        guarded = _ROW_GUARD.format(query=query, limit=MAX_ROW_BYTES)
        result = self._query(guarded, stream=True)
        result.sql = query
        return result

    def run_sql(self, text: str) -> QueryResult:
        return self._bounded(check_sql(text, self.dialect).sql)

    def privileges(self) -> list[str]:
        """What the connecting role could do beyond reading (empty for a role that may only SELECT)."""
        _, rows, _ = self._fetch(_PRIVILEGES, None, METADATA_CAP, stream=False)
        found = []
        for what, count, names in rows:
            shown = ", ".join(names) + (f" and {count - len(names)} more" if count > len(names) else "")
            found.append(what.format(shown))
        return found

    def can_write(self) -> bool:
        """Whether the connecting role could write (or do more) outside Ladder's READ ONLY transactions."""
        return bool(self.privileges())

    def list_tables(self) -> list[str]:
        result = self._query(
            "SELECT CASE WHEN table_schema = 'public' THEN table_name ELSE table_schema || '.' || table_name END"
            " FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND table_type IN ('BASE TABLE', 'VIEW') ORDER BY 1",
            cap=METADATA_CAP,
        )
        return [row[0] for row in result.rows]

    def describe_table(self, table: str) -> TableInfo:
        schema, _, name = table.rpartition(".")
        schema = schema or "public"
        if table not in self.list_tables():
            raise DataSourceError(f"no table {table!r} in {self.name}")
        columns = self._query(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, name),
            cap=METADATA_CAP,
        )
        # pg_constraint, not information_schema: the latter hides keys from a role that may only SELECT.
        keys = self._query(
            "SELECT a.attname, c.contype, rc.relname, ra.attname FROM pg_constraint c"
            " CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(attnum, refnum, pos)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
            " LEFT JOIN pg_class rc ON rc.oid = c.confrelid"
            " LEFT JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.refnum"
            " WHERE c.conrelid = (SELECT oid FROM pg_class WHERE relname = %s"
            "  AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s))"
            " AND c.contype IN ('p', 'f') ORDER BY c.contype DESC, c.conname, k.pos",
            (name, schema),
            cap=METADATA_CAP,
        )
        table_name = pgsql.Identifier(schema, name)
        sampled = pgsql.SQL("SELECT * FROM {} LIMIT {}").format(table_name, pgsql.Literal(SAMPLE_ROWS))
        return TableInfo(
            name=table,
            columns=[{"name": c, "type": t, "nullable": n == "YES"} for c, t, n in columns.rows],
            primary_key=[k[0] for k in keys.rows if k[1] == "p"],
            foreign_keys=[{"column": k[0], "references": f"{k[2]}.{k[3]}"} for k in keys.rows if k[1] == "f" and k[2]],
            samples=_samples(lambda: self._bounded(sampled.as_string(None))),
        )


def _samples(query: Callable[[], QueryResult]) -> list[list[Any]]:
    """A table's sample rows; none where its rows are too long to show (the description still helps)."""
    try:
        return query().rows
    except ResultTooLarge:
        return []


class SQLiteSource:
    """A SQLite file, opened read-only; a query Ladder did not write runs in a child process that is
    killed at its time limit (tools/sql/bounded.py says why)."""

    dialect = "sqlite"

    def __init__(self, name: str, path: Path, *, timeout_ms: int = 10_000, row_cap: int = 200) -> None:
        self.name, self.path, self.timeout_ms, self.row_cap = name, path, timeout_ms, row_cap

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise DataSourceError(f"no SQLite file at {self.path} for {self.name}")

    def _stopped(self, kind: str, message: str) -> DataSourceError:
        if kind == "cancelled":
            return DataSourceError(_cancelled(self.timeout_ms))
        if kind == "too_large":
            return ResultTooLarge(message)
        if kind == "memory":
            return DataSourceError(f"the query was stopped: it needed more than {_CHILD_MIB} MiB ({message})")
        if kind == "open":
            return DataSourceError(f"cannot open {self.path}: {message}")
        return DataSourceError(message)

    def _query(self, statement: str, params: tuple[Any, ...] = (), cap: int | None = None) -> QueryResult:
        """One of Ladder's own statements, run in this process (with the same bounds)."""
        cap = cap or self.row_cap
        started = time.perf_counter()
        self._check_file()
        try:
            conn = bounded.connect(self.path)
        except sqlite3.Error as exc:
            raise DataSourceError(f"cannot open {self.path}: {exc}") from exc
        try:
            columns, fetched, cut = bounded.run(conn, statement, params, cap, self.timeout_ms)
        except QueryStopped as exc:
            raise self._stopped(exc.kind, str(exc)) from exc
        except sqlite3.Error as exc:
            raise DataSourceError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        return _result(columns, fetched, cap, statement, started, cut)

    def _in_child(self, statement: str) -> QueryResult:
        """A statement run by a child process with memory and CPU limits, killed past the time limit."""
        self._check_file()
        started = time.perf_counter()
        request = {"path": str(self.path.absolute()), "sql": statement, "cap": self.row_cap}
        request["timeout_ms"] = self.timeout_ms
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-S", bounded.__file__],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=self.timeout_ms / 1000 + _CHILD_GRACE_S,
                env={},
                check=False,
            )
        except subprocess.TimeoutExpired as exc:  # the child is killed: a C call the progress handler cannot stop
            raise DataSourceError(_cancelled(self.timeout_ms)) from exc
        try:
            answer = json.loads(done.stdout)
        except ValueError as exc:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise DataSourceError(f"the query's process ended without an answer: {why[0]}") from exc
        if "error" in answer:
            raise self._stopped(answer["error"], answer["message"])
        return _result(answer["columns"], answer["rows"], self.row_cap, statement, started, answer["cut"])

    def run_sql(self, text: str) -> QueryResult:
        checked = check_sql(text, self.dialect)
        # Only the file's own tables and views: SQLite also answers to names it makes up
        # (eponymous virtual tables such as pragma_function_list or dbstat).
        known = {table.lower() for table in self.list_tables()}
        unknown = [table for table in checked.tables if table.lower() not in known]
        if unknown:
            raise SQLRefused(f"the table {unknown[0]} is not allowed: it is not one of {self.name}'s tables or views")
        return self._in_child(checked.sql)

    def list_tables(self) -> list[str]:
        result = self._query(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY 1",
            cap=METADATA_CAP,
        )
        return [row[0] for row in result.rows]

    def describe_table(self, table: str) -> TableInfo:
        if table not in self.list_tables():
            raise DataSourceError(f"no table {table!r} in {self.name}")
        quoted = '"' + table.replace('"', '""') + '"'
        columns = self._query(f"PRAGMA table_info({quoted})", cap=METADATA_CAP).rows
        keys = self._query(f"PRAGMA foreign_key_list({quoted})", cap=METADATA_CAP).rows
        samples = _samples(lambda: self._query(f"SELECT * FROM {quoted} LIMIT {SAMPLE_ROWS}"))
        return TableInfo(
            name=table,
            columns=[{"name": c[1], "type": c[2], "nullable": not c[3]} for c in columns],
            primary_key=[c[1] for c in sorted(columns, key=lambda c: c[5]) if c[5]],
            foreign_keys=[{"column": k[3], "references": f"{k[2]}.{k[4]}"} for k in keys],
            samples=samples,
        )


def open_source(name: str, url: str, *, timeout_ms: int = 10_000, row_cap: int = 200) -> DataSource:
    """A data source from its URL: ``postgresql://…`` or ``sqlite:///path/to/file.db``."""
    scheme = urlparse(url).scheme.lower()
    if scheme in {"postgresql", "postgres"}:
        return PostgresSource(name, url, timeout_ms=timeout_ms, row_cap=row_cap)
    if scheme == "sqlite":
        # sqlite:///absolute/path.db (the form SQLAlchemy's four-slash spelling also reduces to)
        path = "/" + unquote(url.split("://", 1)[1]).lstrip("/")
        return SQLiteSource(name, Path(path), timeout_ms=timeout_ms, row_cap=row_cap)
    raise DataSourceError(f"unsupported data source URL {redact_url(url)}: use postgresql://… or sqlite:///path")


__all__ = ["DataSourceError", "QueryResult", "ResultTooLarge", "SQLRefused", "TableInfo", "open_source"]
