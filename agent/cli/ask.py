"""Asking: ``ladder ask`` in the terminal, and ``ladder chat`` in the browser (with MCP)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agent.cli.common import err, load_settings, out, run

if TYPE_CHECKING:  # loaded when a question is asked: ``ladder --help`` needs none of them
    from agent.core.config import Settings
    from agent.core.events import TurnEvent
    from agent.core.results import TurnResult


def check_bind(bind: str, *, login: bool, no_login: bool) -> str | None:
    """Refuse to serve beyond loopback without users unless told to; the warning to print when told."""
    import ipaddress

    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    if loopback or login:
        return None
    if not no_login:
        raise typer.BadParameter(
            f"the chat would listen on {bind} without a login. Add a user first (ladder users add NAME),"
            " or pass --no-login to serve everyone who can reach this machine.",
            param_hint="--host",
        )
    return (
        f"WARNING: the chat listens on {bind} WITHOUT a login: anyone who can reach this machine can read"
        " your documents and databases through it."
    )


def serve_chat(
    settings: Settings,
    host: str | None,
    port: int | None,
    mcp: bool,
    database: str | None = None,
    no_login: bool = False,
    openai_api: bool = True,
) -> None:
    """Start the chat server and block. Beyond loopback it needs users (or an explicit --no-login)."""
    from agent.chat.app import ChatServices, build_app, launch
    from agent.core.assemble import open_agent
    from agent.records.users import any_users
    from knowledge.db import Database

    bind = host or settings.ui_host
    with Database(settings.database_config()) as db, db.connection() as conn:
        login = any_users(conn)
    warning = check_bind(bind, login=login, no_login=no_login)
    if warning:
        err.print(warning, style="bold red", highlight=False, markup=False)
    from agent.chat.models import ModelChoices

    def with_adapter(name: str) -> Any:  # the picker's adapters, each on its own embedded server
        return open_agent(settings.model_copy(update={"chat_adapter": name}), kb=agent.kb)

    with open_agent(settings) as agent, ModelChoices(agent, with_adapter) as models:
        services = ChatServices(agent, agent.model, database, login=login, models=models)
        app = build_app(services)
        port = port or settings.ui_port
        out.print(
            f"Ladder chat on http://{bind}:{port} ({'login on' if login else 'no login'}; Ctrl-C stops it)",
            highlight=False,
            markup=False,
        )
        launch(
            app,
            host=bind,
            port=port,
            services=services,
            mcp=mcp,
            openai_api=openai_api,
            max_upload_mb=settings.ui_max_upload_mb,
        )


def chat(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 7860).")] = None,
    mcp: Annotated[bool, typer.Option("--mcp/--no-mcp", help="Serve ask and search_knowledge over MCP.")] = True,
    openai_api: Annotated[
        bool,
        typer.Option("--openai/--no-openai", help="Serve /v1/chat/completions: each collection a model ladder/NAME."),
    ] = True,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="The collection picked first.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="A registered database picked first.")] = None,
    no_login: Annotated[
        bool, typer.Option("--no-login", help="Serve beyond loopback without users (everyone reads everything).")
    ] = False,
) -> None:
    """Chat with your documents and databases in the browser (Gradio), offline.

    With users (ladder users add), the browser logs in and MCP/API callers send
    `Authorization: Bearer <token>` (ladder users token NAME); each user sees only their own threads.
    OpenAI-compatible front ends use http://HOST:PORT/v1 with the same token, model ladder/<collection>."""
    run(lambda: serve_chat(load_settings(collection=collection), host, port, mcp, db, no_login, openai_api))


class EventPrinter:
    """Streams a turn to the terminal: answer tokens to stdout, each tool call and finished step to stderr."""

    def __init__(self) -> None:
        self.streamed: list[str] = []
        self.mid_line = False

    def __call__(self, event: TurnEvent) -> None:
        from agent.core.events import QueueEvent, StepEvent, TokenEvent, ToolEvent

        if isinstance(event, TokenEvent):
            self.streamed.append(event.text)
            self.mid_line = True
            print(event.text, end="", flush=True)
            return
        if self.mid_line:  # end the streamed line before the next step's report
            print(flush=True)
            self.mid_line = False
        if isinstance(event, ToolEvent):
            argument = next(iter(event.arguments.values()), "")
            if isinstance(event.result, list):
                shown = "[" + ", ".join(str(r["chunk_id"]) for r in event.result) + "]"
            else:
                shown = event.result.get("error") or event.result.get("sql", "")
            err.print(f"  ↳ {event.name}({argument!r}) → {shown}", highlight=False, markup=False)
        elif isinstance(event, StepEvent) and event.status == "end":
            extra = dict(event.detail)
            if event.sub_question is not None:
                extra = {"sub_question": event.sub_question, **extra}
            err.print(f"· {event.step} {event.seconds}s {extra if extra else ''}", highlight=False, markup=False)
        elif isinstance(event, QueueEvent):
            waiting = f"queued: {event.ahead} turn(s) ahead" if event.ahead else "the model is free"
            err.print(f"· {waiting} ({event.seconds}s)", highlight=False, markup=False)


def print_result(result: TurnResult, printer: EventPrinter) -> None:
    """The answer (again, if the fact-check revised it or nothing streamed), its verdicts and citations."""
    if printer.mid_line:
        print()
    if result.revised or not printer.streamed:
        print(("\n[revised after fact-check]\n" if result.revised else "") + result.answer)
    for verdict in result.fact_check:
        mark = "✓" if verdict["supported"] else "✗"
        out.print(f"  {mark} {verdict['claim']} {verdict['evidence']}", highlight=False, markup=False)
    for citation in result.citations:
        out.print(f"  [{citation.chunk_id}] {citation.doc_id}", highlight=False, markup=False)
    if result.error:
        err.print(f"error: {result.error}", style="red", highlight=False, markup=False)


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    switch: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Technique switch NAME=on|off (fewshot, retrieval, hyde, rerank, decompose, fact_check)."
        ),
    ] = None,
    thread: Annotated[str | None, typer.Option(help="Continue this conversation thread.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="A registered database for questions about data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
    adapter: Annotated[
        str | None, typer.Option(help="Serve the embedded model with this LoRA adapter (ladder finetune local).")
    ] = None,
) -> None:
    """Answer a question from the knowledge base, with citations and a fact-check per claim."""
    from agent.core.context import SwitchError, parse_switch

    try:
        overrides = dict(parse_switch(s) for s in switch or [])
    except SwitchError as exc:
        raise typer.BadParameter(str(exc), param_hint="--set") from None

    def body() -> None:
        from agent.core.assemble import open_agent
        from agent.core.turn import TurnRequest

        settings = load_settings()
        if adapter:
            settings = settings.model_copy(update={"chat_adapter": adapter})
        printer = EventPrinter()
        with open_agent(settings) as agent:
            request = TurnRequest(question, collection or settings.collection, thread, overrides, db, face="cli")
            result = agent.ask(request, on_event=None if as_json else printer)
        if as_json:
            print(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            print_result(result, printer)
        if result.error:
            raise typer.Exit(1)

    run(body)
