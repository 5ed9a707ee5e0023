"""`ladder eval sql`: execution accuracy of text-to-SQL on defog's sql-eval questions.

Each question's gold SQL (with its ``{a,b}`` and ``;`` alternatives expanded) and the candidate
SQL run on the same PostgreSQL database, loaded from ``databases/*.sql`` into Ladder's server;
results are compared as evals/sql_compare does (defog's rules). The candidate is the gold SQL
itself (``--model gold``, which must score 100% and so proves the harness) or the SQL that
tools/sql_writer.query_database writes with a chat model, without and with few-shot examples
retrieved from the other questions of the same database (leave-one-out, so a question never
sees its own answer).
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import openai
import psycopg

from agent.core.config import Settings
from evals.datasets import shared_data_dir
from evals.sql.compare import gold_variants, judge, wants_order
from knowledge.db import Database
from tools.sql.database import DataSource, DataSourceError, QueryResult, open_source
from tools.sql.examples import add_examples, similar_examples
from tools.sql.loader import load_script
from tools.sql.safety import SQLRefused
from tools.sql.sources import add_source, registered_sources
from tools.sql.writer import JSONCaller, SQLAnswer, query_database, schema_text

MAX_ENDPOINT_FAILURES = 3  # in a row: the endpoint is down, and the rest would fail the same way
EVAL_ROW_CAP = 10_000  # comparisons need whole results; the chat's cap is for people
DB_PREFIX = "sqleval_"


@dataclass(frozen=True)
class SQLQuestion:
    id: int
    question: str
    gold: str
    db_name: str
    category: str
    instructions: str = ""

    @property
    def prompt(self) -> str:
        """The question as the model sees it: defog's instructions ride along where a question has them."""
        return f"{self.question}\n{self.instructions}".strip() if self.instructions else self.question


@dataclass
class Outcome:
    id: int
    db_name: str
    category: str
    mode: str
    correct: bool
    sql: str
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1
    tokens: int = 0
    endpoint_error: bool = False


@dataclass
class Report:
    model: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run ended early, if it did
    gold: dict[int, list[tuple[list[str], list[list[Any]]]]] = field(default_factory=dict, repr=False)

    def accuracy(self) -> dict[str, dict[str, float]]:
        """mode -> {"all": accuracy, category: accuracy, ...}."""
        by_mode: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for o in self.outcomes:
            by_mode[o.mode]["all"].append(o.correct)
            by_mode[o.mode][o.category].append(o.correct)
        return {
            mode: {name: sum(values) / len(values) for name, values in sorted(cells.items())}
            for mode, cells in by_mode.items()
        }

    def to_dict(self) -> dict[str, Any]:
        seconds = defaultdict(list)
        for o in self.outcomes:
            seconds[o.mode].append(o.seconds)
        return {
            "model": self.model,
            "questions": len({o.id for o in self.outcomes}),
            "accuracy": self.accuracy(),
            "median_seconds": {mode: statistics.median(values) for mode, values in seconds.items()},
            "skipped": self.skipped,
            "stopped": self.stopped,
            "outcomes": [asdict(o) for o in self.outcomes],
        }


def read_questions(path: Path) -> list[SQLQuestion]:
    """defog's questions CSV: question, query, db_name, query_category, instructions."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataSourceError(f"cannot read {path}: {exc}") from exc
    needed = {"question", "query", "db_name", "query_category"}
    if rows and not needed <= set(rows[0]):
        raise DataSourceError(f"{path}: expected the columns {', '.join(sorted(needed))}")
    return [
        SQLQuestion(
            i, r["question"], r["query"], r["db_name"], r["query_category"], (r.get("instructions") or "").strip()
        )
        for i, r in enumerate(rows)
    ]


def _loaded(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            row = conn.execute(tables).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


def load_databases(
    conn: psycopg.Connection, server_url: str, folder: Path, names: set[str], *, reload: bool = False
) -> dict[str, str]:
    """db_name -> read-only URL, loading ``folder/<name>.sql`` and registering it as ``sqleval_<name>``.

    A database that is registered and has tables is reused, so only the first run pays for loading.
    """
    registered = registered_sources(conn)
    urls: dict[str, str] = {}
    for name in sorted(names):
        database = DB_PREFIX + name
        if not reload and database in registered and _loaded(registered[database]):
            urls[name] = registered[database]
            continue
        script = folder / f"{name}.sql"
        if not script.is_file():
            raise DataSourceError(f"no script {script} for database {name}")
        loaded = load_script(server_url, database, script)
        urls[name] = loaded.url
        # The eval's own throwaway copy: where no read-only role could be made, the loading role is
        # accepted (the eval's queries still pass the allowlist and run READ ONLY).
        add_source(conn, database, loaded.url, allow_privileged=loaded.read_only_role is None)
    return urls


def _run_gold(source: DataSource, question: SQLQuestion) -> list[tuple[list[str], list[list[Any]]]]:
    """The results of every gold alternative that runs."""
    results = []
    for variant in gold_variants(question.gold):
        try:
            result = source.run_sql(variant)
        except (SQLRefused, DataSourceError):
            continue  # a broken alternative is not held against the candidate
        results.append((result.columns, result.rows))
    return results


@contextmanager
def _model_caller(settings: Settings, model: str | None) -> Iterator[Callable[[], JSONCaller]]:
    from agent.models.calls import ModelCaller
    from agent.models.endpoint import open_chat_endpoint

    with open_chat_endpoint(settings, model) as endpoint:
        yield lambda: ModelCaller(endpoint.client, endpoint.model, max_calls=3, json_mode=endpoint.json_mode)  # type: ignore[arg-type]


def _select_questions(path: Path, categories: set[str] | None, limit: int | None) -> list[SQLQuestion]:
    """The questions of ``path`` in the given categories (all without), spread over categories up to ``limit``."""
    questions = read_questions(path)
    if categories:
        questions = [q for q in questions if q.category in categories]
    return _spread(questions, limit)


def _open_sources(db: Database, folder: Path, questions: list[SQLQuestion], reload: bool) -> dict[str, DataSource]:
    """db_name -> a data source on that database, loaded from ``folder`` where it is not already."""
    with db.connection() as conn:
        urls = load_databases(conn, db.url, folder, {q.db_name for q in questions}, reload=reload)
    return {name: open_source(name, url, row_cap=EVAL_ROW_CAP, timeout_ms=10_000) for name, url in urls.items()}


def _few_shot_embedder(settings: Settings, db: Database, modes: tuple[str, ...], questions_file: Path) -> Any | None:
    """The embedder that retrieves few-shot examples, with every question stored as one; None without that mode."""
    if "few-shot" not in modes:
        return None
    from knowledge.embeddings import load_embedder

    embedder = load_embedder(settings.embedding_config())
    with db.connection() as conn:
        _store_examples(conn, embedder, questions_file)
    return embedder


def _shots(db: Database, embedder: Any | None, question: SQLQuestion, mode: str, *, k: int) -> list[tuple[str, str]]:
    """The ``k`` examples most like the question, other than itself, in few-shot mode; none otherwise."""
    if mode != "few-shot" or embedder is None:
        return []
    with db.connection() as conn:
        found = similar_examples(
            conn, embedder, DB_PREFIX + question.db_name, question.question, k=k, exclude_question=question.question
        )
    return [(e.question, e.sql) for e in found]


def _score_with_model(
    report: Report,
    settings: Settings,
    model: str | None,
    questions: list[SQLQuestion],
    sources: dict[str, DataSource],
    modes: tuple[str, ...],
    shots: Callable[[SQLQuestion, str], list[tuple[str, str]]],
    progress: Callable[[Outcome], None] | None,
) -> None:
    """Score the model's SQL on every question in every mode; stop when the endpoint keeps failing."""
    schemas = {name: schema_text(source) for name, source in sources.items()}
    failures = 0
    with _model_caller(settings, model) as new_caller:
        # Grouped by database so the model server's prompt cache keeps each schema warm.
        for question in sorted(questions, key=lambda q: (q.db_name, q.id)):
            source = sources[question.db_name]
            for mode in modes:
                examples = shots(question, mode)
                outcome = _score(
                    report, question, source, mode, new_caller(), examples, progress, schema=schemas[question.db_name]
                )
                failures = failures + 1 if outcome and outcome.endpoint_error else 0
                if failures >= MAX_ENDPOINT_FAILURES:
                    report.stopped = f"the model endpoint failed {failures} times in a row: {outcome.error}"
                    return


def run_sql_eval(
    settings: Settings,
    *,
    questions_file: Path | None = None,
    databases_dir: Path | None = None,
    model: str | None = None,
    modes: tuple[str, ...] = ("zero-shot", "few-shot"),
    limit: int | None = None,
    categories: set[str] | None = None,
    reload: bool = False,
    examples: int = 3,
    progress: Callable[[Outcome], None] | None = None,
) -> Report:
    """Score ``model`` (``"gold"``: the gold SQL itself) on the questions, per mode and category."""
    data = shared_data_dir() / "sql-eval"
    questions_path = questions_file or data / "questions_postgres.csv"
    questions = _select_questions(questions_path, categories, limit)
    gold_only = model == "gold"
    report = Report(model="gold" if gold_only else (model or settings.chat_model or settings.local_model))
    with Database(settings.database_config()) as db:
        sources = _open_sources(db, databases_dir or data / "databases", questions, reload)
        if gold_only:
            for question in questions:
                _score(report, question, sources[question.db_name], "gold", None, [], progress)
            return report
        embedder = _few_shot_embedder(settings, db, modes, questions_path)
        shots = partial(_shots, db, embedder, k=examples)
        _score_with_model(report, settings, model, questions, sources, modes, shots, progress)
    return report


def _spread(questions: list[SQLQuestion], limit: int | None) -> list[SQLQuestion]:
    """The first ``limit`` questions taken round-robin over categories, so a small run still covers each."""
    if limit is None or limit >= len(questions):
        return questions
    by_category: dict[str, list[SQLQuestion]] = defaultdict(list)
    for q in questions:
        by_category[q.category].append(q)
    picked: list[SQLQuestion] = []
    while len(picked) < limit:
        for bucket in by_category.values():
            if bucket and len(picked) < limit:
                picked.append(bucket.pop(0))
    return sorted(picked, key=lambda q: q.id)


def _store_examples(conn: psycopg.Connection, embedder: Any, questions_file: Path) -> None:
    """Every question's first gold variant as an example of its database (retrieval leaves the asker out)."""
    by_db: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for q in read_questions(questions_file):
        by_db[q.db_name].append((q.question, gold_variants(q.gold)[0]))
    for name, pairs in by_db.items():
        add_examples(conn, embedder, DB_PREFIX + name, "postgres", pairs)


def _score(
    report: Report,
    question: SQLQuestion,
    source: DataSource,
    mode: str,
    caller: JSONCaller | None,
    shots: list[tuple[str, str]],
    progress: Callable[[Outcome], None] | None,
    *,
    schema: str | None = None,
) -> Outcome | None:
    if question.id not in report.gold:  # each mode compares with the same gold results
        report.gold[question.id] = _run_gold(source, question)
    gold = report.gold[question.id]
    if not gold:
        note = f"question {question.id}: no gold alternative runs"
        if note not in report.skipped:
            report.skipped.append(note)
        return None
    started = time.perf_counter()
    endpoint_error = False
    result: QueryResult | None
    if caller is None:
        variant = gold_variants(question.gold)[0]
        try:
            result, error, sql, attempts = source.run_sql(variant), None, variant, 1
        except (SQLRefused, DataSourceError) as exc:
            result, error, sql, attempts = None, str(exc), variant, 1
        tokens = 0
    else:
        try:
            answer = query_database(caller, source, question.prompt, examples=shots, schema=schema)
        except openai.OpenAIError as exc:  # counted as wrong, and the run goes on (or stops, see above)
            answer = SQLAnswer(question.prompt, "", None, error=f"model endpoint: {exc}")
            endpoint_error = True
        result, error, sql, attempts = answer.result, answer.error, answer.sql, len(answer.attempts) + 1
        stats = getattr(caller, "stats", None)
        tokens = int(getattr(stats, "prompt_tokens", 0) + getattr(stats, "completion_tokens", 0)) if stats else 0
    correct = result is not None and judge(
        gold, result.columns, result.rows, ordered=wants_order(question.gold, question.question, question.category)
    )
    outcome = Outcome(
        question.id,
        question.db_name,
        question.category,
        mode,
        correct,
        sql,
        error,
        time.perf_counter() - started,
        attempts,
        tokens,
    )
    outcome.endpoint_error = endpoint_error
    report.outcomes.append(outcome)
    if progress:
        progress(outcome)
    return outcome
