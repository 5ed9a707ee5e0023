"""The review queue: turns a user gave a thumbs-down and turns whose fact-check found an unsupported
claim, oldest first, until a reviewer accepts one into a named eval set (with the reference answer they
wrote and the passages they marked relevant) or dismisses it with a reason.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from agent.records.evalsets import EvalSetStoreError, put_item
from agent.records.redact import redact

MAX_REASON_CHARS = 4000
_LATEST_RATING = "(SELECT f.rating FROM feedback f WHERE f.turn_id = t.turn_id ORDER BY f.id DESC LIMIT 1)"
_UNSUPPORTED = "coalesce(t.fact_check, '[]'::jsonb) @> '[{\"supported\": false}]'"
QUEUED = (
    f"t.status <> 'running' AND ({_LATEST_RATING} = 'down' OR {_UNSUPPORTED})"
    " AND NOT EXISTS (SELECT 1 FROM review_decisions d WHERE d.turn_id = t.turn_id)"
)


def review_queue(conn: psycopg.Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Queued turns, oldest first, each with why it is queued (``reasons``) and its latest comment."""
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT t.turn_id, t.started_at, t.face, t.collection, u.name AS user, t.question, t.answer,"
            f" {_LATEST_RATING} AS feedback, {_UNSUPPORTED} AS unsupported,"
            " (SELECT f.comment FROM feedback f WHERE f.turn_id = t.turn_id ORDER BY f.id DESC LIMIT 1) AS comment"
            f" FROM turns t LEFT JOIN users u ON u.id = t.user_id WHERE {QUEUED}"
            " ORDER BY t.started_at, t.turn_id LIMIT %s",
            (max(1, min(limit, 1000)),),
        )
        .fetchall()
    )
    for row in rows:
        row["reasons"] = [
            r for r, on in (("thumbs-down", row["feedback"] == "down"), ("unsupported claim", row["unsupported"])) if on
        ]
    return [redact(row, personal=False) for row in rows]


def _queued_turn(conn: psycopg.Connection, turn_id: str) -> dict[str, Any]:
    turn = (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT turn_id, question, passages FROM turns WHERE turn_id = %s", (turn_id,))
        .fetchone()
    )
    if turn is None:
        raise EvalSetStoreError(f"no turn {turn_id!r}")
    return turn


def _decide(conn: psycopg.Connection, turn_id: str, decision: str, reason: str | None, reviewer: str | None) -> None:
    conn.execute(
        "INSERT INTO review_decisions (turn_id, decision, reason, reviewer) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (turn_id) DO UPDATE SET decision = EXCLUDED.decision, reason = EXCLUDED.reason,"
        " reviewer = EXCLUDED.reviewer, decided_at = now()",
        (turn_id, decision, reason, reviewer),
    )


def accept(
    conn: psycopg.Connection,
    turn_id: str,
    set_name: str,
    reference_answer: str,
    relevant_chunk_ids: list[int],
    reviewer: str | None = None,
) -> int:
    """Put the turn into the named set with the reviewer's reference answer and the retrieved passages they
    marked relevant (an id the turn did not retrieve is refused); returns the set's new version."""
    with conn.transaction():
        turn = _queued_turn(conn, turn_id)
        by_id = {int(p["chunk_id"]): p for p in turn.get("passages") or []}
        unknown = sorted(set(relevant_chunk_ids) - set(by_id))
        if unknown:
            raise EvalSetStoreError(f"the turn did not retrieve passages {unknown}")
        chosen = [by_id[i] for i in dict.fromkeys(relevant_chunk_ids)]
        item = {
            "item_id": turn_id,
            "question": turn["question"],
            "reference_answer": (reference_answer or "").strip(),
            "reference_contexts": [p["text"] for p in chosen],
            "reference_doc_ids": list(dict.fromkeys(p["doc_id"] for p in chosen)),
            "turn_id": turn_id,
        }
        version = put_item(conn, set_name, redact(item, personal=False))
        _decide(conn, turn_id, "accepted", f"into {set_name}@{version}", reviewer)
    return version


def dismiss(conn: psycopg.Connection, turn_id: str, reason: str, reviewer: str | None = None) -> None:
    """Take the turn off the queue without a set item; the reason is required (a later reader asks why)."""
    reason = (reason or "").strip()
    if not reason:
        raise EvalSetStoreError("say why the turn is dismissed")
    if len(reason) > MAX_REASON_CHARS:
        raise EvalSetStoreError(f"the reason is {len(reason)} characters; the limit is {MAX_REASON_CHARS}")
    with conn.transaction():
        _queued_turn(conn, turn_id)
        _decide(conn, turn_id, "dismissed", reason, reviewer)


def decision_of(conn: psycopg.Connection, turn_id: str) -> dict[str, Any] | None:
    return (
        conn.cursor(row_factory=dict_row)
        .execute("SELECT decision, reason, reviewer, decided_at FROM review_decisions WHERE turn_id = %s", (turn_id,))
        .fetchone()
    )
