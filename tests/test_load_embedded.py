"""Several users at once on the real embedded model: turns wait their turn, none breaks, crosses or is lost."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.chat.scripted import loopback_chat
from agent.core.config import Settings
from evals.bench.load_embedded import QUESTIONS, _check_turns, _Run, _Turn, run_embedded_load, session_document
from knowledge.base import KnowledgeBase


@pytest.mark.slow
def test_four_sessions_at_once_on_the_embedded_model_each_get_their_own_answer(kb: KnowledgeBase) -> None:
    """Four chat sessions through the chat server's API at once, on the real 0.5B: every turn finishes
    with its own answer (from its own document's passages), none is broken, lost or crossed, and all
    four waited in line and heard their place (QueueEvents ending in 0)."""
    settings = Settings(
        data_dir=kb.db.embedded.root,
        local_model="qwen2.5-coder-0.5b-instruct",
        llm_threads=1,
        llm_context_tokens=2048,
        answer_max_tokens=24,  # the point is four whole turns, not long answers
        passages_per_question=3,
        use_fact_check=False,
    )
    report = run_embedded_load(settings, loopback_chat, sessions=4, questions=1, baseline=False, kb=kb)
    assert report["problems"] == []
    together = report["together"]
    assert together["turns"] == together["answered"] == 4
    assert together["turns_that_waited"] == 4 and together["most_ahead"] == 4  # the last of four, behind the hold
    assert report["model"] == "qwen2.5-coder-0.5b-instruct"
    assert not any(c["name"].startswith("load-embedded-") for c in kb.collections())  # dropped afterwards


def _turn(run: _Run, session: int, turn_id: str, **reply: object) -> _Turn:
    question = QUESTIONS[session_document(session)][0]
    reply = {"answer": "An answer [1].", "citations": [{"doc_id": "/d/x.md", "chunk_id": 7}], **reply}
    return _Turn(
        "together", session, 0, f"together-{run.run_key}-{session}", question, 1.0, {"turn_id": turn_id, **reply}
    )


def _row(run: _Run, session: int, turn_id: str, **fields: object) -> dict[str, object]:
    doc = session_document(session)
    row = {
        "turn_id": turn_id,
        "thread_id": f"together-{run.run_key}-{session}",
        "question": QUESTIONS[doc][0],
        "status": "done",
        "answer": "An answer [1].",
        "error": None,
        "citations": [{"doc_id": "/d/x.md", "chunk_id": 7}],
        "passages": [{"doc_id": f"/docs/{doc}", "chunk_id": 7, "rank": 1, "sub_question": 0}],
        "events": [{"type": "queue", "ahead": 2, "seconds": 0.0}, {"type": "queue", "ahead": 0, "seconds": 3.0}],
    }
    return {**row, **fields}


def test_the_check_finds_broken_lost_crossed_and_unqueued_turns() -> None:
    run = _Run("", "c", "k1", sessions=7, questions=1)
    rows = {
        "t0": _row(run, 0, "t0"),  # fine
        "t1": _row(run, 1, "t1", status="failed", error="the model's answer was cut off mid-stream"),
        "t2": _row(run, 0, "t2"),  # session 2's reply names session 0's turn: crossed
        "t3": _row(run, 3, "t3", answer="Someone else's answer."),  # the client got another text than logged
        "t4": _row(run, 4, "t4", passages=[{"doc_id": "/docs/agent.md", "chunk_id": 9, "rank": 1}], events=[]),
        "t6": _row(run, 6, "t6", events=[{"type": "queue", "ahead": a} for a in (1, 2, 0)]),  # went backwards
    }
    run.turns = [
        _turn(run, 0, "t0"),
        _turn(run, 1, "t1", error="the model's answer was cut off mid-stream"),
        _turn(run, 2, "t2"),
        _turn(run, 3, "t3"),
        _turn(run, 4, "t4"),
        _Turn("together", 5, 0, f"together-{run.run_key}-5", QUESTIONS[session_document(5)][0], failure="ReadTimeout"),
        _turn(run, 6, "t6"),
    ]
    problems = _check_turns(run, rows, baseline=False, queued=True)
    text = "\n".join(problems)
    assert "together session 0" not in text
    assert "together session 1 turn 0: failed: the model's answer was cut off mid-stream" in problems
    assert f"together session 2 turn 0: crossed: the reply is the turn asked in together-{run.run_key}-0" in text
    assert f"together-{run.run_key}-0: {QUESTIONS['database.md'][0]!r} logged 2 times, not once" in problems
    assert "together session 3 turn 0: the answer received is not the answer logged" in problems
    assert "together session 4 turn 0: its best passages come from ['agent.md'], not from overview.md" in problems
    assert "together session 4 turn 0: cites chunks [7], which it never retrieved" in problems
    assert "together session 4 turn 0: waited in line but heard no place in it (no QueueEvent)" in problems
    assert "together session 5 turn 0: no reply (ReadTimeout)" in problems
    assert f"together-{run.run_key}-5: {QUESTIONS['architecture.md'][0]!r} logged 0 times, not once" in problems
    assert "together session 6 turn 0: its places in line read [1, 2, 0]" in problems
    assert len(problems) == 11


def test_the_embedded_load_refuses_the_scripted_models_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "bench", "load", "--embedded", "--users"],
        env={**os.environ, "COLUMNS": "300"},  # the message on one line
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "for the scripted model" in done.stderr
