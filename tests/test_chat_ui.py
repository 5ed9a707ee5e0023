"""The chat in a real browser (Debian's Chromium through Playwright), and the same agent over
gradio_client and MCP, against a scripted OpenAI-compatible model."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.chat.app import ChatServices, build_app, launch
from agent.chat.handlers import ChatHandlers
from agent.chat.scripted import scripted_chat
from agent.chat.view import TurnView, turn_id_of
from agent.core.config import Settings
from agent.core.results import Citation, TurnResult
from agent.core.turn import Agent
from agent.models.local_server import free_port
from agent.records.turns import get_turn
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import Fail
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database
from tests.helpers import event_from_dict

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
QUESTION = "How long do refunds take and where do parcels ship from?"


class Chat:
    """A running chat: its URL, the agent behind it, and the scripted model."""

    def __init__(self, url: str, agent: Agent, model: ScriptedModel, collection: str) -> None:
        self.url, self.agent, self.model, self.collection = url, agent, model, collection


@pytest.fixture(scope="module")
def chat(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    collection = f"ui-{time.time_ns()}"
    docs = tmp_path_factory.mktemp("ui") / "docs.jsonl"
    write_jsonl(docs, DOCS)
    kb = KnowledgeBase(embedded_db, embedder)
    kb.ingest([docs], collection, progress=False)
    model = ScriptedModel()
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root)
    with scripted_chat(settings, kb, model, token_delay_s=0.05) as served:
        yield Chat(served.url, served.agent, model, collection)


def _wait_for_answer(page: Any, text: str, timeout_s: float = 60) -> list[str]:
    """Poll the chat until ``text`` is there and the turn is over; every distinct state seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = page.locator("#chat").inner_text()
        if not seen or current != seen[-1]:
            seen.append(current)
        retry = page.locator('#chat button[aria-label="Retry"]')
        if text in current and retry.count() and retry.last.is_enabled():
            return seen
        time.sleep(0.03)
    raise AssertionError(f"no answer containing {text!r}; last seen: {seen[-1] if seen else None!r}")


def test_a_conversation_in_the_browser(chat: Chat, browser_page: Any) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(chat.url, wait_until="load")
    expect(page.locator("#model_name")).to_contain_text("scripted")
    page.locator("#msg textarea").fill(QUESTION)
    page.locator("#msg textarea").press("Enter")
    seen = _wait_for_answer(page, "Fact number 2 is stated")
    partial = {s.split("Fact number", 1)[1][:40] for s in seen if "Fact number" in s}
    assert len(partial) >= 3, "the answer should arrive in several streamed steps"

    titles = page.locator("#chat .thought-group > .title").all_inner_texts()
    assert any(t.startswith("Split the question") for t in titles)
    assert sum(t.startswith("Research: ") for t in titles) == 2  # one per sub-question
    assert any(t.startswith("Fact-check") for t in titles)
    page.locator("#chat .thought-group > .title", has_text="Research: How long").first.click()
    expect(page.locator("#chat .thought-group .title", has_text="search_knowledge").first).to_be_visible()
    citation = page.locator("#chat .thought-group > .title", has_text="[1] Refunds").first
    citation.click()  # a citation opens the passage and its source
    expect(page.locator("#chat")).to_contain_text("Refunds are paid within 14 days")
    expect(page.locator("#chat")).to_contain_text("docs.jsonl")

    page.locator('#chat button[aria-label="Dislike"]').last.click()
    page.locator("#feedback_text textarea").fill("The warehouse is wrong.")
    page.locator("#feedback_send").click()
    expect(page.locator("#notice")).to_contain_text("comment is stored")
    with chat.agent.kb.db.connection() as conn:
        turn_id = conn.execute(
            "SELECT turn_id FROM turns WHERE question = %s AND face = 'ui' ORDER BY started_at DESC LIMIT 1",
            (QUESTION,),
        ).fetchone()[0]
        turn = get_turn(conn, turn_id)
    assert turn["status"] == "done" and "Fact number 2" in turn["answer"]
    assert turn["feedback"][-1] == {"rating": "down", "comment": "The warehouse is wrong.", "corrected_answer": None}

    page.reload(wait_until="load")  # the browser's thread comes back from the log
    expect(page.locator("#chat")).to_contain_text("Fact number 2 is stated", timeout=20_000)
    page.locator("#new_chat").click()
    expect(page.locator("#chat")).not_to_contain_text("Fact number", timeout=10_000)


def test_mcp_and_gradio_client_get_the_same_answer(chat: Chat) -> None:
    from gradio_client import Client
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    client = Client(chat.url, verbose=False, analytics_enabled=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/ask",
        "/search_knowledge",
    }  # the UI's own events are private
    via_client = json.loads(client.predict(QUESTION, api_name="/ask"))
    passages = json.loads(client.predict("refunds", 2, api_name="/search_knowledge"))
    assert passages[0]["doc_id"] == "refunds" and len(passages) == 2

    async def over_mcp() -> tuple[list[str], dict[str, Any]]:
        async with (
            streamable_http_client(chat.url + "gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = await session.list_tools()
            called = await session.call_tool("ask", {"question": QUESTION})
            return [t.name for t in tools.tools], json.loads(called.content[0].text)

    names, via_mcp = asyncio.run(over_mcp())
    assert sorted(names) == ["ask", "search_knowledge"]
    assert via_mcp["answer"] == via_client["answer"] == "Fact number 1 is stated [1]. Fact number 2 is stated [2]."
    assert [c["doc_id"] for c in via_mcp["citations"]] == [c["doc_id"] for c in via_client["citations"]]
    with chat.agent.kb.db.connection() as conn:
        faces = {r[0] for r in conn.execute("SELECT face FROM turns WHERE turn_id = %s", (via_mcp["turn_id"],))}
    assert faces == {"mcp"}


def test_model_and_input_errors_become_chat_messages(chat: Chat) -> None:
    handlers = ChatHandlers(ChatServices(chat.agent, "scripted"))

    def broken(body: dict[str, Any]) -> str:
        raise Fail(500, "the model crashed")

    chat.model.steps["draft"] = broken
    try:
        *_, (history, box, state) = handlers.respond(
            "How long do refunds take?", [], None, chat.collection, "", ["retrieval"]
        )
    finally:
        chat.model.steps["draft"] = ScriptedModel.draft
    assert history[0] == {"role": "user", "content": "How long do refunds take?"}
    assert "the model endpoint answered 500" in history[-1]["content"] and "Traceback" not in str(history)
    assert box == "" and state["thread"]
    *_, (history, _, _) = handlers.respond("word " * 2000, [], state, chat.collection, "", [])
    assert "<strong>Error:</strong> the question is" in history[-1]["content"]
    assert "LADDER_MAX_QUESTION_TOKENS" in history[-1]["content"]
    *_, (history, _, _) = handlers.respond("How many artists?", [], state, chat.collection, "nope", ["fewshot"])
    assert "no data source named 'nope'" in history[-1]["content"]


def test_nothing_leaves_the_machine(chat: Chat, monkeypatch: pytest.MonkeyPatch) -> None:
    from gradio import analytics
    from gradio_client import Client

    assert not analytics.analytics_enabled()
    outbound: list[Any] = []
    original = socket.socket.connect

    def watch(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            outbound.append(address)
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", watch)
    Client(chat.url, verbose=False, analytics_enabled=False).predict("Where do parcels ship from?", api_name="/ask")
    port = free_port()
    services = ChatServices(chat.agent, "scripted")
    app = build_app(services)
    launch(app, host="127.0.0.1", port=port, services=services, block=False)
    app.close()
    assert outbound == []


def test_turn_view_and_feedback_lookup() -> None:
    view = TurnView()
    view.add(event_from_dict({"type": "step", "step": "classify", "status": "start"}))
    view.add(
        event_from_dict({"type": "step", "step": "research", "status": "start", "sub_question": 0, "question": "Q?"})
    )
    first = view.messages()
    view.add(
        event_from_dict(
            {
                "type": "tool",
                "name": "search_knowledge",
                "sub_question": 0,
                "arguments": {"query": "Q?", "k": 4},
                "result": [{"chunk_id": 7, "doc_id": "d", "score": 0.5}],
            }
        )
    )
    view.add(
        event_from_dict(
            {"type": "step", "step": "research", "status": "end", "sub_question": 0, "seconds": 0.2, "passages": [7]}
        )
    )
    view.add(event_from_dict({"type": "token", "text": "Hello "}))
    view.add(event_from_dict({"type": "token", "text": "[1]"}))
    messages = view.messages()
    assert first[0]["metadata"]["status"] == "pending" and messages[0]["metadata"]["status"] == "done"
    assert first is not messages and first[0] is not messages[0]  # fresh objects on every update
    assert messages[1]["metadata"]["parent_id"] == messages[0]["metadata"]["id"]
    assert messages[1]["metadata"]["title"] == 'search_knowledge(query="Q?", k=4)'
    assert messages[-1] == {"role": "assistant", "content": "<p>Hello [1]</p>"}
    final = view.finish(
        TurnResult(
            answer="Hello [1]",
            turn_id="t1",
            thread_id="th",
            citations=[Citation(1, "d", 7)],
            passages=[
                {
                    "chunk_id": 7,
                    "doc_id": "d",
                    "source": "/x/d.md",
                    "title": "D",
                    "heading": "",
                    "text": "passage",
                    "score": 1.0,
                }
            ],
        )
    )
    assert final[-2]["metadata"] == {"id": "turn:t1"} and final[-1]["metadata"]["title"] == "[1] D"
    history = [{"role": "user", "content": "q"}, *final]
    assert turn_id_of(history, 1) == "t1" and turn_id_of(history, len(history) - 1) == "t1"
    assert turn_id_of([{"role": "user", "content": "q"}], 0) is None


def test_the_model_picker_answers_on_the_adapter_and_logs_its_name(chat: Chat, tmp_path: Any) -> None:
    """An adapter trained for the embedded model is offered; a turn on it is answered (and logged) by it."""
    from contextlib import contextmanager

    from agent.chat.models import ModelChoices
    from agent.models.endpoint import ChatEndpoint

    base_name = "qwen2.5-coder-0.5b-instruct"
    folder = tmp_path / "adapters" / "tuned"
    folder.mkdir(parents=True)
    (folder / "adapter.gguf").write_bytes(b"checked when it is served")
    (folder / "card.json").write_text(json.dumps({"name": "tuned", "base_model": base_name}))
    (tmp_path / "adapters" / "other").mkdir()
    (tmp_path / "adapters" / "other" / "adapter.gguf").write_bytes(b"")
    (tmp_path / "adapters" / "other" / "card.json").write_text(json.dumps({"base_model": "another-model"}))
    settings = chat.agent.settings.model_copy(update={"data_dir": tmp_path, "local_model": base_name})
    client, checkpointer = chat.agent.endpoint.client, chat.agent.graph.checkpointer
    base = Agent(settings, chat.agent.kb, ChatEndpoint(client, base_name, embedded=True), checkpointer)
    opened: list[str] = []

    @contextmanager
    def open_adapter(name: str) -> Iterator[Agent]:
        opened.append(name)
        yield Agent(settings, chat.agent.kb, ChatEndpoint(client, f"{base_name}+{name}", embedded=True), checkpointer)

    models = ModelChoices(base, open_adapter)
    assert models.names() == [base_name, f"{base_name}+tuned"]  # not the adapter trained for another model
    handlers = ChatHandlers(ChatServices(base, base_name, models=models))
    for _ in range(2):
        *_, (history, _, _) = handlers.respond(
            "How long do refunds take?", [], None, chat.collection, "", ["retrieval"], model=f"{base_name}+tuned"
        )
    assert opened == ["tuned"]  # started once, then reused
    turn_id = turn_id_of(history, len(history) - 1)
    with chat.agent.kb.db.connection() as conn:
        logged = conn.execute("SELECT model FROM turns WHERE turn_id = %s", (turn_id,)).fetchone()
    assert logged == (f"{base_name}+tuned",)
    *_, (history, _, _) = handlers.respond(
        "How long do refunds take?", [], None, chat.collection, "", [], model=f"{base_name}+other"
    )
    assert "no model 'qwen2.5-coder-0.5b-instruct+other' here" in history[-1]["content"]
    models.close()
