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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from agent.chat.auth import bearer_token
from agent.chat.models import ModelChoices
from agent.chat.view import (
    TurnView,
    answer_message,
    citation_messages,
    error_message,
    logged_steps,
    question_of,
    queued_message,
    turn_id_of,
    user_message,
)
from agent.chat.waiting import MAX_WAITING, Asked, SessionQuestions
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
    models: ModelChoices | None = None  # the picker's models (the embedded one and its adapters)

    @property
    def settings(self) -> Any:
        return self.agent.settings

    def model_names(self) -> list[str]:
        return self.models.names() if self.models else [self.model_name]

    def agent_for(self, model: str | None) -> Agent:
        """The agent that answers on the picked model (the chat's own for none)."""
        if self.models is None or not model or model == self.model_name:
            return self.agent
        return self.models.agent(model)


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

    def stream(self, watch: Callable[[], object] | None = None) -> Iterator[list[dict[str, Any]]]:
        """The turn's messages so far, again and again until it ends; the last one is the finished turn.

        An update goes out at most every YIELD_EVERY_S and at most that long after a change, so a step
        that starts right after another ends is on screen for as long as it runs. ``watch``: a value
        that changes when the page around the turn does (questions queued behind it).
        """
        worker = threading.Thread(target=self._run, name="ladder-turn", daemon=True)
        worker.start()
        view = TurnView()
        last, changed, seen = 0.0, False, watch() if watch else None
        while worker.is_alive() or not self.events.empty():
            try:
                view.add(self.events.get(timeout=YIELD_EVERY_S))
                changed = True
            except queue.Empty:
                pass
            if watch is not None and (now := watch()) != seen:
                seen, changed = now, True
            if changed and time.perf_counter() - last >= YIELD_EVERY_S:
                last, changed = time.perf_counter(), False
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
        self.waiting = SessionQuestions()

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
                history += logged_steps(turn.get("events") or [], turn["turn_id"][:8])
                answer = turn["answer"] or (f"**Error:** {turn['error']}" if turn["error"] else _no_answer(turn))
                history.append(answer_message(answer, turn["turn_id"], turn.get("fact_check") or []))
                cited = [Citation.from_dict(c) for c in turn["citations"] or []]
                if cited:
                    passages = kb.passages([c.chunk_id for c in cited])
                    history += citation_messages(cited, passages, turn["turn_id"][:8], turn.get("fact_check") or [])
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
        model: str = "",
    ) -> Iterator[tuple[list[dict[str, Any]], str, dict[str, Any]]]:
        """Stream one turn: the question, then each step and the answer as they happen."""
        state = _thread_state(state)
        question = (message or "").strip()
        if not question:
            yield list(history or []), "", state
            return
        asked = self.asked(question, collection, database, switches, model)
        for shown in self._turn(asked, history or [], state, request):
            yield shown, "", state

    def asked(self, question: str, collection: str, database: str, switches: list[str], model: str = "") -> Asked:
        """A question with the side panel's choices (the default collection when none is picked)."""
        return Asked(
            question,
            collection or self.services.settings.collection,
            None if database in ("", NO_DATABASE, None) else database,
            {name: name in (switches or []) for name in SWITCHES},
            model or None,
        )

    def _turn(
        self,
        asked: Asked,
        history: list[dict[str, Any]],
        state: dict[str, Any],
        request: gr.Request | None,
        watch: Callable[[], object] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """The chat while one question is answered: the history, the question, its steps and answer."""
        history = [*history, user_message(asked.question)]
        yield history
        try:
            user = self.user(request)
        except AccessError as exc:
            yield [*history, error_message(str(exc))]
            return
        turn = TurnRequest(
            asked.question,
            asked.collection,
            state["thread"],
            asked.switches,
            asked.database,
            face="ui",
            user=user,
        )
        try:
            agent = self.services.agent_for(asked.model)
        except ValueError as exc:
            yield [*history, error_message(str(exc))]
            return
        for messages in TurnRun(agent, turn).stream(watch):
            yield history + messages

    # -- questions asked while a turn runs ---------------------------------------------------------

    def enqueue(
        self,
        message: str,
        collection: str,
        database: str,
        switches: list[str],
        request: gr.Request | None = None,
        model: str = "",
    ) -> tuple[str, str]:
        """Take a question from the box (the box and a notice come back): it is asked at once, or
        after the session's running turn; an empty question or a full queue is said, the text kept."""
        question = (message or "").strip()
        if not question:
            return message or "", "Type a question first."
        if not self.waiting.add(session_key(request), self.asked(question, collection, database, switches, model)):
            return message, (
                f"{MAX_WAITING} questions are already waiting for the answer above: "
                "send this one when one of them has been answered."
            )
        return "", ""

    def run_waiting(
        self, history: list[dict[str, Any]], state: dict[str, Any] | None, request: gr.Request | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """Ask the session's waiting questions one after another, each shown as queued until its turn;
        nothing changes when another call already asks them (that one will ask the new question too)."""
        key = session_key(request)
        if not self.waiting.claim(key):
            yield gr.skip(), gr.skip()
            return
        state = _thread_state(state)
        chat = list(history or [])

        def queued() -> list[dict[str, Any]]:
            return [queued_message(asked.question) for asked in self.waiting.waiting(key)]

        try:
            while (asked := self.waiting.next(key)) is not None:
                for shown in self._turn(asked, chat, state, request, lambda: self.waiting.changes(key)):
                    yield [*shown, *queued()], state
                chat = shown
        finally:
            self.waiting.release(key)

    def retry(
        self,
        history: list[dict[str, Any]],
        state: dict[str, Any] | None,
        collection: str,
        database: str,
        switches: list[str],
        evt: gr.RetryData,
        request: gr.Request | None = None,
        model: str = "",
    ) -> Iterator[tuple[Any, Any]]:
        """Ask the last question again (a new turn in the same thread), ahead of any waiting question."""
        asked = self.asked(question_of(evt.value), collection, database, switches, model)
        if not self.waiting.add(session_key(request), asked, first=True):
            yield gr.skip(), gr.skip()
            return
        yield from self.run_waiting(history[: evt.index], state, request)

    def forget(self, request: gr.Request | None = None) -> None:
        """A page closed: its waiting questions go."""
        self.waiting.forget(session_key(request))

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

    def restore_choices(self, saved: Any, request: gr.Request | None = None) -> tuple[Any, ...]:
        """The side panel as this browser left it: the collection, the database and each switch, where the
        saved choice is still one this user may pick (the browser's copy is data, not trust), else the default."""
        saved = saved if isinstance(saved, dict) else {}
        settings = self.services.settings
        collections, databases = self.collections(request), self.databases()
        collection = saved.get("collection") if saved.get("collection") in collections else settings.collection
        database = saved.get("database") if saved.get("database") in databases else None
        database = database or (self.services.database if self.services.database in databases else NO_DATABASE)
        switches = saved.get("switches") if isinstance(saved.get("switches"), dict) else {}
        values = [
            switches[name] if isinstance(switches.get(name), bool) else bool(getattr(settings, f"use_{name}"))
            for name in SWITCHES
        ]
        return gr.update(choices=collections, value=collection), gr.update(choices=databases, value=database), *values

    @staticmethod
    def save_choices(collection: str, database: str, switches: list[str]) -> dict[str, Any]:
        """What the browser keeps of the side panel (restore_choices checks it when the page opens again)."""
        return {
            "collection": collection,
            "database": database,
            "switches": {name: name in (switches or []) for name in SWITCHES},
        }

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

    def offer_data(self, files: list[str] | None) -> tuple[dict[str, Any], str]:
        """On a drop: show "Load as data" when spreadsheets are among the files, and say what each button does."""
        from agent.chat.spreadsheets import offer

        hint = offer(files)
        return gr.update(visible=bool(hint)), hint

    def load_data(self, files: list[str] | None, request: gr.Request | None = None) -> tuple[str, dict[str, Any]]:
        """Load the dropped spreadsheets as databases (agent/chat/spreadsheets.py) and pick the last one."""
        from agent.chat.spreadsheets import LOGIN_REFUSAL, database_choice, load_as_data

        if self.services.login:
            return LOGIN_REFUSAL, gr.update()
        max_bytes = int(self.services.settings.ui_max_upload_mb * 1_000_000)
        report, names = load_as_data(self.agent.kb.db, files, max_bytes)
        return report, database_choice(names, self.databases())


def session_key(request: gr.Request | None) -> str:
    """The browser page a call comes from (one page, one queue of questions)."""
    return str(getattr(request, "session_hash", None) or "local")


def _no_answer(turn: dict[str, Any]) -> str:
    if turn.get("status") == "running":
        return "(still being answered when this page opened: reload to see the answer)"
    return "(no answer)"


def _thread_state(state: dict[str, Any] | None) -> dict[str, Any]:
    return {"thread": (state or {}).get("thread") or uuid.uuid4().hex}


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
