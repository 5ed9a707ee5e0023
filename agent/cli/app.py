"""The ``ladder`` command line: every command group, wired in one place.

Each group's commands live in a module of their own (agent/cli/*.py) and import what they need
when they run, so ``ladder --help`` starts without loading the models or the database driver.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from agent.cli import ask, bench, database, evaluate, finetune, knowledge, llm, logs, users

app = typer.Typer(
    name="ladder",
    help="Ladder: a chat assistant over your documents and databases that you can measure and climb.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The database: where it is, its migrations, the embedded server.", no_args_is_help=True)
llm_app = typer.Typer(help="The chat model: a configured endpoint or the embedded llama.cpp server.")
collections_app = typer.Typer(help="List and delete collections.")
eval_app = typer.Typer(help="Evaluations: how accurate each technique is on a dataset.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print ratios against baselines run in the same process.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# Knowledge
app.command()(knowledge.ingest)
app.command()(knowledge.search)
app.command()(knowledge.demo)
app.add_typer(collections_app, name="collections")
collections_app.callback(invoke_without_command=True)(knowledge.collections)
collections_app.command("describe")(knowledge.collections_describe)
collections_app.command("drop")(knowledge.collections_drop)
collections_app.command("stats")(knowledge.collections_stats)
collections_app.command("access")(users.collections_access)
# Asking
app.command()(ask.ask)
app.command()(ask.chat)
# Databases
app.add_typer(db_app, name="db")
db_app.command("info")(database.db_info)
db_app.command("stop")(database.db_stop)
db_app.command("add")(database.db_add)
db_app.command("sources")(database.db_sources)
db_app.command("remove")(database.db_remove)
db_app.command("load")(database.db_load)
db_app.command("load-file")(database.db_load_file)
db_app.add_typer(database.examples_app, name="examples")
app.command("sql")(database.sql_command)
# The model
app.add_typer(llm_app, name="llm")
llm_app.command("prompt")(llm.llm_prompt)
# Evaluations
app.add_typer(eval_app, name="eval")
eval_app.command("sql")(evaluate.eval_sql)
eval_app.command("run")(evaluate.eval_run)
eval_app.command("report")(evaluate.eval_report)
eval_app.command("compare")(evaluate.eval_compare)
eval_app.command("sweep-chunks")(evaluate.eval_sweep_chunks)
eval_app.command("sets")(evaluate.eval_sets)
# The turn log and what is made of it
app.add_typer(logs.logs_app, name="logs")
app.command("feedback")(logs.feedback)
app.add_typer(logs.export_app, name="export")
app.add_typer(finetune.finetune_app, name="finetune")
# Users
app.add_typer(users.users_app, name="users")
# Benchmarks
app.add_typer(bench_app, name="bench")
bench_app.command("agent")(bench.bench_agent)
bench_app.command("load")(bench.bench_load)
bench_app.command("ingest-search")(bench.bench_ingest_search)
bench_app.command("retrieval")(bench.bench_retrieval)
bench_app.command("followups")(bench.bench_followups)
bench_app.command("factcheck")(bench.bench_factcheck)
bench_app.command("cli")(bench.bench_cli)
bench_app.command("html")(bench.bench_html)
bench_app.command("sheets")(bench.bench_sheets)
bench_app.command("scale")(bench.bench_scale)
