"""The load check: concurrent sessions through the chat server's API keep their turns apart."""

from __future__ import annotations

import uuid

from agent.config import Settings
from evals.load_test import _check_log, run_load
from knowledge.base import KnowledgeBase


def test_concurrent_sessions_lose_and_cross_nothing(kb: KnowledgeBase) -> None:
    report = run_load(Settings(data_dir=kb.db.embedded.root), sessions=4, turns=2, latency_s=0.05)
    assert report["problems"] == []
    assert report["turns_answered"] == 8 and report["p95_s"] >= report["p50_s"] > 0
    assert report["pool"]["requests_errors"] == 0 and report["pool"]["requests_num"] > 0


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
