"""Answer a question about data from the selected database: SQL written, run read-only, shown.

The answer is the result table and the SQL that produced it, rendered without a second model
call: numbers copied by a small model are numbers it can get wrong, and the table is the answer.
A failure says what went wrong and which SQL was last tried.
"""

from __future__ import annotations

from typing import Any

import sqlglot
from langgraph.runtime import Runtime

from agent.core.context import TurnContext
from agent.core.events import TokenEvent, ToolEvent
from agent.core.state import TurnState
from agent.core.steps.common import emit, standalone_question, step
from tools.sql.examples import similar_examples
from tools.sql.tool import call_sql_tool

SHOWN_ROWS = 20
FEWSHOT_EXAMPLES = 3


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def readable_sql(text: str, dialect: str) -> str:
    """The SQL laid out on several lines for reading (as it is, if it does not parse)."""
    try:
        return sqlglot.transpile(text, read=dialect, write=dialect, pretty=True)[0]
    except (sqlglot.errors.SqlglotError, IndexError):
        return text


def render(database: str, payload: dict[str, Any], dialect: str = "postgres") -> str:
    """The chat answer: the table (or the error) and the SQL."""
    sql = f"\n\n```sql\n{readable_sql(payload['sql'], dialect)}\n```" if payload.get("sql") else ""
    if payload.get("error") or "columns" not in payload:
        return f"I could not answer from the {database} database: {payload.get('error', 'no result')}.{sql}"
    rows = payload["rows"]
    if not rows:
        return f"The query on the {database} database returned no rows.{sql}"
    more = ""
    if payload.get("truncated") or len(rows) > SHOWN_ROWS:
        more = f"\n\n(only the first {min(len(rows), SHOWN_ROWS)} rows are shown)"
    return f"From the {database} database:\n\n{markdown_table(payload['columns'], rows[:SHOWN_ROWS])}{more}{sql}"


def query_data(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    assert ctx.data_source is not None
    source = ctx.data_source
    question = standalone_question(state)

    def examples(text: str) -> list[tuple[str, str]]:
        if not ctx.switches.fewshot:
            return []
        with ctx.kb.db.connection() as conn:
            found = similar_examples(conn, ctx.kb.embedder, source.name, text, k=FEWSHOT_EXAMPLES)
        return [(e.question, e.sql) for e in found]

    with step(runtime, "query_data", database=source.name) as result:
        payload = call_sql_tool(
            "query_database",
            {"question": question},
            source,
            caller=ctx.caller,
            examples=examples,
            max_attempts=max(1, ctx.limits.max_tool_calls),
        )
        shown = {k: payload.get(k) for k in ("sql", "columns", "rows", "truncated", "error") if k in payload}
        emit(runtime, ToolEvent("query_database", {"question": question, "database": source.name}, shown))
        result["rows"] = len(payload.get("rows") or [])
        result["attempts"] = len(payload.get("attempts") or []) + 1
        text = render(source.name, payload, source.dialect)
        emit(runtime, TokenEvent(text))
    errors = [payload["error"]] if payload.get("error") else []
    return {"answer": text, "data": payload, "errors": errors}
