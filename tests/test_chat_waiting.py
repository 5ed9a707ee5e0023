"""What a user sees while waiting, in a real browser (Debian's Chromium through Playwright) against a
scripted model that takes the model one turn at a time, as the embedded one does.

A step of the scripted model can be held until the test has seen the page in that state, so every
check waits for a state, never for a time: a step shown while it runs, an answer still being checked,
a question queued behind an answer, a turn waiting for another tab's, and what a reload brings back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.chat.browser import CHROMIUM, CHROMIUM_FLAGS
from agent.chat.handlers import NO_DATABASE, ChatHandlers
from agent.chat.scripted import ScriptedChat, scripted_chat
from agent.chat.view import TurnView
from agent.chat.waiting import MAX_WAITING
from agent.core.config import Settings
from agent.core.context import SWITCHES
from agent.core.events import StepEvent, TokenEvent
from agent.models.queue import ModelQueue
from evals.doubles.scripted_agent import ScriptedModel
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
HOLD_S = 60  # a held step gives up waiting after this long, so a failing test cannot hang the suite


@pytest.fixture(scope="module")
def served(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedChat]:
    folder = tmp_path_factory.mktemp("waiting")
    write_jsonl(folder / "docs.jsonl", DOCS)
    with sqlite3.connect(folder / "shop.sqlite") as conn:
        conn.execute("CREATE TABLE parcels (id INTEGER)")
    collection = f"waiting-{time.time_ns()}"
    kb = KnowledgeBase(embedded_db, embedder)
    kb.ingest([folder / "docs.jsonl"], collection, progress=False)
    settings = Settings(
        llm_max_retries=0,
        collection=collection,
        data_dir=embedded_db.embedded.root,
        data_sources={"shop": f"sqlite:///{folder / 'shop.sqlite'}"},
    )
    with scripted_chat(settings, kb, ScriptedModel(), token_delay_s=0.02, queue=ModelQueue(1)) as chat:
        yield chat


@contextmanager
def held(chat: ScriptedChat, step: str) -> Iterator[threading.Event]:
    """The scripted model's ``step`` waits until the test sets the event (at most HOLD_S)."""
    model = chat.model_server.chat
    release = threading.Event()
    original = model.steps[step]

    def answer_when_released(body: dict[str, Any]) -> Any:
        release.wait(HOLD_S)
        return original(body)

    model.steps[step] = answer_when_released
    try:
        yield release
    finally:
        release.set()
        model.steps[step] = original


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/install --test installs it with apt-get")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # how long a state may take to come on a busy machine: a bound, not a goal
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            yield launched
            launched.close()
    finally:
        expect.set_options(timeout=5_000)  # Playwright's default, for the other tests


def open_chat(browser: Any, url: str) -> Any:
    """A page of its own (a browser context: its own storage), loaded and ready."""
    from playwright.sync_api import expect

    page = browser.new_context(locale="en-US", viewport={"width": 1300, "height": 1000}).new_page()
    page.goto(url, wait_until="load")
    expect(page.locator("#model_name")).to_contain_text("scripted")
    return page


def ask(page: Any, question: str) -> None:
    page.locator("#msg textarea").fill(question)
    page.locator("#msg textarea").press("Enter")


def step_title(page: Any, text: str, *, running: bool) -> Any:
    """A step's title in the chat: with a spinner while it runs, with its duration once done."""
    marker = ".loading-spinner" if running else ".duration"
    return page.locator(f"#chat .thought-group > .title:has({marker})", has_text=text)


def test_steps_checks_and_queued_questions(served: ScriptedChat, browser: Any) -> None:
    from playwright.sync_api import expect

    page = open_chat(browser, served.url)
    chat = page.locator("#chat")
    page.locator("#send").click()  # an empty question is answered with a message
    expect(page.locator("#notice")).to_contain_text("Type a question first")

    with held(served, "fact_check") as release:
        ask(page, "How long do refunds take?")
        # the draft is done and shown with its duration; the check is running, and the answer says so
        expect(step_title(page, "Write the answer", running=False)).to_be_visible()
        expect(step_title(page, "Fact-check", running=True)).to_be_visible()
        expect(chat).to_contain_text("Checking the answer against the sources…")
        ask(page, "Where do parcels ship from?")  # typed while the answer is not finished
        expect(chat).to_contain_text("Queued: asked when the answer above ends")
        expect(page.locator("#msg textarea")).to_have_value("")
        expect(page.locator("#notice")).to_have_text("")
        with held(served, "draft") as next_draft:
            release.set()
            # the check ends with its verdicts; then the queued question is asked in its turn
            expect(step_title(page, "Fact-check: 2 of 2 sentences supported", running=False)).to_have_count(1)
            expect(step_title(page, "Write the answer", running=True)).to_be_visible()
            expect(chat).not_to_contain_text("Queued:")
            # no "still loading" dots under the finished answer above while this one runs
            expect(page.locator("#chat .message.pending:visible")).to_have_count(0)
            next_draft.set()

    expect(step_title(page, "Fact-check: 2 of 2 sentences supported", running=False)).to_have_count(2)
    expect(chat).not_to_contain_text("Checking the answer")
    step_title(page, "Fact-check: 2", running=False).first.click()
    expect(chat).to_contain_text("supported: Fact number 1 is stated.")
    with served.agent.kb.db.connection() as conn:
        asked = [
            row[0]
            for row in conn.execute(
                "SELECT question FROM turns WHERE thread_id = (SELECT thread_id FROM turns WHERE question = %s"
                " ORDER BY started_at DESC LIMIT 1) ORDER BY started_at",
                ("Where do parcels ship from?",),
            )
        ]
    assert asked == ["How long do refunds take?", "Where do parcels ship from?"]


def test_a_turn_waiting_for_the_model_shows_its_place(served: ScriptedChat, browser: Any) -> None:
    from playwright.sync_api import expect

    first, second = open_chat(browser, served.url), open_chat(browser, served.url)
    with held(served, "draft") as release:
        ask(first, "How long do refunds take?")
        expect(step_title(first, "Write the answer", running=True)).to_be_visible()
        ask(second, "Where do parcels ship from?")
        expect(second.locator("#chat")).to_contain_text("Waiting for the model: 1 question ahead")
        release.set()
    expect(step_title(second, "Fact-check: 2 of 2", running=False)).to_be_visible()
    expect(second.locator("#chat")).not_to_contain_text("Waiting for the model")
    expect(step_title(first, "Fact-check: 2 of 2", running=False)).to_be_visible()


def test_a_reload_keeps_the_steps_and_the_side_panel(served: ScriptedChat, browser: Any) -> None:
    from playwright.sync_api import expect

    page = open_chat(browser, served.url)
    expect(page.locator("#switch_fact_check")).to_contain_text("Checks each sentence against the passages")
    page.locator("#database input").click()
    page.get_by_role("option", name="shop").click()
    page.locator("#switch_hyde input").check()
    page.locator("#switch_fact_check input").uncheck()
    with held(served, "sql") as release:
        ask(page, "How many parcels are there?")
        expect(step_title(page, "Query the database", running=True)).to_be_visible()  # not only "•••"
        release.set()
    expect(step_title(page, "Query the database", running=False)).to_be_visible()
    expect(page.locator("#chat")).to_contain_text("From the shop database")

    page.reload(wait_until="load")
    expect(page.locator("#chat")).to_contain_text("From the shop database")
    expect(step_title(page, "Query the database", running=False)).to_be_visible()
    expect(page.locator("#database input")).to_have_value("shop")
    expect(page.locator("#switch_hyde input")).to_be_checked()
    expect(page.locator("#switch_fact_check input")).not_to_be_checked()


def test_a_follow_up_and_a_revision_as_they_happen() -> None:
    view = TurnView()
    view.add(StepEvent("condense", "start"))
    assert view.messages()[0]["metadata"]["title"] == "Understand the follow-up"
    assert view.messages()[0]["metadata"]["status"] == "pending"
    view.add(StepEvent("condense", "end", 0.4, detail={"standalone": "What if the server lacks pgvector?"}))
    assert view.messages()[0]["content"] == "<p>Asked as: What if the server lacks pgvector?</p>"
    view.add(TokenEvent("The draft."))
    view.add(StepEvent("revise", "start"))
    rewriting = "<p><em>Rewriting the answer to keep to the sources…</em></p>"
    assert view.messages()[-1]["content"] == "<p>The draft.</p>" + rewriting
    view.add(StepEvent("revise", "end", 1.0))
    assert view.messages()[-1]["content"] == "<p>The draft.</p>"


def test_the_queue_is_bounded_and_stored_choices_are_checked(served: ScriptedChat) -> None:
    handlers = ChatHandlers(served.services)
    page = SimpleNamespace(session_hash="a-page", username=None, headers={})
    collection = served.services.settings.collection
    assert handlers.enqueue("   ", collection, NO_DATABASE, [], page) == ("   ", "Type a question first.")
    for n in range(MAX_WAITING):
        assert handlers.enqueue(f"Question {n}?", collection, NO_DATABASE, [], page) == ("", "")
    box, notice = handlers.enqueue("One too many?", collection, NO_DATABASE, [], page)
    assert box == "One too many?" and f"{MAX_WAITING} questions are already waiting" in notice
    assert [a.question for a in handlers.waiting.waiting("a-page")] == [f"Question {n}?" for n in range(MAX_WAITING)]
    handlers.forget(page)
    assert handlers.waiting.waiting("a-page") == []

    forged = {"collection": "someone-elses", "database": "nope", "switches": {"hyde": "yes", "rerank": True}}
    picked_collection, picked_database, *switches = handlers.restore_choices(forged, None)
    assert picked_collection["value"] == collection and picked_database["value"] == NO_DATABASE
    settings = served.services.settings  # a switch saved as anything but true or false is the default
    assert switches == [True if name == "rerank" else getattr(settings, f"use_{name}") for name in SWITCHES]
