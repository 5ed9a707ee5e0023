"""Loading databases (with a read-only role), the few-shot example store, and the sql-eval harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from evals.sql.harness import read_questions, run_sql_eval
from knowledge.db import Database
from tools.sql.database import DataSourceError, open_source
from tools.sql.examples import (
    CHINOOK_EXAMPLES,
    add_examples,
    count_examples,
    list_examples,
    read_examples_file,
    remove_examples,
    similar_examples,
)
from tools.sql.loader import filtered_script, load_script, with_database
from tools.sql.sources import get_source
from tools.sql.writer import query_database

TOP_ARTISTS = [["Iron Maiden", 213], ["U2", 135], ["Led Zeppelin", 114], ["Metallica", 112], ["Deep Purple", 92]]


@pytest.fixture(scope="module")
def chinook_reader(url_server: str, shared_data: Path) -> str:
    return load_script(url_server, "chinook_ro", shared_data / "chinook" / "Chinook_PostgreSql.sql").url


def test_urls_keep_server_and_credentials() -> None:
    socket = with_database("postgresql://ladder@/ladder?host=/tmp/ladder-pg-1", "chinook", user="chinook_reader")
    assert socket == "postgresql://chinook_reader@/chinook?host=%2Ftmp%2Fladder-pg-1"
    tcp = with_database("postgresql://u:p%40ss@db:5433/app?sslmode=require", "x", user="r", password="a/b")
    assert tcp == "postgresql://r:a%2Fb@db:5433/x?sslmode=require"
    assert psycopg.conninfo.conninfo_to_dict(tcp)["password"] == "a/b"


def test_the_loader_owns_database_and_owner_lines(tmp_path: Path) -> None:
    script = tmp_path / "s.sql"
    script.write_text(
        "DROP DATABASE IF EXISTS x;\nCREATE DATABASE x;\n\\c x;\nCREATE TABLE t (a int);\n"
        "ALTER TABLE public.t OWNER TO postgres;\nINSERT INTO t VALUES (1);\n"
    )
    assert filtered_script(script) == "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n"


def test_loaded_chinook_is_read_through_a_role_that_cannot_write(chinook_reader: str) -> None:
    assert "chinook_ro_reader@" in chinook_reader
    source = open_source("chinook", chinook_reader)
    top = (
        "SELECT ar.name, COUNT(*) AS tracks FROM track t JOIN album al ON al.album_id = t.album_id"
        " JOIN artist ar ON ar.artist_id = al.artist_id GROUP BY ar.name ORDER BY tracks DESC, ar.name LIMIT 5"
    )
    assert source.run_sql(top).rows == TOP_ARTISTS
    info = source.describe_table("track")  # keys come from pg_catalog, visible to a SELECT-only role
    assert info.primary_key == ["track_id"] and {"column": "genre_id", "references": "genre.genre_id"} in (
        info.foreign_keys
    )
    with psycopg.connect(chinook_reader, autocommit=True) as conn:  # no parser, no READ ONLY transaction
        for statement in ("DELETE FROM artist", "SET default_transaction_read_only = off"):
            try:
                conn.execute(statement)
                conn.execute("DELETE FROM artist")
            except psycopg.Error as exc:
                assert isinstance(exc, psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.InsufficientPrivilege)
            else:
                pytest.fail("the reader role wrote")
        assert conn.execute("SELECT count(*) FROM artist").fetchone()[0] == 275


def test_a_failing_script_leaves_no_half_loaded_database(url_server: str, tmp_path: Path) -> None:
    script = tmp_path / "broken.sql"
    script.write_text("CREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\nCREATE TABLE oops (;\n")
    with pytest.raises(DataSourceError, match=r"loading broken\.sql into half failed"):
        load_script(url_server, "half", script)
    with psycopg.connect(with_database(url_server, "half")) as conn:
        assert conn.execute("SELECT to_regclass('public.a')").fetchone()[0] is None
    with pytest.raises(DataSourceError, match="must be lower-case"):
        load_script(url_server, "Bad-Name", script)


def test_examples_are_checked_stored_and_retrieved_by_similarity(embedded_db: Database, embedder) -> None:
    pairs = read_examples_file(CHINOOK_EXAMPLES)
    assert len(pairs) >= 5
    with embedded_db.connection() as conn:
        remove_examples(conn, "chin-ex")
        assert add_examples(conn, embedder, "chin-ex", "postgres", pairs) == len(pairs)
        assert add_examples(conn, embedder, "chin-ex", "postgres", pairs[:1]) == 1  # replaced, not duplicated
        assert count_examples(conn, "chin-ex") == len(pairs)
        with pytest.raises(DataSourceError, match="is refused"):
            add_examples(conn, embedder, "chin-ex", "postgres", [("Wipe it", "SELECT 1"), ("Wipe", "DELETE FROM x")])
        assert count_examples(conn, "chin-ex") == len(pairs)  # nothing of the refused batch was stored
        found = similar_examples(conn, embedder, "chin-ex", "Which four genres have the most songs?", k=2)
        assert len(found) == 2 and found[-1].question == "Which three genres have the most tracks?"
        assert found[-1].similarity >= found[0].similarity
        left_out = similar_examples(
            conn, embedder, "chin-ex", "Which three genres have the most tracks?", exclude_question=pairs[1][0]
        )
        assert pairs[1][0] not in [e.question for e in left_out]
        assert similar_examples(conn, embedder, "other-source", "anything") == []
        assert list_examples(conn, "chin-ex")[0].question == pairs[0][0]


def test_example_files_say_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "ok.csv"
    good.write_text('question,query\n"How many, exactly?",SELECT 1\n')
    assert read_examples_file(good) == [("How many, exactly?", "SELECT 1")]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("q,s\na,b\n")
    with pytest.raises(DataSourceError, match="needs the columns question and sql"):
        read_examples_file(bad_csv)
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"question": "a", "sql": "SELECT 1"}\n{"question": "b"}\n')
    with pytest.raises(DataSourceError, match=r"bad\.jsonl:2"):
        read_examples_file(bad_jsonl)


class _Replay:
    """A JSON caller that answers every question with SQL chosen by a function, recording prompts."""

    def __init__(self, choose) -> None:
        self.choose = choose
        self.seen: list[list[dict]] = []

    def json(self, step, messages, model, *, max_tokens=None):
        self.seen.append(list(messages))
        return model(sql=self.choose(messages))


def test_sql_eval_gold_scores_everything_and_wrong_sql_scores_nothing(embedded_db: Database, monkeypatch) -> None:
    from agent.core.config import Settings

    settings = Settings(data_dir=embedded_db.embedded.root)
    gold = run_sql_eval(settings, model="gold", limit=12)
    accuracy = gold.accuracy()["gold"]
    assert accuracy["all"] == 1.0 and len(accuracy) == 7  # all six categories are in a spread of 12
    assert not gold.skipped

    import evals.sql.harness as sql_eval

    questions = {
        q.question: q for q in read_questions(sql_eval.shared_data_dir() / "sql-eval" / "questions_postgres.csv")
    }
    callers: list[_Replay] = []

    def scripted(_settings, _model):
        from contextlib import contextmanager

        @contextmanager
        def opened():
            def new():
                def choose(messages):
                    asked = messages[-1]["content"].split("\n")[0]
                    shown = [m["content"] for m in messages[1:-1] if m["role"] == "user"]
                    assert asked not in shown  # leave-one-out: never its own gold as an example
                    first = sql_eval.gold_variants(questions[asked].gold)[0]
                    return first if questions[asked].category == "ratio" else "SELECT 1"

                callers.append(_Replay(choose))
                return callers[-1]

            yield new

        return opened()

    monkeypatch.setattr(sql_eval, "_model_caller", scripted)
    report = run_sql_eval(settings, model="scripted", limit=12)
    by_mode = report.accuracy()
    assert set(by_mode) == {"zero-shot", "few-shot"}
    for cells in by_mode.values():
        assert cells["ratio"] == 1.0 and cells["group_by"] == 0.0 and 0 < cells["all"] < 1
    few_shot_prompts = [c.seen[0] for c in callers[1::2]]
    assert all(len(p) == 2 + 2 * 3 for p in few_shot_prompts)  # system, 3 example pairs, question
    assert all(len(c.seen[0]) == 2 for c in callers[0::2])


def test_eval_sql_cli_and_db_load(embedded_db: Database) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    env["LADDER_DATA_DIR"] = str(embedded_db.embedded.root)
    run = [sys.executable, "-m", "agent.cli"]
    loaded = subprocess.run([*run, "db", "load", "chinook"], env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert "read-only role chinook_reader" in loaded.stdout.replace("\n", " ")
    with embedded_db.connection() as conn:
        assert get_source(conn, "chinook").run_sql("SELECT count(*) FROM artist").rows == [[275]]
        assert count_examples(conn, "chinook") == len(read_examples_file(CHINOOK_EXAMPLES))
    ran = subprocess.run(
        [*run, "eval", "sql", "--model", "gold", "--limit", "6", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["accuracy"]["gold"]["all"] == 1.0
    missing = subprocess.run([*run, "db", "load", "other"], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "give the script" in missing.stderr and "Traceback" not in missing.stderr


def test_query_database_shows_examples_before_the_question(embedded_db: Database, embedder, chinook_reader) -> None:
    source = open_source("chinook", chinook_reader)
    with embedded_db.connection() as conn:
        add_examples(conn, embedder, "chin-q", "postgres", read_examples_file(CHINOOK_EXAMPLES))
        shots = [(e.question, e.sql) for e in similar_examples(conn, embedder, "chin-q", "Top 5 artists by tracks")]
    model = _Replay(lambda messages: "SELECT count(*) FROM artist")
    answer = query_database(model, source, "Top 5 artists by tracks", examples=shots)
    assert answer.result is not None and answer.result.rows == [[275]]
    assert [m["role"] for m in model.seen[0]] == ["system"] + ["user", "assistant"] * 3 + ["user"]


def test_registering_a_role_that_could_write_is_refused_unless_allowed_and_warns(
    url_db: Database, chinook_reader: str
) -> None:
    from tools.sql.database import PostgresSource
    from tools.sql.sources import PrivilegedSource, add_source

    admin = with_database(chinook_reader, "chinook_ro", user=psycopg.conninfo.conninfo_to_dict(url_db.url)["user"])
    assert not PostgresSource("ro", chinook_reader).can_write()
    assert PostgresSource("rw", admin).can_write()
    with url_db.connection() as conn:
        assert add_source(conn, "chin-ro", chinook_reader) is None
        with pytest.raises(PrivilegedSource, match="--allow-privileged"):
            add_source(conn, "chin-rw", admin)
        warning = add_source(conn, "chin-rw", admin, allow_privileged=True)
    assert warning is not None and "may write" in warning and "READ ONLY" in warning


def test_sql_tools_for_callers_that_bring_their_own_model(chinook_reader: str) -> None:
    from tools.sql.tool import NAMES, SCHEMAS, call_sql_tool

    source = open_source("chinook", chinook_reader)
    assert (
        {s["function"]["name"] for s in SCHEMAS}
        == NAMES
        == {
            "list_tables",
            "describe_table",
            "query_database",
            "run_sql",
        }
    )
    assert "artist" in call_sql_tool("list_tables", "", source)["tables"]
    described = call_sql_tool("describe_table", '{"table": "album"}', source)
    assert described["primary_key"] == ["album_id"] and len(described["samples"]) == 3
    ran = call_sql_tool("run_sql", {"sql": "SELECT name FROM artist ORDER BY artist_id"}, source)
    assert ran["rows"][0] == ["AC/DC"] and ran["truncated"] and len(ran["rows"]) == 50  # capped for a context
    assert "only SELECT" in call_sql_tool("run_sql", {"sql": "DELETE FROM artist"}, source)["error"]
    assert "not valid JSON" in call_sql_tool("run_sql", "{nope", source)["error"]
    assert "unknown arguments: extra" in call_sql_tool("run_sql", {"sql": "SELECT 1", "extra": 1}, source)["error"]
    assert "missing text arguments: sql" in call_sql_tool("run_sql", {}, source)["error"]
    assert "the limit is 200" in call_sql_tool("describe_table", {"table": "t" * 300}, source)["error"]
    assert "no table 'nope'" in call_sql_tool("describe_table", {"table": "nope"}, source)["error"]
    assert "unknown tool" in call_sql_tool("drop_everything", {}, source)["error"]
    assert "needs a chat model" in call_sql_tool("query_database", {"question": "How many?"}, source)["error"]
    answered = call_sql_tool(
        "query_database",
        {"question": "How many artists?"},
        source,
        caller=_Replay(lambda messages: "SELECT count(*) FROM artist"),
    )
    assert answered["rows"] == [[275]] and answered["sql"].startswith("SELECT")
