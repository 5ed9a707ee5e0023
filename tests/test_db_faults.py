"""Faults: Ladder's database killed (kill -9 of the postmaster) under a running chat.

The user gets a clear message, Ladder reconnects when the database is back (and restarts the
embedded server itself), and the turn in flight ends in the log as ``failed``: not lost, not
left ``running``. Each test has its own server in its own folder; the model is the scripted one,
which kills the server while it answers the draft step, so the turn is in flight between two of
its database writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest

from agent.chat.handlers import NO_DATABASE, ChatHandlers, ChatServices
from agent.chat.view import ANSWER_ID_PREFIX
from agent.core.config import Settings
from agent.core.context import SWITCHES
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.models.local_server import free_port
from agent.records.turns import get_turn, thread_turns
from evals.doubles.scripted_agent import ScriptedModel, step_of
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.chunking import ChunkingConfig
from knowledge.db import Database, DatabaseConfig, DatabaseUnavailable
from knowledge.pgembed import EmbeddedPostgres, EmbeddedPostgresError
from tests.conftest import reachable_tmpdir

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
QUESTION = "How long do refunds take?"
PASSWORD = "hunter2"  # in the URL server's URL: trust auth ignores it, and no message may show it


def postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])


class KillingModel(ScriptedModel):
    """The scripted model, which kills ``target``'s postmaster once while it answers the draft step."""

    def __init__(self) -> None:
        super().__init__()
        self.target: EmbeddedPostgres | None = None
        self.killed: int | None = None

    def __call__(self, body: dict[str, Any]) -> str | dict[str, Any]:
        if self.target is not None and step_of(body) == "draft":
            target, self.target = self.target, None
            time.sleep(0.3)  # the model thinks: the checkpoint of the step before is written meanwhile
            self.killed = postmaster_pid(target)
            os.kill(self.killed, signal.SIGKILL)
            time.sleep(0.5)  # and thinks on: the server's backends see it die and exit
        return super().__call__(body)


class Rig:
    """A database with a knowledge base, a collection, the killing model and an agent on them."""

    def __init__(self, db: Database, kb: KnowledgeBase, collection: str, model: KillingModel, agent: Agent) -> None:
        self.db, self.kb, self.collection, self.model, self.agent = db, kb, collection, model, agent

    def turn(self, turn_id: str) -> dict[str, Any] | None:
        with self.db.connection() as conn:
            return get_turn(conn, turn_id)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    root = reachable_tmpdir("ladder-faults-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def make_rig(db: Database, embedder: Any, folder: Path) -> Iterator[Rig]:
    docs = folder / f"docs-{time.time_ns()}.jsonl"
    write_jsonl(docs, DOCS)
    kb = KnowledgeBase(db, embedder, chunking=ChunkingConfig(chunk_tokens=64, overlap=8))
    collection = f"faults-{time.time_ns()}"
    kb.ingest([docs], collection, progress=False)
    model = KillingModel()
    with ScriptedOpenAI(chat=model) as server, open_checkpointer(db) as checkpointer:
        settings = Settings(
            openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0, collection=collection
        )
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20)
        agent = Agent(settings, kb, ChatEndpoint(client, "scripted"), checkpointer)
        agent.outbox.first_delay_s = 0.2  # retry soon: the tests wait for it
        yield Rig(db, kb, collection, model, agent)


@pytest.fixture(scope="module")
def embedded(folder: Path, embedder: Any) -> Iterator[Rig]:
    """Ladder's default: the embedded server, which Ladder owns and restarts."""
    db = Database(DatabaseConfig(data_dir=folder / "embedded", pool_max=4, restart_interval_s=0.5))
    try:
        yield from make_rig(db, embedder, folder)
    finally:
        db.close()
        assert db.embedded is not None
        db.embedded.stop()


@pytest.fixture(scope="module")
def by_url(folder: Path, embedder: Any) -> Iterator[tuple[Rig, EmbeddedPostgres]]:
    """A server Ladder reaches by DATABASE_URL (with a password in it) and does not own."""
    server = EmbeddedPostgres(folder / "tcp", port=free_port())
    server.start()
    url = f"postgresql://ladder:{PASSWORD}@127.0.0.1:{server.port}/ladder"
    db = Database(DatabaseConfig(url=url, data_dir=folder / "unused", pool_max=4))
    try:
        for rig in make_rig(db, embedder, folder):
            yield rig, server
    finally:
        db.close()
        server.start()  # a test that failed half-way may have left it down
        server.stop()


def wait_until(condition: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_embedded_server_killed_between_writes_is_restarted_and_the_turn_goes_on(embedded: Rig) -> None:
    assert embedded.db.embedded is not None
    embedded.model.target = embedded.db.embedded
    result = embedded.agent.ask(TurnRequest(QUESTION, embedded.collection)).to_dict()
    assert embedded.model.killed is not None  # the server died while the turn was in flight
    assert "error" not in result, result.get("error")
    assert "[1]" in result["answer"]
    assert postmaster_pid(embedded.db.embedded) != embedded.model.killed  # Ladder started it again
    turn = embedded.turn(result["turn_id"])
    assert turn is not None and turn["status"] == "done"


def test_a_killed_embedded_server_that_will_not_restart_fails_the_turn_clearly_and_it_is_logged_later(
    embedded: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = embedded.db.embedded
    assert server is not None
    real_start = server.start
    attempts: list[float] = []

    def start_failing_once() -> str:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise EmbeddedPostgresError("scripted: the disk is full")
        return real_start()

    monkeypatch.setattr(server, "start", start_failing_once)
    time.sleep(0.5)  # past the restart interval of the test before
    embedded.model.target = server
    started = time.monotonic()
    result = embedded.agent.ask(TurnRequest(QUESTION, embedded.collection)).to_dict()
    assert time.monotonic() - started < 15  # a clear failure, not a hang
    error = result["error"]
    assert error.startswith("Ladder's database is not reachable (") and "the disk is full" in error
    assert error.endswith("it will reconnect when the database is back")

    # The completion waited in memory, and was written once the retry thread had restarted the server.
    wait_until(lambda: len(embedded.agent.outbox) == 0)
    assert len(attempts) >= 2 and attempts[1] - attempts[0] >= 0.5  # restarts are spaced by the interval
    turn = embedded.turn(result["turn_id"])
    assert turn is not None and turn["status"] == "failed" and turn["error"] == error

    again = embedded.agent.ask(TurnRequest(QUESTION, embedded.collection)).to_dict()
    assert "error" not in again and "[1]" in again["answer"]
    second = embedded.turn(again["turn_id"])
    assert second is not None and second["status"] == "done"


def test_a_killed_url_server_shows_an_error_in_the_chat_and_the_chat_recovers(
    by_url: tuple[Rig, EmbeddedPostgres],
) -> None:
    rig, server = by_url
    chat = ChatHandlers(ChatServices(rig.agent, "scripted"))
    thread = {"thread": f"faults-{time.time_ns()}"}

    def say(question: str) -> str:
        """The answer the chat shows (the message after the steps, before the citations)."""
        switches = [name for name in SWITCHES if getattr(rig.agent.settings, f"use_{name}")]
        *_, (history, _, _) = chat.respond(question, [], thread, rig.collection, NO_DATABASE, switches)
        (answer,) = [m for m in history if (m.get("metadata") or {}).get("id", "").startswith(ANSWER_ID_PREFIX)]
        return answer["content"]

    rig.model.target = server
    started = time.monotonic()
    shown = say(QUESTION)
    assert time.monotonic() - started < 15
    assert "<strong>Error:</strong> Ladder's database is not reachable (" in shown  # shown as HTML
    assert "it will reconnect when the database is back" in shown and PASSWORD not in shown
    assert len(rig.agent.outbox) == 1  # the failed turn's completion waits for the server
    (waiting,) = rig.agent.outbox.pending()

    # While the server is down, a borrow fails at once with the same clear message.
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="not reachable") as info, rig.db.connection():
        pass
    assert time.monotonic() - started < 5 and PASSWORD not in str(info.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(rig.db.url, connect_timeout=2)  # Ladder does not restart a server it does not own

    server.start()  # the operator brings the server back
    wait_until(lambda: len(rig.agent.outbox) == 0)  # the retry thread logs the failed turn
    shown = say("Where do parcels ship from?")
    assert "Error" not in shown and "[1]" in shown
    with rig.db.connection() as conn:
        turns = thread_turns(conn, thread["thread"])
    assert [t["status"] for t in turns] == ["failed", "done"]
    assert turns[0]["turn_id"] == waiting
    assert turns[0]["error"].startswith("Ladder's database is not reachable")
