"""The turn log: every turn is written before the graph runs and completed after it, and feedback
attaches to a turn. A turn left ``running`` by a crash stays visible as incomplete, never lost.
Listing turns and retention (pruning old turns with their feedback and checkpoints) live here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agent.records.access import claim_thread
from agent.records.checkpoints import prune_checkpoints
from agent.records.redact import redact
from knowledge.errors import LadderError

MAX_COMMENT_CHARS = 4000
MAX_CORRECTION_CHARS = 20_000  # the feedback table's own check
Feedback = Literal["up", "down", "any", "none"]
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_MAX_AGE_MINUTES = 100 * 366 * 24 * 60


class FeedbackError(LadderError, ValueError):
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
    """Log the turn as ``running``; its thread is claimed for ``user_id`` if new (AccessError if another's)."""
    with conn.transaction():
        claim_thread(conn, thread_id, user_id)
        conn.execute(
            "INSERT INTO turns (turn_id, thread_id, face, question, collection, data_source, switches, user_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (turn_id, thread_id, face, question, collection, data_source, Jsonb(switches), user_id),
        )


@dataclass
class TurnCompletion:
    """What the log keeps of a finished turn: its outcome and every detail needed to rebuild it."""

    answer: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    error: str | None = None  # set: the turn is logged as failed
    model: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    sub_questions: list[str] = field(default_factory=list)
    draft: str | None = None
    fact_check: list[dict[str, Any]] = field(default_factory=list)
    passages: list[dict[str, Any]] = field(default_factory=list)  # every retrieved one, with rank and score
    events: list[dict[str, Any]] = field(default_factory=list)
    model_calls: list[dict[str, Any]] = field(default_factory=list)


def finish_turn(conn: psycopg.Connection, turn_id: str, done: TurnCompletion) -> None:
    """Complete the turn with its answer (``failed`` when it carries an error) and its details."""

    def js(value: Any) -> Jsonb | None:
        return Jsonb(value) if value else None

    with conn.transaction():
        conn.execute(
            "UPDATE turns SET status = %s, answer = %s, citations = %s, data = %s, usage = %s, error = %s,"
            " model = %s, settings = %s, sub_questions = %s, draft = %s, fact_check = %s, passages = %s,"
            " events = %s, model_calls = %s, finished_at = now() WHERE turn_id = %s",
            (
                "failed" if done.error else "done",
                done.answer,
                Jsonb(done.citations),
                js(done.data),
                Jsonb(done.usage),
                done.error,
                done.model,
                Jsonb(done.settings),
                js(done.sub_questions),
                done.draft or None,
                js(done.fact_check),
                js(done.passages),
                js(done.events),
                js(done.model_calls),
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
            "SELECT turn_id, question, answer, citations, fact_check, status, error, events FROM turns"
            " WHERE thread_id = %s ORDER BY started_at, turn_id LIMIT %s",
            (thread_id, limit),
        )
        .fetchall()
    )


def parse_age(text: str) -> timedelta:
    """``90d``, ``12h`` or ``30m`` as a timedelta; a clear error otherwise."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not an age like 90d, 12h or 30m")
    minutes = int(match.group(1)) * {"d": 24 * 60, "h": 60, "m": 1}[match.group(2)]
    if minutes > _MAX_AGE_MINUTES:  # further back than a timestamp (Python's or PostgreSQL's) reaches
        raise ValueError(f"{text!r} is more than 100 years")
    return timedelta(minutes=minutes)


def _feedback_filter(feedback: Feedback) -> str:
    # The newest feedback on a turn is the one that counts.
    latest = "(SELECT f.rating FROM feedback f WHERE f.turn_id = t.turn_id ORDER BY f.id DESC LIMIT 1)"
    return {
        "up": f"{latest} = 'up'",
        "down": f"{latest} = 'down'",
        "any": f"{latest} IS NOT NULL",
        "none": "TRUE",
    }[feedback]


def list_turns(
    conn: psycopg.Connection,
    *,
    since: datetime | None = None,
    feedback: Feedback = "none",
    limit: int = 100,
    user: str | None = None,
) -> list[dict[str, Any]]:
    """Turns, newest first, with their user and latest feedback (secrets redacted); ``user`` keeps one user's."""
    cur = conn.cursor(row_factory=dict_row).execute(
        "SELECT t.turn_id, t.thread_id, u.name AS user, t.face, t.status, t.started_at, t.question, t.answer,"
        " t.error, t.model, t.usage,"
        " (SELECT f.rating FROM feedback f WHERE f.turn_id = t.turn_id ORDER BY f.id DESC LIMIT 1) AS feedback,"
        " (SELECT f.comment FROM feedback f WHERE f.turn_id = t.turn_id ORDER BY f.id DESC LIMIT 1) AS comment"
        " FROM turns t LEFT JOIN users u ON u.id = t.user_id"
        f" WHERE t.started_at >= %s AND {_feedback_filter(feedback)} AND (%s::text IS NULL OR u.name = %s)"
        " ORDER BY t.started_at DESC LIMIT %s",
        (since or datetime(1970, 1, 1), user, user, limit),
    )
    return [redact(row, personal=False) for row in cur.fetchall()]


@dataclass
class PruneReport:
    """What `prune_turns` deleted."""

    turns: int
    threads_deleted: int = 0  # threads whose checkpoints all went (no turn left)
    threads_trimmed: int = 0  # threads that keep newer turns, cut to their latest checkpoint
    checkpoints: int = 0


def prune_turns(conn: psycopg.Connection, older_than: timedelta) -> PruneReport:
    """Delete turns (with their feedback) started more than ``older_than`` ago, and the checkpoints
    that hold them (agent.records.checkpoints). Thread ownership (the threads table) is kept."""
    with conn.transaction():
        rows = conn.execute(
            "DELETE FROM turns WHERE started_at < now() - %s RETURNING thread_id", (older_than,)
        ).fetchall()
    report = PruneReport(turns=len(rows))
    done = prune_checkpoints(conn, {thread for (thread,) in rows})
    report.threads_deleted, report.threads_trimmed = done.threads_deleted, done.threads_trimmed
    report.checkpoints = done.checkpoints_deleted
    return report
