"""The turn log: every turn is written before the graph runs and completed after it, and feedback
attaches to a turn. A turn left ``running`` by a crash stays visible as incomplete, never lost.
"""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

MAX_COMMENT_CHARS = 4000
MAX_CORRECTION_CHARS = 20_000  # the feedback table's own check


class FeedbackError(ValueError):
    """Feedback that cannot be stored (unknown turn, bad rating, too long); the message says which."""


def start_turn(
    conn: psycopg.Connection,
    turn_id: str,
    thread_id: str,
    question: str,
    *,
    face: str,
    collection: str | None,
    data_source: str | None,
    switches: dict[str, bool],
    user_id: int | None = None,
) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO turns (turn_id, thread_id, face, question, collection, data_source, switches, user_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (turn_id, thread_id, face, question, collection, data_source, Jsonb(switches), user_id),
        )


def finish_turn(
    conn: psycopg.Connection, turn_id: str, result: dict[str, Any], details: dict[str, Any] | None = None
) -> None:
    """Complete the turn with the answer (``failed`` when the result carries an error) and its details:
    model, settings, sub_questions, draft, fact_check, passages, events, model_calls."""
    details = details or {}

    def js(key: str) -> Jsonb | None:
        return Jsonb(details[key]) if details.get(key) is not None else None

    with conn.transaction():
        conn.execute(
            "UPDATE turns SET status = %s, answer = %s, citations = %s, data = %s, usage = %s, error = %s,"
            " model = %s, settings = %s, sub_questions = %s, draft = %s, fact_check = %s, passages = %s,"
            " events = %s, model_calls = %s, finished_at = now() WHERE turn_id = %s",
            (
                "failed" if result.get("error") else "done",
                result.get("answer"),
                Jsonb(result.get("citations") or []),
                Jsonb(result.get("data")) if result.get("data") else None,
                Jsonb(result.get("usage") or {}),
                result.get("error"),
                details.get("model"),
                Jsonb(details.get("settings") or {}),
                js("sub_questions"),
                details.get("draft"),
                js("fact_check"),
                js("passages"),
                js("events"),
                js("model_calls"),
                turn_id,
            ),
        )


def add_feedback(
    conn: psycopg.Connection,
    turn_id: str,
    rating: Literal["up", "down"],
    comment: str | None = None,
    corrected_answer: str | None = None,
) -> int:
    """Attach thumbs up/down (and an optional comment or corrected answer) to a turn; returns its id."""
    if rating not in ("up", "down"):
        raise FeedbackError(f"rating must be 'up' or 'down', not {rating!r}")
    comment = (comment or "").strip() or None
    if comment and len(comment) > MAX_COMMENT_CHARS:
        raise FeedbackError(f"the comment is {len(comment)} characters; the limit is {MAX_COMMENT_CHARS}")
    if corrected_answer and len(corrected_answer) > MAX_CORRECTION_CHARS:
        raise FeedbackError(
            f"the corrected answer is {len(corrected_answer)} characters; the limit is {MAX_CORRECTION_CHARS}"
        )
    with conn.transaction():
        if conn.execute("SELECT 1 FROM turns WHERE turn_id = %s", (turn_id,)).fetchone() is None:
            raise FeedbackError(f"no turn {turn_id!r} to attach feedback to")
        row = conn.execute(
            "INSERT INTO feedback (turn_id, rating, comment, corrected_answer) VALUES (%s, %s, %s, %s) RETURNING id",
            (turn_id, rating, comment, corrected_answer),
        ).fetchone()
    assert row is not None
    return int(row[0])


def get_turn(conn: psycopg.Connection, turn_id: str) -> dict[str, Any] | None:
    """One turn with its feedback, newest feedback last."""
    turn = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT turn_id, thread_id, face, question, status, answer, citations, data, error, started_at"
            " FROM turns WHERE turn_id = %s",
            (turn_id,),
        )
        .fetchone()
    )
    if turn is None:
        return None
    turn["feedback"] = [
        {"rating": r, "comment": c, "corrected_answer": a}
        for r, c, a in conn.execute(
            "SELECT rating, comment, corrected_answer FROM feedback WHERE turn_id = %s ORDER BY id", (turn_id,)
        )
    ]
    return turn


def set_feedback_comment(conn: psycopg.Connection, feedback_id: int, comment: str) -> None:
    """Add the comment a user typed after their thumbs-down to that feedback."""
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise FeedbackError(f"the comment is {len(comment)} characters; the limit is {MAX_COMMENT_CHARS}")
    with conn.transaction():
        if conn.execute("UPDATE feedback SET comment = %s WHERE id = %s", (comment or None, feedback_id)).rowcount != 1:
            raise FeedbackError(f"no feedback {feedback_id}")


def thread_turns(conn: psycopg.Connection, thread_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The turns of a thread, oldest first: what a chat shows when it is opened again."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT turn_id, question, answer, citations, status, error FROM turns WHERE thread_id = %s"
            " ORDER BY started_at, turn_id LIMIT %s",
            (thread_id, limit),
        )
        .fetchall()
    )
