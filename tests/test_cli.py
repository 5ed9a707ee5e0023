"""The `ladder` command line, run as a user runs it: a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from knowledge.db import Database


def ladder(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LADDER_") and k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "pg.md").write_text("# Database\n\nSet DATABASE_URL to use your own PostgreSQL server with pgvector.")
    (folder / "ui.md").write_text("# Chat\n\nThe chat opens in the browser and streams answers.")
    (folder / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    return folder


def test_ingest_then_search_json(embedded_db: Database, corpus: Path) -> None:
    env = {"LADDER_DATA_DIR": str(embedded_db.embedded.root)}
    done = ladder("ingest", str(corpus), "--collection", "cli", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["documents_added"] == 2 and summary["files_seen"] == 3
    assert summary["skipped"][0]["reason"].startswith("binary")

    found = ladder("search", "which server holds the vectors", "-c", "cli", "--k", "2", "--json", env=env)
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 2
    assert set(results[0]) == {"doc_id", "chunk_id", "score", "text", "title", "metadata"}
    assert results[0]["doc_id"].endswith("pg.md") and results[0]["title"] == "Database"
    assert results[0]["score"] >= results[1]["score"]

    table = ladder("search", "browser chat", "-c", "cli", "--mode", "keyword", env=env)
    assert table.returncode == 0 and "ui.md" in table.stdout

    listed = json.loads(ladder("collections", "--json", env=env).stdout)
    assert {"name": "cli", "documents": 2}.items() <= next(c for c in listed if c["name"] == "cli").items()
    dropped = ladder("collections", "drop", "cli", "--yes", env=env)
    assert dropped.returncode == 0, dropped.stderr
    assert "cli" not in [c["name"] for c in json.loads(ladder("collections", "--json", env=env).stdout)]
    again = ladder("collections", "drop", "cli", "--yes", env=env)
    assert again.returncode == 1 and "no collection named 'cli'" in again.stderr


def test_collection_statistics_are_checked_and_rebuilt(embedded_db: Database, corpus: Path) -> None:
    env = {"LADDER_DATA_DIR": str(embedded_db.embedded.root)}
    assert ladder("ingest", str(corpus), "--collection", "cli-stats", env=env).returncode == 0
    shown = ladder("collections", "stats", "cli-stats", "--check", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["exact"] and report["chunks"] == 2 and report["lexemes"] > 5 and report["pending_deltas"] == 0
    with embedded_db.connection() as conn:
        conn.execute(
            "UPDATE term_stats SET df = df + 3 WHERE lexeme = 'browser'"
            " AND collection_id = (SELECT id FROM collections WHERE name = 'cli-stats')"
        )
    doubted = ladder("collections", "stats", "cli-stats", "--check", env=env)
    assert doubted.returncode == 1 and "'browser': stored 4, recounted 1" in doubted.stdout
    assert "--rebuild" in doubted.stderr
    rebuilt = ladder("collections", "stats", "cli-stats", "--rebuild", "--check", env=env)
    assert rebuilt.returncode == 0 and "check: exact" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    missing = ladder("collections", "stats", "no-such", env=env)
    assert missing.returncode == 1 and "no collection named 'no-such'" in missing.stderr


def test_database_url_path(url_server: str, corpus: Path, tmp_path: Path) -> None:
    env = {"DATABASE_URL": url_server, "LADDER_DATA_DIR": str(tmp_path / "never-used")}
    done = ladder("ingest", str(corpus), "-c", "by-url", "--json", env=env)
    assert done.returncode == 0, done.stderr
    info = ladder("db", "info", "--json", env=env)
    assert info.returncode == 0, info.stderr
    details = json.loads(info.stdout)
    assert details["embedded"] is False and details["postgres"].startswith("18")
    assert details["migrations"][0].startswith("0001_")
    assert not (tmp_path / "never-used").exists()


def test_clear_errors_without_tracebacks(embedded_db: Database, tmp_path: Path) -> None:
    env = {"LADDER_DATA_DIR": str(embedded_db.embedded.root)}
    bad_setting = ladder("search", "x", env={**env, "LADDER_CHUNK_TOKENS": "lots"})
    assert bad_setting.returncode == 2
    assert "invalid settings" in bad_setting.stderr and "chunk_tokens" in bad_setting.stderr
    assert "Traceback" not in bad_setting.stderr

    missing = ladder("search", "x", "-c", "does-not-exist", env=env)
    assert missing.returncode == 1
    assert "no collection named 'does-not-exist'" in missing.stderr and "Traceback" not in missing.stderr

    nowhere = ladder("ingest", str(tmp_path / "nope"), env=env)
    assert nowhere.returncode == 2 and "none of these paths exist" in nowhere.stderr

    bad_filter = ladder("search", "x", "--filter", "novalue", env=env)
    assert bad_filter.returncode == 2 and "key=value" in bad_filter.stderr


def test_dotenv_file_is_read(embedded_db: Database, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"LADDER_DATA_DIR={embedded_db.embedded.root}\nLADDER_COLLECTION=from-dotenv\n")
    missing = ladder("search", "x", cwd=tmp_path)
    assert missing.returncode == 1 and "'from-dotenv'" in missing.stderr


def test_demo_ingests_the_docs_and_answers(embedded_db: Database) -> None:
    env = {"LADDER_DATA_DIR": str(embedded_db.embedded.root)}
    done = ladder("demo", env=env)
    assert done.returncode == 0, done.stderr
    assert "into 'ladder-docs'" in done.stdout
    first = done.stdout.split("1. ", 1)[1]
    assert "database.md" in first.split("\n2. ")[0] and "DATABASE_URL" in first
