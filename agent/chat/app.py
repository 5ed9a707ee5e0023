"""`ladder chat`: the Gradio chat page, and the `ask` / `search_knowledge` tools for other agents (MCP).

Offline by construction: analytics and Hugging Face telemetry are switched off before Gradio is
imported (agent/__init__.py), the theme uses fonts bundled with Gradio, there is no share link and no share button.
Every UI event is private (not an API endpoint, not an MCP tool); only `ask` and
`search_knowledge` are published (agent/chat/mcp.py). This module lays out the page and wires it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from agent.chat.auth import BearerTokens
from agent.chat.handlers import NO_DATABASE, ChatHandlers, ChatServices, browser_secret
from agent.chat.login import BrowserLogins, LoginService, SessionGuard, pin_forwarded_trust
from agent.chat.mcp import AgentTools
from agent.core.context import SWITCHES
from agent.records.users import user_for_token

__all__ = ["ChatServices", "build_app", "launch"]
STORAGE_KEY = "ladder.chat.v1"
PRIVATE = {"api_visibility": "private"}


@dataclass
class _Page:
    """The page's components, for wiring."""

    browser: Any
    feedback_id: Any
    chat: Any
    box: Any
    send: Any
    new: Any
    feedback_box: Any
    comment_text: Any
    comment_send: Any
    notice: Any
    collection: Any
    database: Any
    switches: Any
    files: Any
    ingest_button: Any
    ingest_report: Any


def build_app(services: ChatServices) -> gr.Blocks:
    """The chat page; `ask` and `search_knowledge` are its only public API (and MCP tools)."""
    handlers = ChatHandlers(services)
    with gr.Blocks(title="Ladder", analytics_enabled=False) as app:
        page = _layout(services, handlers)
        _wire(app, page, handlers)
        tools = AgentTools(handlers)
        # Not queued: Gradio's MCP server would call queued tools through a loopback client that
        # carries no login, and a direct call hands the tool the caller's own request.
        gr.api(tools.ask, api_name="ask", queue=False)
        gr.api(tools.search_knowledge, api_name="search_knowledge", queue=False)
    app.queue(default_concurrency_limit=services.settings.ui_concurrency)
    return app


def _layout(services: ChatServices, handlers: ChatHandlers) -> _Page:
    settings = services.settings
    browser = gr.BrowserState({"thread": None}, storage_key=STORAGE_KEY, secret=browser_secret(Path(settings.data_dir)))
    feedback_id = gr.State(None)
    with gr.Row():
        with gr.Column(scale=4):
            chat = gr.Chatbot(
                elem_id="chat",
                render_markdown=False,  # messages arrive as safe HTML (agent.chat.safe_html), never as Markdown
                height="72vh",
                buttons=["copy", "copy_all"],
                placeholder="Ask about your documents, or pick a database and ask about its data.",
            )
            with gr.Row():
                box = gr.Textbox(elem_id="msg", show_label=False, placeholder="Your question", scale=8, autofocus=True)
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
            default_switches = [name for name in SWITCHES if getattr(settings, f"use_{name}")]
            switches = gr.CheckboxGroup(list(SWITCHES), value=default_switches, label="Techniques")
            files = gr.File(label="Add documents to the collection", file_count="multiple", type="filepath")
            ingest_button = gr.Button("Ingest", elem_id="ingest")
            ingest_report = gr.Markdown(elem_id="ingest_report")
    return _Page(
        browser,
        feedback_id,
        chat,
        box,
        send,
        new,
        feedback_box,
        comment_text,
        comment_send,
        notice,
        collection,
        database,
        switches,
        files,
        ingest_button,
        ingest_report,
    )


def _wire(app: gr.Blocks, page: _Page, handlers: ChatHandlers) -> None:
    p = page
    turn_inputs = [p.box, p.chat, p.browser, p.collection, p.database, p.switches]
    turn_outputs = [p.chat, p.box, p.browser]
    p.box.submit(handlers.respond, turn_inputs, turn_outputs, **PRIVATE)
    p.send.click(handlers.respond, turn_inputs, turn_outputs, **PRIVATE)
    p.chat.retry(handlers.retry, [p.chat, p.browser, p.collection, p.database, p.switches], turn_outputs, **PRIVATE)
    p.chat.undo(handlers.undo, [p.chat], [p.chat, p.box], **PRIVATE)
    p.chat.like(handlers.like, [p.chat], [p.feedback_box, p.feedback_id, p.notice], **PRIVATE)
    p.chat.clear(handlers.new_chat, None, [p.browser, p.chat, p.box], **PRIVATE)
    p.new.click(handlers.new_chat, None, [p.browser, p.chat, p.box], **PRIVATE)
    p.comment_send.click(
        handlers.comment,
        [p.comment_text, p.feedback_id],
        [p.feedback_box, p.comment_text, p.feedback_id, p.notice],
        **PRIVATE,
    )
    p.ingest_button.click(handlers.ingest, [p.files, p.collection], [p.ingest_report], **PRIVATE)
    app.load(handlers.restore, [p.browser], [p.browser, p.chat], **PRIVATE)
    app.load(handlers.refresh_collections, None, [p.collection], **PRIVATE)
    app.load(lambda: gr.update(choices=handlers.databases()), None, [p.database], **PRIVATE)


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
        with kb.db.connection() as conn:
            found = user_for_token(conn, token)
        return found.name if found else None

    # The login is checked off the event loop and limited per address and name (agent/chat/login.py);
    # SessionGuard, outside BearerTokens, ends sessions whose user changed password or is gone.
    logins = BrowserLogins(LoginService(kb.db))
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
