"""Untrusted text in the chat makes the browser fetch nothing: a planted remote image, raw <img>,
<iframe>, a link and CSS url() in a passage, its title and file name, in the model's answer, and in a
SQL result cell are shown as text, in Debian's Chromium, and no request leaves 127.0.0.1.

Nothing is sent anywhere: the browser resolves no host but the loopback (agent.chat.browser), and
every request for another host is aborted by Playwright before it leaves, and recorded."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import openai
import pytest

from agent.chat.app import ChatServices, build_app, launch
from agent.chat.browser import CHROMIUM, CHROMIUM_FLAGS
from agent.chat.safe_html import ALLOWED_TAGS, markdown_html, text_html
from agent.core.config import Settings
from agent.core.turn import Agent, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.models.local_server import free_port
from evals.doubles.scripted_agent import ScriptedModel, passage_ids
from evals.doubles.scripted_model import ScriptedOpenAI, last_user
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database

REMOTE = "203.0.113.9"  # TEST-NET-3: documentation addresses, never routed
HOSTILE = (
    f"![x](http://{REMOTE}/md.png) <img src=http://{REMOTE}/raw.png> <iframe src=http://{REMOTE}/frame></iframe>"
    f' [a link](http://{REMOTE}/link) <div style="background:url(http://{REMOTE}/css.png)">styled</div>'
)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# What must be on the page as text, wherever HOSTILE is shown
AS_TEXT = [
    f"[image: x] (http://{REMOTE}/md.png)",
    f"<img src=http://{REMOTE}/raw.png>",
    f"<iframe src=http://{REMOTE}/frame></iframe>",
    f"a link (http://{REMOTE}/link)",
    f'<div style="background:url(http://{REMOTE}/css.png)">styled</div>',
]


def elements(shown: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element of an HTML text, with its attributes (as a browser's parser sees them)."""
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(shown)
    return found


def test_untrusted_markdown_and_html_become_text() -> None:
    shown = markdown_html(f"**Bold** and `code`\n\n| a |\n|---|\n| {HOSTILE} |\n\n```sql\nSELECT '<img src=x>'\n```")
    tags = elements(shown)
    assert {tag for tag, _ in tags} <= ALLOWED_TAGS and all(attrs == [] for _, attrs in tags), tags
    assert "<strong>Bold</strong>" in shown and "<code>code</code>" in shown and "<td>" in shown
    assert f"&lt;img src=http://{REMOTE}/raw.png&gt;" in shown and "[image: x]" in shown
    assert "<pre><code>SELECT '&lt;img src=x&gt;'\n</code></pre>" in shown
    assert markdown_html("<script>alert(1)</script>") == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert text_html("a < b & ![x](y)") == "a &lt; b &amp; ![x](y)"


class Served:
    def __init__(self, url: str, collection: str) -> None:
        self.url, self.collection = url, collection


@pytest.fixture(scope="module")
def served(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("rendering")
    collection = f"render-{time.time_ns()}"
    docs = folder / f"notes <img src=http:\\\\{REMOTE}\\f.png>.jsonl"  # a file name is shown too
    doc = {"id": "planted", "title": f"Planted ![t](http://{REMOTE}/t.png)", "text": f"Refunds take 14 days. {HOSTILE}"}
    write_jsonl(docs, [doc])
    kb = KnowledgeBase(embedded_db, embedder)
    kb.ingest([docs], collection, progress=False)
    notes = folder / "notes.sqlite"
    with sqlite3.connect(notes) as conn:
        conn.execute("CREATE TABLE notes (note TEXT)")
        conn.execute("INSERT INTO notes VALUES (?)", (HOSTILE,))
    model = ScriptedModel()
    # The model repeats what the passage planted, as a prompt-injected model would.
    model.steps["draft"] = lambda body: f"Refunds take 14 days [1]. {HOSTILE} [{passage_ids(last_user(body))[0]}]."
    model.steps["sql"] = lambda body: json.dumps({"sql": "SELECT note FROM notes"})
    with ScriptedOpenAI(chat=model) as server, open_checkpointer(kb.db) as checkpointer:
        settings = Settings(
            llm_max_retries=0,
            collection=collection,
            data_dir=embedded_db.embedded.root,
            openai_base_url=server.base_url,
            chat_model="scripted",
            data_sources={"notes": f"sqlite:///{notes}"},
        )
        client = openai.OpenAI(api_key="scripted", base_url=server.base_url, max_retries=0, timeout=120)
        services = ChatServices(Agent(settings, kb, ChatEndpoint(client, "scripted"), checkpointer), "scripted")
        app = build_app(services)
        port = free_port()
        launch(app, host="127.0.0.1", port=port, services=services, block=False)
        try:
            yield Served(f"http://127.0.0.1:{port}/", collection)
        finally:
            app.close()


@pytest.fixture
def page_and_requests() -> Iterator[tuple[Any, list[str], list[str]]]:
    """A page, every URL it requested, and those for other hosts (aborted before they left)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/install --test installs it with apt-get")
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    outside: list[str] = []

    def abort(route: Any) -> None:
        outside.append(route.request.url)
        route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(locale="en-US", viewport={"width": 1300, "height": 1000})
        context.on("request", lambda request: requested.append(request.url))
        context.route(
            lambda url: (
                urlparse(url).hostname not in LOOPBACK and urlparse(url).scheme in ("http", "https", "ws", "wss")
            ),
            abort,
        )
        yield context.new_page(), requested, outside
        browser.close()


def _ask(page: Any, question: str, until: str) -> None:
    from playwright.sync_api import expect

    page.locator("#msg textarea").fill(question)
    page.locator("#msg textarea").press("Enter")
    expect(page.locator("#chat")).to_contain_text(until, timeout=60_000)
    expect(page.locator('#chat button[aria-label="Retry"]').last).to_be_enabled(timeout=60_000)


def _assert_nothing_fetched(page: Any, requested: list[str], outside: list[str]) -> None:
    chat = page.locator("#chat")
    for selector in ("img", "iframe", "object", "embed", "video", "audio", "source", "link", "[style*=url]"):
        assert chat.locator(selector).count() == 0, f"an element {selector} was made from untrusted text"
    assert chat.locator(f"a[href*='{REMOTE}']").count() == 0
    assert outside == []
    hosts = {urlparse(url).hostname for url in requested if urlparse(url).scheme not in ("data", "blob")}
    assert hosts <= LOOPBACK, hosts


def test_planted_images_html_and_links_are_shown_as_text_and_fetch_nothing(
    served: Served, page_and_requests: tuple[Any, list[str], list[str]]
) -> None:
    from playwright.sync_api import expect

    page, requested, outside = page_and_requests
    page.goto(served.url, wait_until="load")
    _ask(page, f"How long do refunds take? ![q](http://{REMOTE}/q.png)", "Refunds take 14 days")
    answer = page.locator("#chat .message-row", has_text="Refunds take 14 days [1]").last
    for text in AS_TEXT:
        expect(answer).to_contain_text(text)
    expect(page.locator("#chat")).to_contain_text(f"How long do refunds take? ![q](http://{REMOTE}/q.png)")
    citation = page.locator("#chat .thought-group > .title", has_text=f"[1] Planted ![t](http://{REMOTE}/t.png)")
    citation.first.click()
    passage = page.locator("#chat .thought-group", has_text="Source:").last
    for text in AS_TEXT:
        expect(passage).to_contain_text(text)
    expect(passage).to_contain_text(f"notes <img src=http:\\\\{REMOTE}\\f.png>.jsonl")

    page.locator("#database input").click()
    page.get_by_role("option", name="notes").click()
    _ask(page, "Show the notes", "From the notes database")
    cell = page.locator("#chat td", has_text=f"<img src=http://{REMOTE}/raw.png>").last
    for text in AS_TEXT:
        expect(cell).to_contain_text(text)
    page.wait_for_timeout(1000)  # time for anything the page would load to be asked for
    _assert_nothing_fetched(page, requested, outside)

    page.reload(wait_until="load")  # the thread comes back from the log: shown the same way
    expect(page.locator("#chat")).to_contain_text(AS_TEXT[1], timeout=20_000)
    page.wait_for_timeout(1000)
    _assert_nothing_fetched(page, requested, outside)
