"""`ladder chat`: the Gradio chat, and the `ask` / `search_knowledge` tools for other agents (MCP).

Offline by construction: analytics and Hugging Face telemetry are switched off before Gradio is
imported (agent/__init__.py), the theme uses fonts bundled with Gradio, there is no share link and no share button.
Every UI event is private (not an API endpoint, not an MCP tool); only `ask` and
`search_knowledge` are published, as plain typed functions whose docstrings become the schema.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from agent.chat.auth import BearerTokens, bearer_token
from agent.chat.login import BrowserLogins, LoginService, SessionGuard, pin_forwarded_trust
from agent.chat.view import TurnView, citation_messages, turn_id_of
from agent.cli.common import user_errors
from agent.core.context import SWITCHES
from agent.core.turn import Agent, TurnRequest
from agent.records.access import AccessError, check_read, check_thread, check_turn, prepare_write, readable_collections
from agent.records.turns import FeedbackError, add_feedback, set_feedback_comment, thread_turns
from agent.records.users import User, get_user, user_for_token
from tools.sql.sources import registered_sources

log = logging.getLogger(__name__)
NO_DATABASE = "(none)"
STORAGE_KEY = "ladder.chat.v1"
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


def _text(message: dict[str, Any]) -> str:
    """A chat message's text: Gradio hands history back with content as a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _error_message(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f"**Error:** {text}"}


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
        if kb is None:
            raise AccessError("log in first")
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
        if kb is None:
            return {"thread": thread}, history
        try:
            user = self.user(request)
            with kb.db.connection() as conn:
                try:
                    check_thread(conn, thread, user)
                except AccessError:
                    return {"thread": uuid.uuid4().hex}, []
                turns = thread_turns(conn, thread)
            for turn in turns:
                history.append({"role": "user", "content": turn["question"]})
                answer = turn["answer"] or (f"**Error:** {turn['error']}" if turn["error"] else "(no answer)")
                history.append({"role": "assistant", "content": answer, "metadata": {"id": f"turn:{turn['turn_id']}"}})
                cited = turn["citations"] or []
                if cited:
                    passages = kb.passages([c["chunk_id"] for c in cited])
                    history += citation_messages(cited, passages, turn["turn_id"][:8])
        except user_errors() as exc:  # the database away at page load: say so, keep the thread id
            return {"thread": thread}, [_error_message(f"{exc}. Reload the page to see this conversation.")]
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
        history.append({"role": "user", "content": question})
        yield history, "", state
        try:
            user = self.user(request)
        except AccessError as exc:
            yield [*history, _error_message(str(exc))], "", state
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
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = self.agent.ask(turn, on_event=events.put)
            except user_errors() as exc:
                outcome["error"] = str(exc)
            except Exception as exc:  # never a stack trace in the chat; the log keeps it
                log.exception("turn failed")
                outcome["error"] = f"the turn failed unexpectedly ({type(exc).__name__}); see the server log"

        worker = threading.Thread(target=run, name="ladder-turn", daemon=True)
        worker.start()
        view = TurnView()
        last = 0.0
        while worker.is_alive() or not events.empty():
            try:
                view.add(events.get(timeout=0.05))
            except queue.Empty:
                continue
            if time.perf_counter() - last >= YIELD_EVERY_S:
                last = time.perf_counter()
                yield history + view.messages(), "", state
        worker.join()
        if "error" in outcome:
            yield history + view.messages() + [_error_message(outcome["error"])], "", state
            return
        result = outcome["result"]
        passages = []
        if result.get("citations") and self.agent.kb is not None:
            passages = self.agent.kb.passages([c["chunk_id"] for c in result["citations"]])
        yield history + view.finish(result, passages), "", state

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
        question = evt.value if isinstance(evt.value, str) else _text({"content": evt.value})
        yield from self.respond(question, history[: evt.index], state, collection, database, switches, request)

    def undo(self, history: list[dict[str, Any]], evt: gr.UndoData) -> tuple[list[dict[str, Any]], str]:
        """Take the last question back into the box (the logged turn stays in the log)."""
        question = evt.value if isinstance(evt.value, str) else _text({"content": evt.value})
        return history[: evt.index], question

    # -- feedback ----------------------------------------------------------------------------------

    def like(
        self, history: list[dict[str, Any]], evt: gr.LikeData, request: gr.Request | None = None
    ) -> tuple[Any, int | None, str]:
        """Store a thumbs up or down on the turn; a thumbs-down opens the comment box."""
        turn_id = turn_id_of(history, int(evt.index) if not isinstance(evt.index, list | tuple) else evt.index[0])
        if turn_id is None or evt.liked == "" or self.agent.kb is None:
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
        if feedback_id is None or self.agent.kb is None:
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
        if kb is None or (self.services.login and request is None):
            return [default]
        with kb.db.connection() as conn:
            readable = readable_collections(conn, self.user(request))
        names = [c["name"] for c in kb.collections() if c["name"] in readable]
        return names if default in names else [default, *names]

    def refresh_collections(self, request: gr.Request | None = None) -> Any:
        return gr.update(choices=self.collections(request))

    def databases(self) -> list[str]:
        if self.agent.kb is None:
            return [NO_DATABASE]
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
        import re

        from knowledge.uploads import ingest_uploads

        if not files:
            return "Choose files to add first."
        if self.agent.kb is None:
            return "**Error:** no knowledge base"
        settings = self.services.settings
        collection = collection or settings.collection
        try:  # a user writes only to their own collections (a new one becomes theirs, private)
            with self.agent.kb.db.connection() as conn:
                prepare_write(conn, collection, self.user(request), self.agent.kb.embedder)
        except user_errors() as exc:
            return f"**Error:** {exc}"
        progress(0, desc=f"Ingesting {len(files)} file(s)")
        try:
            report, staged = ingest_uploads(
                self.agent.kb, files, collection, Path(settings.data_dir), int(settings.ui_max_upload_mb * 1_000_000)
            )
        except user_errors() as exc:
            return f"**Error:** {exc}"
        except OSError as exc:  # the uploads folder cannot be made
            return f"**Error:** cannot store uploads: {exc.strerror or exc}"
        progress(1, desc="done")

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


def build_app(services: ChatServices) -> gr.Blocks:
    """The chat page; `ask` and `search_knowledge` are its only public API (and MCP tools)."""
    handlers = ChatHandlers(services)
    settings = services.settings
    default_switches = [name for name in SWITCHES if getattr(settings, f"use_{name}")]
    private = {"api_visibility": "private"}

    with gr.Blocks(title="Ladder", analytics_enabled=False) as app:
        browser = gr.BrowserState(
            {"thread": None}, storage_key=STORAGE_KEY, secret=browser_secret(Path(settings.data_dir))
        )
        feedback_id = gr.State(None)
        with gr.Row():
            with gr.Column(scale=4):
                chat = gr.Chatbot(
                    elem_id="chat",
                    height="72vh",
                    buttons=["copy", "copy_all"],
                    placeholder="Ask about your documents, or pick a database and ask about its data.",
                )
                with gr.Row():
                    box = gr.Textbox(
                        elem_id="msg", show_label=False, placeholder="Your question", scale=8, autofocus=True
                    )
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=1)
                    new = gr.Button("New chat", elem_id="new_chat", scale=1)
                with gr.Group(visible=False, elem_id="feedback_box") as feedback_box:
                    comment_text = gr.Textbox(label="What was wrong? (optional)", elem_id="feedback_text")
                    comment_send = gr.Button("Send feedback", elem_id="feedback_send")
                notice = gr.Markdown(elem_id="notice")
            with gr.Column(scale=1, min_width=260):
                gr.Markdown(f"**Model:** `{services.model_name}`", elem_id="model_name")
                collection = gr.Dropdown(
                    handlers.collections(), value=settings.collection, label="Collection", allow_custom_value=True
                )
                database = gr.Dropdown(
                    handlers.databases(), value=services.database or NO_DATABASE, label="Database", elem_id="database"
                )
                switches = gr.CheckboxGroup(list(SWITCHES), value=default_switches, label="Techniques")
                files = gr.File(label="Add documents to the collection", file_count="multiple", type="filepath")
                ingest_button = gr.Button("Ingest", elem_id="ingest")
                ingest_report = gr.Markdown(elem_id="ingest_report")

        turn_inputs = [box, chat, browser, collection, database, switches]
        turn_outputs = [chat, box, browser]
        box.submit(handlers.respond, turn_inputs, turn_outputs, **private)
        send.click(handlers.respond, turn_inputs, turn_outputs, **private)
        chat.retry(handlers.retry, [chat, browser, collection, database, switches], turn_outputs, **private)
        chat.undo(handlers.undo, [chat], [chat, box], **private)
        chat.like(handlers.like, [chat], [feedback_box, feedback_id, notice], **private)
        chat.clear(handlers.new_chat, None, [browser, chat, box], **private)
        new.click(handlers.new_chat, None, [browser, chat, box], **private)
        comment_send.click(
            handlers.comment, [comment_text, feedback_id], [feedback_box, comment_text, feedback_id, notice], **private
        )
        ingest_button.click(handlers.ingest, [files, collection], [ingest_report], **private)
        app.load(handlers.restore, [browser], [browser, chat], **private)
        app.load(handlers.refresh_collections, None, [collection], **private)
        app.load(lambda: gr.update(choices=handlers.databases()), None, [database], **private)

        def ask(question: str, collection: str = "", thread_id: str = "", request: gr.Request | None = None) -> str:
            """Ask Ladder a question about the team's documents and get a checked answer with citations.

            Args:
                question: The question, in plain words.
                collection: The collection to search; empty for the configured default.
                thread_id: Continue this conversation; empty to start a new one.
            Returns:
                JSON: the answer, its citations (number, doc_id, chunk_id), the fact-check verdicts, the thread id.
            """
            try:
                turn = TurnRequest(
                    question,
                    collection or settings.collection,
                    thread_id or None,
                    face="mcp",
                    user=handlers.user(request),
                )
                result = services.agent.ask(turn)
            except user_errors() as exc:
                return json.dumps({"error": str(exc)})
            keys = ("answer", "citations", "fact_check", "thread_id", "turn_id", "error")
            # JSON text, not a dict: Gradio's MCP server would send a dict as Python's repr
            return json.dumps({k: result[k] for k in keys if k in result}, ensure_ascii=False)

        def search_knowledge(query: str, k: int = 5, collection: str = "", request: gr.Request | None = None) -> str:
            """Search the team's documents and return the best passages, best first.

            Args:
                query: What to look for, in plain words.
                k: How many passages (1 to 20).
                collection: The collection to search; empty for the configured default.
            Returns:
                JSON: a list of passages with chunk_id, doc_id, title, text and score.
            """
            kb = services.agent.kb
            if kb is None:
                return json.dumps({"error": "no knowledge base"})
            name = collection or settings.collection
            try:
                with kb.db.connection() as conn:
                    check_read(conn, name, handlers.user(request))
                hits = kb.search(query, name, k=max(1, min(int(k), 20)))
            except user_errors() as exc:
                return json.dumps({"error": str(exc)})
            passages = [
                {"chunk_id": h.chunk_id, "doc_id": h.doc_id, "title": h.title, "text": h.text, "score": h.score}
                for h in hits
            ]
            return json.dumps(passages, ensure_ascii=False)

        # Not queued: Gradio's MCP server would call queued tools through a loopback client that
        # carries no login, and a direct call hands the tool the caller's own request.
        gr.api(ask, api_name="ask", queue=False)
        gr.api(search_knowledge, api_name="search_knowledge", queue=False)
    app.queue(default_concurrency_limit=settings.ui_concurrency)
    return app


def launch(
    app: gr.Blocks,
    *,
    host: str,
    port: int,
    services: ChatServices,
    mcp: bool = True,
    max_upload_mb: float = 50.0,
    block: bool = True,
) -> Any:
    """Serve the chat (no share link, no analytics). With users, the browser logs in against the
    users table and MCP/API callers send a bearer token (checked by BearerTokens, also on MCP)."""
    kb = services.agent.kb

    def resolve(token: str) -> str | None:
        if kb is None:
            return None
        with kb.db.connection() as conn:
            found = user_for_token(conn, token)
        return found.name if found else None

    # The login is checked off the event loop and limited per address and name (agent/chat/login.py);
    # SessionGuard, outside BearerTokens, ends sessions whose user changed password or is gone.
    logins = BrowserLogins(LoginService(kb.db if kb is not None else None))
    middleware = [Middleware(BearerTokens, resolve=resolve, login_required=services.login)]
    if services.login:
        middleware.insert(0, Middleware(SessionGuard, logins=logins))
    pin_forwarded_trust()
    return app.launch(
        server_name=host,
        server_port=port,
        auth=logins.auth if services.login else None,
        auth_message="Ladder: log in to chat with your documents" if services.login else None,
        app_kwargs={"middleware": middleware},
        share=False,
        mcp_server=mcp,
        show_error=False,
        max_file_size=f"{int(max_upload_mb)}mb",
        prevent_thread_lock=not block,
        quiet=True,
        run_history=False,
        footer_links=["api"],
        theme=gr.themes.Default(),
        ssr_mode=False,
    )
