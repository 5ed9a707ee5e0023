"""The chat's event handlers: a turn streamed into messages, feedback, the side panel, uploads.

Each handler checks the user on the server (the browser's history and choices are data, not
trust); errors reach the chat as messages, never as a stack trace.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from agent.chat.auth import bearer_token
from agent.chat.view import (
    TurnView,
    answer_message,
    citation_messages,
    error_message,
    question_of,
    turn_id_of,
    user_message,
)
from agent.core.context import SWITCHES
from agent.core.events import TurnEvent
from agent.core.results import Citation, TurnResult
from agent.core.turn import Agent, TurnRequest
from agent.records.access import AccessError, check_thread, check_turn, prepare_write, readable_collections
from agent.records.turns import FeedbackError, add_feedback, set_feedback_comment, thread_turns
from agent.records.users import User, get_user, user_for_token
from knowledge.errors import user_errors
from tools.sql.sources import registered_sources

log = logging.getLogger(__name__)
NO_DATABASE = "(none)"
YIELD_EVERY_S = 0.05  # at most ~20 updates a second while tokens stream


@dataclass
class ChatServices:
    """What the chat needs: the agent (with its knowledge base and settings) and the model's name."""

    agent: Agent
    model_name: str
    database: str | None = None  # picked when the page opens
    login: bool = False  # users exist: the chat asks for a login, MCP/API callers for a bearer token

    @property
    def settings(self) -> Any:
        return self.agent.settings


def browser_secret(data_dir: Path) -> str:
    """A secret that keeps a browser's thread id readable across server restarts (kept in the data folder)."""
    path = data_dir / "ui-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        return value


class TurnRun:
    """One turn on a worker thread, its events turned into chat messages as they arrive.

    The graph runs synchronously, so it gets a thread of its own; the generator that Gradio
    iterates only reads the event queue, at most ~20 updates a second.
    """

    def __init__(self, agent: Agent, turn: TurnRequest) -> None:
        self.agent = agent
        self.turn = turn
        self.events: queue.Queue[TurnEvent] = queue.Queue()
        self.result: TurnResult | None = None
        self.error: str | None = None

    def _run(self) -> None:
        try:
            self.result = self.agent.ask(self.turn, on_event=self.events.put)
        except user_errors() as exc:
            self.error = str(exc)
        except Exception as exc:  # never a stack trace in the chat; the log keeps it
            log.exception("turn failed")
            self.error = f"the turn failed unexpectedly ({type(exc).__name__}); see the server log"

    def stream(self) -> Iterator[list[dict[str, Any]]]:
        """The turn's messages so far, again and again until it ends; the last one is the finished turn."""
        worker = threading.Thread(target=self._run, name="ladder-turn", daemon=True)
        worker.start()
        view = TurnView()
        last = 0.0
        while worker.is_alive() or not self.events.empty():
            try:
                view.add(self.events.get(timeout=0.05))
            except queue.Empty:
                continue
            if time.perf_counter() - last >= YIELD_EVERY_S:
                last = time.perf_counter()
                yield view.messages()
        worker.join()
        if self.result is None:
            yield [*view.messages(), error_message(self.error or "the turn ended without an answer")]
            return
        yield view.finish(self.result)


class ChatHandlers:
    """The event handlers, bound to one agent."""

    def __init__(self, services: ChatServices) -> None:
        self.services = services
        self.agent = services.agent

    # -- threads -----------------------------------------------------------------------------------

    def user(self, request: gr.Request | None) -> User | None:
        """The logged-in user of a request; None (the local operator) when logins are off."""
        if not self.services.login:
            return None
        kb = self.agent.kb
        name = getattr(request, "username", None)
        with kb.db.connection() as conn:
            if not name:  # MCP's direct calls carry the caller's token, not a session
                return self._token_user(conn, request)
            found = get_user(conn, name)
        if found is None:
            raise AccessError(f"there is no user {name!r} any more")
        return found

    @staticmethod
    def _token_user(conn: Any, request: gr.Request | None) -> User:
        headers = getattr(request, "headers", None) or {}
        token = bearer_token(str(headers.get("authorization", "")))
        found = user_for_token(conn, token) if token is not None else None
        if found is None:
            raise AccessError("log in first, or send a valid bearer token")
        return found

    def restore(
        self, state: dict[str, Any] | None, request: gr.Request | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The browser's thread (a new one the first time, or when it is not this user's) and its turns."""
        thread = (state or {}).get("thread") or uuid.uuid4().hex
        history: list[dict[str, Any]] = []
        kb = self.agent.kb
        try:
            user = self.user(request)
            with kb.db.connection() as conn:
                try:
                    check_thread(conn, thread, user)
                except AccessError:
                    return {"thread": uuid.uuid4().hex}, []
                turns = thread_turns(conn, thread)
            for turn in turns:
                history.append(user_message(turn["question"]))
                answer = turn["answer"] or (f"**Error:** {turn['error']}" if turn["error"] else "(no answer)")
                history.append(answer_message(answer, turn["turn_id"]))
                cited = [Citation.from_dict(c) for c in turn["citations"] or []]
                if cited:
                    passages = kb.passages([c.chunk_id for c in cited])
                    history += citation_messages(cited, passages, turn["turn_id"][:8])
        except user_errors() as exc:  # the database away at page load: say so, keep the thread id
            return {"thread": thread}, [error_message(f"{exc}. Reload the page to see this conversation.")]
        return {"thread": thread}, history

    def new_chat(self) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        return {"thread": uuid.uuid4().hex}, [], ""

    # -- a turn ------------------------------------------------------------------------------------

    def respond(
        self,
        message: str,
        history: list[dict[str, Any]],
        state: dict[str, Any] | None,
        collection: str,
        database: str,
        switches: list[str],
        request: gr.Request | None = None,
    ) -> Iterator[tuple[list[dict[str, Any]], str, dict[str, Any]]]:
        """Stream one turn: the question, then each step and the answer as they happen."""
        state = {"thread": (state or {}).get("thread") or uuid.uuid4().hex}
        question = (message or "").strip()
        history = list(history or [])
        if not question:
            yield history, "", state
            return
        history.append(user_message(question))
        yield history, "", state
        try:
            user = self.user(request)
        except AccessError as exc:
            yield [*history, error_message(str(exc))], "", state
            return
        turn = TurnRequest(
            question,
            collection or self.services.settings.collection,
            state["thread"],
            {name: name in (switches or []) for name in SWITCHES},
            None if database in ("", NO_DATABASE) else database,
            face="ui",
            user=user,
        )
        turn_run = TurnRun(self.agent, turn)
        for messages in turn_run.stream():
            yield history + messages, "", state

    def retry(
        self,
        history: list[dict[str, Any]],
        state: dict[str, Any] | None,
        collection: str,
        database: str,
        switches: list[str],
        evt: gr.RetryData,
        request: gr.Request | None = None,
    ) -> Iterator[tuple[list[dict[str, Any]], str, dict[str, Any]]]:
        """Ask the last question again (a new turn in the same thread)."""
        question = question_of(evt.value)
        yield from self.respond(question, history[: evt.index], state, collection, database, switches, request)

    def undo(self, history: list[dict[str, Any]], evt: gr.UndoData) -> tuple[list[dict[str, Any]], str]:
        """Take the last question back into the box (the logged turn stays in the log)."""
        question = question_of(evt.value)
        return history[: evt.index], question

    # -- feedback ----------------------------------------------------------------------------------

    def like(
        self, history: list[dict[str, Any]], evt: gr.LikeData, request: gr.Request | None = None
    ) -> tuple[Any, int | None, str]:
        """Store a thumbs up or down on the turn; a thumbs-down opens the comment box."""
        turn_id = turn_id_of(history, int(evt.index) if not isinstance(evt.index, list | tuple) else evt.index[0])
        if turn_id is None or evt.liked == "":
            return gr.update(visible=False), None, ""
        rating = "up" if evt.liked is True else "down"
        try:
            # the history comes from the browser: the turn id in it is checked, not trusted
            with self.agent.kb.db.connection() as conn:
                check_turn(conn, turn_id, self.user(request))
                feedback_id = add_feedback(conn, turn_id, rating)  # type: ignore[arg-type]
        except (AccessError, FeedbackError) as exc:
            return gr.update(visible=False), None, f"**Error:** {exc}"
        if rating == "down":
            return gr.update(visible=True), feedback_id, ""
        return gr.update(visible=False), None, "Thanks for the feedback."

    def comment(self, text: str, feedback_id: int | None) -> tuple[Any, str, int | None, str]:
        if feedback_id is None:
            return gr.update(visible=False), "", None, ""
        try:
            with self.agent.kb.db.connection() as conn:
                set_feedback_comment(conn, feedback_id, text or "")
        except FeedbackError as exc:
            return gr.update(visible=True), text, feedback_id, f"**Error:** {exc}"
        return gr.update(visible=False), "", None, "Thanks: your comment is stored with the answer."

    # -- the side panel ----------------------------------------------------------------------------

    def collections(self, request: gr.Request | None = None) -> list[str]:
        """The collections this user may read (before a page is opened, with logins on: only the default)."""
        default = self.services.settings.collection
        kb = self.agent.kb
        if self.services.login and request is None:
            return [default]
        with kb.db.connection() as conn:
            readable = readable_collections(conn, self.user(request))
        names = [c["name"] for c in kb.collections() if c["name"] in readable]
        return names if default in names else [default, *names]

    def refresh_collections(self, request: gr.Request | None = None) -> Any:
        return gr.update(choices=self.collections(request))

    def databases(self) -> list[str]:
        with self.agent.kb.db.connection() as conn:
            return [NO_DATABASE, *registered_sources(conn, self.services.settings.data_sources)]

    def ingest(
        self,
        files: list[str] | None,
        collection: str,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> str:
        """Stage uploaded files under the data folder (clean names, size-checked) and ingest them into
        the chosen collection; a report of what was added, and of each file refused or skipped and why."""
        from knowledge.uploads import ingest_uploads

        if not files:
            return "Choose files to add first."
        settings = self.services.settings
        collection = collection or settings.collection
        kb = self.agent.kb
        try:  # a user writes only to their own collections (a new one becomes theirs, private)
            with kb.db.connection() as conn:
                prepare_write(conn, collection, self.user(request), kb.embedder)
            progress(0, desc=f"Ingesting {len(files)} file(s)")
            report, staged = ingest_uploads(
                kb, files, collection, Path(settings.data_dir), int(settings.ui_max_upload_mb * 1_000_000)
            )
        except user_errors() as exc:
            return f"**Error:** {exc}"
        except OSError as exc:  # the uploads folder cannot be made
            return f"**Error:** cannot store uploads: {exc.strerror or exc}"
        progress(1, desc="done")
        return upload_report(report, staged, collection)


def upload_report(report: Any, staged: Any, collection: str) -> str:
    """What an upload did, as Markdown: counts, renamed files, and each refused or skipped file with its reason."""

    def name(text: str) -> str:  # client-chosen names: a code span, so no Markdown (links, images) runs
        return "`" + text.removeprefix(f"{staged.folder}/").replace("`", "'") + "`"

    def plain(text: str) -> str:  # reasons may quote the input back
        return re.sub(r"([\\`*_\[\]()<>!#|~])", r"\\\1", text)

    if report is None:
        lines = [f"Nothing ingested into **{plain(collection)}**."]
    else:
        lines = [
            f"Ingested into **{plain(collection)}**: {report.documents_added} added, {report.documents_updated}"
            f" updated, {report.documents_unchanged} unchanged, {report.chunks_written} chunks written"
        ]
    renamed = [(given, path.name) for path, given in staged.files.items() if path.name != given]
    lines += [f"- saved {name(given)} as {name(saved)}" for given, saved in renamed]
    lines += [f"- refused {name(s.path)}: {plain(s.reason)}" for s in staged.refused]
    lines += [f"- skipped {name(s.path)}: {plain(s.reason)}" for s in (report.skipped if report else [])]
    return "\n".join(lines)
