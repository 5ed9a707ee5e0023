"""query_database: write SQL for a question from the schema, run it read-only, and correct it on error.

The model sees the schema (tables, columns, keys, a few sample values) and the question, and
answers with JSON ``{"sql": "..."}``. A refusal or a database error goes back to the model with
the message, at most ``max_attempts`` times; then the last error is reported, never hidden.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from knowledge.tokens import count_tokens
from tools.sql.database import DataSource, DataSourceError, QueryResult
from tools.sql.safety import SQLRefused

SCHEMA_TOKEN_BUDGET = 2500

SQL_PROMPT = (
    "You write one read-only {dialect} SELECT query that answers the question from the database "
    "described below. Use only the tables and columns listed; quote nothing that does not need it. "
    'Reply with JSON: {{"sql": "SELECT ..."}}. Do not explain.'
)


class SQLReply(BaseModel):
    sql: str


M = TypeVar("M", bound=BaseModel)


class JSONCaller(Protocol):
    """What the tool needs from a model: a JSON reply in a given shape (agent.models.calls.ModelCaller).

    A reply that does not fit raises ValueError (the caller's MalformedReply is one).
    """

    def json(
        self, step: str, messages: list[dict[str, Any]], model: type[M], *, max_tokens: int | None = None
    ) -> M: ...


@dataclass
class SQLAnswer:
    question: str
    sql: str
    result: QueryResult | None
    attempts: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "sql": self.sql,
            "result": self.result.to_dict() if self.result else None,
            "attempts": self.attempts,
            "error": self.error,
        }


def schema_text(source: DataSource, budget_tokens: int = SCHEMA_TOKEN_BUDGET) -> str:
    """Tables with their columns, keys and sample values, cut to the token budget."""
    parts: list[str] = []
    used = 0
    for table in source.list_tables():
        info = source.describe_table(table)
        columns = ", ".join(f"{c['name']} {c['type']}" for c in info.columns)
        lines = [f"TABLE {info.name} ({columns})"]
        if info.primary_key:
            lines.append(f"  primary key: {', '.join(info.primary_key)}")
        for key in info.foreign_keys:
            lines.append(f"  {key['column']} references {key['references']}")
        if info.samples:
            sample = json.dumps(info.samples[0], ensure_ascii=False, default=str)[:200]
            lines.append(f"  example row: {sample}")
        block = "\n".join(lines)
        cost = count_tokens(block)
        if used + cost > budget_tokens:
            parts.append(f"(more tables not shown: the schema is over {budget_tokens} tokens)")
            break
        parts.append(block)
        used += cost
    return "\n".join(parts)


def query_database(
    caller: JSONCaller,
    source: DataSource,
    question: str,
    *,
    examples: list[tuple[str, str]] | None = None,
    max_attempts: int = 3,
    schema: str | None = None,
) -> SQLAnswer:
    """Answer ``question`` with SQL on ``source``; ``examples`` are (question, SQL) pairs to show."""
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": SQL_PROMPT.format(dialect=source.dialect) + "\n\n" + (schema or schema_text(source)),
        }
    ]
    for example_question, example_sql in examples or []:
        messages += [
            {"role": "user", "content": example_question},
            {"role": "assistant", "content": json.dumps({"sql": example_sql})},
        ]
    messages.append({"role": "user", "content": question})
    answer = SQLAnswer(question=question, sql="", result=None)
    for _ in range(max(1, max_attempts)):
        try:
            reply = caller.json("sql", messages, SQLReply, max_tokens=300)
        except ValueError as exc:  # the model's reply did not fit the JSON shape
            answer.error = str(exc)
            return answer
        answer.sql = reply.sql.strip()
        try:
            answer.result = source.run_sql(answer.sql)
            answer.error = None
            return answer
        except (SQLRefused, DataSourceError) as exc:
            answer.error = str(exc)
            answer.attempts.append({"sql": answer.sql, "error": answer.error})
            messages += [
                {"role": "assistant", "content": json.dumps({"sql": answer.sql})},
                {"role": "user", "content": f"That query failed: {answer.error}\nWrite a corrected query."},
            ]
    return answer
