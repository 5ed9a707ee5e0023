"""The operator's console in a real browser (Debian's Chromium through Playwright), against a chat
on a scripted OpenAI-compatible model with logins on: a thumbs-down in the chat appears in the review
queue, accepting a correction there puts it in the named set and in `ladder export evalset`, and a user
who is not an operator gets neither the console page nor its endpoints.

With LADDER_CONSOLE_SHOTS=<folder>, the test also saves a picture of each console page there (README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import httpx
import pytest

from agent.chat.browser import CHROMIUM, CHROMIUM_FLAGS
from agent.chat.console.evaluations import Evaluations
from agent.chat.console.service import ConsoleService
from agent.chat.handlers import ChatHandlers
from agent.chat.scripted import scripted_chat
from agent.core.config import Settings
from agent.records.evalsets import set_items
from agent.records.users import add_user, remove_user
from evals.doubles.scripted_agent import ScriptedModel
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
QUESTION = "How long do refunds take and where do parcels ship from?"
PASSWORD = "correct horse battery"
REFERENCE = "Refunds are paid within 14 days; parcels ship from Rotterdam."


@pytest.fixture(scope="module")
def served(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tag = uuid.uuid4().hex[:6]
    collection = f"console-{tag}"
    docs = tmp_path_factory.mktemp("console") / "docs.jsonl"
    write_jsonl(docs, DOCS)
    kb = KnowledgeBase(embedded_db, embedder)
    kb.ingest([docs], collection, progress=False)
    op, ann = f"op-{tag}", f"ann-{tag}"
    with embedded_db.connection() as conn:
        add_user(conn, op, PASSWORD, operator=True)
        add_user(conn, ann, PASSWORD)
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root)
    try:
        with scripted_chat(settings, kb, ScriptedModel(), login=True) as chat:
            yield SimpleNamespace(url=chat.url, services=chat.services, db=embedded_db, op=op, ann=ann, tag=tag)
    finally:
        with embedded_db.connection() as conn:
            remove_user(conn, op)
            remove_user(conn, ann)


def _call_event(url: str, name: str, elem_id: str) -> dict[str, Any]:
    """Trigger the click event of the console button ``elem_id`` over HTTP as the logged-in ``name``, the
    way the page would (no page in between); returns Gradio's final message for it."""
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("login", data={"username": name, "password": PASSWORD}).status_code == 200
        config = http.get("config").json()
        button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
        event = next(d for d in config["dependencies"] if [button, "click"] in [list(t) for t in d["targets"]])
        session = uuid.uuid4().hex
        body = {"data": [], "fn_index": event["id"], "trigger_id": button, "session_hash": session}
        assert http.post("gradio_api/queue/join", json=body).status_code == 200
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for n, line in enumerate(stream.iter_lines()):
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed" or n > 1000:
                    return message
    raise AssertionError("the event never completed")


def _log_in(browser: Any, url: str, name: str) -> Any:
    from playwright.sync_api import expect

    page = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url, wait_until="load")
    page.get_by_label("username").fill(name)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#model_name")).to_contain_text("scripted", timeout=30_000)
    return page


def _ask_and_dislike(page: Any, comment: str) -> None:
    from playwright.sync_api import expect

    page.locator("#msg textarea").fill(QUESTION)
    page.locator("#msg textarea").press("Enter")
    expect(page.locator("#chat")).to_contain_text("Fact number 2 is stated", timeout=60_000)
    expect(page.locator('#chat button[aria-label="Retry"]').last).to_be_enabled(timeout=60_000)
    page.locator('#chat button[aria-label="Dislike"]').last.click()
    page.locator("#feedback_text textarea").fill(comment)
    page.locator("#feedback_send").click()
    expect(page.locator("#notice")).to_contain_text("comment is stored", timeout=30_000)


def _cli(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    env["LADDER_DATA_DIR"] = str(db.embedded.root)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _cell(page: Any, table: str, text: str) -> Any:
    """A visible cell of a Gradio table (the table also draws hidden copies of its cells to measure them)."""
    return page.locator(f"{table} [role=gridcell]", has_text=text).first


def _run_the_set_from_the_console(page: Any, set_ref: str) -> None:
    """Start a ladder run on the named set, then read its table and the rungs' answers side by side."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Evaluations").click()
    page.locator("#start_set textarea").fill(set_ref)
    page.locator("#start_run").click()
    expect(page.locator("#start_progress")).to_contain_text("done (2 answers)", timeout=120_000)
    runs = page.locator("#runs_table")
    expect(runs).to_contain_text(set_ref, timeout=20_000)
    _cell(page, "#runs_table", set_ref).click()
    expect(page.locator("#report_table")).to_contain_text("+retrieval", timeout=20_000)
    run_id = page.locator("#report_run input").input_value()
    page.locator("#diff_run_a input").fill(run_id)
    page.locator("#diff_rung_a textarea").fill("baseline")
    page.locator("#diff_rung_b textarea").fill("+retrieval")
    page.locator("#diff_show").click()
    expect(page.locator("#diff_table")).to_contain_text(REFERENCE[:30], timeout=20_000)  # expected, beside answers
    _shot(page, "evaluations")


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("LADDER_CONSOLE_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)  # let the tables finish drawing
        page.screenshot(path=str(Path(folder) / f"console-{name}.png"), full_page=True)


def test_a_user_is_refused_the_console_page_and_its_endpoints(served: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = _log_in(browser, served.url, served.ann)
            expect(page.locator("#console_link")).to_have_count(0)  # the chat shows no console link to a user
            page.goto(served.url + "console", wait_until="load")
            expect(page.locator("#console_refused")).to_contain_text("for operators", timeout=30_000)
            expect(page.locator("#queue_table")).not_to_be_visible()
        finally:
            browser.close()
    refused = _call_event(served.url, served.ann, "queue_refresh")  # the endpoint itself, past the page
    assert refused["success"] is False and "for operators" in json.dumps(refused)
    allowed = _call_event(served.url, served.op, "queue_refresh")
    assert allowed["success"] is True, allowed
    console = ConsoleService(ChatHandlers(served.services))
    as_ann = SimpleNamespace(username=served.ann)
    calls = [
        lambda: console.turns(as_ann),
        lambda: console.turn_text(as_ann, "any"),
        lambda: console.queue(as_ann),
        lambda: console.review_item(as_ann, "any"),
        lambda: console.accept(as_ann, "any", "s", "ref", []),
        lambda: console.dismiss(as_ann, "any", "why"),
        lambda: console.sets(as_ann),
        lambda: console.collections(as_ann),
        lambda: console.documents(as_ann, "any"),
        lambda: console.ingest_runs(as_ann),
        lambda: Evaluations(console).runs(as_ann),
        lambda: Evaluations(console).report(as_ann, 1),
        lambda: Evaluations(console).diff(as_ann, 1, "", None, "", ""),
    ]
    for call in calls:  # every handler behind the page checks the role on the server
        with pytest.raises(gr.Error, match="for operators"):
            call()
    assert console.queue(SimpleNamespace(username=served.op)) is not None  # an operator's call goes through


def test_a_thumbs_down_is_reviewed_into_a_named_set(served: Any) -> None:
    from playwright.sync_api import expect, sync_playwright

    set_name = f"golden-{served.tag}"
    comment = f"The warehouse is wrong ({served.tag})."  # other tests' turns share the queue
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            _ask_and_dislike(_log_in(browser, served.url, served.ann), comment)
            page = _log_in(browser, served.url, served.op)
            expect(page.locator("#console_link")).to_be_visible(timeout=30_000)
            page.goto(served.url + "console", wait_until="load")
            expect(page.locator("#turns_table")).to_contain_text(QUESTION[:30], timeout=20_000)
            _cell(page, "#turns_table", QUESTION[:30]).click()
            expect(page.locator("#turn_detail")).to_contain_text("== model calls ==", timeout=20_000)
            _shot(page, "turns")

            page.get_by_role("tab", name="Review queue").click()
            queue = page.locator("#queue_table")
            expect(queue).to_contain_text(comment, timeout=20_000)
            # Oldest first: this test's turn is the newest, and the table draws only the rows in view.
            page.eval_on_selector(
                "#queue_table",
                "root => root.querySelectorAll('*').forEach(e => {"
                " if (e.scrollHeight > e.clientHeight + 4) e.scrollTop = e.scrollHeight; })",
            )
            _cell(page, "#queue_table", comment).click()
            expect(page.locator("#review_question textarea")).to_have_value(QUESTION, timeout=20_000)
            page.locator("#review_reference textarea").fill(REFERENCE)
            boxes = page.locator("#review_passages input[type=checkbox]")
            assert boxes.count() == 2 and all(boxes.nth(i).is_checked() for i in range(2)), "the cited ones are marked"
            page.locator("#review_passages label", has_text="shipping").first.click()  # not relevant: unmark it
            page.locator("#review_set textarea").fill(set_name)
            _shot(page, "review")
            page.locator("#review_accept").click()
            expect(page.locator("#review_notice")).to_contain_text(
                f"Accepted into {set_name}, now version 1", timeout=30_000
            )
            expect(queue).not_to_contain_text(comment)
            expect(page.locator("#sets_table")).to_contain_text(set_name, timeout=30_000)

            page.get_by_role("tab", name="Knowledge").click()
            expect(page.locator("#collections_table")).to_contain_text(f"console-{served.tag}", timeout=20_000)
            _shot(page, "knowledge")
            _run_the_set_from_the_console(page, f"set:{set_name}@1")
        finally:
            browser.close()

    with served.db.connection() as conn:
        version, items = set_items(conn, set_name)
    assert version == 1 and [i["question"] for i in items] == [QUESTION]
    assert items[0]["reference_answer"] == REFERENCE and items[0]["reference_doc_ids"] == ["refunds"]
    out = Path(served.db.embedded.root) / f"export-{served.tag}.jsonl"
    exported = _cli(served.db, "export", "evalset", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    mine = [line for line in lines if line["id"] == items[0]["turn_id"]]
    assert len(mine) == 1 and mine[0]["reference_answer"] == REFERENCE
    assert mine[0]["reference_doc_ids"] == ["refunds"]
