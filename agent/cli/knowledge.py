"""The knowledge-base commands: ingest, search, collections, and the demo on Ladder's own docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.cli.common import err, load_settings, out, run

DEMO_COLLECTION = "ladder-docs"
DEMO_DOCS = Path(__file__).resolve().parents[2] / "docs"


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


def collections_stats(
    name: Annotated[str, typer.Argument(help="The collection.")],
    check: Annotated[bool, typer.Option("--check", help="Compare with a full recount from the chunks.")] = False,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Recount them from the chunks.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the keyword search's statistics (kept at ingest); --check against a recount, --rebuild if in doubt."""

    def body() -> None:
        from knowledge import term_stats
        from knowledge.db import Database
        from knowledge.store import get_collection

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            collection = get_collection(conn, name)
            if collection is None:
                err.print(f"error: no collection named {name!r}", style="red", highlight=False, markup=False)
                raise typer.Exit(1)
            rebuilt = term_stats.rebuild(conn, collection.id) if rebuild else None
            term_stats.compact(conn, collection.id, wait=True)
            summary = term_stats.summary(conn, collection.id)
            found = term_stats.check(conn, collection.id) if check else None
        report: dict[str, Any] = {"collection": name, **summary}
        if rebuilt is not None:
            report["rebuilt_lexemes"] = rebuilt
        if found is not None:
            report["differences"] = {k: list(v) for k, v in list(found.differences.items())[:20]}
            report["exact"] = not found.differences
        if as_json:
            print(json.dumps(report, indent=2))
        else:
            out.print(
                f"{name}: {summary['chunks']} chunks, {summary['lexemes']} distinct terms,"
                f" {summary['avg_tokens']:.1f} tokens per chunk on average, {summary['pending_deltas']} pending deltas"
                + (f"; rebuilt ({rebuilt} terms)" if rebuilt is not None else ""),
                highlight=False,
                markup=False,
            )
            if found is not None:
                verdict = "exact (equal to a full recount)" if not found.differences else "DIFFERENT from a recount"
                out.print(f"check: {verdict}", highlight=False, markup=False)
                for lexeme, (stored, counted) in list(found.differences.items())[:20]:
                    out.print(f"  {lexeme!r}: stored {stored}, recounted {counted}", highlight=False, markup=False)
        if found is not None and found.differences:
            err.print(f"run `ladder collections stats {name} --rebuild` to recount", highlight=False, markup=False)
            raise typer.Exit(1)

    run(body)


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
        from agent.records.access import claim_for_operator

        with open_knowledge_base(load_settings()) as kb:
            claim_for_operator(kb, DEMO_COLLECTION, take_over=False)  # never silently into a user's collection
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
            from agent.cli.ask import serve_chat
            from agent.cli.database import db_load

            if not has_chinook:
                db_load("chinook", None)
            serve_chat(settings, None, None, True)

    run(body)
