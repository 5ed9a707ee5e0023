"""A turn whole, for `ladder logs show` and the console: steps with durations, model calls (messages,
reply, tokens), passages with rank and score, draft, verdicts, answer with citations, feedback, review.
Also the console's turn search with its filters. Everything read here is redacted of secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agent.records.redact import redact
from agent.records.review import decision_of

_COLUMNS = (
    "t.turn_id, t.thread_id, t.face, u.name AS user, t.collection, t.data_source, t.status, t.question, t.answer,"
    " t.citations, t.data, t.usage, t.error, t.model, t.switches, t.settings, t.sub_questions, t.draft,"
    " t.fact_check, t.passages, t.events, t.model_calls, t.started_at, t.finished_at"
)


def turn_detail(conn: psycopg.Connection, turn_id: str) -> dict[str, Any] | None:
    """The whole turn, or None for an unknown id; ``steps`` are its step events that ended, in order."""
    turn = (
        conn.cursor(row_factory=dict_row)
        .execute(
            f"SELECT {_COLUMNS} FROM turns t LEFT JOIN users u ON u.id = t.user_id WHERE t.turn_id = %s", (turn_id,)
        )
        .fetchone()
    )
    if turn is None:
        return None
    events = turn.pop("events") or []
    turn["steps"] = [
        {k: v for k, v in e.items() if k != "type"}
        for e in events
        if e.get("type") == "step" and e.get("status") == "end"
    ]
    turn["tools"] = [e for e in events if e.get("type") == "tool"]
    turn["feedback"] = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT rating, comment, corrected_answer, created_at FROM feedback WHERE turn_id = %s ORDER BY id",
            (turn_id,),
        )
        .fetchall()
    )
    turn["review"] = decision_of(conn, turn_id)
    for key in ("citations", "fact_check", "passages", "model_calls", "sub_questions"):
        turn[key] = turn[key] or []
    return redact(turn, personal=False)


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"== {title} ==", *(lines or ["(none)"]), ""]


def _indented(text: object) -> str:
    """A message's text with its later lines indented under it, so the calls stay readable."""
    return str(text if text is not None else "").replace("\n", "\n        ")


def _calls(calls: list[dict[str, Any]]) -> list[str]:
    lines = []
    for n, call in enumerate(calls, start=1):
        lines.append(
            f"[{n}] {call.get('step')} {call.get('model')}: {call.get('prompt_tokens')} in, "
            f"{call.get('completion_tokens')} out, {call.get('seconds')} s"
        )
        lines += [f"    {m.get('role')}: {_indented(m.get('content'))}" for m in call.get("messages") or []]
        lines.append(f"    reply: {_indented(call.get('reply'))}")
    return lines


def render_turn(turn: dict[str, Any]) -> str:
    """The turn as plain text, section by section (what `ladder logs show` prints)."""
    head = [
        f"turn {turn['turn_id']}  thread {turn['thread_id']}  face {turn['face']}  user {turn['user'] or '(operator)'}",
        f"status {turn['status']}  collection {turn['collection'] or '-'}  model {turn['model'] or '-'}",
        f"started {turn['started_at']}  finished {turn['finished_at'] or '-'}",
        "",
        f"question: {turn['question']}",
        "",
    ]
    steps = [f"{s.get('step')}: {s.get('seconds', 0):.3f} s" for s in turn["steps"]]
    passages = [
        f"#{p.get('rank', n)} score {float(p.get('score') or 0):.4f} chunk {p.get('chunk_id')} {p.get('doc_id')}:"
        f" {str(p.get('text') or '')[:200]}"
        for n, p in enumerate(turn["passages"], start=1)
    ]
    verdicts = [
        f"{'supported' if v.get('supported') else 'UNSUPPORTED'}: {v.get('claim')} {v.get('reason') or ''}".rstrip()
        for v in turn["fact_check"]
    ]
    cites = [f"[{c.get('number') or '-'}] {c.get('doc_id')} (chunk {c.get('chunk_id')})" for c in turn["citations"]]
    feedback = [
        f"{f['rating']}: {f['comment'] or ''}"
        + (f"  correction: {f['corrected_answer']}" if f["corrected_answer"] else "")
        for f in turn["feedback"]
    ]
    review = turn["review"]
    return "\n".join(
        head
        + _section("steps", steps)
        + _section("model calls", _calls(turn["model_calls"]))
        + _section("passages", passages)
        + _section("draft", [turn["draft"]] if turn["draft"] else [])
        + _section("verdicts", verdicts)
        + _section("answer", [turn["answer"] or "", *([f"error: {turn['error']}"] if turn["error"] else [])])
        + _section("citations", cites)
        + _section("feedback", feedback)
        + _section("review", [f"{review['decision']}: {review['reason'] or ''}"] if review else [])
    )


def turn_json(turn: dict[str, Any]) -> str:
    return json.dumps(turn, default=str, ensure_ascii=False, indent=1)


@dataclass
class TurnFilter:
    """The console's filters; None or empty: any."""

    since: datetime | None = None
    until: datetime | None = None
    face: str | None = None
    user: str | None = None
    collection: str | None = None
    status: str | None = None
    feedback: str | None = None  # up, down, any, none (no feedback at all)
    fact_check_failed: bool = False
    errors: bool = False
    limit: int = 200


def find_turns(conn: psycopg.Connection, f: TurnFilter) -> list[dict[str, Any]]:
    """Turns matching every filter, newest first (at most ``limit``, capped at 1000)."""
    latest = "(SELECT x.rating FROM feedback x WHERE x.turn_id = t.turn_id ORDER BY x.id DESC LIMIT 1)"
    feedback = {
        "up": f"{latest} = 'up'",
        "down": f"{latest} = 'down'",
        "any": f"{latest} IS NOT NULL",
        "none": f"{latest} IS NULL",
    }
    where = [
        "(%(since)s::timestamptz IS NULL OR t.started_at >= %(since)s)",
        "(%(until)s::timestamptz IS NULL OR t.started_at <= %(until)s)",
        "(%(face)s::text IS NULL OR t.face = %(face)s)",
        "(%(user)s::text IS NULL OR u.name = %(user)s)",
        "(%(collection)s::text IS NULL OR t.collection = %(collection)s)",
        "(%(status)s::text IS NULL OR t.status = %(status)s)",
        feedback.get(f.feedback or "", "TRUE"),
        "coalesce(t.fact_check, '[]'::jsonb) @> '[{\"supported\": false}]'" if f.fact_check_failed else "TRUE",
        "t.error IS NOT NULL" if f.errors else "TRUE",
    ]
    params = {k: (getattr(f, k) or None) for k in ("since", "until", "face", "user", "collection", "status")}
    rows = (
        conn.cursor(row_factory=dict_row)
        .execute(
            "SELECT t.turn_id, t.started_at, t.face, u.name AS user, t.collection, t.status, t.question, t.answer,"
            f" t.error, {latest} AS feedback,"
            " coalesce(t.fact_check, '[]'::jsonb) @> '[{\"supported\": false}]' AS unsupported"
            f" FROM turns t LEFT JOIN users u ON u.id = t.user_id WHERE {' AND '.join(where)}"
            " ORDER BY t.started_at DESC LIMIT %(limit)s",
            {**params, "limit": max(1, min(f.limit, 1000))},
        )
        .fetchall()
    )
    return [redact(row, personal=False) for row in rows]
