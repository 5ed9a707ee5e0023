"""The data commands: register and load databases, store SQL examples, ask a database a question.

Wired into the ``ladder`` app by agent/cli/app.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from agent.cli.common import err, load_settings, out, run

if TYPE_CHECKING:
    import psycopg

    from agent.core.config import Settings
    from tools.sql.database import DataSource, QueryResult
    from tools.sql.writer import SQLAnswer


def db_add(
    name: Annotated[str, typer.Argument(help="A short name for the database.")],
    url: Annotated[str, typer.Argument(help="postgresql://… or sqlite:///absolute/path.db")],
    allow_privileged: Annotated[
        bool,
        typer.Option(
            "--allow-privileged",
            help="Accept a PostgreSQL role that may write, read server files or create roles (queries still run"
            " READ ONLY). Without it such a role is refused.",
        ),
    ] = False,
) -> None:
    """Register a database that the SQL tools may read (checked by opening it; a role that may write is refused)."""

    def body() -> None:
        from knowledge.db import Database, redact_url
        from tools.sql.sources import add_source

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            warning = add_source(conn, name, url, allow_privileged=allow_privileged)
        out.print(f"added {name}: {redact_url(url)}", highlight=False, markup=False)
        if warning:
            err.print(f"warning: {warning}", style="yellow", highlight=False, markup=False)

    run(body)


def db_sources(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the databases the SQL tools may read (passwords hidden)."""

    def body() -> None:
        from knowledge.db import Database
        from tools.sql.sources import describe_sources

        settings = load_settings()
        with Database(settings.database_config()) as db, db.connection() as conn:
            rows = describe_sources(conn, settings.data_sources)
        if as_json:
            print(json.dumps(rows))
        else:
            for row in rows:
                out.print(f"{row['name']}: {row['url']}", highlight=False, markup=False)

    run(body)


def db_remove(name: Annotated[str, typer.Argument()]) -> None:
    """Forget a registered database (the database itself is untouched)."""

    def body() -> None:
        from knowledge.db import Database
        from tools.sql.sources import remove_source

        with Database(load_settings().database_config()) as db, db.connection() as conn:
            if not remove_source(conn, name):
                err.print(f"error: no registered data source named {name!r}", style="red", markup=False)
                raise typer.Exit(1)
        out.print(f"removed {name}", highlight=False, markup=False)

    run(body)


def _nearest_examples(
    conn: psycopg.Connection, settings: Settings, db: str, text: str, k: int
) -> list[tuple[str, str]]:
    """The ``k`` stored examples of ``db`` nearest the question, as (question, SQL); none when it has none."""
    from tools.sql.examples import count_examples, similar_examples

    if not count_examples(conn, db):
        return []
    from knowledge.embeddings import load_embedder

    embedder = load_embedder(settings.embedding_config())
    return [(e.question, e.sql) for e in similar_examples(conn, embedder, db, text, k=k)]


def _write_and_run(
    settings: Settings, source: DataSource, text: str, shots: list[tuple[str, str]], attempts: int
) -> SQLAnswer:
    """Have the chat model write SQL for the question and run it, correcting its errors up to ``attempts`` times."""
    from agent.models.calls import ModelCaller
    from agent.models.endpoint import open_chat_endpoint
    from tools.sql.writer import query_database

    with open_chat_endpoint(settings) as endpoint:
        caller = ModelCaller(
            endpoint.client,
            endpoint.model,
            max_calls=attempts,
            json_mode=endpoint.json_mode,  # type: ignore[arg-type]
        )
        return query_database(caller, source, text, examples=shots, max_attempts=attempts)


def _print_result(result: QueryResult) -> None:
    """The rows as a table, then the SQL that produced them."""
    table = Table()
    for column in result.columns:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)
    cut = ": the result reached the size limit" if result.truncated_by == "bytes" else ""
    note = f"  (only the first {len(result.rows)} rows{cut})" if result.truncated else ""
    out.print(f"SQL: {result.sql}{note}", highlight=False, markup=False, soft_wrap=True)


def _show_answer(payload: dict[str, Any], result: QueryResult | None, error: str | None, as_json: bool) -> None:
    """Print the answer (JSON or a table); exit 1 on an error."""
    if as_json:
        print(json.dumps(payload, ensure_ascii=False, default=str))
    elif result is not None:
        _print_result(result)
    if error:
        err.print(f"error: {error}", style="red", highlight=False, markup=False)
        raise typer.Exit(1)


def sql_command(
    text: Annotated[str, typer.Argument(help="A question in words, or SQL with --raw.")],
    db: Annotated[str, typer.Option("--db", help="A registered data source.")],
    raw: Annotated[bool, typer.Option("--raw", help="TEXT is SQL to run as it is (read-only; one SELECT).")] = False,
    tables: Annotated[bool, typer.Option("--tables", help="List the tables instead.")] = False,
    attempts: Annotated[int, typer.Option(min=1, max=5, help="Tries, each correcting the last error.")] = 3,
    fewshot: Annotated[
        bool | None, typer.Option("--fewshot/--no-fewshot", help="Show the nearest stored examples (default: on).")
    ] = None,
    examples: Annotated[int, typer.Option(min=1, max=10, help="How many stored examples to show.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Answer a question from a database (the model writes the SQL), or run read-only SQL with --raw."""

    def body() -> None:
        from knowledge.db import Database
        from tools.sql.sources import get_source

        settings = load_settings()
        shots: list[tuple[str, str]] = []
        # Ladder's database stays open throughout: a source loaded into the embedded server needs it running.
        with Database(settings.database_config()) as ladder_db:
            with ladder_db.connection() as conn:
                source = get_source(
                    conn, db, settings.data_sources, timeout_ms=settings.sql_timeout_ms, row_cap=settings.sql_row_cap
                )
                use_examples = settings.use_fewshot if fewshot is None else fewshot
                if use_examples and not (raw or tables):
                    shots = _nearest_examples(conn, settings, db, text, examples)
            if tables:
                names = source.list_tables()
                print(json.dumps(names) if as_json else "\n".join(names))
                return
            if raw:
                result, error = source.run_sql(text), None
                payload: dict[str, Any] = result.to_dict()
            else:
                answer = _write_and_run(settings, source, text, shots, attempts)
                result, error, payload = answer.result, answer.error, {**answer.to_dict(), "examples": len(shots)}
        _show_answer(payload, result, error, as_json)

    run(body)


def db_load(
    name: Annotated[str, typer.Argument(help="The name to register it under (and the database's name).")],
    script: Annotated[
        Path | None,
        typer.Argument(help="A PostgreSQL script or a SQLite file (default for chinook: the shared Chinook script)."),
    ] = None,
    allow_privileged: Annotated[
        bool,
        typer.Option(
            "--allow-privileged",
            help="Register it even when no read-only role could be made and the loading role may write.",
        ),
    ] = False,
) -> None:
    """Load a sample database and register it, read-only: `ladder db load chinook` for the demo.

    A .sql script is loaded into a fresh database of that name on Ladder's own PostgreSQL server
    (queried through a role that may only read); a SQLite file is copied into the data folder.
    """

    def body() -> None:
        from knowledge.db import Database, redact_url
        from tools.sql.sources import add_source

        path = _sample_path(name, script)
        settings = load_settings()
        with Database(settings.database_config()) as db, db.connection() as conn:
            url, note = _load_sample(db.url, settings.data_dir, name, path)
            warning = add_source(conn, name, url, allow_privileged=allow_privileged)
            if script is None:  # the demo's Chinook comes with a few question → SQL examples
                from knowledge.embeddings import load_embedder
                from tools.sql.examples import CHINOOK_EXAMPLES, add_examples, read_examples_file

                pairs = read_examples_file(CHINOOK_EXAMPLES)
                add_examples(conn, load_embedder(settings.embedding_config()), name, "postgres", pairs)
                note += f"; {len(pairs)} SQL examples stored"
        out.print(f"loaded and registered {name}: {redact_url(url)} ({note})", highlight=False, markup=False)
        if warning:
            err.print(f"warning: {warning}", style="yellow", highlight=False, markup=False)

    run(body)


def db_load_file(
    path: Annotated[Path, typer.Argument(help="A .csv or .xlsx file, or a folder of .csv files.")],
    name: Annotated[
        str | None, typer.Option("--name", help="The database's name (default: made from the file's name).")
    ] = None,
) -> None:
    """Load a spreadsheet as data: each sheet (or CSV) a table with inferred column types, in its own
    database on Ladder's server, registered read-only for `ladder sql` and `ladder ask --db`."""

    def body() -> None:
        from knowledge.db import Database, redact_url
        from tools.sql.sheets import load_spreadsheet
        from tools.sql.sources import add_source

        settings = load_settings()
        with Database(settings.database_config()) as db, db.connection() as conn:
            with err.status(Text(f"loading {path.name}…")):
                loaded, tables = load_spreadsheet(db.url, path, name, int(settings.max_file_mb * 1_000_000))
            add_source(conn, loaded.name, loaded.url)
        for table in tables:
            columns = ", ".join(f"{c.name} {c.type}" for c in table.columns)
            out.print(f"  {table.name} ({table.rows} rows): {columns}", highlight=False, markup=False, soft_wrap=True)
        out.print(f"loaded and registered {loaded.name}: {redact_url(loaded.url)} ({loaded.note})", highlight=False)

    run(body)


def _sample_path(name: str, script: Path | None) -> Path:
    """The file to load: the one given, or the shared Chinook script for ``chinook``."""
    from tools.sql.database import DataSourceError

    path = script
    if path is None:
        if name != "chinook":
            raise DataSourceError("give the script or SQLite file to load (only chinook has a default)")
        from evals.datasets import shared_data_dir

        path = shared_data_dir() / "chinook" / "Chinook_PostgreSql.sql"
    if not path.is_file():
        raise DataSourceError(f"no file at {path}")
    return path


def _load_sample(server_url: str, data_dir: Path, name: str, path: Path) -> tuple[str, str]:
    """Load a .sql script into a fresh database on Ladder's server, or copy a SQLite file into the
    data folder; (the source's URL, a note on how it is opened)."""
    import shutil

    from tools.sql.loader import load_script

    if path.suffix.lower() == ".sql":
        with err.status(Text(f"loading {path.name} into database {name}…")):
            loaded = load_script(server_url, name, path)
        return loaded.url, loaded.note
    folder = data_dir / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{name}.sqlite"
    shutil.copyfile(path, copy)
    return f"sqlite://{copy.absolute()}", "opened read-only (mode=ro)"


examples_app = typer.Typer(
    help="Stored question → SQL examples, shown to the model by similarity.", no_args_is_help=True
)


def _examples_context(db: str) -> Any:
    """(connection, embedder, dialect) for storing examples of data source ``db``."""
    from contextlib import ExitStack, contextmanager

    from knowledge.db import Database
    from knowledge.embeddings import load_embedder
    from tools.sql.sources import get_source

    @contextmanager
    def opened() -> Any:
        settings = load_settings()
        with ExitStack() as stack:
            database = stack.enter_context(Database(settings.database_config()))
            conn = stack.enter_context(database.connection())
            source = get_source(conn, db, settings.data_sources)
            yield conn, load_embedder(settings.embedding_config()), source.dialect

    return opened()


@examples_app.command("add")
def examples_add(
    db: Annotated[str, typer.Option("--db", help="The data source the example is for.")],
    question: Annotated[str, typer.Argument()],
    sql: Annotated[str, typer.Argument(help="The SQL that answers it (checked: read-only, one query).")],
) -> None:
    """Store one question → SQL example."""

    def body() -> None:
        from tools.sql.examples import add_examples

        with _examples_context(db) as (conn, embedder, dialect):
            add_examples(conn, embedder, db, dialect, [(question, sql)])
        out.print(f"stored 1 example for {db}", highlight=False, markup=False)

    run(body)


@examples_app.command("import")
def examples_import(
    db: Annotated[str, typer.Option("--db", help="The data source the examples are for.")],
    file: Annotated[Path, typer.Argument(help="CSV (question, sql|query) or JSONL ({question, sql}).")],
) -> None:
    """Store many examples at once; all are checked before any is stored."""

    def body() -> None:
        from tools.sql.examples import add_examples, read_examples_file

        pairs = read_examples_file(file)
        with _examples_context(db) as (conn, embedder, dialect):
            stored = add_examples(conn, embedder, db, dialect, pairs)
        out.print(f"stored {stored} examples for {db}", highlight=False, markup=False)

    run(body)


@examples_app.command("list")
def examples_list(
    db: Annotated[str, typer.Option("--db")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The stored examples of a data source."""

    def body() -> None:
        from knowledge.db import Database
        from tools.sql.examples import list_examples

        with Database(load_settings().database_config()) as database, database.connection() as conn:
            rows = list_examples(conn, db)
        if as_json:
            print(json.dumps([{"question": r.question, "sql": r.sql} for r in rows], ensure_ascii=False))
        else:
            for row in rows:
                out.print(f"{row.question}\n    {row.sql}", highlight=False, markup=False)

    run(body)


@examples_app.command("clear")
def examples_clear(db: Annotated[str, typer.Option("--db")]) -> None:
    """Forget every stored example of a data source."""

    def body() -> None:
        from knowledge.db import Database
        from tools.sql.examples import remove_examples

        with Database(load_settings().database_config()) as database, database.connection() as conn:
            removed = remove_examples(conn, db)
        out.print(f"removed {removed} examples for {db}", highlight=False, markup=False)

    run(body)


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


def db_stop() -> None:
    """Stop the embedded PostgreSQL server (it starts again on the next command)."""
    from knowledge.pgembed import EmbeddedPostgres

    def body() -> None:
        settings = load_settings()
        if settings.database_url:
            err.print("error: DATABASE_URL is set: Ladder does not manage that server.", style="red")
            raise typer.Exit(1)
        server = EmbeddedPostgres(settings.data_dir)
        stopped = server.stop()  # EmbeddedPostgresError (exit 1, pg_ctl's reason) when it could not
        state = "stopped" if stopped else "was not running"
        out.print(f"the embedded PostgreSQL in {server.pgdata} {state}", highlight=False, markup=False, soft_wrap=True)

    run(body)
