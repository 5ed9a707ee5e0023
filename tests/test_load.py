"""The load checks: concurrent sessions through the chat server's API keep their turns apart, and
searches keep answering while a folder is ingested."""

from __future__ import annotations

import uuid
from pathlib import Path

from agent.chat.scripted import scripted_chat
from agent.core.config import Settings
from evals.bench.load import DOCS, _check_log, run_load, run_search_under_ingestion
from knowledge.base import KnowledgeBase


def test_concurrent_sessions_lose_and_cross_nothing(kb: KnowledgeBase) -> None:
    report = run_load(Settings(data_dir=kb.db.embedded.root), scripted_chat, sessions=4, turns=2, latency_s=0.05)
    assert report["problems"] == []
    assert report["turns_answered"] == 8 and report["p95_s"] >= report["p50_s"] > 0
    assert report["pool"]["requests_errors"] == 0 and report["pool"]["requests_num"] > 0


def test_concurrent_users_with_tokens_stay_apart(kb: KnowledgeBase) -> None:
    report = run_load(
        Settings(data_dir=kb.db.embedded.root), scripted_chat, sessions=3, turns=2, latency_s=0.05, users=True
    )
    assert report["problems"] == [] and report["users"] == 3 and report["turns_answered"] == 6
    with kb.db.connection() as conn:  # the run's users are removed afterwards
        assert conn.execute("SELECT count(*) FROM users WHERE name LIKE 'load-%'").fetchone()[0] == 0


def test_the_log_check_finds_lost_duplicated_and_crossed_turns(kb: KnowledgeBase) -> None:
    key = uuid.uuid4().hex[:8]
    threads = {0: f"load-{key}-0", 1: f"load-{key}-1"}
    rows = [
        (threads[0], f"q [tok-{key}-0-0]", f"a (tok-{key}-0-0)"),  # fine
        (threads[1], f"q [tok-{key}-1-0]", f"a (tok-{key}-0-0)"),  # crossed: session 0's answer
        (threads[0], f"q [tok-{key}-1-1]", f"a (tok-{key}-1-1)"),  # in the wrong thread
        (threads[1], f"q [tok-{key}-0-1]", f"a (tok-{key}-0-1)"),  # wrong thread, twice
        (threads[1], f"q [tok-{key}-0-1]", f"a (tok-{key}-0-1)"),
    ]
    with kb.db.connection() as conn:
        for thread, question, answer in rows:
            turn = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO turns (turn_id, thread_id, question, status, answer) VALUES (%s, %s, %s, 'done', %s)",
                (turn, thread, question, answer),
            )
    problems = _check_log(kb, threads, 2, key)
    assert f"tok-{key}-1-0: the logged answer carries ['tok-{key}-0-0']" in problems
    assert f"tok-{key}-1-1: logged in thread {threads[0]}, not {threads[1]}" in problems
    assert f"tok-{key}-0-1: logged 2 times" in problems
    assert not any(p.startswith(f"tok-{key}-0-0") for p in problems)


def test_searches_keep_answering_while_a_folder_is_ingested(kb: KnowledgeBase, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i in range(6):
        (folder / f"note-{i}.md").write_text(f"# Note {i}\n\nWarehouse note {i}: parcels leave at {i + 8} o'clock.\n")
    report = run_search_under_ingestion(
        Settings(data_dir=kb.db.embedded.root),
        scripted_chat,
        folder=folder,
        searchers=2,
        searches=3,
        rate=10.0,
        documents=DOCS,
        queries=["How long do refunds take?", "Where do parcels ship from?"],
        timeout_s=300,
    )
    assert report["problems"] == []
    quiet, busy = report["without_ingestion"], report["during_ingestion"]
    assert quiet["searches"] == quiet["answered"] == 6 and quiet["errors"] == quiet["empty"] == 0
    assert busy["searches"] == busy["answered"] > 0 and busy["errors"] == busy["empty"] == 0
    assert busy["p95_s"] >= busy["p50_s"] > 0 and report["p95_ratio"] > 0
    ingestion = report["ingestion"]
    assert ingestion["exit_code"] == 0 and ingestion["files_seen"] == ingestion["documents_added"] == 6
    assert ingestion["chunks_written"] >= 6 and ingestion["chunks_per_second"] > 0
    names = {c["name"] for c in kb.collections()}  # both collections are dropped afterwards
    assert not any(n.startswith(("load-search-", "load-ingest-")) for n in names)


def test_a_login_flood_during_the_load_is_refused_and_loses_nothing(kb: KnowledgeBase) -> None:
    report = run_load(
        Settings(data_dir=kb.db.embedded.root), scripted_chat, sessions=2, turns=2, latency_s=0.05, flood=20.0
    )
    assert report["problems"] == [] and report["users"] == 2
    assert report["quiet"]["turns_answered"] == report["flood"]["turns_answered"] == 8  # 2 rounds of 2 turns each
    assert report["p95_ratio"] is not None and report["p95_ratio"] > 0
    outcomes = [f["outcomes"] for f in report["login_flood"]]
    assert all(set(o) <= {"400", "429"} for o in outcomes), outcomes
    assert sum(o.get("429", 0) for o in outcomes) > sum(o.get("400", 0) for o in outcomes) > 0
    with kb.db.connection() as conn:  # the run's users and what the limits noted about them are gone
        assert conn.execute("SELECT count(*) FROM users WHERE name LIKE 'load-%'").fetchone()[0] == 0
        left = conn.execute("SELECT count(*) FROM login_attempts WHERE key LIKE 'load-%' OR key LIKE 'flood-%'")
        assert left.fetchone()[0] == 0
