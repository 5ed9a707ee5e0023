"""Retention: `ladder logs prune` deletes old turns together with the LangGraph checkpoints that hold
their text, and thread ownership (the threads table) survives it, so a pruned thread stays its owner's."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from agent.core.config import Settings
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.records.access import AccessError, check_thread
from agent.records.checkpoints import TABLES
from agent.records.turns import parse_age, prune_turns
from agent.records.users import add_user, remove_user
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."}
]


@pytest.fixture
def agent(kb: KnowledgeBase, collection: str, tmp_path: Path) -> Iterator[Agent]:
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, DOCS)
    kb.ingest([path], collection, progress=False)
    with ScriptedOpenAI(chat=ScriptedModel()) as server, open_checkpointer(kb.db) as checkpointer:
        settings = Settings(openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0)
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20)
        yield Agent(settings, kb, ChatEndpoint(client, "scripted"), checkpointer)


@pytest.fixture
def users(kb: KnowledgeBase) -> Iterator[tuple]:
    tag = uuid.uuid4().hex[:6]
    with kb.db.connection() as conn:
        ann, bob = (add_user(conn, f"{who}-{tag}", "correct horse battery") for who in ("ann", "bob"))
    yield ann, bob
    with kb.db.connection() as conn:
        remove_user(conn, ann.name)
        remove_user(conn, bob.name)


def rows_holding(kb: KnowledgeBase, thread: str, text: str) -> dict[str, int]:
    """How many rows of each checkpoint table belong to ``thread``, and how many of them contain ``text``."""
    found = {}
    with kb.db.connection() as conn:
        for table in TABLES:
            column = "checkpoint::text || metadata::text" if table == "checkpoints" else "coalesce(blob, '')"
            needle = "%s" if table == "checkpoints" else "convert_to(%s, 'UTF8')"
            total, holding = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE position({needle} IN {column}) > 0)"
                f" FROM {table} WHERE thread_id = %s",
                (text, thread),
            ).fetchone()
            found[table], found[f"{table} with it"] = total, holding
    return found


def age_turn(kb: KnowledgeBase, turn_id: str) -> None:
    with kb.db.connection() as conn:
        conn.execute("UPDATE turns SET started_at = now() - interval '100 days' WHERE turn_id = %s", (turn_id,))


def test_prune_deletes_a_threads_checkpoints_and_keeps_its_owner(
    agent: Agent, kb: KnowledgeBase, collection: str, users: tuple
) -> None:
    ann, bob = users
    old_question = f"How long do refunds take, case {uuid.uuid4().hex}?"
    first = agent.ask(TurnRequest(old_question, collection, user=ann)).to_dict()
    thread = first["thread_id"]
    assert rows_holding(kb, thread, old_question)["checkpoints with it"] > 0  # the state holds the question
    age_turn(kb, first["turn_id"])

    base = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    ran = subprocess.run(
        [sys.executable, "-m", "agent.cli", "logs", "prune", "--older-than", "90d"],
        env={**base, "LADDER_DATA_DIR": str(kb.db.embedded.root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert "deleted 1 turns older than 90d" in ran.stdout and "every one of 1 threads" in ran.stdout
    left = rows_holding(kb, thread, old_question)
    assert left == {k: 0 for k in left}, left  # checkpoints, blobs and writes of the thread: all gone

    with kb.db.connection() as conn:
        with pytest.raises(AccessError, match="no thread"):
            check_thread(conn, thread, bob)
        check_thread(conn, thread, ann)
    with pytest.raises(AccessError, match="no thread"):  # bob cannot take the emptied thread over
        agent.ask(TurnRequest("What did ann ask?", collection, thread, user=bob))
    again = agent.ask(TurnRequest("And how are refunds paid?", collection, thread, user=ann)).to_dict()
    assert again["thread_id"] == thread and "error" not in again
    with kb.db.connection() as conn:
        owners = conn.execute("SELECT DISTINCT user_id FROM turns WHERE thread_id = %s", (thread,)).fetchall()
    assert owners == [(ann.id,)]


def test_a_thread_that_keeps_newer_turns_keeps_only_their_state(
    agent: Agent, kb: KnowledgeBase, collection: str, users: tuple
) -> None:
    ann, _ = users
    old_question = f"How long do refunds take, case {uuid.uuid4().hex}?"
    first = agent.ask(TurnRequest(old_question, collection, user=ann)).to_dict()
    thread = first["thread_id"]
    new_question = f"And where are refunds paid to, case {uuid.uuid4().hex}?"
    second = agent.ask(TurnRequest(new_question, collection, thread, user=ann)).to_dict()
    before = rows_holding(kb, thread, old_question)
    assert before["checkpoint_blobs with it"] > 0  # the newest state's history holds the first exchange
    age_turn(kb, first["turn_id"])

    with kb.db.connection() as conn:
        report = prune_turns(conn, parse_age("90d"))
    assert report.turns == 1 and report.threads_trimmed == 1 and report.checkpoints >= before["checkpoints"] - 1
    left = rows_holding(kb, thread, old_question)
    assert left["checkpoints"] == 1 and all(v == 0 for k, v in left.items() if k.endswith("with it")), left
    assert rows_holding(kb, thread, new_question)["checkpoint_blobs with it"] > 0  # the kept turn's history

    state = agent.graph.get_state({"configurable": {"thread_id": thread}}).values
    assert state["history"] == [
        {"role": "user", "content": new_question},
        {"role": "assistant", "content": second["answer"]},
    ]
    third = agent.ask(TurnRequest("Thanks, and shipping?", collection, thread, user=ann)).to_dict()
    assert "error" not in third  # the thread goes on from its trimmed state


def test_checkpoints_left_by_an_earlier_prune_are_swept(agent: Agent, kb: KnowledgeBase, collection: str) -> None:
    question = f"How long do refunds take, case {uuid.uuid4().hex}?"
    result = agent.ask(TurnRequest(question, collection)).to_dict()
    with kb.db.connection() as conn:  # what the prune before this fix did: the turn rows only
        conn.execute("DELETE FROM turns WHERE thread_id = %s", (result["thread_id"],))
    assert rows_holding(kb, result["thread_id"], question)["checkpoints"] > 0
    with kb.db.connection() as conn:
        report = prune_turns(conn, parse_age("90d"))
    assert report.threads_deleted >= 1
    assert rows_holding(kb, result["thread_id"], question)["checkpoints"] == 0


def test_threads_of_existing_turns_get_their_owner(kb: KnowledgeBase, users: tuple) -> None:
    """The 0010 migration's backfill, run again on turns written without a threads row."""
    ann, bob = users
    mine, mixed = uuid.uuid4().hex, uuid.uuid4().hex
    sql = (Path(__file__).resolve().parent.parent / "agent/records/migrations/0010_threads.sql").read_text()
    backfill = sql[sql.index("INSERT INTO threads") :].rstrip().rstrip(";")
    with kb.db.connection() as conn:
        for turn_thread, user in ((mine, ann), (mine, ann), (mixed, ann), (mixed, None)):
            conn.execute(
                "INSERT INTO turns (turn_id, thread_id, question, user_id) VALUES (%s, %s, 'q', %s)",
                (uuid.uuid4().hex, turn_thread, user.id if user else None),
            )
        conn.execute(backfill.replace("FROM turns", "FROM turns WHERE thread_id IN (%s, %s)"), (mine, mixed))
        owners = dict(conn.execute("SELECT thread_id, user_id FROM threads WHERE thread_id IN (%s, %s)", (mine, mixed)))
        assert owners == {mine: ann.id, mixed: None}
        check_thread(conn, mine, ann)
        for thread, user in ((mine, bob), (mixed, ann)):
            with pytest.raises(AccessError):
                check_thread(conn, thread, user)
