"""The rules that keep model-written SQL read-only: an allowlist, checked with a real SQL parser (sqlglot).

One statement, of a shape that only reads (SELECT, WITH … SELECT, UNION/INTERSECT/EXCEPT, VALUES),
in which every node is on Ladder's allowlist (tools/sql/allowlist.py): the structure of a query,
pure functions and operators, casts to built-in types, and tables outside the system catalogs.
Anything else is refused with its name, whatever its schema, quoting or case.

What runs is sqlglot's own rendering of the statement it checked, never the raw text, so a comment
or quoting trick that parses differently elsewhere cannot smuggle in a second statement; and that
rendering is parsed and checked again, so a typed node cannot render as a function that is not
allowed. The database connection is read-only as well (tools/sql/database.py): this check is the
first wall, not the only one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError, TokenError

from knowledge.errors import LadderError
from tools.sql.allowlist import (
    CAST_TYPES,
    DIALECTS,
    NAMED_FUNCTIONS,
    STRUCTURE,
    SYSTEM_PREFIXES,
    SYSTEM_SCHEMAS,
    TYPED_FUNCTIONS,
)

MAX_SQL_CHARS = 20_000
logging.getLogger("sqlglot").setLevel(logging.ERROR)  # it warns on every statement it cannot model
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_LISTED = "it is not on Ladder's list of pure functions"
_CASTS = "values may only be cast to the types on Ladder's list (numbers, text, dates and times, booleans, JSON)"
# Only for the wording of a refusal: every node not on the allowlist is refused either way.
_WRITES = tuple(
    getattr(exp, name)
    for name in [
        "Insert",
        "Update",
        "Delete",
        "Merge",
        "Into",
        "Lock",
        "Copy",
        "Create",
        "Drop",
        "Alter",
        "TruncateTable",
        "Returning",
    ]
    if hasattr(exp, name)
)


class SQLRefused(LadderError, ValueError):
    """The SQL is not a single read-only query; the message says what was found."""


@dataclass(frozen=True)
class CheckedSQL:
    """A statement that passed the checks, rendered by the parser for the target dialect."""

    sql: str
    tables: tuple[str, ...]  # the tables and views it reads (names of its CTEs left out)


def strip_fences(text: str) -> str:
    """SQL without the markdown fences models like to wrap it in."""
    match = _FENCE.match(text)
    return (match.group(1) if match else text).strip()


def _function_name(node: exp.Expression, dialect: str) -> str:
    """The name a function is called by in ``dialect`` (sqlglot's class names differ: Rand is random())."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    try:
        shown = node.sql(dialect=dialect)
    except (SqlglotError, RecursionError, ValueError):
        shown = ""
    name = shown.split("(", 1)[0].strip()
    return (name if _WORD.match(name) else str(node.sql_name())).lower()


def _check_function(node: exp.Expression, dialect: str) -> None:
    if isinstance(node, exp.Anonymous):
        name_node = node.args.get("this")
        if isinstance(name_node, exp.Identifier) and name_node.quoted:
            raise SQLRefused(f'the function "{node.name}"() is not allowed: function names may not be quoted')
        if str(node.name).lower() in NAMED_FUNCTIONS[dialect]:
            return
    elif type(node) in TYPED_FUNCTIONS[dialect]:
        return
    raise SQLRefused(f"the function {_function_name(node, dialect)}() is not allowed: {_NOT_LISTED} for {dialect}")


def _check_table(node: exp.Table, dialect: str) -> None:
    if isinstance(node.this, exp.Func) and (node.db or node.catalog):  # FROM schema.function(...)
        called = f"{node.db}.{_function_name(node.this, dialect)}"
        raise SQLRefused(f"the function {called}() is not allowed: functions are called by their plain name")
    if node.catalog:
        raise SQLRefused(f"the table {node.sql(dialect=dialect)} is not allowed: it names another database")
    schema, name = node.db.lower(), node.name.lower()
    if schema in SYSTEM_SCHEMAS[dialect] or schema.startswith("pg_") or name.startswith(SYSTEM_PREFIXES[dialect]):
        raise SQLRefused(
            f"the system catalog {node.sql(dialect=dialect)} is not allowed: queries read the data's own tables"
            " (list_tables and describe_table show the schema)"
        )


def _check_structure(node: exp.Expression, dialect: str) -> None:
    """The extra rules of the structural nodes that need one."""
    if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
        called = f"{node.this.sql(dialect=dialect)}.{_function_name(node.expression, dialect)}"
        raise SQLRefused(f"the function {called}() is not allowed: functions are called by their plain name")
    if isinstance(node, exp.DataType) and node.this not in CAST_TYPES:
        raise SQLRefused(f"the type {node.sql(dialect=dialect)} is not allowed: {_CASTS}")
    if isinstance(node, exp.Table):
        _check_table(node, dialect)
    if isinstance(node, exp.Var) and not _WORD.match(str(node.name)):
        raise SQLRefused(f"the word {node.name!r} is not allowed here")


def _check_node(node: exp.Expression, dialect: str) -> None:
    kind = type(node)
    if kind in STRUCTURE:
        _check_structure(node, dialect)
    elif isinstance(node, exp.Func):
        _check_function(node, dialect)
    elif isinstance(node, exp.ObjectIdentifier):
        raise SQLRefused(f"the type {node.name} is not allowed: {_CASTS}")
    elif isinstance(node, _WRITES):
        raise SQLRefused(f"{node.key.upper()} is not allowed: queries here only read")
    else:
        raise SQLRefused(f"{node.key.upper()} is not allowed: it is not on Ladder's list of what a query may contain")


def _parse_one(sql: str, dialect: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as exc:
        raise SQLRefused(f"the SQL could not be parsed: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:
        raise SQLRefused("the SQL is nested too deeply to check") from exc
    if len(statements) != 1:
        raise SQLRefused(f"only one statement may run, and this is {len(statements)}")
    return statements[0]


def _check_tree(statement: exp.Expression, dialect: str) -> None:
    if not isinstance(statement, _ROOTS):
        raise SQLRefused(f"only SELECT queries may run; this is {statement.key.upper()}")
    for node in statement.walk():
        _check_node(node, dialect)


def _render(statement: exp.Expression, dialect: str) -> str:
    try:
        return statement.sql(dialect=dialect, comments=False)
    except RecursionError as exc:
        raise SQLRefused("the SQL is nested too deeply to check") from exc
    except SqlglotError as exc:
        raise SQLRefused(f"the SQL could not be rendered for {dialect}: {str(exc).splitlines()[0]}") from exc


def check_sql(text: str, dialect: str = "postgres") -> CheckedSQL:
    """The one read-only query in ``text``, or SQLRefused saying why not."""
    if dialect not in DIALECTS:
        raise SQLRefused(f"there is no SQL allowlist for the {dialect} dialect (known: {', '.join(sorted(DIALECTS))})")
    sql = strip_fences(text or "")
    if not sql:
        raise SQLRefused("the SQL is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise SQLRefused(f"the SQL is {len(sql)} characters long; the limit is {MAX_SQL_CHARS}")
    statement = _parse_one(sql, dialect)
    _check_tree(statement, dialect)
    rendered = _render(statement, dialect)
    _check_tree(_parse_one(rendered, dialect), dialect)  # what runs is the rendering: it passes too
    ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
    tables = tuple(sorted({t.name for t in statement.find_all(exp.Table) if t.name and t.name not in ctes}))
    return CheckedSQL(sql=rendered, tables=tables)
