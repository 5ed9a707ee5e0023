"""Citations a reader can check: the supporting sentence's offsets, kept from the fact-check to every face,
and each citation numbered as its passage was in the draft's prompt."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from agent.chat.mcp import PUBLIC_KEYS
from agent.chat.view import citation_messages, claims_html
from agent.core.results import Citation
from agent.core.steps.citing import sentence_spans, supporting_span
from agent.core.turn import Agent, TurnRequest
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from knowledge.base import KnowledgeBase
from tests.test_agent import make_agent

DOCS = [
    {"id": "travel", "title": "Travel policy", "text": "Book flights through the portal. Hotels are paid up to 150 EUR "
     "a night. Taxis need a receipt."},
    {"id": "canteen", "title": "Canteen", "text": "The canteen opens at noon. It serves soup on Fridays."},
]  # fmt: skip


@pytest.fixture
def agent(kb: KnowledgeBase, model: ScriptedModel) -> Iterator[Agent]:
    with ScriptedOpenAI(chat=model) as server:
        yield from make_agent(kb, server)


def prompt_passages(body: dict[str, Any]) -> dict[int, str]:
    """The passages of a draft (or check) request by the number the prompt gives them."""
    # the last such message: the few-shot example before it has a passage of its own
    prompt = [m["content"] for m in body["messages"] if '<passage id="' in str(m.get("content"))][-1]
    return {int(n): text for n, text in re.findall(r'<passage id="(\d+)"[^>]*>\n(.*?)\n</passage>', prompt, re.S)}


def test_the_supporting_sentence_is_found_by_its_offsets() -> None:
    text = "Book flights through the portal. Hotels are paid up to 150 EUR a night. Taxis need a receipt."
    start, end, similarity = supporting_span("Hotels are refunded up to 150 EUR per night", text)
    assert text[start:end] == "Hotels are paid up to 150 EUR a night." and similarity > 0.5
    twice = "Same words. Other words. Same words."
    assert sentence_spans(twice) == [(0, 11), (12, 24), (25, 36)]  # a repeated sentence gets its own place


def test_each_verdict_records_the_sentence_and_every_face_and_the_log_keep_it(
    agent: Agent, corpus: str, model: ScriptedModel
) -> None:
    from agent.records.turns import thread_turns

    model.steps["draft"] = lambda body: "Hotels are paid up to 150 EUR a night [1]. Flights are free."
    model.steps["fact_check"] = lambda body: json.dumps(
        {"checks": [{"n": 1, "supported": True, "passages": [1]}, {"n": 2, "supported": False, "passages": []}]}
    )
    result = agent.ask(TurnRequest("How much may a hotel cost?", corpus))
    first = result.passages[0]
    assert first["doc_id"] == "travel"
    verdict = result.fact_check[0]
    [span] = verdict["support"]
    assert span["chunk_id"] == first["chunk_id"] and span["passage"] == 1
    assert first["text"][span["start"] : span["end"]] == "Hotels are paid up to 150 EUR a night."
    as_json = json.loads(json.dumps(result.to_dict()))  # what `ladder ask --json` prints
    assert as_json["fact_check"][0]["support"] == [span]
    assert "fact_check" in PUBLIC_KEYS  # the MCP answer carries the same verdicts
    with agent.kb.db.connection() as conn:
        [logged] = thread_turns(conn, result.thread_id)
    assert logged["fact_check"][0]["support"] == [span]


def test_a_citation_keeps_the_number_its_passage_had_in_the_draft_prompt(
    agent: Agent, corpus: str, model: ScriptedModel
) -> None:
    # The answer cites nothing by number, so the citations come from the fact-check's evidence; its first
    # claim comes from passage [2], its second from [1]: numbered by their place in that list they would swap.
    def first_sentence(body: dict[str, Any], n: int) -> str:
        return prompt_passages(body)[n].split(". ")[0].rstrip(".") + "."

    model.steps["draft"] = lambda body: f"{first_sentence(body, 2)} {first_sentence(body, 1)}"
    model.steps["fact_check"] = lambda body: json.dumps(
        {"checks": [{"n": 1, "supported": True, "passages": [2]}, {"n": 2, "supported": True, "passages": [1]}]}
    )
    result = agent.ask(TurnRequest("When does the canteen open, and how are hotels paid?", corpus))
    prompt = prompt_passages(model.bodies["draft"][-1])
    assert [prompt[n] for n in (1, 2)] == [p["text"] for p in result.passages[:2]]  # the prompt's order is kept
    first, second = result.passages[:2]
    assert [(c.number, c.chunk_id) for c in result.citations] == [(2, second["chunk_id"]), (1, first["chunk_id"])]
    shown = citation_messages(result.citations, result.passages, "k", result.fact_check)
    assert [m["metadata"]["title"][:3] for m in shown] == ["[2]", "[1]"]
    assert f"<mark>{first_sentence(model.bodies['draft'][-1], 2)}</mark>" in shown[0]["content"]


def test_a_citation_shows_section_and_page_and_an_unsupported_claim_is_marked() -> None:
    passage: dict[str, Any] = {"chunk_id": 7, "doc_id": "d", "title": "Manual", "heading": "Setup > Disks",
                               "source": "/m.pdf", "text": "Intro. Disks must be 2 TB. Done.", "page": 4}  # fmt: skip
    verdicts = [
        {"claim": "Disks must be 2 TB.", "supported": True, "evidence": [7],
         "support": [{"chunk_id": 7, "passage": 1, "start": 7, "end": 26}]},
        {"claim": "Disks are *free*.", "supported": False, "evidence": [], "support": []},
    ]  # fmt: skip
    [message] = citation_messages([Citation(1, "d", 7)], [passage], "k", verdicts)
    assert "Section: Setup &gt; Disks · Page 4" in message["content"]
    assert "Intro. <mark>Disks must be 2 TB.</mark> Done." in message["content"]
    claims = claims_html(verdicts)
    assert "✓ Disks must be 2 TB. [1]" in claims
    assert "✗ <strong>NOT supported:</strong> Disks are *free*." in claims


def test_citation_quality_counts_cited_claims_whose_highlighted_sentence_backs_them() -> None:
    from evals.ladder.rag_metrics import Verdict, Verdicts, citation_quality

    passages = [{"chunk_id": 1, "text": "Hotels are paid up to 150 EUR a night. Taxis need a receipt."}]
    verdicts = [
        {"claim": "Hotels are paid up to 150 EUR a night.", "support": [{"chunk_id": 1, "start": 0, "end": 38}]},
        {"claim": "Taxis are always free of charge.", "support": [{"chunk_id": 1, "start": 0, "end": 38}]},  # wrong
        {"claim": "Not cited at all.", "support": []},  # not a cited claim: not counted
    ]
    assert citation_quality(verdicts, passages) == 0.5  # by overlap, without a judge
    assert citation_quality([], passages) != citation_quality([], passages)  # nan: nothing cited

    class Judge:
        def __init__(self) -> None:
            self.contexts: list[str] = []

        def json(self, step: str, messages: list[dict[str, Any]], model: type) -> Verdicts:
            self.contexts.append(messages[-1]["content"])
            backed = "Hotels" in messages[-1]["content"].split("statements:")[-1]
            return Verdicts(verdicts=[Verdict(statement="s", reason="r", verdict=int(backed))])

    judge = Judge()
    assert citation_quality(verdicts, passages, judge) == 0.5
    assert all("context: Hotels are paid up to 150 EUR a night." in c for c in judge.contexts)  # the sentence only


def test_a_passage_cannot_plant_a_highlight_or_a_tag() -> None:
    from agent.chat.safe_html import marked_html

    planted = "A \ue000planted\ue001 mark. <mark onclick=x>tag</mark> here."
    assert "<mark>" not in marked_html(planted, [])
    shown = marked_html(planted, [(0, 17)])
    assert shown.count("<mark>") == 1 and "&lt;mark onclick=x&gt;" in shown and "onclick=x>" not in shown


def test_a_wrong_number_in_the_answer_does_not_hide_the_passage_that_backs_the_claim(
    agent: Agent, corpus: str, model: ScriptedModel
) -> None:
    # the draft copies passage [1]'s sentence but cites [2]; the check finds it in [1]
    def draft(body: dict[str, Any]) -> str:
        return prompt_passages(body)[1].split(". ")[0].rstrip(".") + " [2]."

    model.steps["draft"] = draft
    model.steps["fact_check"] = lambda body: json.dumps({"checks": [{"n": 1, "supported": True, "passages": [1]}]})
    result = agent.ask(TurnRequest("When does the canteen open, and how are hotels paid?", corpus))
    first, second = result.passages[:2]
    assert [(c.number, c.chunk_id) for c in result.citations] == [(2, second["chunk_id"]), (1, first["chunk_id"])]
    shown = citation_messages(result.citations, result.passages, "k", result.fact_check)
    assert shown[0]["metadata"]["title"].endswith("(backs no checked claim)")
    assert "<mark>" in shown[1]["content"] and "backs no" not in shown[1]["metadata"]["title"]
