"""Stored question → SQL pairs per data source, retrieved by similarity as few-shot examples.

This is the talk's RAG-for-SQL rung: instead of a fixed prompt, the examples shown to the model
are the stored questions nearest to the one asked. Every stored SQL passes the same read-only
check as a generated query, so an example can never teach the model to write.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg

from knowledge.embeddings import Embedder
from tools.sql.database import DataSourceError
from tools.sql.safety import SQLRefused, check_sql

# Question -> SQL pairs for the demo's Chinook (PostgreSQL spelling); none is the demo's question.
CHINOOK_EXAMPLES = Path(__file__).resolve().parent / "samples" / "chinook_examples.jsonl"


@dataclass(frozen=True)
class SQLExample:
    question: str
    sql: str
    similarity: float = 0.0


def read_examples_file(path: Path) -> list[tuple[str, str]]:
    """(question, SQL) pairs from a CSV (columns question and sql or query) or a JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"cannot read {path}: {exc}") from exc
    pairs: list[tuple[str, str]] = []
    if path.suffix.lower() in {".jsonl", ".json"}:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                pairs.append((str(record["question"]), str(record.get("sql") or record["query"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataSourceError(f"{path}:{number}: expected {{'question', 'sql'}}: {exc}") from exc
        return pairs
    reader = csv.DictReader(text.splitlines())
    column = "sql" if "sql" in (reader.fieldnames or []) else "query"
    if "question" not in (reader.fieldnames or []) or column not in (reader.fieldnames or []):
        raise DataSourceError(f"{path}: a CSV of examples needs the columns question and sql (or query)")
    return [(row["question"], row[column]) for row in reader]


def add_examples(
    conn: psycopg.Connection, embedder: Embedder, source: str, dialect: str, pairs: list[tuple[str, str]]
) -> int:
    """Store (or replace) examples for ``source``; all are checked before any is written."""
    cleaned: list[tuple[str, str]] = []
    for question, sql in pairs:
        question = " ".join(question.split())
        if not question or not sql.strip():
            raise DataSourceError("an example needs both a question and its SQL")
        try:
            check_sql(sql, dialect)
        except SQLRefused as exc:
            raise DataSourceError(f"example {question[:80]!r} is refused: {exc}") from exc
        cleaned.append((question, sql.strip()))
    if not cleaned:
        return 0
    vectors = embedder.embed([q for q, _ in cleaned])
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sql_examples (source, question, sql, model, embedding) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (source, question) DO UPDATE SET sql = EXCLUDED.sql, model = EXCLUDED.model,"
            " embedding = EXCLUDED.embedding, added_at = now()",
            [(source, q, s, embedder.model_name, np.asarray(v)) for (q, s), v in zip(cleaned, vectors, strict=True)],
        )
    return len(cleaned)


def similar_examples(
    conn: psycopg.Connection,
    embedder: Embedder,
    source: str,
    question: str,
    *,
    k: int = 3,
    exclude_question: str | None = None,
) -> list[SQLExample]:
    """The ``k`` stored examples nearest to ``question`` (cosine), nearest last: closest to the question."""
    vector = np.asarray(embedder.embed([question])[0])
    rows = conn.execute(
        "SELECT question, sql, 1 - (embedding <=> %s) FROM sql_examples"
        " WHERE source = %s AND model = %s AND question IS DISTINCT FROM %s"
        " ORDER BY embedding <=> %s LIMIT %s",
        (vector, source, embedder.model_name, exclude_question, vector, k),
    ).fetchall()
    return [SQLExample(q, s, float(sim)) for q, s, sim in reversed(rows)]


def list_examples(conn: psycopg.Connection, source: str) -> list[SQLExample]:
    return [
        SQLExample(q, s)
        for q, s in conn.execute("SELECT question, sql FROM sql_examples WHERE source = %s ORDER BY id", (source,))
    ]


def remove_examples(conn: psycopg.Connection, source: str) -> int:
    with conn.transaction():
        return conn.execute("DELETE FROM sql_examples WHERE source = %s", (source,)).rowcount


def count_examples(conn: psycopg.Connection, source: str) -> int:
    row = conn.execute("SELECT count(*) FROM sql_examples WHERE source = %s", (source,)).fetchone()
    return int(row[0]) if row else 0
