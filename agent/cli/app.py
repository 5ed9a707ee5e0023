"""The ``ladder`` command line: ingest, search, collections, demo, db, bench."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.cli import database as cli_data
from agent.cli import evaluate as cli_eval
from agent.cli import logs as cli_logs
from agent.cli import users as cli_users
from agent.cli.common import err, load_settings, out, output_file, run
from agent.core.config import Settings

app = typer.Typer(
    name="ladder",
    help="Ladder: a chat assistant over your documents and databases that you can measure and climb.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database: where it is, its migrations, the embedded server.", no_args_is_help=True)
app.add_typer(db_app, name="db")
llm_app = typer.Typer(help="The chat model: a configured endpoint or the embedded llama.cpp server.")
app.add_typer(llm_app, name="llm")
collections_app = typer.Typer(help="List and delete collections.")
app.add_typer(collections_app, name="collections")
eval_app = typer.Typer(help="Evaluations: how accurate each technique is on a dataset.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
bench_app = typer.Typer(help="Benchmarks that print ratios against baselines run in the same process.")
app.add_typer(bench_app, name="bench")

DEMO_COLLECTION = "ladder-docs"
DEMO_DOCS = Path(__file__).resolve().parents[2] / "docs"


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders: Markdown, text, HTML, PDF, JSONL.")],
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Target collection.")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help="Chunk size in tokens.")] = None,
    overlap: Annotated[int | None, typer.Option(help="Tokens shared by neighbouring chunks.")] = None,
    prune: Annotated[bool, typer.Option(help="Remove documents under PATHS whose files are gone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: Annotated[bool | None, typer.Option(help="Show a progress bar (default: on a terminal).")] = None,
    take_over: Annotated[
        bool, typer.Option("--take-over", help="Ingest into a user's collection: it becomes the operator's, shared.")
    ] = False,
) -> None:
    """Ingest documents into a collection; unchanged files are skipped, changed ones replaced."""

    def body() -> None:
        from agent.core.assemble import open_knowledge_base

        settings = load_settings(chunk_tokens=chunk_tokens, chunk_overlap=overlap)
        if all(not p.expanduser().exists() for p in paths):
            err.print(f"error: none of these paths exist: {', '.join(map(str, paths))}", style="red")
            raise typer.Exit(2)
        from agent.records.access import claim_for_operator

        with open_knowledge_base(settings) as kb:
            if note := claim_for_operator(kb, collection or settings.collection, take_over=take_over):
                err.print(note, highlight=False, soft_wrap=True)
            report = kb.ingest(paths, collection or settings.collection, prune=prune, progress=progress)
        if as_json:
            print(json.dumps(report.to_dict(), indent=2))
            return
        out.print(
            f"[bold]{escape(report.collection)}[/bold]: {report.files_seen} files, "
            f"{report.documents_added} added, {report.documents_updated} updated, "
            f"{report.documents_unchanged} unchanged, {report.documents_pruned} pruned, "
            f"{report.chunks_written} chunks written, {len(report.skipped)} skipped, "
            f"{report.seconds:.1f} s",
            markup=True,
        )
        for reason, count in report.skipped_by_reason().most_common():
            examples = [s.path for s in report.skipped if s.reason == reason][:3]
            out.print(f"  skipped {count}× {reason}: {', '.join(examples)}", highlight=False, markup=False)

    run(body)


def _where(hit: Any) -> str:
    """Title and heading path of a hit, without repeating a title the path already starts with."""
    if hit.heading and hit.heading.split(" > ")[0] == hit.title:
        return hit.heading.replace(" > ", " › ")
    return " › ".join(part for part in (hit.title, hit.heading.replace(" > ", " › ")) if part)


def _reflow(text: str) -> str:
    """Join hard-wrapped lines into paragraphs for the terminal; blank lines stay."""
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


def _parse_filters(values: list[str] | None) -> dict[str, Any] | None:
    if not values:
        return None
    filters: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"filter {item!r} must look like key=value", param_hint="--filter")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        filters[key.strip()] = value
    return filters


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: Annotated[str | None, typer.Option("--collection", "-c")] = None,
    k: Annotated[int | None, typer.Option("--k", "-k", min=1, max=1000, help="How many results.")] = None,
    mode: Annotated[str | None, typer.Option(help="dense, keyword or hybrid (default: hybrid).")] = None,
    filters: Annotated[
        list[str] | None, typer.Option("--filter", "-f", help="Metadata key=value (JSON values allowed).")
    ] = None,
    recency: Annotated[bool, typer.Option(help="Prefer newer documents (needs a half-life).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"results": [...]} as JSON.')] = False,
) -> None:
    """Search a collection and print the best passages, best first."""
    if mode is not None and mode not in ("dense", "keyword", "hybrid"):
        raise typer.BadParameter("use dense, keyword or hybrid", param_hint="--mode")
    parsed = _parse_filters(filters)

    def body() -> None:
        from agent.core.assemble import open_knowledge_base

        settings = load_settings()
        with open_knowledge_base(settings) as kb:
            hits = kb.search(
                query,
                collection or settings.collection,
                k=k or settings.search_k,
                mode=mode or settings.search_mode,  # type: ignore[arg-type]
                filters=parsed,
                recency=recency,
            )
        if as_json:
            print(json.dumps({"results": [hit.to_dict() for hit in hits]}, ensure_ascii=False, default=str))
            return
        if not hits:
            out.print("no results")
            return
        table = Table(show_lines=True)
        for column in ("#", "score", "document", "passage"):
            table.add_column(column, overflow="fold")
        for rank, hit in enumerate(hits, start=1):
            text = _reflow(hit.text)
            snippet = text if len(text) <= 300 else text[:300] + "…"
            document = Text.assemble(f"{_where(hit)}\n", (hit.doc_id, "dim"))
            table.add_row(str(rank), f"{hit.score:.4f}", document, snippet)
        out.print(table)

    run(body)


@collections_app.callback(invoke_without_command=True)
def collections(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List collections with their embedding model and sizes."""
    if ctx.invoked_subcommand is not None:
        return

    def body() -> None:
        from knowledge.db import Database
        from knowledge.store import list_collections

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            rows = list_collections(conn)
        if as_json:
            print(json.dumps(rows, default=str, indent=2))
            return
        table = Table()
        for column in ("name", "embedding model", "dim", "documents", "chunks"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["name"],
                row["embedding_model"],
                str(row["dimension"]),
                str(row["documents"]),
                str(row["chunks"]),
            )
        out.print(table)

    run(body)


@collections_app.command("describe")
def collections_describe(
    name: Annotated[str, typer.Argument(help="The collection.")],
    description: Annotated[str, typer.Argument(help="What its documents are about, in a sentence.")],
) -> None:
    """Say what a collection is about; the agent adds it to its prompts for questions about it."""

    def body() -> None:
        from knowledge.db import Database
        from knowledge.store import describe_collection

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            found = describe_collection(conn, name, description)
        if not found:
            err.print(f"error: no collection named {name!r}", style="red", highlight=False, markup=False)
            raise typer.Exit(1)
        out.print(f"{name}: {description.strip()}", highlight=False, markup=False)

    run(body)


@collections_app.command("drop")
def collections_drop(
    name: Annotated[str, typer.Argument(help="The collection to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection with all its documents and chunks."""
    if not yes:
        typer.confirm(f"Delete collection {name!r} and everything in it?", abort=True)

    def body() -> None:
        from knowledge.db import Database
        from knowledge.store import drop_collection

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            dropped = drop_collection(conn, name)
        if not dropped:
            err.print(f"error: no collection named {name!r}", style="red", highlight=False, markup=False)
            raise typer.Exit(1)
        out.print(f"dropped {name}", highlight=False, markup=False)

    run(body)


@app.command()
def demo(
    question: Annotated[str, typer.Argument()] = "How do I point Ladder at my own PostgreSQL server?",
    chat_after: Annotated[
        bool, typer.Option("--chat", help="Then load the Chinook sample and open the chat on these documents.")
    ] = False,
) -> None:
    """Ingest Ladder's own documentation and answer a search over it (then, with --chat, chat in the browser)."""

    def body() -> None:
        from agent.core.assemble import open_knowledge_base
        from knowledge.store import delete_documents_outside

        if not DEMO_DOCS.is_dir():
            err.print(f"error: the demo documents are missing ({DEMO_DOCS})", style="red")
            raise typer.Exit(1)
        with open_knowledge_base(load_settings()) as kb:
            with kb.db.connection() as conn:
                # The demo collection mirrors this checkout's docs/ only; another checkout's copy goes.
                delete_documents_outside(conn, DEMO_COLLECTION, str(DEMO_DOCS))
            report = kb.ingest([DEMO_DOCS], DEMO_COLLECTION, prune=True)
            out.print(
                f"ingested {DEMO_DOCS} into '{DEMO_COLLECTION}': {report.documents_written} documents written, "
                f"{report.documents_unchanged} unchanged, {report.chunks_written} chunks, {report.seconds:.1f} s"
            )
            hits = kb.search(question, DEMO_COLLECTION, k=3)
        out.print(f"\n[bold]Q:[/bold] {escape(question)}\n", markup=True)
        for rank, hit in enumerate(hits, start=1):
            out.print(
                f"[bold]{rank}. {escape(_where(hit))}[/bold]  [dim]({hit.score:.4f}, {escape(hit.doc_id)})[/dim]",
                highlight=False,
                markup=True,
            )
            out.print(_reflow(hit.text), highlight=False, markup=False)
            out.print()
        if chat_after:
            from knowledge.db import Database
            from tools.sql.sources import registered_sources

            settings = load_settings(collection=DEMO_COLLECTION)
            with Database(settings.database_config()) as db, db.connection() as conn:
                has_chinook = "chinook" in registered_sources(conn, settings.data_sources)
            if not has_chinook:
                cli_data.db_load("chinook", None)
            _serve_chat(settings, None, None, True)

    run(body)


@db_app.command("info")
def db_info(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Where the database is and which migrations it has."""

    def body() -> None:
        from knowledge.db import Database, redact_url

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            migrations = [
                f"{v:04d}_{n}" for v, n in conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1")
            ]
            info = {
                "url": redact_url(db.url),
                "embedded": db.embedded is not None,
                "data_dir": str(db.embedded.root) if db.embedded else None,
                "postgres": version,
                "pgvector": vector[0] if vector else None,
                "migrations": migrations,
            }
        if as_json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                out.print(f"{key}: {value}", highlight=False)

    run(body)


db_app.command("add")(cli_data.db_add)
db_app.command("sources")(cli_data.db_sources)
db_app.command("remove")(cli_data.db_remove)
db_app.command("load")(cli_data.db_load)
db_app.add_typer(cli_data.examples_app, name="examples")
app.command("sql")(cli_data.sql_command)
eval_app.command("sql")(cli_data.eval_sql)
eval_app.command("run")(cli_eval.eval_run)
eval_app.command("report")(cli_eval.eval_report)
eval_app.command("compare")(cli_eval.eval_compare)
eval_app.command("sweep-chunks")(cli_eval.eval_sweep_chunks)
app.add_typer(cli_logs.logs_app, name="logs")
app.command("feedback")(cli_logs.feedback)
app.add_typer(cli_logs.export_app, name="export")
app.add_typer(cli_logs.finetune_app, name="finetune")
app.add_typer(cli_users.users_app, name="users")
collections_app.command("access")(cli_users.collections_access)


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


def _serve_chat(
    settings: Settings,
    host: str | None,
    port: int | None,
    mcp: bool,
    database: str | None = None,
    no_login: bool = False,
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
    with open_agent(settings) as agent:
        services = ChatServices(agent, agent.model, database, login=login)
        app = build_app(services)
        port = port or settings.ui_port
        out.print(
            f"Ladder chat on http://{bind}:{port} ({'login on' if login else 'no login'}; Ctrl-C stops it)",
            highlight=False,
            markup=False,
        )
        launch(app, host=bind, port=port, services=services, mcp=mcp, max_upload_mb=settings.ui_max_upload_mb)


@app.command()
def chat(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 7860).")] = None,
    mcp: Annotated[bool, typer.Option("--mcp/--no-mcp", help="Serve ask and search_knowledge over MCP.")] = True,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="The collection picked first.")] = None,
    db: Annotated[str | None, typer.Option("--db", help="A registered database picked first.")] = None,
    no_login: Annotated[
        bool, typer.Option("--no-login", help="Serve beyond loopback without users (everyone reads everything).")
    ] = False,
) -> None:
    """Chat with your documents and databases in the browser (Gradio), offline.

    With users (ladder users add), the browser logs in and MCP/API callers send
    `Authorization: Bearer <token>` (ladder users token NAME); each user sees only their own threads."""
    run(lambda: _serve_chat(load_settings(collection=collection), host, port, mcp, db, no_login))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL server (it starts again on the next command)."""
    from knowledge.pgembed import EmbeddedPostgres

    def body() -> None:
        settings = load_settings()
        if settings.database_url:
            err.print("DATABASE_URL is set: Ladder does not manage that server.")
            raise typer.Exit(1)
        EmbeddedPostgres(settings.data_dir).stop()
        out.print("stopped")

    run(body)


@app.command()
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
        streamed: list[str] = []

        streaming = [False]

        def show(event: dict[str, Any]) -> None:
            if as_json:
                return
            if event["type"] == "token":
                streamed.append(event["text"])
                streaming[0] = True
                print(event["text"], end="", flush=True)
                return
            if streaming[0]:  # end the streamed line before the next step's report
                print(flush=True)
                streaming[0] = False
            if event["type"] == "tool":
                argument = next(iter(event["arguments"].values()), "")
                if isinstance(event["result"], list):
                    shown = "[" + ", ".join(str(r["chunk_id"]) for r in event["result"]) + "]"
                else:
                    shown = event["result"].get("error") or event["result"].get("sql", "")
                err.print(f"  ↳ {event['name']}({argument!r}) → {shown}", highlight=False, markup=False)
            elif event["type"] == "step" and event["status"] == "end":
                extra = {k: v for k, v in event.items() if k not in {"type", "step", "status", "seconds"}}
                err.print(
                    f"· {event['step']} {event.get('seconds', '')}s {extra if extra else ''}",
                    highlight=False,
                    markup=False,
                )

        with open_agent(settings) as agent:
            request = TurnRequest(question, collection or settings.collection, thread, overrides, db, face="cli")
            result = agent.ask(request, on_event=show)
        if as_json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            if streaming[0]:
                print()
            if result["revised"] or not streamed:
                print(("\n[revised after fact-check]\n" if result["revised"] else "") + result["answer"])
            for verdict in result["fact_check"]:
                mark = "✓" if verdict["supported"] else "✗"
                out.print(f"  {mark} {verdict['claim']} {verdict['evidence']}", highlight=False, markup=False)
            for citation in result["citations"]:
                out.print(f"  [{citation['chunk_id']}] {citation['doc_id']}", highlight=False, markup=False)
            if result.get("error"):
                err.print(f"error: {result['error']}", style="red", highlight=False, markup=False)
        if result.get("error"):
            raise typer.Exit(1)

    run(body)


@llm_app.command("prompt")
def llm_prompt(
    text: Annotated[str, typer.Argument(help="The prompt.")],
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the chat model).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=8192)] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print {model, text, usage} as JSON.")] = False,
) -> None:
    """Send one prompt to the chat model and stream the reply (temperature 0)."""
    if not text.strip():
        raise typer.BadParameter("the prompt is empty", param_hint="TEXT")

    def body() -> None:
        from agent.models.endpoint import open_chat_endpoint

        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        with open_chat_endpoint(load_settings(), model) as endpoint:
            stream = endpoint.client.chat.completions.create(
                model=endpoint.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=0,
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts: list[str] = []
            usage = None
            for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage.model_dump()
                for choice in chunk.choices:
                    piece = choice.delta.content or ""
                    parts.append(piece)
                    if not as_json:
                        print(piece, end="", flush=True)
        reply = "".join(parts)
        if usage is None:  # llama.cpp's server does not report usage when streaming: count with tiktoken
            from knowledge.tokens import count_tokens

            prompt_tokens = sum(count_tokens(m["content"]) for m in messages)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(reply), "estimated": True}
        if as_json:
            print(json.dumps({"model": endpoint.model, "text": reply, "usage": usage}))
        else:
            print()

    run(body)


@bench_app.command("agent")
def bench_agent(
    turns: Annotated[int, typer.Option(min=1, max=500, help="Turns for the overhead measurement.")] = 20,
    embedded: Annotated[bool, typer.Option(help="Also time the embedded model.")] = True,
    fanout: Annotated[int, typer.Option(min=0, max=155, help="FanOutQA questions to decompose.")] = 20,
) -> None:
    """Graph overhead, parallel fan-out, the embedded model's speed, FanOutQA decomposition recall."""
    from evals.bench.agent import run_agent_benchmark

    run(lambda: run_agent_benchmark(load_settings(), turns=turns, embedded=embedded, fanout_questions=fanout))


@bench_app.command("load")
def bench_load(
    sessions: Annotated[int, typer.Option(min=1, max=200, help="Concurrent chat sessions.")] = 20,
    turns: Annotated[int, typer.Option(min=1, max=50, help="Questions per session.")] = 3,
    latency: Annotated[float, typer.Option(min=0.0, max=30.0, help="Seconds the scripted model takes per call.")] = 0.2,
    users: Annotated[
        bool, typer.Option("--users", help="Logins on: each session its own user with a bearer token.")
    ] = False,
) -> None:
    """Concurrent sessions through the chat server's API (loopback, scripted model): throughput, p50/p95,
    and a check that every turn is logged once, in its own thread, with its own answer (and, with
    --users, by its own user, and that no session can ask in another's thread)."""

    def body() -> None:
        from evals.bench.load import run_load

        report = run_load(load_settings(), sessions=sessions, turns=turns, latency_s=latency, users=users)
        print(json.dumps(report, indent=1))
        if report["problems"]:
            err.print(f"error: {len(report['problems'])} problems (see 'problems')", style="red", markup=False)
            raise typer.Exit(1)

    run(body)


@bench_app.command("ingest-search")
def bench_ingest_search(
    folder: Annotated[
        Path | None, typer.Option(help="Folder to ingest meanwhile (default: CISI's 1460 abstracts, a file each).")
    ] = None,
    searchers: Annotated[int, typer.Option(min=1, max=200, help="Concurrent searchers.")] = 8,
    searches: Annotated[int, typer.Option(min=1, max=1000, help="Searches each without ingestion.")] = 15,
    rate: Annotated[
        float, typer.Option(min=0.0, max=1000.0, help="Searches a second, all searchers together (0: no pause).")
    ] = 4.0,
    timeout: Annotated[float, typer.Option(min=1.0, max=3600.0, help="Seconds the ingestion may take.")] = 600.0,
) -> None:
    """Search latency through the chat server's API (loopback) without and during a `ladder ingest`
    of a large folder into another collection: p50/p95 and their ratios, errors, ingestion throughput."""
    if folder is not None and not folder.expanduser().is_dir():
        raise typer.BadParameter(f"{folder} is not a folder", param_hint="--folder")

    def body() -> None:
        from evals.bench.load import run_search_under_ingestion

        try:
            report = run_search_under_ingestion(
                load_settings(), folder=folder, searchers=searchers, searches=searches, rate=rate, timeout_s=timeout
            )
        except FileNotFoundError as exc:  # the shared data behind the defaults
            err.print(f"error: {exc}", style="red", highlight=False, markup=False)
            raise typer.Exit(2) from None
        print(json.dumps(report, indent=1))
        if report["problems"]:
            err.print(f"error: {len(report['problems'])} problems (see 'problems')", style="red", markup=False)
            raise typer.Exit(1)

    run(body)


@bench_app.command("retrieval")
def bench_retrieval(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Also write the figures as JSON.", callback=output_file)
    ] = None,
    hnsw_vectors: Annotated[int, typer.Option(help="Size of the HNSW recall/latency test.")] = 100_000,
    quick: Annotated[bool, typer.Option(help="Small sizes, for a smoke run.")] = False,
    chart: Annotated[
        Path | None, typer.Option(help="Also draw nDCG@10 per retriever as a PNG.", callback=output_file)
    ] = None,
) -> None:
    """Retrieval quality (CISI, PubMedQA), HNSW recall and latency, ingestion throughput."""
    from evals.bench.retrieval import run_retrieval_benchmark, write_chart

    def body() -> None:
        figures = run_retrieval_benchmark(load_settings(), out_file=out_file, hnsw_vectors=hnsw_vectors, quick=quick)
        if chart is not None:
            out.print(f"chart: {write_chart(figures, chart)}")

    run(body)
