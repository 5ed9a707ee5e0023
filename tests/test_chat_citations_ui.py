"""In a real browser (Debian's Chromium through Playwright): a citation opens on its passage with the sentence
that supports the claim highlighted, and a claim with no support is visibly marked."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.chat.scripted import scripted_chat
from agent.core.config import Settings
from evals.doubles.scripted_agent import ScriptedModel
from evals.finetune.data import write_jsonl
from knowledge.base import KnowledgeBase
from knowledge.db import Database
from tests.test_chat_ui import Chat, _wait_for_answer

DOCS = [
    {"id": "travel", "title": "Travel policy", "text": "Book flights through the portal. Hotels are paid up to 150 EUR "
     "a night. Taxis need a receipt."},
    {"id": "canteen", "title": "Canteen", "text": "The canteen opens at noon. It serves soup on Fridays."},
]  # fmt: skip
SUPPORTED = "Hotels are paid up to 150 EUR a night."
UNSUPPORTED = "Flights are always first class."


def _number_of(body: dict[str, Any], start: str) -> int:
    prompt = [m["content"] for m in body["messages"] if '<passage id="' in str(m.get("content"))][-1]
    found = re.findall(r'<passage id="(\d+)"[^>]*>\n(.*?)\n</passage>', prompt, re.S)
    return next(int(n) for n, text in found if text.startswith(start))


@pytest.fixture(scope="module")
def chat(embedded_db: Database, embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    collection = f"ui-cite-{time.time_ns()}"
    docs = tmp_path_factory.mktemp("ui-cite") / "policy.jsonl"
    write_jsonl(docs, DOCS)
    kb = KnowledgeBase(embedded_db, embedder)
    kb.ingest([docs], collection, progress=False)
    model = ScriptedModel()
    # the draft cites nothing by number; the check backs the first sentence with the travel passage, not the second
    model.steps["draft"] = lambda body: f"{SUPPORTED} {UNSUPPORTED}"
    model.steps["fact_check"] = lambda body: json.dumps(
        {
            "checks": [
                {
                    "n": int(n),
                    "supported": SUPPORTED in sentence,
                    "passages": [_number_of(body, "Book flights")] if SUPPORTED in sentence else [],
                }
                for n, sentence in re.findall(r"^(\d+)\. (.*)$", body["messages"][-1]["content"], flags=re.M)
            ]
        }
    )  # fmt: skip  (the guards may judge the copied sentence first: the listing says which are asked)
    settings = Settings(llm_max_retries=0, collection=collection, data_dir=embedded_db.embedded.root, max_revisions=0)
    with scripted_chat(settings, kb, model, token_delay_s=0.0) as served:
        yield Chat(served.url, served.agent, model, collection)


def test_a_citation_opens_on_its_passage_with_the_supporting_sentence_highlighted(
    chat: Chat, browser_page: Any
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(chat.url, wait_until="load")
    page.locator("#msg textarea").fill("How much may a hotel cost a night?")
    page.locator("#msg textarea").press("Enter")
    _wait_for_answer(page, "Claims, checked against the passages")
    answer = page.locator("#chat li", has_text=UNSUPPORTED).last
    expect(answer).to_contain_text(f"✗ NOT supported: {UNSUPPORTED}")  # the claim with no support is marked
    number = chat.model.bodies["draft"][-1]
    cited = _number_of(number, "Book flights")
    expect(page.locator("#chat li", has_text=SUPPORTED).last).to_contain_text(f"✓ {SUPPORTED} [{cited}]")

    page.locator("#chat .thought-group > .title", has_text=f"[{cited}] Travel policy").first.click()
    mark = page.locator("#chat mark", has_text=SUPPORTED).first
    expect(mark).to_be_visible()
    assert mark.inner_text().strip() == SUPPORTED  # the sentence, not the whole passage
    background = mark.evaluate("m => getComputedStyle(m).backgroundColor")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background  # the browser shows it highlighted
    expect(page.locator("#chat .thought-group", has_text=SUPPORTED).last).to_contain_text("Taxis need a receipt.")
