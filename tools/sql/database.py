"""Structured-data tools: list_tables, describe_table and run_sql over PostgreSQL and SQLite.

Defence in depth: every statement first passes tools/sql_safety.check_sql (one read-only query,
re-rendered by the parser); then PostgreSQL runs it in a READ ONLY transaction with a statement
timeout, and SQLite opens the file read-only (``mode=ro``, ``query_only``) with a progress handler
that stops a query at its time limit. Results are capped at ``row_cap`` rows and say so.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

import psycopg
from psycopg import sql as pgsql

from knowledge.db import redact_url
from knowledge.errors import LadderError
from tools.sql.safety import SQLRefused, check_sql

SAMPLE_ROWS = 3
METADATA_CAP = 10_000  # tables and columns are listed whole; only query results are capped


class DataSourceError(LadderError, RuntimeError):
    """A data source could not be opened or queried; the message says why."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    sql: str
    truncated: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "sql": self.sql,
            "truncated": self.truncated,
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


def _result(columns: list[str], fetched: list[Any], cap: int, statement: str, started: float) -> QueryResult:
    """At most ``cap`` rows as JSON-friendly lists; one more fetched row means there were more."""
    return QueryResult(
        columns=columns,
        rows=[[_jsonable(v) for v in row] for row in fetched[:cap]],
        sql=statement,
        truncated=len(fetched) > cap,
        seconds=time.perf_counter() - started,
    )


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

    def _query(self, statement: str | pgsql.Composable, params: Any = None, cap: int | None = None) -> QueryResult:
        cap = cap or self.row_cap
        started = time.perf_counter()
        with self._connect() as conn:
            try:
                conn.execute(pgsql.SQL("SET LOCAL statement_timeout = {}").format(pgsql.Literal(self.timeout_ms)))
                cur = conn.execute(statement, params)  # type: ignore[arg-type]
                columns = [c.name for c in cur.description or []]
                fetched = cur.fetchmany(cap + 1) if cur.description else []
            except psycopg.errors.QueryCanceled as exc:
                raise DataSourceError(f"the query ran past the {self.timeout_ms} ms limit and was stopped") from exc
            except psycopg.Error as exc:
                raise DataSourceError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from exc
            finally:
                conn.rollback()
        shown = statement if isinstance(statement, str) else statement.as_string(None)
        return _result(columns, fetched, cap, shown, started)

    def run_sql(self, text: str) -> QueryResult:
        return self._query(check_sql(text, self.dialect).sql)

    def can_write(self) -> bool:
        """Whether the connecting role could write outside Ladder's READ ONLY transactions."""
        result = self._query(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM information_schema.tables t"
            " WHERE t.table_schema NOT IN ('pg_catalog', 'information_schema') AND t.table_type = 'BASE TABLE'"
            " AND (has_table_privilege(quote_ident(t.table_schema) || '.' || quote_ident(t.table_name),"
            " 'INSERT, UPDATE, DELETE, TRUNCATE')))"
            " FROM pg_roles WHERE rolname = current_user",
            cap=1,
        )
        return bool(result.rows and result.rows[0][0])

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
        samples = self._query(
            pgsql.SQL("SELECT * FROM {} LIMIT {}").format(pgsql.Identifier(schema, name), pgsql.Literal(SAMPLE_ROWS))
        )
        return TableInfo(
            name=table,
            columns=[{"name": c, "type": t, "nullable": n == "YES"} for c, t, n in columns.rows],
            primary_key=[k[0] for k in keys.rows if k[1] == "p"],
            foreign_keys=[{"column": k[0], "references": f"{k[2]}.{k[3]}"} for k in keys.rows if k[1] == "f" and k[2]],
            samples=samples.rows,
        )


class SQLiteSource:
    """A SQLite file, opened read-only, with a time limit enforced by a progress handler."""

    dialect = "sqlite"

    def __init__(self, name: str, path: Path, *, timeout_ms: int = 10_000, row_cap: int = 200) -> None:
        self.name, self.path, self.timeout_ms, self.row_cap = name, path, timeout_ms, row_cap

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise DataSourceError(f"no SQLite file at {self.path} for {self.name}")
        try:
            conn = sqlite3.connect(f"file:{quote(str(self.path.absolute()))}?mode=ro", uri=True, timeout=5)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise DataSourceError(f"cannot open {self.path}: {exc}") from exc
        return conn

    def _query(self, statement: str, params: tuple[Any, ...] = (), cap: int | None = None) -> QueryResult:
        cap = cap or self.row_cap
        started = time.perf_counter()
        deadline = started + self.timeout_ms / 1000
        conn = self._connect()
        conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 10_000)
        try:
            cur = conn.execute(statement, params)
            columns = [d[0] for d in cur.description or []]
            fetched = cur.fetchmany(cap + 1) if cur.description else []
        except sqlite3.OperationalError as exc:
            if time.perf_counter() > deadline:
                raise DataSourceError(f"the query ran past the {self.timeout_ms} ms limit and was stopped") from exc
            raise DataSourceError(f"OperationalError: {exc}") from exc
        except sqlite3.Error as exc:
            raise DataSourceError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        return _result(columns, fetched, cap, statement, started)

    def run_sql(self, text: str) -> QueryResult:
        return self._query(check_sql(text, self.dialect).sql)

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
        samples = self._query(f"SELECT * FROM {quoted} LIMIT {SAMPLE_ROWS}").rows
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


__all__ = ["DataSourceError", "QueryResult", "SQLRefused", "TableInfo", "open_source"]
