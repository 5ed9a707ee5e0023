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
from agent.chat.console import add_console, console_link
from agent.chat.handlers import NO_DATABASE, ChatHandlers, ChatServices, browser_secret
from agent.chat.login import BrowserLogins, LoginService, SessionGuard, pin_forwarded_trust
from agent.chat.mcp import AgentTools
from agent.chat.openai_api import openai_routes
from agent.core.context import SWITCHES
from agent.records.users import user_for_token

__all__ = ["ChatServices", "build_app", "launch"]
STORAGE_KEY = "ladder.chat.v1"
CHOICES_KEY = "ladder.chat.choices.v1"  # apart from the thread: a turn's updates never overwrite a newer choice
PRIVATE = {"api_visibility": "private"}
# Gradio's Chatbot shows a "still loading" bubble after every earlier turn that ends in a collapsed message
# (its cited passages) while a later turn streams; only the last one, under the turn in progress, is true.
CSS = "#chat .message-wrap > .container:has(.pending):not(:last-child) { display: none; }"
# Each technique switch: its label, and in one line what it does and what it costs, as the model calls it
# adds (seconds per call depend on the machine and the model; each step shows its own duration in the chat).
SWITCH_HELP = {
    "fewshot": ("Few-shot examples", "Shows the model a worked example (for a database: similar SQL); a longer prompt"),
    "retrieval": ("Search the documents", "Answers from the collection's passages, with citations; off: model alone"),
    "hyde": ("HyDE", "Also searches with an answer the model imagines first: +1 call per sub-question"),
    "rerank": ("Rerank", "The model picks the relevant passages among 3× as many: +1 call per sub-question"),
    "decompose": ("Split many-part questions", "Searches each part apart: +1 short call unless a rule splits it"),
    "fact_check": ("Fact-check", "Checks each sentence against the passages, rewrites once if needed: +1–2 calls"),
}


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
    switches: dict[str, Any]  # one checkbox per technique
    choices: Any  # the side panel as the browser keeps it
    files: Any
    ingest_button: Any
    ingest_report: Any
    load_button: Any
    model: Any  # the model picker (hidden when there is only one model)


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
        console_link(app, handlers)
    add_console(app, handlers)  # the operator's console at /console (agent/chat/console/)
    app.queue(default_concurrency_limit=services.settings.ui_concurrency)
    return app


def _model_picker(services: ChatServices) -> Any:
    """The embedded model and its adapters (hidden when there is only the one model)."""
    names = services.model_names()
    return gr.Dropdown(
        names,
        value=services.model_name,
        label="Model (an adapter from ladder finetune local)",
        elem_id="model_choice",
        visible=len(names) > 1,
    )


def _layout(services: ChatServices, handlers: ChatHandlers) -> _Page:
    settings = services.settings
    browser = gr.BrowserState({"thread": None}, storage_key=STORAGE_KEY, secret=browser_secret(Path(settings.data_dir)))
    choices = gr.BrowserState({}, storage_key=CHOICES_KEY, secret=browser_secret(Path(settings.data_dir)))
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
            model = _model_picker(services)
            collection = gr.Dropdown(
                handlers.collections(), value=settings.collection, label="Collection", allow_custom_value=True
            )
            database = gr.Dropdown(
                handlers.databases(), value=services.database or NO_DATABASE, label="Database", elem_id="database"
            )
            switches = _switch_boxes(settings)
            files = gr.File(label="Add documents to the collection", file_count="multiple", type="filepath")
            ingest_button = gr.Button("Ingest", elem_id="ingest")
            load_button = gr.Button("Load as data", elem_id="load_data", visible=False)  # for spreadsheets
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
        choices,
        files,
        ingest_button,
        ingest_report,
        load_button,
        model,
    )


def _switch_boxes(settings: Any) -> dict[str, Any]:
    """One checkbox per technique, each saying what it does and what it costs."""
    gr.Markdown("**Techniques**")
    return {
        name: gr.Checkbox(
            bool(getattr(settings, f"use_{name}")),
            label=SWITCH_HELP.get(name, (name, ""))[0],
            info=SWITCH_HELP.get(name, (name, ""))[1] or None,
            elem_id=f"switch_{name}",
        )
        for name in SWITCHES
    }


def _wire(app: gr.Blocks, page: _Page, handlers: ChatHandlers) -> None:
    p = page
    boxes = list(p.switches.values())
    choices = {p.collection, p.database, p.model, *boxes}

    def switches_of(values: dict[Any, Any]) -> list[str]:
        return [name for name, box in p.switches.items() if values[box]]

    def take_question(values: dict[Any, Any], request: gr.Request) -> tuple[str, str]:
        chosen = values[p.collection], values[p.database], switches_of(values)
        return handlers.enqueue(values[p.box], *chosen, request, model=values[p.model])

    def ask_again(values: dict[Any, Any], evt: gr.RetryData, request: gr.Request) -> Any:
        chosen = values[p.collection], values[p.database], switches_of(values)
        yield from handlers.retry(values[p.chat], values[p.browser], *chosen, evt, request, model=values[p.model])

    def keep_choices(values: dict[Any, Any]) -> dict[str, Any]:
        return handlers.save_choices(values[p.collection], values[p.database], switches_of(values))

    # A question goes into the page's queue at once (never dropped while an answer streams); the runner
    # asks the waiting ones in order. "multiple": a question sent as the last answer ends still starts one.
    for trigger in (p.box.submit, p.send.click):
        trigger(take_question, {p.box, *choices}, [p.box, p.notice], queue=False, **PRIVATE).then(
            handlers.run_waiting, [p.chat, p.browser], [p.chat, p.browser], trigger_mode="multiple", **PRIVATE
        )
    p.chat.retry(ask_again, {p.chat, p.browser, *choices}, [p.chat, p.browser], **PRIVATE)
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
    p.files.change(handlers.offer_data, [p.files], [p.load_button, p.ingest_report], **PRIVATE)
    p.load_button.click(handlers.load_data, [p.files], [p.ingest_report, p.database], **PRIVATE)
    side_panel = [c.input for c in (p.collection, p.database, *boxes)]  # the user's changes, not restore's
    gr.on(side_panel, keep_choices, choices, [p.choices], queue=False, **PRIVATE)
    app.load(handlers.restore, [p.browser], [p.browser, p.chat], **PRIVATE)
    app.load(handlers.restore_choices, [p.choices], [p.collection, p.database, *boxes], **PRIVATE)
    app.unload(handlers.forget)


def launch(
    app: gr.Blocks,
    *,
    host: str,
    port: int,
    services: ChatServices,
    mcp: bool = True,
    openai_api: bool = True,
    max_upload_mb: float = 50.0,
    block: bool = True,
) -> Any:
    """Serve the chat (no share link, no analytics). With users, the browser logs in against the
    users table and MCP/API callers send a bearer token (checked by BearerTokens, also on MCP).
    ``openai_api``: also serve /v1/models and /v1/chat/completions (agent/chat/openai_api.py)."""
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
    routes = openai_routes(services.agent, login=services.login, max_turns=services.settings.ui_concurrency)
    return app.launch(
        server_name=host,
        server_port=port,
        auth=logins.auth if services.login else None,
        auth_message="Ladder: log in to chat with your documents" if services.login else None,
        app_kwargs={"middleware": middleware, "routes": routes if openai_api else []},
        share=False,
        mcp_server=mcp,
        show_error=False,
        max_file_size=f"{int(max_upload_mb)}mb",
        prevent_thread_lock=not block,
        quiet=True,
        run_history=False,
        footer_links=["api"],
        theme=gr.themes.Default(),
        css=CSS,
        ssr_mode=False,
    )
