"""The SQL tools as a model or another agent calls them: schemas and one dispatcher.

``list_tables``, ``describe_table``, ``query_database`` (the model writes the SQL) and ``run_sql``
(the caller brings its own SQL). Arguments are validated before anything runs; every result is a
JSON-ready dict, and a refusal or database error comes back as ``{"error": ...}`` for the caller
to read and correct, never as an exception that ends the conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tools.arguments import decode_arguments
from tools.sql.database import DataSource, DataSourceError, QueryResult
from tools.sql.safety import SQLRefused
from tools.sql.writer import JSONCaller, query_database

MAX_QUESTION_CHARS = 2000
MAX_SQL_CHARS = 20_000
SHOWN_ROWS = 50  # what a tool result carries back into a model's context


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


SCHEMAS: list[dict[str, Any]] = [
    _function("list_tables", "List the tables and views of the database.", {}, []),
    _function(
        "describe_table",
        "Columns with types, primary and foreign keys, and a few sample rows of one table.",
        {"table": {"type": "string", "description": "A name from list_tables."}},
        ["table"],
    ),
    _function(
        "query_database",
        "Answer a question from the database: SQL is written from the schema, run read-only, and "
        "returned with a small table of results.",
        {"question": {"type": "string", "description": "The question, in plain words."}},
        ["question"],
    ),
    _function(
        "run_sql",
        "Run one read-only SELECT (or WITH … SELECT) query and return its rows. Anything that writes is refused.",
        {"sql": {"type": "string", "description": "One SELECT statement."}},
        ["sql"],
    ),
]
NAMES = frozenset(s["function"]["name"] for s in SCHEMAS)


def table_payload(result: QueryResult, shown: int = SHOWN_ROWS) -> dict[str, Any]:
    """A result for a model or a client: the columns, the first rows, and whether there were more."""
    payload = result.to_dict()
    payload["rows"] = result.rows[:shown]
    payload["truncated"] = result.truncated or len(result.rows) > shown
    return payload


def _arguments(name: str, raw: str | dict[str, Any]) -> dict[str, Any]:
    raw = decode_arguments(raw)
    schema = next(s for s in SCHEMAS if s["function"]["name"] == name)["function"]["parameters"]
    unknown = set(raw) - set(schema["properties"])
    missing = [k for k in schema["required"] if not isinstance(raw.get(k), str) or not raw[k].strip()]
    if unknown:
        raise ValueError(f"unknown arguments: {', '.join(sorted(unknown))}")
    if missing:
        raise ValueError(f"missing text arguments: {', '.join(missing)}")
    limits = {"question": MAX_QUESTION_CHARS, "sql": MAX_SQL_CHARS, "table": 200}
    for key, value in raw.items():
        if len(value) > limits[key]:
            raise ValueError(f"{key} is {len(value)} characters; the limit is {limits[key]}")
    return raw


def call_sql_tool(
    name: str,
    arguments: str | dict[str, Any],
    source: DataSource,
    *,
    caller: JSONCaller | None = None,
    examples: Callable[[str], list[tuple[str, str]]] | None = None,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """Run one SQL tool call; the result (or ``{"error": ...}``) is ready to go back as JSON."""
    if name not in NAMES:
        return {"error": f"unknown tool {name!r}; the SQL tools are {', '.join(sorted(NAMES))}"}
    try:
        args = _arguments(name, arguments)
        if name == "list_tables":
            return {"database": source.name, "tables": source.list_tables()}
        if name == "describe_table":
            info = source.describe_table(args["table"].strip())
            return {
                "table": info.name,
                "columns": info.columns,
                "primary_key": info.primary_key,
                "foreign_keys": info.foreign_keys,
                "samples": info.samples,
            }
        if name == "run_sql":
            return table_payload(source.run_sql(args["sql"]))
        if caller is None:
            return {"error": "query_database needs a chat model; call run_sql with your own SQL instead"}
        question = args["question"].strip()
        answer = query_database(
            caller, source, question, examples=examples(question) if examples else None, max_attempts=max_attempts
        )
        payload: dict[str, Any] = {"question": question, "sql": answer.sql, "attempts": answer.attempts}
        if answer.result is not None:
            payload.update(table_payload(answer.result))
        if answer.error:
            payload["error"] = answer.error
        return payload
    except (ValueError, SQLRefused, DataSourceError) as exc:
        return {"error": str(exc)}
