"""Retention for the LangGraph checkpoints (tables checkpoints, checkpoint_blobs, checkpoint_writes,
keyed by thread_id): what `ladder logs prune` deletes besides the turn rows.

A checkpoint holds the graph's state, which carries the question, the draft, the answer and the
thread's ``history`` (every earlier exchange, accumulated). So when turns go:

- a thread left without turns loses every checkpoint (the whole thread's state), and so does any
  thread whose checkpoints outlived its turns (a prune before this one, or one cut short);
- a thread that keeps newer turns keeps only its latest checkpoint (the one a next turn starts
  from; LangGraph's own ``prune(strategy="keep_latest")``), and that checkpoint's history is
  rebuilt from the turns the thread keeps. When that latest checkpoint is itself a pruned turn's
  (the kept turns never reached the graph), the thread's checkpoints all go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver

TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
# The graph's state channel that accumulates the conversation (agent/core/state.py TurnState.history,
# appended by the answer step as a user and an assistant message per finished turn).
HISTORY_CHANNEL = "history"


@dataclass
class CheckpointPrune:
    """What a prune did to the checkpoints: threads whose state went, threads cut to their latest state."""

    threads_deleted: int = 0
    threads_trimmed: int = 0
    checkpoints_deleted: int = 0


def has_checkpoints(conn: psycopg.Connection) -> bool:
    """Whether the checkpointer's tables exist (they are made on the first chat or ask)."""
    with conn.transaction():
        row = conn.execute("SELECT to_regclass('checkpoints') IS NOT NULL").fetchone()
    return bool(row and row[0])


def prune_checkpoints(conn: psycopg.Connection, touched: set[str]) -> CheckpointPrune:
    """Delete the checkpoints of threads with no turn left; trim the ``touched`` threads that keep turns.

    What ``conn`` has done so far is committed first: LangGraph's prune runs transactions of its own,
    at their own isolation level, which needs the connection in autocommit mode meanwhile.
    """
    conn.commit()
    autocommit, conn.autocommit = conn.autocommit, True
    try:
        return _prune(conn, touched)
    finally:
        conn.autocommit = autocommit


def _prune(conn: psycopg.Connection, touched: set[str]) -> CheckpointPrune:
    report = CheckpointPrune()
    if not has_checkpoints(conn):
        return report
    saver = PostgresSaver(conn)  # type: ignore[arg-type]
    before = _count(conn)
    orphans = _threads_without_turns(conn)
    kept = _kept_turns(conn, touched - orphans)
    stale = {thread for thread, turns in kept.items() if not _latest_is_kept(conn, thread, turns)}
    doomed = sorted(orphans | stale)
    if doomed:
        saver.prune(doomed, strategy="delete")
    trimmed = sorted(set(kept) - stale)
    if trimmed:
        saver.prune(trimmed, strategy="keep_latest")
        for thread in trimmed:
            _rewrite_history(conn, saver, thread, kept[thread])
    report.threads_deleted, report.threads_trimmed = len(doomed), len(trimmed)
    report.checkpoints_deleted = before - _count(conn)
    return report


def _count(conn: psycopg.Connection) -> int:
    with conn.transaction():
        row = conn.execute("SELECT count(*) FROM checkpoints").fetchone()
    return int(row[0]) if row else 0


def _threads_without_turns(conn: psycopg.Connection) -> set[str]:
    """Threads with checkpoints, blobs or writes but no turn: a thread's turn row is written before
    the graph runs, so these are threads whose turns are gone."""
    union = " UNION ".join(f"SELECT thread_id FROM {table}" for table in TABLES)
    with conn.transaction():
        rows = conn.execute(
            f"SELECT c.thread_id FROM ({union}) c"
            " WHERE NOT EXISTS (SELECT 1 FROM turns t WHERE t.thread_id = c.thread_id)"
        ).fetchall()
    return {thread for (thread,) in rows}


def _kept_turns(conn: psycopg.Connection, threads: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The remaining turns of each thread, oldest first."""
    if not threads:
        return {}
    with conn.transaction():
        rows = conn.execute(
            "SELECT thread_id, turn_id, question, answer, status, started_at FROM turns"
            " WHERE thread_id = ANY(%s) ORDER BY thread_id, started_at, turn_id",
            (sorted(threads),),
        ).fetchall()
    kept: dict[str, list[dict[str, Any]]] = {}
    for thread, turn_id, question, answer, status, started_at in rows:
        kept.setdefault(thread, []).append(
            {"turn_id": turn_id, "question": question, "answer": answer, "status": status, "started_at": started_at}
        )
    return kept


def _latest_is_kept(conn: psycopg.Connection, thread: str, turns: list[dict[str, Any]]) -> bool:
    """Whether the thread's latest checkpoint belongs to a turn it keeps.

    Checkpoints carry their turn's id (agent.core.turn passes it in the config, LangGraph stores it in
    the metadata); older ones are placed by time: after the first kept turn started.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT metadata->>'turn_id', checkpoint->>'ts' FROM checkpoints"
            " WHERE thread_id = %s AND checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1",
            (thread,),
        ).fetchone()
    if row is None:
        return True  # nothing to judge: keep_latest has nothing to do either
    turn_id, ts = row
    if turn_id:
        return turn_id in {t["turn_id"] for t in turns}
    return ts is not None and datetime.fromisoformat(ts) >= turns[0]["started_at"]


def _rewrite_history(conn: psycopg.Connection, saver: PostgresSaver, thread: str, turns: list[dict[str, Any]]) -> None:
    """Replace the latest checkpoint's history with the exchanges of the kept, finished turns."""
    history = [
        message
        for t in turns
        if t["status"] == "done" and t["answer"]
        for message in ({"role": "user", "content": t["question"]}, {"role": "assistant", "content": t["answer"]})
    ]
    kind, blob = saver.serde.dumps_typed(history)
    with conn.transaction():
        conn.execute(
            "UPDATE checkpoint_blobs b SET type = %s, blob = %s FROM checkpoints c"
            " WHERE c.thread_id = %s AND c.checkpoint_ns = '' AND b.thread_id = c.thread_id"
            " AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = %s"
            " AND b.version = c.checkpoint->'channel_versions'->>%s",
            (kind, blob, thread, HISTORY_CHANNEL, HISTORY_CHANNEL),
        )
