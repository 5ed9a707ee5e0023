"""Turns on a one-request-at-a-time model: arrival order, places in line, a bounded wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from agent.core.config import Settings
from agent.core.events import QueueEvent
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.models.queue import ModelQueue, QueueTimeout
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase


def _hold(
    queue: ModelQueue, name: str, order: list[str], heard: dict[str, list[int]], release: threading.Event
) -> None:
    with queue.turn(lambda ahead: heard.setdefault(name, []).append(ahead)):
        order.append(name)
        release.wait(10)


def test_turns_run_in_arrival_order_and_hear_their_place() -> None:
    queue = ModelQueue(1, timeout_s=30)
    order: list[str] = []
    heard: dict[str, list[int]] = {}
    releases = {name: threading.Event() for name in "abc"}
    threads = []
    for name in "abc":
        thread = threading.Thread(target=_hold, args=(queue, name, order, heard, releases[name]))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while len(order) + queue.waiting < len(threads) and time.monotonic() < deadline:
            time.sleep(0.01)  # the next one arrives after this one is in line
    for name in "abc":
        releases[name].set()
        time.sleep(0.05)
    for thread in threads:
        thread.join(10)
    assert order == ["a", "b", "c"]
    assert "a" not in heard  # the first turn never waited, so it hears nothing
    assert heard["b"] == [1, 0] and heard["c"] == [2, 1, 0]


def test_a_wait_past_its_limit_is_a_clear_error_and_frees_its_place() -> None:
    queue = ModelQueue(1, timeout_s=0.3)
    busy, done = threading.Event(), threading.Event()

    def holder() -> None:
        with queue.turn():
            busy.set()
            done.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    busy.wait(5)
    with pytest.raises(QueueTimeout, match="1 turn"), queue.turn():
        pass
    assert queue.waiting == 0
    done.set()
    thread.join(10)
    with queue.turn():  # the queue still works after a timeout
        pass


def test_two_slots_let_two_turns_run_at_once() -> None:
    queue = ModelQueue(2, timeout_s=5)
    inside = threading.Barrier(2, timeout=5)

    def turn() -> None:
        with queue.turn():
            inside.wait()  # both must be inside together, or the barrier breaks

    threads = [threading.Thread(target=turn) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not inside.broken


@pytest.fixture
def queued_agent(kb: KnowledgeBase, collection: str, tmp_path: Path) -> Iterator[tuple[Agent, str]]:
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days."}])
    kb.ingest([path], collection)
    with ScriptedOpenAI(chat=ScriptedModel(), delay_s=0.3) as server, open_checkpointer(kb.db.url) as checkpointer:
        config = Settings(openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0)
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20)
        endpoint = ChatEndpoint(client, "scripted", queue=ModelQueue(1, timeout_s=60))
        yield Agent(config, kb, endpoint, checkpointer), collection


def test_a_second_turn_waits_for_the_first_and_both_answer(queued_agent: tuple[Agent, str]) -> None:
    agent, collection = queued_agent
    events: dict[int, list] = {0: [], 1: []}
    results = {}

    def run(i: int) -> None:
        results[i] = agent.ask(TurnRequest("How long do refunds take?", collection), on_event=events[i].append)

    first = threading.Thread(target=run, args=(0,))
    first.start()
    deadline = time.monotonic() + 10
    while not events[0] and time.monotonic() < deadline:
        time.sleep(0.01)  # the first turn has started
    second = threading.Thread(target=run, args=(1,))
    second.start()
    first.join(60)
    second.join(60)
    assert all(r.error is None and "[1]" in r.answer for r in results.values())
    waits = [e.ahead for e in events[1] if isinstance(e, QueueEvent)]
    assert waits == [1, 0]
    assert not any(isinstance(e, QueueEvent) for e in events[0])
    assert results[0].turn_id != results[1].turn_id
