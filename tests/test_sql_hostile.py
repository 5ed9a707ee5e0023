"""Hostile SQL against real PostgreSQL and SQLite copies of Chinook: the allowlist, privileged
sources, and the bounds on memory and time.

Every hostile statement runs through ``run_sql`` as a superuser on PostgreSQL (the walls under
test are the allowlist and the READ ONLY transaction, not the role) and on a SQLite file; each is
refused with the name of what was refused, stopped with a reason, or shown to be harmless, and
afterwards every table's checksum and the server's objects, roles and settings are unchanged.
Each statement's time and memory are measured while it runs, against generous bounds: they are a
safety bound (a 30 s sleep or a 1 GB buffer would fail them), not a speed goal.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from evals.bench.sql_bounds import PeakRSS
from evals.sql.compare import gold_variants
from evals.sql.harness import read_questions
from knowledge.db import Database
from tests.test_sql import pg_checksums, sqlite_checksums
from tools.sql import allowlist
from tools.sql.bounded import MAX_ROW_BYTES
from tools.sql.database import DataSourceError, PostgresSource, ResultTooLarge, SQLiteSource
from tools.sql.examples import CHINOOK_EXAMPLES, read_examples_file
from tools.sql.loader import load_script, with_database
from tools.sql.safety import SQLRefused, check_sql
from tools.sql.sources import PrivilegedSource, add_source, get_source

# Room for SQLite's child process to start and finish honest work on a busy 2-core CI machine (at 2 s,
# printf's NULL past SQLITE_LIMIT_LENGTH was once cut off by the time limit under the full suite).
TIMEOUT_MS = 4000
MAX_SECONDS = 10.0  # the time limit is 4 s: a statement that slipped past it (pg_sleep(30)) would fail this
MAX_GROWTH = 200 * 2**20  # bytes of this process's memory one statement may add while it runs
REFUSED, STOPPED, HARMLESS = "refused", "stopped", "harmless"
FOREVER = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


@dataclass(frozen=True)
class Case:
    sql: str
    expect: str  # REFUSED (SQLRefused), STOPPED (DataSourceError) or HARMLESS (runs, within bounds)
    match: str = ""  # what the message must say: for a refusal, the name of what was refused
    rows: Any = None  # for HARMLESS: the rows it returns, or "cut" for a result cut at the row cap

    def __str__(self) -> str:
        return self.sql[:70]


def R(sql: str, match: str) -> Case:
    return Case(sql, REFUSED, match)


def S(sql: str, match: str) -> Case:
    return Case(sql, STOPPED, match)


def H(sql: str, rows: Any) -> Case:
    return Case(sql, HARMLESS, rows=rows)


POSTGRES = [
    # SQL that runs SQL given as text (issue 13: the ts_stat route slept past the pg_sleep refusal)
    R("SELECT word FROM ts_stat('SELECT to_tsvector(''simple'', pg_sleep(3)::text)')", "ts_stat"),
    R("SELECT * FROM ts_stat($$SELECT to_tsvector('simple', pg_sleep(3)::text)$$)", "ts_stat"),
    R("SELECT ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''::tsquery')", "ts_rewrite"),
    R("SELECT query_to_xml('SELECT pg_sleep(3)', true, true, '')", "query_to_xml"),
    R("SELECT query_to_xml_and_xmlschema('SELECT 1', true, true, '')", "query_to_xml_and_xmlschema"),
    R("SELECT cursor_to_xml('c', 1, false, false, '')", "cursor_to_xml"),
    R("SELECT table_to_xml('artist', true, true, '')", "table_to_xml"),
    R("SELECT database_to_xml(true, true, '')", "database_to_xml"),
    R("SELECT dblink('dbname=postgres', 'SELECT 1')", "dblink"),
    # one function, every spelling: prefix, quoting, case, comments, unicode escapes
    R("SELECT pg_catalog.pg_sleep(3)", r"pg_catalog\.pg_sleep"),
    R('SELECT "pg_sleep"(3)', '"pg_sleep"'),
    R("SELECT PG_SLEEP(3)", "pg_sleep"),
    R('SELECT pg_catalog."pg_sleep"(3)', "pg_sleep"),
    R('SELECT "PG_SLEEP"(3)', "PG_SLEEP"),
    R("SELECT pg_sleep/**/(3)", "pg_sleep"),
    R('SELECT U&"\\0070g_sleep"(3)', "0070g_sleep"),
    R("SELECT pg_sleep_for('3 seconds')", "pg_sleep_for"),
    R("SELECT public.lower('x')", r"public\.lower"),
    R("SELECT * FROM public.generate_series(1, 3)", r"public\.generate_series"),
    # files, large objects, sequences, locks, settings, other sessions, side effects
    R("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    R("SELECT pg_read_binary_file('PG_VERSION')", "pg_read_binary_file"),
    R("SELECT * FROM pg_ls_dir('.')", "pg_ls_dir"),
    R("SELECT * FROM pg_catalog.pg_ls_dir('.')", "(?i)pg_ls_dir"),
    R("SELECT * FROM artist a JOIN LATERAL pg_ls_dir('.') d ON true", "pg_ls_dir"),
    R("SELECT pg_stat_file('PG_VERSION')", "pg_stat_file"),
    R("SELECT lo_import('/etc/passwd')", "lo_import"),
    R("SELECT lo_export(1, '/tmp/ladder-pwned')", "lo_export"),
    R("SELECT lo_from_bytea(0, 'x')", "lo_from_bytea"),
    R("SELECT lo_get(1)", "lo_get"),
    R("COPY artist TO PROGRAM 'id'", "only SELECT"),
    R("SELECT nextval('artist_artist_id_seq')", "nextval"),
    R("SELECT setval('artist_artist_id_seq', 1)", "setval"),
    R("SELECT currval('x') + lastval()", "currval"),
    R("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
    R("SELECT pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock"),
    R("SELECT current_setting('data_directory')", "current_setting"),
    R("SELECT set_config('default_transaction_read_only', 'off', true)", "set_config"),
    R("SELECT pg_terminate_backend(pg_backend_pid())", "pg_terminate_backend"),
    R("SELECT pg_cancel_backend(1)", "pg_cancel_backend"),
    R("SELECT pg_reload_conf()", "pg_reload_conf"),
    R("SELECT random()", "random"),
    R("SELECT setseed(0.5)", "setseed"),
    R("SELECT pg_current_xact_id()", "pg_current_xact_id"),
    R("SELECT pg_notify('ch', 'x')", "pg_notify"),
    R("SELECT pg_logical_emit_message(false, 'x', 'y')", "pg_logical_emit_message"),
    R("SELECT version()", "version"),
    R("SELECT gen_random_uuid()", "gen_random_uuid"),
    # system catalogs
    R("SELECT * FROM pg_stat_activity", "pg_stat_activity"),
    R("SELECT rolpassword FROM pg_catalog.pg_authid", "pg_authid"),
    R("SELECT * FROM pg_shadow", "pg_shadow"),
    R("SELECT * FROM pg_settings", "pg_settings"),
    R("SELECT * FROM pg_file_settings", "pg_file_settings"),
    R("SELECT * FROM pg_user_mappings", "pg_user_mappings"),
    R("SELECT * FROM information_schema.role_table_grants", "information_schema"),
    R("SELECT * FROM (SELECT * FROM pg_stat_activity) s", "pg_stat_activity"),
    # casts that look names up, or run a type's input function
    R("SELECT 'artist'::regclass", "REGCLASS"),
    R("SELECT artist_id::regclass FROM artist", "REGCLASS"),
    R("SELECT 'pg_sleep(float8)'::regprocedure", "REGPROCEDURE"),
    R("SELECT CAST('public' AS regnamespace)", "REGNAMESPACE"),
    R("SELECT 1::oid", "OID"),
    R("SELECT '<a/>'::xml", "XML"),
    R("SELECT artist_id OPERATOR(pg_catalog.+) 1 FROM artist", "OPERATOR"),
    # a forbidden function hidden in every place a query can hold one
    R("SELECT * FROM artist, LATERAL (SELECT pg_sleep(3)) s", "pg_sleep"),
    R("SELECT name FROM artist ORDER BY (SELECT count(*) FROM pg_ls_dir('.'))", "pg_ls_dir"),
    R("SELECT * FROM artist WHERE artist_id IN (SELECT pg_sleep(3))", "pg_sleep"),
    R("SELECT * FROM artist WHERE EXISTS (SELECT pg_sleep(3))", "pg_sleep"),
    R("WITH x AS (SELECT pg_sleep(3)) SELECT * FROM x", "pg_sleep"),
    R(
        "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE pg_sleep(1) IS NULL) SELECT * FROM x",
        "pg_sleep",
    ),
    R("SELECT count(*) FROM artist GROUP BY artist_id HAVING max(pg_backend_pid()) > 0", "pg_backend_pid"),
    R("SELECT max(pg_sleep(3)) OVER () FROM artist", "pg_sleep"),
    R("SELECT * FROM ROWS FROM (generate_series(1, 2), pg_sleep(3))", "pg_sleep"),
    R("SELECT lower(pg_read_file('/etc/passwd'))", "pg_read_file"),
    R("SELECT (SELECT pg_read_file('/etc/passwd'))::text", "pg_read_file"),
    R("SELECT CAST(pg_sleep(3) AS text)", "pg_sleep"),
    R("SELECT format('%s', pg_sleep(3))", "pg_sleep"),
    R("VALUES (pg_sleep(3))", "pg_sleep"),
    R("SELECT 1 UNION ALL SELECT pg_sleep(3)", "pg_sleep"),
    # statements that are not one read-only query
    R("SELECT 1 /* */ ; SELECT pg_sleep(3)", "only one statement"),
    R("SELECT 1 -- x\n; SELECT pg_sleep(3)", "only one statement"),
    R("SELECT * FROM artist FOR SHARE", "LOCK"),
    R("SELECT * FROM artist FOR NO KEY UPDATE", "LOCK"),
    R("SELECT * FROM artist FOR KEY SHARE", "LOCK"),
    R("WITH a AS (UPDATE artist SET name = 'pwned' RETURNING 1) SELECT * FROM a", "UPDATE"),
    R("WITH a AS (INSERT INTO artist VALUES (9999, 'pwned') RETURNING 1) SELECT * FROM a", "INSERT"),
    R("SELECT * INTO TEMP pwned FROM artist", "INTO"),
    R("SELECT $1", "PARAMETER"),
    R("SELECT * FROM artist TABLESAMPLE SYSTEM (10)", "TABLESAMPLE"),
    R("EXPLAIN ANALYZE SELECT pg_sleep(3)", "only SELECT"),
    R("SHOW data_directory", "only SELECT"),
    R("DO $$BEGIN PERFORM pg_sleep(3); END$$", "only SELECT"),
    R("PREPARE p AS SELECT 1", "only SELECT"),
    R("SET SESSION AUTHORIZATION DEFAULT", "only SELECT"),
    R("SET TRANSACTION READ WRITE", "only SELECT"),
    R("RESET ALL", "only SELECT"),
    R("LOAD 'auto_explain'", "only SELECT"),
    R("CREATE EXTENSION IF NOT EXISTS dblink", "only SELECT"),
    R("CALL p()", "only SELECT"),
    R("LISTEN ch", "only SELECT"),
    R("DECLARE c CURSOR FOR SELECT 1", "only SELECT"),
    # text that only looks like SQL, and work that is bounded
    H("SELECT 1 /* /* */ , pg_sleep(3) */", [[1]]),
    H("SELECT $$; DROP TABLE artist; $$", [["; DROP TABLE artist; "]]),
    H("SELECT e'\\x27; DROP TABLE artist; --'", [["'; DROP TABLE artist; --"]]),
    H("SELECT E'\\u0070g_sleep(3)'", [["pg_sleep(3)"]]),
    H("SELECT 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!' ~ '(a+)+$'", [[False]]),
    H("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT n FROM t", "cut"),
    H("SELECT g, repeat('x', 1000) FROM generate_series(1, 400000) g", "cut"),
    S(FOREVER, "cancelled at the time limit"),
    S("SELECT count(*) FROM track a, track b, track c", "cancelled at the time limit"),
    S("SELECT repeat('x', 5000000)", "result row is"),
    S("SELECT a, a, a FROM (SELECT repeat('x', 2000000) AS a) s", "result row is"),
    S("SELECT string_agg(repeat('x', 1000), ',') FROM generate_series(1, 100000)", "result row is"),
]

SQLITE = [
    R("SELECT load_extension('/tmp/pwned')", "load_extension"),
    R("SELECT LOAD_EXTENSION('/tmp/pwned')", "load_extension"),
    R("SELECT \"load_extension\"('/tmp/pwned')", "load_extension"),
    R("SELECT [load_extension]('/tmp/pwned')", "load_extension"),
    R("SELECT main.load_extension('/tmp/pwned')", r"main\.load_extension"),
    R("SELECT readfile('/etc/passwd')", "readfile"),
    R("SELECT writefile('/tmp/ladder-pwned', 'x')", "writefile"),
    R("SELECT edit('x')", "edit"),
    R("SELECT fts3_tokenizer('simple')", "fts3_tokenizer"),
    R("SELECT sqlite_compileoption_get(0)", "sqlite_compileoption_get"),
    R("SELECT randomblob(1000000000)", "randomblob"),
    R("SELECT zeroblob(1000000000)", "zeroblob"),
    R("SELECT random()", "random"),
    R("SELECT last_insert_rowid()", "last_insert_rowid"),
    R("SELECT changes() + total_changes()", "changes"),
    R("SELECT sqlite_version()", "sqlite_version"),
    R("SELECT sqlite_offset(Name) FROM Artist", "sqlite_offset"),
    R("SELECT * FROM pragma_table_info('Artist')", "pragma_table_info"),
    R("SELECT * FROM pragma_function_list", "pragma_function_list"),
    R("SELECT * FROM sqlite_master", "sqlite_master"),
    R("SELECT sql FROM sqlite_schema", "sqlite_schema"),
    R("SELECT * FROM temp.sqlite_temp_master", "sqlite_temp_master"),
    R("SELECT * FROM sqlite_dbpage", "sqlite_dbpage"),
    R("SELECT * FROM dbstat", "dbstat"),
    R("SELECT CAST(Name AS BLOB) FROM Artist", "BLOB"),
    R("SELECT * FROM Artist WHERE ArtistId IN (SELECT load_extension('x'))", "load_extension"),
    R("WITH x AS (SELECT readfile('/etc/passwd') AS f) SELECT f FROM x", "readfile"),
    R("SELECT Name FROM Artist ORDER BY (SELECT random())", "random"),
    R("PRAGMA writable_schema = ON", "only SELECT"),
    R("PRAGMA query_only = OFF", "only SELECT"),
    R("ATTACH DATABASE '/tmp/ladder-pwned.db' AS pwned", "only SELECT"),
    R("DETACH DATABASE main", "only SELECT"),
    R("VACUUM INTO '/tmp/ladder-pwned.db'", "only SELECT"),
    R("REINDEX", "only SELECT"),
    R("SELECT 1; ATTACH 'x' AS y", "only one statement"),
    H("SELECT printf('%.*c', 100000000, 'x')", [[None]]),  # over SQLITE_LIMIT_LENGTH SQLite's printf gives NULL
    H("SELECT likelihood(1, 0.5)", [[1]]),
    H("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) SELECT n FROM t", "cut"),
    S("SELECT * FROM Artist WHERE Name LIKE printf('%.*c', 100000, '%')", "pattern too complex"),
    S("SELECT length(printf('%.*c', 2147483647, 'x'))", "cancelled at the time limit"),  # one C call: killed
    S(
        "WITH RECURSIVE r(i, s) AS (SELECT 0, 'a' UNION ALL SELECT i + 1, s || s FROM r WHERE i < 30)"
        " SELECT length(s) FROM r",
        f"over the {MAX_ROW_BYTES} byte limit",
    ),
    # 12 million rows to concatenate: on a busy machine the time limit can stop it before the byte limit does
    S(
        "SELECT length(group_concat(a.Name)) FROM Track a, Track b",
        f"over the {MAX_ROW_BYTES} byte limit|cancelled at the time limit",
    ),
    S("SELECT length(replace(printf('%.*c', 3000000, 'x'), 'x', 'xx'))", f"over the {MAX_ROW_BYTES} byte limit"),
    S("WITH x(v) AS (SELECT printf('%.*c', 3000000, 'x')) SELECT v, v FROM x", "result row is over"),
    S(
        "WITH RECURSIVE r(i, s) AS (SELECT 0, 'a' UNION ALL SELECT i + 1, s || s FROM r WHERE i < 21)"
        " SELECT instr(s || 'b', substr(s, 1, 1048576) || 'b') FROM r WHERE i = 21",
        "cancelled at the time limit",  # quadratic inside one C call: the child is killed
    ),
    S(FOREVER, "cancelled at the time limit"),
    S("SELECT count(*) FROM Track a, Track b, Track c", "cancelled at the time limit"),
]


def test_the_hostile_suite_is_large() -> None:
    assert len(POSTGRES) + len(SQLITE) >= 60 and len(SQLITE) >= 40 and len(POSTGRES) >= 60


@pytest.fixture(scope="module")
def hostile_pg(url_server: str, shared_data: Path) -> tuple[str, str]:
    """(superuser URL, read-only role URL) of a Chinook of its own on the URL-path server."""
    loaded = load_script(url_server, "chinook_hostile", shared_data / "chinook" / "Chinook_PostgreSql.sql")
    return with_database(url_server, "chinook_hostile"), loaded.url


@pytest.fixture(scope="module")
def hostile_sqlite(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    copy = tmp_path_factory.mktemp("hostile") / "chinook.sqlite"
    shutil.copy(shared_data / "chinook" / "Chinook_Sqlite.sqlite", copy)
    return copy


def pg_state(url: str) -> dict[str, Any]:
    """Every table's checksum, and the server's relations, roles, databases, large objects and settings."""
    with psycopg.connect(url) as conn:
        state = {
            name: conn.execute(sql).fetchall()
            for name, sql in {
                "relations": "SELECT n.nspname, c.relname, c.relkind FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname NOT LIKE 'pg\\_temp%' AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2",
                "roles": "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY 1",
                "databases": "SELECT datname FROM pg_database ORDER BY 1",
                "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
                "role_settings": "SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2",
                "sequences": "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1",
            }.items()
        }
    return {"tables": pg_checksums(url), **state}


def _run(source: Any, case: Case) -> None:
    """Run one case, asserting what it must do and that it stays within the time and memory bounds."""
    with PeakRSS() as peak:
        if case.expect == REFUSED:
            with pytest.raises(SQLRefused, match=case.match):
                source.run_sql(case.sql)
        elif case.expect == STOPPED:
            with pytest.raises(DataSourceError, match=case.match) as stopped:
                source.run_sql(case.sql)
            assert not isinstance(stopped.value, SQLRefused)
        else:
            result = source.run_sql(case.sql)
            if case.rows == "cut":
                assert result.truncated and len(result.rows) == source.row_cap
            else:
                assert result.rows == case.rows
    assert peak.seconds < MAX_SECONDS, f"{case.sql!r} took {peak.seconds:.1f} s"
    assert peak.growth < MAX_GROWTH, f"{case.sql!r} grew this process by {peak.growth / 2**20:.0f} MiB"


@pytest.mark.parametrize("case", POSTGRES, ids=str)
def test_hostile_postgres_statement(hostile_pg: tuple[str, str], case: Case) -> None:
    admin, _ = hostile_pg
    before = pg_state(admin)
    _run(PostgresSource("chinook", admin, timeout_ms=TIMEOUT_MS), case)
    assert pg_state(admin) == before


@pytest.mark.parametrize("case", SQLITE, ids=str)
def test_hostile_sqlite_statement(hostile_sqlite: Path, case: Case) -> None:
    before = sqlite_checksums(hostile_sqlite)
    _run(SQLiteSource("chinook", hostile_sqlite, timeout_ms=TIMEOUT_MS), case)
    assert sqlite_checksums(hostile_sqlite) == before
    assert not Path("/tmp/ladder-pwned").exists() and not Path("/tmp/ladder-pwned.db").exists()


def test_every_gold_query_of_the_sql_eval_and_every_chinook_example_passes(shared_data: Path) -> None:
    questions = read_questions(shared_data / "sql-eval" / "questions_postgres.csv")
    statements = [v for q in questions for v in gold_variants(q.gold)]
    statements += [sql for _, sql in read_examples_file(CHINOOK_EXAMPLES)]
    refused = []
    for sql in statements:
        try:
            check_sql(sql, "postgres")
        except SQLRefused as exc:
            refused.append((sql, str(exc)))
    assert len(statements) > 150 and refused == []


COMMON_POSTGRES = [
    "SELECT date_part('year', invoice_date), to_char(invoice_date, 'YYYY-MM'), date_trunc('month', invoice_date)::date"
    " FROM invoice",
    "SELECT billing_country, ROUND(SUM(total)::numeric, 2) AS revenue, COUNT(DISTINCT customer_id) FROM invoice"
    " GROUP BY billing_country HAVING SUM(total) > 10 ORDER BY revenue DESC NULLS LAST LIMIT 5",
    "SELECT name, RANK() OVER (PARTITION BY genre_id ORDER BY milliseconds DESC), LAG(name) OVER w FROM track"
    " WINDOW w AS (ORDER BY track_id)",
    "SELECT string_agg(DISTINCT name, ', ' ORDER BY name), array_agg(track_id), count(*) FILTER (WHERE bytes > 1)"
    " FROM track",
    "WITH t AS (SELECT genre_id, avg(milliseconds) a FROM track GROUP BY 1) SELECT g.name, t.a FROM t JOIN genre g"
    " USING (genre_id) WHERE g.name ILIKE '%rock%' OR g.name ~* 'metal'",
    "SELECT coalesce(nullif(company, ''), 'none'), greatest(1, 2), upper(left(first_name, 1)) || lower(last_name),"
    " EXTRACT(EPOCH FROM now() - '2020-01-01'::timestamp), CURRENT_DATE - INTERVAL '7 days' FROM customer",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total), mode() WITHIN GROUP (ORDER BY billing_city)"
    " FROM invoice",
    "SELECT a.name FROM artist a WHERE EXISTS (SELECT 1 FROM album al WHERE al.artist_id = a.artist_id)"
    " UNION SELECT name FROM genre EXCEPT SELECT name FROM media_type ORDER BY 1 OFFSET 2 FETCH FIRST 3 ROWS ONLY",
    "SELECT CASE WHEN total > 10 THEN 'big' ELSE 'small' END, total::int, CAST(total AS varchar(10)),"
    " split_part(billing_address, ' ', 1), length(billing_city), position('a' in billing_city) FROM invoice",
    "SELECT * FROM generate_series(1, 3) g, LATERAL (SELECT name FROM artist WHERE artist_id = g) a",
]
COMMON_SQLITE = [
    "SELECT strftime('%Y-%m', InvoiceDate), date(InvoiceDate, 'start of month'),"
    " julianday('now') - julianday(InvoiceDate) FROM Invoice",
    "SELECT BillingCountry, ROUND(SUM(Total), 2), COUNT(DISTINCT CustomerId), total(Total) FROM Invoice"
    " GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
    "SELECT Name, ROW_NUMBER() OVER (PARTITION BY GenreId ORDER BY Milliseconds DESC) FROM Track",
    "SELECT group_concat(Name, ', '), ifnull(Composer, '?'), iif(Bytes > 1, 1, 0), substr(Name, 1, 3),"
    " instr(Name, 'a'), printf('%.2f', UnitPrice), CAST(UnitPrice AS TEXT), typeof(Name) FROM Track GROUP BY GenreId",
    "WITH t AS (SELECT GenreId, avg(Milliseconds) a FROM Track GROUP BY 1) SELECT g.Name, t.a FROM t"
    " JOIN Genre g ON g.GenreId = t.GenreId WHERE g.Name LIKE '%rock%' COLLATE NOCASE",
    "SELECT json_extract('{\"a\": 1}', '$.a'), value FROM json_each('[1, 2]')",
]


@pytest.mark.parametrize(
    ("dialect", "sql"), [("postgres", s) for s in COMMON_POSTGRES] + [("sqlite", s) for s in COMMON_SQLITE]
)
def test_what_models_commonly_write_passes(dialect: str, sql: str) -> None:
    assert check_sql(sql, dialect).sql


def test_common_queries_run_on_both_engines(hostile_pg: tuple[str, str], hostile_sqlite: Path) -> None:
    _, reader = hostile_pg
    pg, lite = PostgresSource("c", reader), SQLiteSource("c", hostile_sqlite)
    assert all(pg.run_sql(sql).columns for sql in COMMON_POSTGRES)
    assert all(lite.run_sql(sql).columns for sql in COMMON_SQLITE)


def test_the_allowlist_names_only_what_the_installed_sqlglot_has() -> None:
    from sqlglot import exp

    assert sorted(n for n in allowlist.LISTED_CLASS_NAMES if not hasattr(exp, n)) == []
    assert sorted(n for n in allowlist.LISTED_TYPE_NAMES if n not in exp.DataType.Type.__members__) == []
    with pytest.raises(SQLRefused, match="no SQL allowlist for the mysql dialect"):
        check_sql("SELECT 1", "mysql")


def test_the_rendering_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """What runs is the rendering, so it is parsed and checked again: were the renderer to turn an
    allowed statement into a call that is not on the list, the second check refuses it."""
    import tools.sql.safety as safety

    assert check_sql("SELECT lower(name) FROM artist").sql == "SELECT LOWER(name) FROM artist"
    monkeypatch.setattr(safety, "_render", lambda statement, dialect: "SELECT PG_SLEEP(3) FROM artist")
    with pytest.raises(SQLRefused, match="pg_sleep"):
        check_sql("SELECT lower(name) FROM artist")


def _psql(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def roles(hostile_pg: tuple[str, str]) -> dict[str, str]:
    """Login roles with one power each beyond SELECT on Chinook, by name -> URL."""
    admin, _ = hostile_pg
    powers = {
        "ladder_t_files": "GRANT pg_read_server_files TO ladder_t_files",
        "ladder_t_program": "GRANT pg_execute_server_program TO ladder_t_program",
        "ladder_t_roles": "ALTER ROLE ladder_t_roles CREATEROLE",
        "ladder_t_dbs": "ALTER ROLE ladder_t_dbs CREATEDB",
        "ladder_t_writer": "GRANT INSERT ON artist TO ladder_t_writer",
        "ladder_t_owner": "ALTER TABLE genre OWNER TO ladder_t_owner",
        "ladder_t_reader": "SELECT 1",
    }
    for role, power in powers.items():
        _psql(
            admin,
            f"DO $$BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
            f"GRANT CONNECT ON DATABASE chinook_hostile TO {role}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            power,
        )
    yield {role: with_database(admin, "chinook_hostile", user=role) for role in powers}
    _psql(admin, "ALTER TABLE genre OWNER TO CURRENT_USER")


@pytest.mark.parametrize(
    ("role", "reason"),
    [
        ("ladder_t_files", "is a member of pg_read_server_files"),
        ("ladder_t_program", "is a member of pg_execute_server_program"),
        ("ladder_t_roles", "may create roles"),
        ("ladder_t_dbs", "may create databases"),
        ("ladder_t_writer", "may INSERT, UPDATE, DELETE or TRUNCATE public.artist"),
        ("ladder_t_owner", "owns public.genre"),
    ],
)
def test_a_role_that_may_do_more_than_read_is_refused(
    url_db: Database, roles: dict[str, str], role: str, reason: str
) -> None:
    assert reason in " ".join(PostgresSource("r", roles[role]).privileges())
    with url_db.connection() as conn:
        with pytest.raises(PrivilegedSource, match="--allow-privileged") as refused:
            add_source(conn, f"chin-{role}", roles[role])
        assert reason in str(refused.value)
        assert conn.execute("SELECT count(*) FROM data_sources WHERE name = %s", (f"chin-{role}",)).fetchone()[0] == 0


def test_a_privileged_source_is_refused_without_the_flag_and_read_only_with_it(
    url_db: Database, hostile_pg: tuple[str, str]
) -> None:
    admin, _ = hostile_pg
    before = pg_state(admin)
    with url_db.connection() as conn:
        with pytest.raises(PrivilegedSource, match="is a superuser"):
            add_source(conn, "chin-admin", admin)
        warning = add_source(conn, "chin-admin", admin, allow_privileged=True)
        assert warning is not None and "superuser" in warning and "READ ONLY" in warning
        source = get_source(conn, "chin-admin", timeout_ms=TIMEOUT_MS)
    assert source.run_sql("SELECT count(*) FROM artist").rows == [[275]]
    with pytest.raises(SQLRefused, match="pg_read_file"):
        source.run_sql("SELECT pg_read_file('PG_VERSION')")
    assert isinstance(source, PostgresSource)
    for statement in ("DELETE FROM artist", "CREATE TABLE pwned (a int)", "TRUNCATE artist"):
        with pytest.raises(DataSourceError, match="ReadOnlySqlTransaction"):  # the parser bypassed: still READ ONLY
            source._query(statement)
    assert pg_state(admin) == before


def test_grants_given_after_registration_are_seen_when_the_source_is_opened(
    url_db: Database, hostile_pg: tuple[str, str], roles: dict[str, str]
) -> None:
    admin, _ = hostile_pg
    with url_db.connection() as conn:
        assert add_source(conn, "chin-later", roles["ladder_t_reader"]) is None
        assert get_source(conn, "chin-later").run_sql("SELECT count(*) FROM genre").rows == [[25]]
        _psql(admin, "GRANT UPDATE ON track TO ladder_t_reader")
        try:
            with pytest.raises(PrivilegedSource, match=r"public\.track"):
                get_source(conn, "chin-later")
            with pytest.raises(PrivilegedSource, match="may write"):
                get_source(conn, "cfg", {"cfg": roles["ladder_t_reader"]})  # LADDER_DATA_SOURCES too
        finally:
            _psql(admin, "REVOKE UPDATE ON track FROM ladder_t_reader")
        assert get_source(conn, "chin-later").run_sql("SELECT 1").rows == [[1]]


def test_db_add_refuses_a_privileged_role_unless_allow_privileged(
    embedded_db: Database, hostile_pg: tuple[str, str]
) -> None:
    admin, _ = hostile_pg
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    env["LADDER_DATA_DIR"] = str(embedded_db.embedded.root)
    command = [sys.executable, "-m", "agent.cli", "db", "add", "chin-cli-admin", admin]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "is a superuser" in refused.stderr and "--allow-privileged" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = subprocess.run([*command, "--allow-privileged"], env=env, capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0 and "added chin-cli-admin" in allowed.stdout and "warning" in allowed.stderr
    with embedded_db.connection() as conn:
        assert get_source(conn, "chin-cli-admin").run_sql("SELECT count(*) FROM genre").rows == [[25]]


def test_builtin_functions_win_over_a_search_path_that_puts_others_first(url_server: str) -> None:
    admin = with_database(url_server, "searchpath")
    _psql(with_database(url_server, "postgres"), "DROP DATABASE IF EXISTS searchpath", "CREATE DATABASE searchpath")
    _psql(
        admin,
        "CREATE SCHEMA evil",
        "CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE sql AS $$SELECT 'pwned'$$",
        "ALTER DATABASE searchpath SET search_path = evil, pg_catalog, public",
    )
    with psycopg.connect(admin) as conn:  # the trap works on a plain connection
        assert conn.execute("SELECT lower('ABC')").fetchone() == ("pwned",)
    assert PostgresSource("sp", admin).run_sql("SELECT lower('ABC')").rows == [["abc"]]


def test_the_row_cap_bounds_memory_on_postgres(hostile_pg: tuple[str, str]) -> None:
    """Issue 13: 200 rows of this query buffered the whole result first (+791 MB)."""
    source = PostgresSource("c", hostile_pg[1], row_cap=200, timeout_ms=60_000)
    with PeakRSS() as peak:
        result = source.run_sql("SELECT g, repeat('x', 1000) FROM generate_series(1, 400000) g")
    assert len(result.rows) == 200 and result.truncated and result.truncated_by == "rows"
    assert peak.growth < 50 * 2**20, f"+{peak.growth / 2**20:.0f} MiB"


def test_long_rows_and_large_results_are_bounded_on_postgres(hostile_pg: tuple[str, str]) -> None:
    source = PostgresSource("c", hostile_pg[1], row_cap=200, timeout_ms=60_000)
    with PeakRSS() as peak:
        with pytest.raises(ResultTooLarge, match=f"the limit is {MAX_ROW_BYTES}"):
            source.run_sql("SELECT repeat('x', 50000000)")
        result = source.run_sql("SELECT g, repeat('x', 3000000) FROM generate_series(1, 50) g")
    assert result.truncated and result.truncated_by == "bytes" and 0 < len(result.rows) < 50
    assert result.rows[0][0] == 1 and len(result.rows[0][1]) == 3_000_000
    assert peak.growth < 150 * 2**20, f"+{peak.growth / 2**20:.0f} MiB"


def test_values_rows_and_results_are_bounded_on_sqlite(hostile_sqlite: Path) -> None:
    source = SQLiteSource("c", hostile_sqlite, row_cap=200, timeout_ms=60_000)
    with PeakRSS() as peak:
        assert source.run_sql("SELECT printf('%.*c', 100000000, 'x')").rows == [[None]]  # issue 13: +290 MB before
        with pytest.raises(DataSourceError, match=f"would be over the {MAX_ROW_BYTES} byte limit"):
            source.run_sql("SELECT replace(printf('%.*c', 3000000, 'x'), 'x', 'xx')")
        with pytest.raises(ResultTooLarge, match="result row is over"):
            source.run_sql("WITH x(v) AS (SELECT printf('%.*c', 3000000, 'x')) SELECT v, v FROM x")
        result = source.run_sql(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 50)"
            " SELECT n, printf('%.*c', 3000000, 'x') FROM r"
        )
    assert result.truncated and result.truncated_by == "bytes" and 0 < len(result.rows) < 50
    assert peak.growth < 150 * 2**20, f"+{peak.growth / 2**20:.0f} MiB"
    with pytest.raises(DataSourceError, match="byte limit"):  # Ladder's own statements, in process, too
        source._query("SELECT replace(printf('%.*c', 3000000, 'x'), 'x', 'xx')")


def test_a_table_whose_rows_are_too_long_is_described_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO big VALUES (1, ?)", ("x" * (MAX_ROW_BYTES + 10),))
    info = SQLiteSource("b", path).describe_table("big")
    assert [c["name"] for c in info.columns] == ["id", "body"] and info.samples == []


def test_a_query_stopped_at_the_time_limit_says_it_was_cancelled(
    hostile_pg: tuple[str, str], hostile_sqlite: Path
) -> None:
    forever = FOREVER
    said = "the query was cancelled at the time limit: it ran past the 500 ms limit"
    with pytest.raises(DataSourceError, match=said):
        PostgresSource("c", hostile_pg[1], timeout_ms=500).run_sql(forever)
    lite = SQLiteSource("c", hostile_sqlite, timeout_ms=500)
    with pytest.raises(DataSourceError, match=said):  # the progress handler
        lite.run_sql(forever)
    started = time.perf_counter()
    with pytest.raises(DataSourceError, match=said):  # one C call the handler cannot stop: the child is killed
        lite.run_sql("SELECT length(printf('%.*c', 2147483647, 'x'))")
    assert time.perf_counter() - started < MAX_SECONDS


def test_a_query_cancelled_by_someone_else_says_so(hostile_pg: tuple[str, str]) -> None:
    admin, reader = hostile_pg
    source = PostgresSource("c", reader, timeout_ms=60_000)
    caught: list[BaseException] = []

    def run() -> None:
        try:
            source.run_sql(FOREVER)
        except DataSourceError as exc:
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    with psycopg.connect(admin, autocommit=True) as conn:
        for _ in range(200):  # bounded: 20 s
            pids = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%ladder_result%'"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
            if pids:
                conn.execute("SELECT pg_cancel_backend(%s)", (pids[0][0],))
                break
            time.sleep(0.1)
    thread.join(30)
    assert pids and len(caught) == 1
    assert "cancelled by the server" in str(caught[0]) and "time limit" not in str(caught[0])
