"""Spreadsheets as data: a CSV, each sheet of an XLSX, or a folder of CSVs, loaded as tables with inferred
column types into a database of their own on Ladder's PostgreSQL server, queried through a read-only role.

Names from the file become identifiers by an allowlist: ASCII letters (accents dropped), digits and
'_', lower-cased, runs of anything else made one '_', a leading digit prefixed, cut to 63 bytes,
made unique, and given a trailing '_' when the server counts them as keywords (so the model's
unquoted SQL reads them as names). Types are inferred from every non-empty value of a column:
boolean, bigint, double precision, date or timestamp where all values are one (ISO dates only,
never guessed from 01/02), text otherwise. The database is only ever replaced by another
``load-file`` of the same name: a database that this module did not make is never dropped.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from knowledge.bounds import DEFAULT_LIMITS, ParseLimits, SkipFile, WorkClock
from knowledge.loaders import read_bytes
from knowledge.tables import SHEET_SUFFIXES, Sheet, cell_text, read_sheets
from tools.sql.database import DataSourceError
from tools.sql.loader import LoadedDatabase, reader_role, with_database

MARK = "made by ladder db load-file"  # the database's comment: only such a database is ever replaced
MAX_TABLES = 200
MAX_COLUMNS = 1600  # PostgreSQL's own limit on a table's columns
_IDENT_MAX = 63
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NOT_IDENT = re.compile(r"[^a-z0-9_]+")
_INTEGER = re.compile(r"^[+-]?\d{1,18}(\.0*)?$")  # "181.0": pandas writes a whole column with gaps so
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$")
_NULLS = {"", "na", "n/a", "nan", "null"}  # empty in a column of another type; kept as text in a text column
_BOOLEANS = {"true": True, "false": False}


@dataclass
class Column:
    name: str
    type: str
    values: list[Any] = field(default_factory=list)


@dataclass
class DataTable:
    """One sheet made ready to load: a safe table name, typed columns, and the sheet it came from."""

    name: str
    source: str
    columns: list[Column]

    @property
    def rows(self) -> int:
        return len(self.columns[0].values) if self.columns else 0


def database_name(path: Path, name: str | None) -> str:
    """The database (and data source) name: ``name`` as given (checked), or one made from the file's name."""
    if name is not None:
        if not _DB_NAME.match(name):
            raise DataSourceError(f"--name {name!r} must be lower-case letters, digits and '_' (at most 63)")
        return name
    return safe_identifier(path.stem, set(), set(), "sheet")


def safe_identifier(text: str, taken: set[str], reserved: set[str], fallback: str) -> str:
    """``text`` as a lower-case identifier of allowed characters only, not in ``taken`` (it is added)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    name = _NOT_IDENT.sub("_", ascii_text).strip("_") or fallback
    if name[0].isdigit():
        name = f"{fallback}_{name}"
    name = name[:_IDENT_MAX].rstrip("_") or fallback
    if name in reserved:
        name = name[: _IDENT_MAX - 1] + "_"
    unique, counter = name, 2
    while unique in taken:
        suffix = f"_{counter}"
        unique, counter = name[: _IDENT_MAX - len(suffix)] + suffix, counter + 1
    taken.add(unique)
    return unique


def read_data(path: Path, max_bytes: int, limits: ParseLimits = DEFAULT_LIMITS) -> list[Sheet]:
    """The sheets of a CSV or XLSX file, or of every CSV in a folder; DataSourceError says why not."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" and not p.name.startswith("."))
        if not files:
            raise DataSourceError(f"{path} holds no .csv files")
    elif path.suffix.lower() in SHEET_SUFFIXES:
        files = [path]
    elif not path.exists():
        raise DataSourceError(f"no file at {path}")
    else:
        raise DataSourceError(f"{path.name} is not a spreadsheet: give a .csv or .xlsx file, or a folder of .csv files")
    sheets: list[Sheet] = []
    for file in files:
        try:
            data = read_bytes(file, max_bytes)
            found = read_sheets(data, file.suffix.lower(), file.stem, limits, WorkClock(limits))
        except SkipFile as skip:
            raise DataSourceError(f"{file.name}: {skip.reason}") from None
        sheets += found
    return sheets


def data_tables(sheets: list[Sheet], reserved: set[str]) -> list[DataTable]:
    """Each sheet as a table with safe, unique names and inferred column types."""
    if len(sheets) > MAX_TABLES:
        raise DataSourceError(f"{len(sheets)} sheets, over the {MAX_TABLES}-table limit")
    taken: set[str] = set()
    tables = []
    for sheet in sheets:
        if len(sheet.header) > MAX_COLUMNS:
            raise DataSourceError(f"sheet {sheet.name!r} has {len(sheet.header)} columns, over PostgreSQL's 1600")
        names: set[str] = set()
        columns = []
        for index, heading in enumerate(sheet.header):
            kind, values = infer_column(row[index] for row in sheet.rows)
            columns.append(Column(safe_identifier(heading, names, reserved, f"column_{index + 1}"), kind, values))
        tables.append(DataTable(safe_identifier(sheet.name, taken, reserved, "sheet"), sheet.name, columns))
    return tables


def infer_column(cells: Iterable[Any]) -> tuple[str, list[Any]]:
    """(PostgreSQL type, values converted to it) for a column: the narrowest type every non-empty value fits."""
    raw = list(cells)
    present = [v for v in raw if not _is_null(v)]
    for kind, convert in _CONVERTERS:
        converted = [convert(v) for v in present]
        if present and all(c is not None for c in converted):
            return kind, [None if _is_null(v) else convert(v) for v in raw]
    return "text", [None if v is None or (isinstance(v, str) and not v.strip()) else cell_text(v) for v in raw]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULLS)


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return _BOOLEANS.get(value.strip().lower()) if isinstance(value, str) else None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 2**63 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**53 else None
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip().split(".")[0])
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return float(value.strip()) if isinstance(value, str) and _NUMBER.match(value.strip()) else None


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date() if value.time() == dt.time() else None
    if isinstance(value, dt.date):
        return value
    return _parse(dt.date.fromisoformat, value) if isinstance(value, str) and _DATE.match(value.strip()) else None


def _timestamp(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _TIMESTAMP.match(value.strip()):
        return _parse(dt.datetime.fromisoformat, value)
    return None


def _parse(parse: Any, value: str) -> Any:
    try:
        return parse(value.strip())
    except ValueError:  # 2024-02-30
        return None


_CONVERTERS: list[tuple[str, Any]] = [
    ("boolean", _boolean),
    ("bigint", _integer),
    ("double precision", _number),
    ("date", _date),
    ("timestamp", _timestamp),
]


def server_keywords(conn: psycopg.Connection) -> set[str]:
    """The words PostgreSQL will not take as an unquoted column or table name (from the server itself)."""
    return {row[0] for row in conn.execute("SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'")}


def load_tables(server_url: str, database: str, tables: list[DataTable]) -> LoadedDatabase:
    """Replace ``database`` (only one this module made) with ``tables``; return its read-only URL."""
    _check_replaceable(server_url, database)
    target = with_database(server_url, database)
    try:
        with psycopg.connect(target, connect_timeout=10) as conn, conn.transaction():
            for table in tables:
                _create(conn, table)
    except psycopg.Error as exc:
        raise DataSourceError(f"loading the tables into {database} failed: {exc}") from exc
    role, note = reader_role(target, database)
    if role is None:
        return LoadedDatabase(database, target, None, note)
    return LoadedDatabase(database, with_database(target, database, user=role[0], **role[1]), role[0], note)


def _check_replaceable(server_url: str, database: str) -> None:
    """Create ``database`` afresh, refusing Ladder's own, the server's, and any this module did not make."""
    own = conninfo_to_dict(server_url).get("dbname")
    if database in {"postgres", "template0", "template1", own}:
        raise DataSourceError(f"{database!r} is a database Ladder or the server needs; choose another --name")
    ident = pgsql.Identifier(database)
    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if row is not None and row[0] != MARK:
            raise DataSourceError(
                f"a database named {database} exists and was not made by `ladder db load-file`; choose another --name"
            )
        if row is not None:
            conn.execute(pgsql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
        conn.execute(pgsql.SQL("CREATE DATABASE {}").format(ident))
        conn.execute(pgsql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, pgsql.Literal(MARK)))


def _create(conn: psycopg.Connection, table: DataTable) -> None:
    """CREATE TABLE with the inferred types, then COPY the rows in."""
    ident = pgsql.Identifier(table.name)
    columns = pgsql.SQL(", ").join(
        pgsql.SQL("{} {}").format(pgsql.Identifier(c.name), pgsql.SQL(c.type)) for c in table.columns
    )
    conn.execute(pgsql.SQL("CREATE TABLE {} ({})").format(ident, columns))
    names = pgsql.SQL(", ").join(pgsql.Identifier(c.name) for c in table.columns)
    with conn.cursor().copy(pgsql.SQL("COPY {} ({}) FROM STDIN").format(ident, names)) as copy:
        for row in zip(*(c.values for c in table.columns), strict=True):
            copy.write_row(row)


def load_spreadsheet(
    server_url: str, path: Path, name: str | None, max_bytes: int, limits: ParseLimits = DEFAULT_LIMITS
) -> tuple[LoadedDatabase, list[DataTable]]:
    """Read ``path`` (CSV, XLSX or a folder of CSVs) and load it as the database ``name`` (or one named after it)."""
    database = database_name(path, name)
    sheets = read_data(path, max_bytes, limits)
    try:
        with psycopg.connect(with_database(server_url, "postgres"), connect_timeout=10) as conn:
            reserved = server_keywords(conn)
    except psycopg.Error as exc:
        raise DataSourceError(f"cannot reach the database server: {exc}") from exc
    tables = data_tables(sheets, reserved)
    return load_tables(server_url, database, tables), tables
