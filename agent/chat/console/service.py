"""What the console's pages show and do, as plain data: every public method first checks, on the
server and against the database, that the caller is an operator (``guard``), whatever the page shows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gradio as gr

from agent.records.access import AccessError
from agent.records.evalsets import EvalSetStoreError, list_sets
from agent.records.review import accept, dismiss, review_queue
from agent.records.roles import is_operator, require_operator
from agent.records.turn_detail import TurnFilter, find_turns, render_turn, turn_detail
from agent.records.turns import parse_age
from agent.records.users import User
from knowledge.store import list_collections

if TYPE_CHECKING:
    from agent.chat.handlers import ChatHandlers

TURN_COLUMNS = ["turn", "started", "face", "user", "collection", "status", "feedback", "fact-check", "question"]
QUEUE_COLUMNS = ["turn", "started", "why", "user", "question", "answer", "comment"]


def _short(text: Any, n: int = 120) -> str:
    text = str(text or "")
    return text if len(text) <= n else text[: n - 1] + "…"


def _each_chunk_once(passages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The passages in order, a chunk that several sub-questions retrieved only where it came first."""
    first: dict[int, dict[str, Any]] = {}
    for p in passages:
        first.setdefault(int(p["chunk_id"]), p)
    return list(first.values())


class ConsoleService:
    """The console's server side, bound to the chat's handlers (for the database and who is asking)."""

    def __init__(self, handlers: ChatHandlers) -> None:
        self.handlers = handlers
        self.db = handlers.agent.kb.db

    def guard(self, request: gr.Request | None) -> User | None:
        """The operator making the request; gr.Error for anyone else (every console handler calls this)."""
        try:
            user = self.handlers.user(request)
            with self.db.connection() as conn:
                require_operator(conn, user)
        except AccessError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return user

    def allowed(self, request: gr.Request | None) -> bool:
        """Whether the request's user is an operator (what the page shows; the handlers check again)."""
        try:
            user = self.handlers.user(request)
            with self.db.connection() as conn:
                return is_operator(conn, user)
        except AccessError:
            return False

    # -- turns ---------------------------------------------------------------------------------------

    def turns(self, request: gr.Request | None, **filters: Any) -> list[list[Any]]:
        """The turns table under the filters (``since``/``until`` as ages like 7d; empty: any)."""
        self.guard(request)
        now, since_text, until_text = datetime.now(UTC), filters.pop("since", ""), filters.pop("until", "")
        try:
            since = now - parse_age(since_text) if since_text else None
            until = now - parse_age(until_text) if until_text else None
        except ValueError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        chosen = {k: (v if v not in ("", "any") else None) for k, v in filters.items()}
        with self.db.connection() as conn:
            rows = find_turns(conn, TurnFilter(since=since, until=until, **chosen))
        return [
            [r["turn_id"], f"{r['started_at']:%Y-%m-%d %H:%M:%S}", r["face"], r["user"] or "(operator)",
             r["collection"] or "", r["status"], r["feedback"] or "", "failed" if r["unsupported"] else "",
             _short(r["question"])]
            for r in rows
        ]  # fmt: skip

    def turn_text(self, request: gr.Request | None, turn_id: str) -> str:
        """One turn whole, as `ladder logs show` prints it."""
        self.guard(request)
        with self.db.connection() as conn:
            turn = turn_detail(conn, (turn_id or "").strip())
        return render_turn(turn) if turn else f"no turn {turn_id!r}"

    # -- the review queue ----------------------------------------------------------------------------

    def queue(self, request: gr.Request | None) -> list[list[Any]]:
        self.guard(request)
        with self.db.connection() as conn:
            rows = review_queue(conn)
        return [
            [r["turn_id"], f"{r['started_at']:%Y-%m-%d %H:%M}", ", ".join(r["reasons"]), r["user"] or "(operator)",
             _short(r["question"]), _short(r["answer"]), _short(r["comment"])]
            for r in rows
        ]  # fmt: skip

    def review_item(self, request: gr.Request | None, turn_id: str) -> dict[str, Any]:
        """What the reviewer edits: the question, the answer (or the user's correction) and the passages."""
        self.guard(request)
        with self.db.connection() as conn:
            turn = turn_detail(conn, (turn_id or "").strip())
        if turn is None:
            raise gr.Error(f"no turn {turn_id!r}", print_exception=False)
        corrected = next((f["corrected_answer"] for f in reversed(turn["feedback"]) if f["corrected_answer"]), None)
        passages = [
            (f"#{p.get('rank')} ({float(p.get('score') or 0):.3f}) {p.get('doc_id')}: {_short(p.get('text'), 160)}",
             int(p["chunk_id"]))
            for p in _each_chunk_once(turn["passages"])
        ]  # fmt: skip
        cited = [int(c["chunk_id"]) for c in turn["citations"] if c.get("chunk_id") is not None]
        comments = "; ".join(f"{f['rating']}: {f['comment']}" for f in turn["feedback"] if f["comment"])
        return {
            "question": turn["question"],
            "answer": turn["answer"] or "",
            "reference": corrected or turn["answer"] or "",
            "passages": passages,
            "cited": [c for c in dict.fromkeys(cited) if c in {v for _, v in passages}],
            "comments": comments,
        }

    def accept(
        self, request: gr.Request | None, turn_id: str, set_name: str, reference: str, relevant: list[int]
    ) -> str:
        user = self.guard(request)
        try:
            with self.db.connection() as conn:
                version = accept(conn, turn_id, set_name.strip(), reference, [int(r) for r in relevant or []],
                                 reviewer=user.name if user else None)  # fmt: skip
        except EvalSetStoreError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return f"Accepted into **{set_name.strip()}**, now version {version}."

    def dismiss(self, request: gr.Request | None, turn_id: str, reason: str) -> str:
        user = self.guard(request)
        try:
            with self.db.connection() as conn:
                dismiss(conn, turn_id, reason, reviewer=user.name if user else None)
        except EvalSetStoreError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return "Dismissed."

    def sets(self, request: gr.Request | None) -> list[list[Any]]:
        self.guard(request)
        with self.db.connection() as conn:
            return [[s["name"], s["version"], s["items"], f"{s['updated_at']:%Y-%m-%d %H:%M}"] for s in list_sets(conn)]

    # -- knowledge -----------------------------------------------------------------------------------

    def collections(self, request: gr.Request | None) -> list[list[Any]]:
        self.guard(request)
        with self.db.connection() as conn:
            rows = list_collections(conn)
        return [[c["name"], c["documents"], c["chunks"], c["embedding_model"], c["description"] or ""] for c in rows]

    def documents(self, request: gr.Request | None, collection: str) -> list[list[Any]]:
        self.guard(request)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT d.doc_id, d.title, d.source, d.n_chunks, d.ingested_at FROM documents d"
                " JOIN collections c ON c.id = d.collection_id WHERE c.name = %s"
                " ORDER BY d.source, d.doc_id LIMIT 1000",
                ((collection or "").strip(),),
            ).fetchall()
        return [[i, t, s, n, f"{at:%Y-%m-%d %H:%M}"] for i, t, s, n, at in rows]

    def ingest_runs(self, request: gr.Request | None) -> tuple[list[list[Any]], list[list[Any]]]:
        """The last 50 ingest runs, and every file they skipped with its reason."""
        self.guard(request)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT r.id, c.name, r.status, r.started_at, r.files_seen, r.documents_added, r.documents_updated,"
                " r.chunks_written, r.skipped, r.error FROM ingest_runs r JOIN collections c ON c.id = r.collection_id"
                " ORDER BY r.id DESC LIMIT 50"
            ).fetchall()
        runs = [
            [i, c, s, f"{at:%Y-%m-%d %H:%M}", f, a, u, k, len(sk or []), e or ""]
            for i, c, s, at, f, a, u, k, sk, e in rows
        ]
        skipped = [
            [i, c, str(item.get("path", "")), str(item.get("reason", ""))]
            for i, c, *_, sk, _e in rows
            for item in (sk or [])
            if isinstance(item, dict)
        ]
        return runs, skipped
