"""Spreadsheets as data: `ladder db load-file` makes each sheet a typed table in a read-only database of its own."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from knowledge.db import Database
from tests.office_files import make_truncated_xlsx, make_xlsx
from tools.sql.database import DataSourceError
from tools.sql.safety import SQLRefused
from tools.sql.sheets import infer_column, load_spreadsheet, safe_identifier
from tools.sql.sources import get_source

MB = 10_000_000


def test_names_from_a_file_become_identifiers_of_allowed_characters_only() -> None:
    taken: set[str] = set()
    reserved = {"select", "order"}
    made = [
        safe_identifier(name, taken, reserved, "column")
        for name in [
            "Unit price (€)",
            "Unit price (€)",
            "Ünïcode Straße",
            "2024 total",
            'x"; DROP TABLE t; --',
            "",
            "Order",
        ]
    ]
    assert made == [
        "unit_price",
        "unit_price_2",
        "unicode_strae",
        "column_2024_total",
        "x_drop_table_t",
        "column",
        "order_",
    ]
    assert all(name.replace("_", "").isalnum() and name.isascii() and name == name.lower() for name in made)
    assert len(safe_identifier("a" * 300, set(), set(), "c")) == 63


@pytest.mark.parametrize(
    ("cells", "kind", "values"),
    [
        (["1", "2.0", "", "NA"], "bigint", [1, 2, None, None]),
        (["1.5", "2", "-3e2"], "double precision", [1.5, 2.0, -300.0]),
        ([3, 4.0, None], "bigint", [3, 4, None]),
        (["true", "False"], "boolean", [True, False]),
        (["2024-01-31", "2023-12-01"], "date", [dt.date(2024, 1, 31), dt.date(2023, 12, 1)]),
        (
            ["2024-01-31 10:00", "2024-02-01T09:30:00"],
            "timestamp",
            [dt.datetime(2024, 1, 31, 10), dt.datetime(2024, 2, 1, 9, 30)],
        ),
        (["01/02/2024", "2024-01-31"], "text", ["01/02/2024", "2024-01-31"]),  # never guessed from day/month
        (["12", "twelve", "NA"], "text", ["12", "twelve", "NA"]),
    ],
)
def test_column_types_are_inferred_from_every_value(cells: list, kind: str, values: list) -> None:
    assert infer_column(cells) == (kind, values)


def test_each_sheet_becomes_a_typed_table_read_through_a_role_that_cannot_write(
    url_server: str, tmp_path: Path
) -> None:
    path = make_xlsx(
        tmp_path / "Sales 2024.xlsx",
        {
            "Q1 Sales": [
                ["Region", "Units", "Price (€)", "Shipped"],
                ["North", 3, 2.5, dt.datetime(2024, 1, 5)],
                ["South", 4, 1.25, dt.datetime(2024, 2, 1)],
            ],
            "select": [["id", "order"], [1, "first"]],
        },
    )
    loaded, tables = load_spreadsheet(url_server, path, None, MB)
    assert loaded.name == "sales_2024" and "sales_2024_reader" in loaded.url
    assert [(t.name, [(c.name, c.type) for c in t.columns]) for t in tables] == [
        ("q1_sales", [("region", "text"), ("units", "bigint"), ("price", "double precision"), ("shipped", "date")]),
        ("select_", [("id", "bigint"), ("order_", "text")]),
    ]
    from tools.sql.database import open_source

    source = open_source("sales", loaded.url)
    assert source.run_sql("SELECT region, units * price AS total FROM q1_sales ORDER BY 1").rows == [
        ["North", 7.5],
        ["South", 5.0],
    ]
    assert source.run_sql("SELECT order_ FROM select_").rows == [["first"]]
    with pytest.raises(SQLRefused):
        source.run_sql("DELETE FROM q1_sales")
    with psycopg.connect(loaded.url, autocommit=True) as conn, pytest.raises(psycopg.Error):
        conn.execute("SET default_transaction_read_only = off; DELETE FROM q1_sales")  # the role itself cannot
    again, _ = load_spreadsheet(url_server, path, "sales_2024", MB)  # a second load replaces its own database
    assert open_source("s", again.url).run_sql("SELECT count(*) FROM q1_sales").rows == [[2]]


def test_a_folder_of_csvs_is_one_database_with_a_table_each(url_server: str, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "orders.csv").write_text("id,amount\n1,9.5\n2,10\n")
    (folder / "customers.csv").write_text("id;name\n1;Ann\n")
    (folder / "notes.txt").write_text("not a table")
    loaded, tables = load_spreadsheet(url_server, folder, "shop", MB)
    assert [t.name for t in tables] == ["customers", "orders"]
    from tools.sql.database import open_source

    rows = open_source("shop", loaded.url).run_sql("SELECT sum(amount) FROM orders").rows
    assert rows == [[19.5]]


def test_bad_files_and_names_get_a_clear_error_and_other_databases_are_untouched(
    url_server: str, tmp_path: Path
) -> None:
    cases = {
        make_truncated_xlsx(tmp_path / "cut.xlsx"): "cut.xlsx: not a valid XLSX workbook (truncated or corrupt",
        tmp_path / "report.pdf": "report.pdf is not a spreadsheet",
        tmp_path / "missing.csv": "missing.csv: cannot read",
    }
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4")
    for path, message in cases.items():
        with pytest.raises(DataSourceError, match="^" + message.replace("(", r"\(")):
            load_spreadsheet(url_server, path, None, MB)
    good = tmp_path / "t.csv"
    good.write_text("a\n1\n")
    with pytest.raises(DataSourceError, match="must be lower-case letters"):
        load_spreadsheet(url_server, good, "Bad-Name", MB)
    with pytest.raises(DataSourceError, match="Ladder or the server needs"):
        load_spreadsheet(url_server, good, "postgres", MB)
    with psycopg.connect(url_server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS precious")
        conn.execute("CREATE DATABASE precious")
    with pytest.raises(DataSourceError, match="was not made by `ladder db load-file`"):
        load_spreadsheet(url_server, good, "precious", MB)
    with psycopg.connect(url_server, autocommit=True) as conn:
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'precious'"
        )
        assert comment.fetchone() == (None,)  # still there, never marked as ours


def test_load_file_command_registers_the_database_for_the_sql_tool(embedded_db: Database, tmp_path: Path) -> None:
    path = tmp_path / "team.csv"
    path.write_text("name,age,joined\nAnn,34,2021-03-01\nBob,41,2019-07-15\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_")) and k != "DATABASE_URL"}
    env["LADDER_DATA_DIR"] = str(embedded_db.embedded.root)
    run = [sys.executable, "-m", "agent.cli", "db", "load-file"]
    done = subprocess.run([*run, str(path), "--name", "team"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "team (2 rows): name text, age bigint, joined date" in done.stdout
    with embedded_db.connection() as conn:
        assert get_source(conn, "team").run_sql("SELECT max(age) FROM team").rows == [[41]]
    bad = tmp_path / "notes.docx"
    bad.write_text("x")
    failed = subprocess.run([*run, str(bad)], env=env, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and "not a spreadsheet" in failed.stderr and "Traceback" not in failed.stderr


def test_the_benchmark_counts_an_answer_only_when_its_rows_hold_the_gold_one() -> None:
    from evals.bench.sheets import matches

    assert matches([["5076.0162601626016260"]], 5076.016)  # numeric reaches JSON as a string
    assert matches([[5076.0]], 5076.016)  # ROUND(avg) still counts
    assert not matches([[5000]], 5076.016)
    assert not matches([[344], [1]], 344)  # one answer wanted, two rows given
    groups = {"Adelie": 152, "Chinstrap": 68, "Gentoo": 124}
    assert matches([["Gentoo", 124], ["Adelie", 152], ["Chinstrap", 68]], groups)
    assert not matches([["Gentoo", 124], ["Adelie", 152]], groups)
    assert not matches([["Gentoo", 152], ["Adelie", 124], ["Chinstrap", 68]], groups)
    assert matches([["gentoo "]], "Gentoo") and not matches([["Adelie"]], "Gentoo")
