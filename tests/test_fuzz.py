"""Fuzzing the settings and the command line (hypothesis): whatever comes in, a command succeeds or
stops with a clear error (a usage error, or a message on stderr), never with a Python traceback.

The settings are fuzzed field by field from ``Settings.model_fields`` (a new setting is fuzzed without
touching this file); the commands run in-process through typer's CliRunner, against one PostgreSQL
server for the whole session (``DATABASE_URL``), so no example starts a database.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
import typer
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import AliasChoices, SecretStr
from typer.testing import CliRunner, Result

from agent.cli.app import app
from agent.cli.common import load_settings, run
from agent.core.config import Settings, get_settings
from tools.sql.loader import with_database

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),  # FUZZ_EXAMPLES=1000 for a deeper search
    deadline=None,
    database=None,  # no .hypothesis example database in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RUNNER = CliRunner()
# Ladder's variables from the environment the tests run in must not leak into these runs.
CLEAN_ENV: dict[str, str | None] = {
    k: None for k in os.environ if k.startswith(("LADDER_", "OPENAI_")) or k == "DATABASE_URL"
}

# -- what a user can type ----------------------------------------------------------------------------------

TRICKY = [
    "",
    " ",
    "-",
    "-1",
    "0",
    "1",
    "99999999999999999999",
    "-99999999999999999999",
    "1e309",
    "nan",
    "inf",
    "-inf",
    "0x10",
    "1_000",
    "٣",
    "１２",
    "null",
    "[]",
    "{}",
    "[/]",
    "[bold]x",
    "%s",
    "%(x)s",
    "{0}",
    "'",
    '"',
    "\\",
    "'; DROP TABLE turns; --",
    "..",
    "~",
    "\n",
    "\t\r",
    "\u202e",
    "🙂",
    "\udcff",  # a byte that is not UTF-8, as Python hands it over from argv or the environment
    "x" * 300,
    "x" * 30_000,
]
# argv cannot hold a NUL byte; undecodable bytes arrive as surrogate escapes.
ARG_CHARS = st.one_of(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
)
NUMBERS = st.one_of(st.integers().map(str), st.floats().map(str))
ARG = st.one_of(st.sampled_from(TRICKY), st.text(ARG_CHARS, max_size=30), NUMBERS)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
).map(json.dumps)


def _safe_path(text: str) -> str:
    """A fuzzed path kept inside the test's working folder (the tests may run as root)."""
    return text.replace("..", "__").lstrip("/~") or "out"


# Paths for files a command writes: relative to the test's working folder, with the awkward cases.
OUT_PATH = st.one_of(
    st.sampled_from(["", ".", "out.jsonl", "a-dir", "a-file/out.jsonl", "new/deep/out.jsonl", "x" * 300, "[/].jsonl"]),
    st.text(ARG_CHARS, min_size=1, max_size=20).map(_safe_path),
)


# -- running commands --------------------------------------------------------------------------------------


def invoke(args: Sequence[str], env: dict[str, str] | None = None, input: str | None = None) -> Result:
    get_settings.cache_clear()
    handlers = logging.root.handlers[:]
    try:
        return RUNNER.invoke(app, list(args), env={**CLEAN_ENV, **(env or {})}, input=input)
    finally:
        get_settings.cache_clear()
        # `ladder` sets up logging to the stderr of its run: in one process, the next run's is another stream.
        logging.root.handlers[:] = handlers


def assert_clear(result: Result, args: Sequence[str]) -> None:
    """Exit 0; or a usage error (2); or 1 or 2 with a message on stderr: never an uncaught exception."""
    shown = f"ladder {' '.join(map(repr, args))} -> exit {result.exit_code}\n{result.output[-3000:]}"
    if os.environ.get("FUZZ_LOG"):  # FUZZ_LOG=file: what each run did, to see what the fuzz reaches
        with open(os.environ["FUZZ_LOG"], "a", encoding="utf-8", errors="backslashreplace") as log:
            log.write(f"{result.exit_code} {args!r} {result.output.strip()[:200]!r}\n")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        result.exception.add_note(f"uncaught, from {shown}")
        raise result.exception  # as it is: hypothesis tells distinct crashes apart by where they were raised
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 1, 2), shown
    if result.exit_code:
        assert result.output.strip(), shown  # an error on stderr, or a report (finetune check's) on stdout


@pytest.fixture(autouse=True)
def _workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder (no stray .env), with a folder and a file to trip over."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


# -- settings ----------------------------------------------------------------------------------------------

FIELDS = sorted(Settings.model_fields)
SECRET_FIELDS = [f for f in FIELDS if SecretStr in typing.get_args(Settings.model_fields[f].annotation)]
SECRET = "sk-fuzz-secret-value"


def env_names(field: str) -> list[str]:
    """The environment variables a field is read from."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [f"LADDER_{field.upper()}"]


SETTING_VALUE = st.one_of(
    st.text(max_size=30),  # any unicode, NUL included
    st.sampled_from(TRICKY),
    NUMBERS,
    st.builds(
        "{}{}".format, st.integers(), st.sampled_from(["kB", "MB", "GB", " MB", "TB", "mb", "s", "%", "e5", ".5"])
    ),
    JSONISH,
    st.dictionaries(st.text(max_size=10), st.sampled_from(["sqlite:///nowhere.db", "postgresql://", "x"])).map(
        json.dumps
    ),
)


def assert_settings_or_clear_error(make: typing.Callable[[], Settings], capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's wrapper either returns settings whose views work, or prints one line and exits 2;
    neither shows a secret (SECRET, where a test set one)."""
    get_settings.cache_clear()
    capsys.readouterr()
    try:
        loaded = run(make)
    except typer.Exit as exc:
        stderr = capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert exc.exit_code == 2, stderr
        assert len(lines) == 1 and lines[0].startswith("error: invalid settings: "), stderr
        assert "Traceback" not in stderr and SECRET not in stderr
        return
    finally:
        get_settings.cache_clear()
    loaded.database_config()
    loaded.embedding_config()
    loaded.chunking_config()
    loaded.search_config()
    assert SECRET not in repr(loaded) + loaded.model_dump_json()


@FUZZ
@given(
    values=st.dictionaries(st.sampled_from(FIELDS), SETTING_VALUE, min_size=1, max_size=4),
    secret=st.sampled_from(SECRET_FIELDS),
    route=st.sampled_from(["env", "dotenv", "override"]),
    data=st.data(),
)
def test_settings_from_anywhere(
    values: dict[str, str], secret: str, route: str, data: st.DataObject, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any value of any setting, from the environment, a .env file or a command-line override; with a
    secret among them that no error repeats."""
    values = {secret: SECRET, **values}
    dotenv = Path(".env")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CLEAN_ENV.items():
            if value is None:
                mp.delenv(name, raising=False)
        overrides: dict[str, str] = {}
        lines = []
        for field, value in values.items():
            name = data.draw(st.sampled_from(env_names(field)))
            if route == "env" and "\x00" not in value:  # the environment cannot hold a NUL
                mp.setenv(name, value)
            elif route == "override":
                overrides[field] = value
            else:
                lines.append(f"{name}={value}")
        dotenv.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
        try:
            assert_settings_or_clear_error(lambda: load_settings(**overrides), capsys)
        finally:
            dotenv.unlink()


@FUZZ
@given(content=st.binary(max_size=200))
def test_settings_from_a_broken_dotenv(content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """A .env file that is not even text."""
    dotenv = Path(".env")
    dotenv.write_bytes(b"LADDER_COLLECTION=" + content)
    try:
        assert_settings_or_clear_error(load_settings, capsys)
    finally:
        dotenv.unlink()


def _commands() -> list[list[str]]:
    """Every command's path in the app, e.g. ['db', 'examples', 'add']."""
    found: list[list[str]] = []

    def walk(command: typing.Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None or (path and command.callback is not None and command.invoke_without_command):
            found.append(path)
        for name, sub in (subcommands or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def _minimal_args(path: list[str]) -> list[str]:
    """The command with a plain value for each required argument and option."""
    command: typing.Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    args = list(path)
    for param in command.params:
        if not param.required:
            continue
        value = "out.jsonl" if param.name == "out_file" else "1d" if param.name == "older_than" else "1"
        args += [param.opts[0], value] if param.param_type_name == "option" else [value]
    return args


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
@pytest.mark.parametrize(
    "bad", [{"LADDER_CHUNK_OVERLAP": "999"}, {"LADDER_DATA_SOURCES": "{not json"}], ids=["invalid", "unparsable"]
)
def test_every_command_refuses_bad_settings_clearly(path: list[str], bad: dict[str, str]) -> None:
    """A command that reads the settings stops at a broken one with one line (exit 2), before any work."""
    args = _minimal_args(path)
    result = invoke(args, env={"LADDER_DATA_DIR": "/nonexistent/ladder", **bad}, input="n\n")
    assert_clear(result, args)
    assert result.exit_code != 0, result.output
    if "settings" in result.stderr:
        assert result.exit_code == 2 and result.stderr.startswith("error: invalid settings: "), result.stderr


def field_values(field: str, anything: bool = True) -> st.SearchStrategy[str]:
    """Values for one setting: its type's edge cases (bounds and one past them), and anything at all."""
    info = Settings.model_fields[field]
    kinds = [a for a in typing.get_args(info.annotation) if a is not type(None)] or [info.annotation]
    kind = kinds[0]
    bounds = [getattr(m, b) for m in info.metadata for b in ("ge", "gt", "le", "lt") if getattr(m, b, None) is not None]
    edges = [v + d for v in bounds for d in (-1, 0, 1)] + [0, -1, 2**31 - 1, 2**31, 2**63, 10**30]
    if kind is int:
        typed = st.one_of(st.sampled_from(edges).map(int), st.integers()).map(str)
    elif kind is float:
        typed = st.one_of(st.sampled_from([*edges, 1e-300, 1e308, "inf", "nan"]), st.floats()).map(str)
    elif kind is bool:
        typed = st.sampled_from(["true", "false", "1", "0", "on", "off", "yes", "maybe"])
    elif typing.get_origin(kind) is typing.Literal:
        typed = st.sampled_from(typing.get_args(kind))
    else:
        typed = st.builds("{}{}".format, st.integers(), st.sampled_from(["", "kB", "MB", "GB", " MB", "TB"]))
    return st.one_of(typed, SETTING_VALUE) if anything else typed


@FUZZ
@given(values=st.lists(st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just(f), field_values(f))), max_size=4))
def test_settings_edge_values(values: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    """Each setting at and just past its bounds (from the field's own constraints), as overrides."""
    with pytest.MonkeyPatch.context() as mp:
        for name in CLEAN_ENV:
            mp.delenv(name, raising=False)
        assert_settings_or_clear_error(lambda: load_settings(**dict(values)), capsys)


# -- commands against a live database ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def fuzz_url(url_server: str) -> str:
    """A database of its own on the session's server: what the fuzz prunes and drops is its own."""
    with psycopg.connect(url_server, autocommit=True) as conn:
        conn.execute("CREATE DATABASE ladder_fuzz")
    return with_database(url_server, "ladder_fuzz")


@pytest.fixture(scope="session")
def live(fuzz_url: str, data_root: Path) -> Iterator[dict[str, str]]:
    """The environment for commands on that database: a collection ``fz`` with three documents, a turn
    ``fz-turn`` to give feedback on, and two data sources: ``fz`` (SQLite) and ``pg`` (the database)."""
    env = {"DATABASE_URL": fuzz_url, "LADDER_DATA_DIR": str(data_root / "fuzz-unused"), "LADDER_COLLECTION": "fz"}
    docs = data_root / "fuzz-docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpha\n\nThe alpha server keeps vectors in PostgreSQL.\n", encoding="utf-8")
    (docs / "b.txt").write_text("Beta notes: the chat streams answers to the browser.\n", encoding="utf-8")
    (docs / "[c].md").write_text("# [/] Brackets [bold]\n\nText that looks like markup: [/] [red]x", encoding="utf-8")
    sqlite_file = data_root / "fz.sqlite"
    with sqlite3.connect(sqlite_file) as conn:
        conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "one"), (2, "two"), (None, "é🙂")])
    for args in (
        ["ingest", str(docs), "-c", "fz"],
        ["db", "add", "fz", f"sqlite:///{sqlite_file}"],
        ["db", "add", "pg", fuzz_url, "--allow-privileged"],  # the fuzz's own superuser: refused without it
    ):
        result = invoke(args, env=env)
        assert result.exit_code == 0, result.output
    yield env


@pytest.fixture
def seeded(live: dict[str, str], fuzz_url: str) -> dict[str, str]:
    """The live environment, with the turn ``fz-turn`` (a fuzzed prune may have deleted it)."""
    with psycopg.connect(fuzz_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO turns (turn_id, thread_id, question, status, answer, finished_at)"
            " VALUES ('fz-turn', 'fz', 'What keeps the vectors?', 'done', 'PostgreSQL [1].', now())"
            " ON CONFLICT DO NOTHING"
        )
    return live


def options(draw: st.DrawFn, choices: dict[str, st.SearchStrategy[str] | None]) -> list[str]:
    """Some of the options, in any order; a None strategy marks a flag."""
    picked = draw(st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=len(choices)))
    args: list[str] = []
    for name in picked:
        strategy = choices[name]
        args += [name] if strategy is None else [name, draw(strategy)]
    return args


# Option values: plausible ones (to get past parsing), extreme ones, and anything at all.
AGE = st.one_of(
    ARG,
    st.builds("{}{}".format, st.integers(0, 400), st.sampled_from(["d", "h", "m"])),
    st.builds("{}{}".format, st.integers(), st.sampled_from(["d", "h", "m", " d", "x"])),
)
INT = st.one_of(ARG, st.integers(-2, 300).map(str), st.integers().map(str))
FLOAT = st.one_of(ARG, st.floats(-0.1, 2).map(str), st.floats().map(str))


@st.composite
def logs_args(draw: st.DrawFn) -> list[str]:
    if draw(st.booleans()):
        return ["logs", "prune", "--older-than", draw(AGE)]
    feedback = st.one_of(ARG, st.sampled_from(["up", "down", "any", "none"]))
    return ["logs", *options(draw, {"--since": AGE, "--feedback": feedback, "--limit": INT, "--json": None})]


@st.composite
def feedback_args(draw: st.DrawFn) -> list[str]:
    turn = draw(st.one_of(st.just("fz-turn"), ARG))
    rating = draw(st.one_of(st.sampled_from(["up", "down"]), ARG))
    return ["feedback", turn, rating, *options(draw, {"--comment": ARG, "--correct": ARG})]


@st.composite
def export_args(draw: st.DrawFn) -> list[str]:
    out = ["--out", draw(OUT_PATH)]
    if draw(st.booleans()):
        return ["export", "evalset", *out, *options(draw, {"--no-redact": None})]
    choices = {
        "--min-feedback": st.one_of(st.sampled_from(["up", "any"]), ARG),
        "--val-fraction": FLOAT,
        "--max-tokens": INT,
        "--epochs": INT,
        "--price-per-1m": FLOAT,
        "--seed": INT,
        "--no-system": None,
        "--no-redact": None,
    }
    return ["export", "finetune", *out, *options(draw, choices)]


def test_a_correction_too_long_for_the_table(seeded: dict[str, str]) -> None:
    args = ["feedback", "fz-turn", "up", "--correct", "x" * 20_001]
    assert_clear(invoke(args, env=seeded), args)


@FUZZ
@given(args=st.one_of(logs_args(), feedback_args(), export_args()))
def test_turn_log_commands(args: list[str], seeded: dict[str, str]) -> None:
    """ladder logs / logs prune / feedback / export with any durations, limits, ratings, texts and paths."""
    assert_clear(invoke(args, env=seeded), args)


@st.composite
def source_args(draw: st.DrawFn, server: str) -> list[str]:
    """db add / remove / sources / examples, with names and URLs of every shape."""
    name = draw(st.one_of(ARG, st.sampled_from(["fz", "pg", "new_source"])))
    sqlite_path = st.one_of(
        st.sampled_from(["a-dir", "a-file", "nowhere.db", str(Path("a-file").absolute())]), st.text(ARG_CHARS)
    )
    url = draw(
        st.one_of(
            ARG,
            sqlite_path.map("sqlite:///{}".format),
            sqlite_path.map("sqlite://{}".format),
            ARG.map(f"{server.rsplit('/', 1)[0]}/{{}}".format),  # this server, any database name
            ARG.map(f"{server}?{{}}".format),  # this server, any connection parameters
        )
    )
    which = draw(st.sampled_from(["add", "remove", "sources", "examples"]))
    if which == "add":
        return ["db", "add", name, url, *draw(st.sampled_from([[], ["--allow-privileged"]]))]
    if which == "remove":
        return ["db", "remove", name]
    if which == "sources":
        return ["db", "sources", "--json"]
    return ["db", "examples", draw(st.sampled_from(["list", "clear"])), "--db", name]


SQL = st.one_of(
    ARG,
    st.sampled_from(
        [
            "SELECT * FROM t",
            "SELECT a, b FROM t ORDER BY a",
            "select 1; select 2",
            "DELETE FROM t",
            "SELECT '[/]' AS x",
            "SELECT 1/0",
            "SELECT * FROM nowhere",
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            "SELECT repeat('x', 100000)",
            "SELECT pg_sleep(0.01)",
        ]
    ),
    ARG.map("SELECT {}".format),
    ARG.map("SELECT * FROM t WHERE b = '{}'".format),
)


@st.composite
def sql_args(draw: st.DrawFn) -> list[str]:
    db = draw(st.one_of(st.sampled_from(["fz", "pg"]), ARG))
    mode = draw(st.sampled_from([["--raw"], ["--tables"], ["--raw", "--tables"]]))
    extra = options(draw, {"--json": None, "--attempts": INT, "--examples": INT, "--no-fewshot": None})
    return ["sql", draw(SQL), "--db", db, *mode, *extra]


@FUZZ
@given(data=st.data())
def test_data_source_commands(data: st.DataObject, live: dict[str, str], fuzz_url: str) -> None:
    """ladder db add/remove/sources/examples and ladder sql --raw/--tables with any names, URLs and SQL."""
    args = data.draw(st.one_of(source_args(fuzz_url), sql_args()))
    if args[:2] == ["db", "remove"] or args[:2] == ["db", "add"]:
        assume(args[2] not in ("fz", "pg"))  # the other examples need these two
    assert_clear(invoke(args, env=live), args)


@st.composite
def search_args(draw: st.DrawFn) -> list[str]:
    filters = st.one_of(ARG, st.builds("{}={}".format, st.sampled_from(["title", "source", "date", ""]), JSONISH))
    choices = {
        "-c": st.one_of(st.just("fz"), ARG),
        "--k": INT,
        "--mode": st.one_of(st.sampled_from(["dense", "keyword", "hybrid"]), ARG),
        "--filter": filters,
        "--recency": None,
        "--json": None,
    }
    return ["search", draw(st.one_of(ARG, SQL)), *options(draw, choices)]


@st.composite
def collection_args(draw: st.DrawFn) -> list[str]:
    name = draw(st.one_of(ARG, st.just("fz")))
    which = draw(st.sampled_from(["describe", "drop", "list"]))
    if which == "describe":
        return ["collections", "describe", name, draw(ARG)]
    if which == "drop":
        assume(name != "fz")
        return ["collections", "drop", name, "--yes"]
    return ["collections", *draw(st.sampled_from([[], ["--json"]]))]


@FUZZ
@given(args=st.one_of(search_args(), collection_args()))
def test_search_and_collections(args: list[str], live: dict[str, str]) -> None:
    """ladder search with any query, collection, k, mode and filters; collections describe/drop."""
    assert_clear(invoke(args, env=live), args)


FILE_NAME = st.text(
    st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00/"), ARG_CHARS.filter(lambda c: c != "/")
    ),
    min_size=1,
    max_size=20,
).filter(lambda n: n not in (".", ".."))
SUFFIX = st.sampled_from([".md", ".txt", ".html", ".htm", ".pdf", ".jsonl", ".json", ".csv", ".sql", ""])
CONTENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    JSONISH.map(str.encode),
    st.lists(JSONISH, max_size=4).map(lambda lines: "\n".join(lines).encode()),
    st.sampled_from(
        [
            b"# [/]\n\n[bold]x[/] %s {0}\n",
            b'{"question": "q", "sql": "SELECT 1"}\n{"question": 1}\n',
            b"question,sql\nq,SELECT * FROM t\n",
            b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "[/]"}]}\n',
            b"%PDF-1.4\n%%EOF\n",
            b"<html><body><h1>[/]</h1><script>x</script></body></html>",
            b"\xef\xbb\xbf# BOM\n",
        ]
    ),
)


FILES = st.lists(st.tuples(st.builds("{}{}".format, FILE_NAME, SUFFIX), CONTENT), min_size=1, max_size=3)


def write_files(files: list[tuple[str, bytes]]) -> list[Path]:
    """The files in a fresh folder (and a path that does not exist)."""
    folder = Path(tempfile.mkdtemp(dir="."))
    made = []
    for name, content in files:
        try:
            (folder / name).write_bytes(content)
        except OSError:  # a name the file system refuses (too long)
            continue
        made.append(folder / name)
    return [*made, folder / "missing.md"]


@FUZZ
@given(data=st.data())
def test_files_in(data: st.DataObject, live: dict[str, str]) -> None:
    """ladder ingest, db examples import and finetune check on files of any name and content."""
    paths = [str(p) for p in write_files(data.draw(FILES))]
    which = data.draw(st.sampled_from(["ingest", "examples", "check"]))
    if which == "ingest":
        choices = {
            "-c": st.one_of(st.just("fz-ingest"), ARG),
            "--chunk-tokens": INT,
            "--overlap": INT,
            "--prune": None,
            "--json": None,
        }
        args = ["ingest", *paths, *options(data.draw, choices)]
    elif which == "examples":
        args = ["db", "examples", "import", "--db", data.draw(st.one_of(st.just("fz"), ARG)), paths[0]]
    else:
        args = ["finetune", "check", paths[0], *options(data.draw, {"--max-tokens": INT})]
    assert_clear(invoke(args, env=live), args)


@st.composite
def eval_args(draw: st.DrawFn) -> list[str]:
    run = st.one_of(INT, st.sampled_from(["1", "2147483648", "9223372036854775808"]))
    which = draw(st.sampled_from(["report", "compare", "run", "sweep"]))
    if which == "report":
        choices = {"--diff": ARG, "--metric": ARG, "--json": None, "--chart": OUT_PATH, "--html": OUT_PATH}
        return ["eval", "report", draw(run), *options(draw, choices)]
    if which == "compare":
        choices = {"--metric": ARG, "--rung": ARG, "--max-drop": FLOAT}
        return ["eval", "compare", draw(run), draw(run), *options(draw, choices)]
    dataset = draw(ARG)
    assume(dataset not in ("pubmedqa", "cisi", "fanoutqa", "sql-eval"))  # real runs: minutes each
    if which == "run":
        choices = {"--ladder": ARG, "--limit": INT, "--concurrency": INT, "--resume": INT, "-c": ARG}
        return ["eval", "run", dataset, *options(draw, choices)]
    return ["eval", "sweep-chunks", dataset, *options(draw, {"--sizes": ARG, "--limit": INT})]


@st.composite
def model_args(draw: st.DrawFn) -> list[str]:
    """ask and llm prompt, against an endpoint that refuses every connection."""
    if draw(st.booleans()):
        choices = {"--system": ARG, "--model": ARG, "--max-tokens": INT, "--json": None}
        return ["llm", "prompt", draw(ARG), *options(draw, choices)]
    switch = st.one_of(ARG, st.builds("{}={}".format, st.sampled_from(["hyde", "rerank", "x", ""]), ARG))
    choices = {"-c": ARG, "--set": switch, "--thread": ARG, "--db": ARG, "--json": None}
    return ["ask", draw(ARG), *options(draw, choices)]


LLM_FIELDS = [f for f in FIELDS if f.startswith("llm_")]


@FUZZ
@given(
    args=st.one_of(eval_args(), model_args()),
    llm=st.lists(
        st.sampled_from(LLM_FIELDS).flatmap(lambda f: st.tuples(st.just(f), field_values(f, anything=False))),
        max_size=2,
    ),
)
def test_eval_and_model_commands(args: list[str], llm: list[tuple[str, str]], live: dict[str, str]) -> None:
    """ladder eval report/compare/run/sweep-chunks; ask and llm prompt, with any model settings, where
    no model answers."""
    closed = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "LADDER_CHAT_MODEL": "none", "LADDER_LLM_MAX_RETRIES": "0"}
    env = {**live, **closed, **{f"LADDER_{field.upper()}": value for field, value in llm}}
    assert_clear(invoke(args, env=env), args)


LIVE_FIELDS = [f for f in FIELDS if not f.startswith(("embedding_", "db_pool_", "openai_", "database_url", "data_dir"))]


@FUZZ
@given(
    values=st.lists(
        st.sampled_from(LIVE_FIELDS).flatmap(lambda f: st.tuples(st.just(f), field_values(f, anything=False))),
        min_size=1,
        max_size=2,
    )
)
def test_settings_reach_a_search(values: list[tuple[str, str]], live: dict[str, str]) -> None:
    """Settings at their edges, all the way to a search on the database (the embedding model and the
    pool's size, which are costly to vary, are left to the tests above)."""
    env = {f"LADDER_{field.upper()}": value for field, value in values if "\x00" not in value}
    args = ["search", "the alpha server", "--json"]
    assert_clear(invoke(args, env={**live, **env}), args)


@pytest.mark.parametrize(
    ("args", "dotenv", "code", "message"),
    [
        ([b"feedback", b"caf\xe9", b"up"], None, 1, "error: text that is not UTF-8: 'caf\\udce9'"),
        ([b"db", b"info"], b"LADDER_COLLECTION=caf\xe9\n", 2, "error: invalid settings: cannot read the .env file"),
        ([b"logs", b"--since", b"99999999999d"], None, 2, "is more than 100 years"),
        ([b"export", b"evalset", b"--out", b""], None, 2, "is a folder"),
    ],
    ids=["argv-not-utf8", "dotenv-not-utf8", "age-too-long", "out-empty"],
)
def test_in_a_real_process(
    args: list[bytes], dotenv: bytes | None, code: int, message: str, live: dict[str, str], tmp_path: Path
) -> None:
    """What the fuzz found, as a user meets it: bytes in argv and .env that are not UTF-8, and so on."""
    if dotenv is not None:
        (tmp_path / ".env").write_bytes(dotenv)
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        env={**env, **live},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=120,
    )
    assert done.returncode == code, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
