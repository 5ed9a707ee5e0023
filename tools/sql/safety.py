"""The rules that keep model-written SQL read-only, checked with a real SQL parser (sqlglot).

One statement, a SELECT (with WITH, UNION/INTERSECT/EXCEPT) and nothing that writes, locks,
copies, sleeps or reaches outside the database anywhere inside it. What runs is sqlglot's own
rendering of the statement it checked, never the raw text, so a comment or quoting trick that
parses differently elsewhere cannot smuggle in a second statement. The database connection is
read-only as well (tools/sql.py): this check is the first wall, not the only one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from knowledge.errors import LadderError

MAX_SQL_CHARS = 20_000
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # it warns on every statement it cannot model
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)

# Statement and clause types that write, lock, copy or change the session.
_FORBIDDEN_NAMES = [
    "Insert",
    "Update",
    "Delete",
    "Merge",
    "Create",
    "Drop",
    "Alter",
    "AlterColumn",
    "TruncateTable",
    "Copy",
    "Into",
    "Lock",
    "Command",
    "Transaction",
    "Commit",
    "Rollback",
    "Set",
    "SetItem",
    "Pragma",
    "Use",
    "Grant",
    "Revoke",
    "LoadData",
    "Attach",
    "Detach",
    "Analyze",
    "Refresh",
    "Cache",
    "Uncache",
    "Comment",
    "Summarize",
    "Export",
    "Kill",
]
_FORBIDDEN = tuple(getattr(exp, name) for name in _FORBIDDEN_NAMES if hasattr(exp, name))
# Functions with side effects or reach beyond the database. Prefix rules catch whole families
# (pg_* admin functions, large objects, dblink); the names cover the rest in both dialects.
_DENIED_PREFIXES = ("pg_", "lo_", "dblink", "txid_", "gp_")
_ALLOWED_PG_FUNCTIONS = {"pg_typeof"}
_DENIED_FUNCTIONS = set(
    [
        "set_config",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "table_to_xml",
        "cursor_to_xml",
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "sqlite_compileoption_get",
        "randomblob",
        "zeroblob",
    ]
)


class SQLRefused(LadderError, ValueError):
    """The SQL is not a single read-only query; the message says what was found."""


@dataclass(frozen=True)
class CheckedSQL:
    """A statement that passed the checks, rendered by the parser for the target dialect."""

    sql: str
    tables: tuple[str, ...]


def strip_fences(text: str) -> str:
    """SQL without the markdown fences models like to wrap it in."""
    match = _FENCE.match(text)
    return (match.group(1) if match else text).strip()


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower() if isinstance(node, exp.Func) else ""


def check_sql(text: str, dialect: str = "postgres") -> CheckedSQL:
    """The one read-only query in ``text``, or SQLRefused saying why not."""
    sql = strip_fences(text or "")
    if not sql:
        raise SQLRefused("the SQL is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise SQLRefused(f"the SQL is {len(sql)} characters long; the limit is {MAX_SQL_CHARS}")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as exc:
        raise SQLRefused(f"the SQL could not be parsed: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:
        raise SQLRefused("the SQL is nested too deeply to check") from exc
    if len(statements) != 1:
        raise SQLRefused(f"only one statement may run, and this is {len(statements)}")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise SQLRefused(f"only SELECT queries may run; this is {statement.key.upper()}")
    for node in statement.walk():
        if isinstance(node, _FORBIDDEN):
            raise SQLRefused(f"{node.key.upper()} is not allowed: queries here only read")
        name = _function_name(node)
        if (
            name
            and name not in _ALLOWED_PG_FUNCTIONS
            and (name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES))
        ):
            raise SQLRefused(f"the function {name}() is not allowed: it has side effects or reaches outside")
    tables = tuple(sorted({t.name for t in statement.find_all(exp.Table) if t.name}))
    return CheckedSQL(sql=statement.sql(dialect=dialect, comments=False), tables=tables)
