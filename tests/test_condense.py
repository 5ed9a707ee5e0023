"""The condense step: a follow-up is searched as a standalone question, with one model call at most,
and never fails the turn; and the follow-up benchmark's data and plumbing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from agent.core.config import Settings
from agent.core.steps.condense import (
    EXCHANGES,
    SHOWN_CHARS,
    condense_messages,
    context_reason,
    conversation,
    usable_rewrite,
)
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from evals.bench.followups import (
    FollowUp,
    FollowUpDataError,
    found_at_k,
    load_followups,
    measure_followups,
    missing_documents,
    summarise,
)
from evals.datasets import load_cisi, load_pubmedqa
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI, last_user
from knowledge.base import KnowledgeBase

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
    {"id": "support", "title": "Support", "text": "Support answers email within one working day."},
    {"id": "vouchers", "title": "Vouchers", "text": "Gift vouchers are valid for two years from the day of purchase."},
    {"id": "sizes", "title": "Sizes", "text": "Shoe sizes follow the European system; a size chart is on every page."},
    {"id": "privacy", "title": "Privacy", "text": "Customer data is kept for seven years for tax reasons."},
    {"id": "careers", "title": "Careers", "text": "Open positions are posted on the careers page each month."},
    {"id": "stores", "title": "Stores", "text": "The shop has no physical stores; everything is sold online."},
]
FIRST = "Where do parcels ship from?"
FOLLOW_UP = "How often does it happen?"
STANDALONE = "How often do parcels ship from the Rotterdam warehouse?"


def _endpoint(server: ScriptedOpenAI) -> ChatEndpoint:
    return ChatEndpoint(openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20), "scripted")


@pytest.fixture
def agent(kb: KnowledgeBase, server: ScriptedOpenAI) -> Iterator[Agent]:
    settings = Settings(openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0)
    with open_checkpointer(kb.db.url) as checkpointer:
        yield Agent(settings, kb, _endpoint(server), checkpointer)


def ask(agent: Agent, question: str, collection: str, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    events: list[Any] = []
    result = agent.ask(TurnRequest(question, collection, **kwargs), on_event=events.append)
    return result.to_dict(), [e.to_dict() for e in events]


def condense_end(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e["type"] == "step" and e["step"] == "condense" and e["status"] == "end")


def searched(events: list[dict[str, Any]]) -> list[str]:
    return [e["arguments"]["query"] for e in events if e["type"] == "tool" and e["name"] == "search_knowledge"]


# -- the rule: which questions lean on the conversation --------------------------------------------


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        ("Which file types does it support?", "refers to 'it'"),
        ("And what if that server doesn't have pgvector?", "refers to 'that'"),
        ("What were their survival rates?", "refers to 'their'"),
        ("Is the same true for vouchers?", "refers to 'same'"),
        ("And for orders from abroad?", "starts with 'and'"),
        ("What about shipping?", "starts with 'what about'"),
        ("How about gift vouchers?", "starts with 'how about'"),
        ("In children?", "a question of 2 words"),
        ("How many were randomized?", "a question of 4 words"),
    ],
)
def test_a_question_that_leans_on_the_thread_needs_context(question: str, reason: str) -> None:
    assert context_reason(question) == reason


@pytest.mark.parametrize(
    "question",
    [
        "How long do refunds take?",
        "Which file types does Ladder's ingest support?",
        "Is there a limit on the size of an uploaded file?",  # existential 'there' points at nothing
        "Are there stores where I can try shoes on?",
        "thanks a lot!",  # short, but not a question
        "Explain how chunking works",
        "",
    ],
)
def test_a_question_that_stands_alone_needs_no_context(question: str) -> None:
    assert context_reason(question) is None


# -- the model's reply: used when it is one question, else the question as typed ------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (STANDALONE, STANDALONE),
        (f"  {STANDALONE}\n", STANDALONE),
        (f'Standalone question: "{STANDALONE}"', STANDALONE),
        (f"{STANDALONE}\nI replaced 'it' with the shipping.", STANDALONE),  # the first line is the question
    ],
)
def test_a_usable_rewrite_is_cleaned(reply: str, expected: str) -> None:
    assert usable_rewrite(reply, FOLLOW_UP) == (expected, "")


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "the reply was empty"),
        ("  \n \n", "the reply was empty"),
        ('Question: ""', "the reply was empty"),
        ("Parcels ship every weekday from Rotterdam.", "the reply was not a question"),  # it answered instead
        ("How often " + "and when and where " * 20 + "do parcels ship?", "the reply was too long to be one question"),
    ],
)
def test_an_unusable_rewrite_is_refused(reply: str, problem: str) -> None:
    assert usable_rewrite(reply, FOLLOW_UP) == (None, problem)


def test_the_model_sees_only_the_last_exchanges_clipped() -> None:
    history = []
    for n in range(EXCHANGES + 2):
        history += [
            {"role": "user", "content": f"question {n}?"},
            {"role": "assistant", "content": f"answer {n} " * 200},
        ]
    text = conversation(history)
    assert "question 0?" not in text and "question 1?" not in text
    assert text.count("User: ") == EXCHANGES and text.startswith(f"User: question {2}?")
    assert all(len(line) <= len("Assistant: ") + SHOWN_CHARS + 1 for line in text.splitlines())
    messages = condense_messages(FOLLOW_UP, history, fewshot=False)
    assert [m["role"] for m in messages] == ["system", "user"] and messages[-1]["content"].endswith(FOLLOW_UP)


# -- the step in a real turn (scripted model, real database and embeddings) -----------------------


def test_the_first_turn_makes_no_model_call(agent: Agent, corpus: str, model: ScriptedModel) -> None:
    result, events = ask(agent, FOLLOW_UP, corpus)  # referring words, but nothing to refer to
    assert result["sub_questions"] == [FOLLOW_UP]
    assert model.calls["condense"] == 0
    step = condense_end(events)
    assert step["model_called"] is False and step["needs_context"] is False and step["standalone"] == FOLLOW_UP
    assert searched(events) == [FOLLOW_UP]


def test_a_follow_up_is_searched_as_the_rewritten_question(
    agent: Agent, corpus: str, model: ScriptedModel, kb: KnowledgeBase
) -> None:
    first, _ = ask(agent, FIRST, corpus)
    model.steps["condense"] = lambda body: STANDALONE
    result, events = ask(agent, FOLLOW_UP, corpus, thread_id=first["thread_id"])
    assert model.calls["condense"] == 1
    sent = last_user(model.bodies["condense"][-1])
    assert FIRST in sent and sent.endswith(f"Follow-up: {FOLLOW_UP}")  # the thread reached the model
    assert searched(events) == [STANDALONE]
    assert result["sub_questions"] == [STANDALONE]
    assert f"Question: {STANDALONE}" in last_user(model.bodies["draft"][-1])
    step = condense_end(events)
    assert step["standalone"] == STANDALONE and step["model_called"] is True and step["why"] == "refers to 'it'"
    with kb.db.connection() as conn:
        question, logged = conn.execute(
            "SELECT question, events FROM turns WHERE turn_id = %s", (result["turn_id"],)
        ).fetchone()
    assert question == FOLLOW_UP  # the turn keeps what the user typed
    assert condense_end(logged)["standalone"] == STANDALONE


def test_a_follow_up_that_stands_alone_makes_no_call(agent: Agent, corpus: str, model: ScriptedModel) -> None:
    first, _ = ask(agent, FIRST, corpus)
    _, events = ask(agent, "How long do refunds take?", corpus, thread_id=first["thread_id"])
    assert model.calls["condense"] == 0 and searched(events) == ["How long do refunds take?"]
    assert condense_end(events)["needs_context"] is False


@pytest.mark.parametrize(
    "reply",
    ["", "   ", "Parcels ship every weekday.", "Why " * 80 + "?"],
    ids=["empty", "blank", "an answer", "too long"],
)
def test_an_unusable_rewrite_falls_back_to_the_question_as_typed(
    agent: Agent, corpus: str, model: ScriptedModel, reply: str
) -> None:
    first, _ = ask(agent, FIRST, corpus)
    model.steps["condense"] = lambda body: reply
    result, events = ask(agent, FOLLOW_UP, corpus, thread_id=first["thread_id"])
    assert model.calls["condense"] == 1 and "error" not in result and result["answer"]
    assert searched(events) == [FOLLOW_UP]
    step = condense_end(events)
    assert step["standalone"] == FOLLOW_UP and step["fallback"].startswith("the reply was")


def test_the_setting_turns_condensing_off(agent: Agent, corpus: str, model: ScriptedModel) -> None:
    first, _ = ask(agent, FIRST, corpus)
    model.steps["condense"] = lambda body: STANDALONE
    plain = agent.variant(agent.settings.model_copy(update={"use_condense": False}))
    _, events = ask(plain, FOLLOW_UP, corpus, thread_id=first["thread_id"])
    assert model.calls["condense"] == 0 and searched(events) == [FOLLOW_UP]


# -- the follow-up benchmark -------------------------------------------------------------------------


def test_the_shipped_follow_ups_are_well_formed(shared_data: Path) -> None:
    items = load_followups()
    assert len(items) >= 30 and len({item.id for item in items}) == len(items)
    assert {item.corpus for item in items} == {"pubmedqa", "cisi"}
    assert [item.id for item in items if context_reason(item.follow_up) is None] == []  # each leans on its thread
    assert [item.id for item in items if context_reason(item.standalone) is not None] == []  # each stands alone
    datasets = {
        "pubmedqa": load_pubmedqa(shared_data / "pubmedqa" / "pqal_dev.json"),
        "cisi": load_cisi(shared_data / "cisi"),
    }
    assert missing_documents(items, datasets) == []


def test_a_broken_triple_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "followups.jsonl"
    path.write_text(json.dumps({"id": "x", "corpus": "pubmedqa"}) + "\n", encoding="utf-8")
    with pytest.raises(FollowUpDataError, match=r"followups.jsonl:1: not a follow-up triple"):
        load_followups(path)
    good = {"id": "x", "doc_id": "1", "first": "q?", "answer": "a", "follow_up": "it?", "standalone": "q2?"}
    path.write_text(json.dumps({**good, "corpus": "nowhere"}) + "\n", encoding="utf-8")
    with pytest.raises(FollowUpDataError, match="unknown corpus 'nowhere'"):
        load_followups(path)


def test_recall_and_the_goal_are_summarised() -> None:
    def row(literal: bool, rewritten: bool, standalone: bool, corpus: str = "a") -> dict[str, Any]:
        found = {"literal": literal, "rewritten": rewritten, "standalone": standalone}
        return {
            "id": "r",
            "corpus": corpus,
            "found": found,
            "model_called": True,
            "fallback": "",
            "seconds": 2.0,
            "tokens": (100, 10),
        }

    rows = [row(False, True, True), row(False, True, True), row(False, False, True, "b"), row(True, True, True, "b")]
    report = summarise(rows, bare_seconds=0.5)
    assert report["recall"] == {"literal": 0.25, "rewritten": 0.75, "standalone": 1.0}
    assert report["by_corpus"]["b"] == {"literal": 0.5, "rewritten": 0.5, "standalone": 1.0}
    assert report["rewritten_to_standalone"] == 0.75 and report["within_10pct_of_standalone"] is False
    assert report["condense_seconds"] == {"mean": 2.0, "p95": 2.0} and report["condense_to_bare_call"] == 4.0
    assert report["condense_tokens"] == {"prompt_mean": 100.0, "completion_mean": 10.0}
    assert summarise([row(False, True, True)] * 9 + [row(False, False, True)], 1.0)["within_10pct_of_standalone"]


def test_the_benchmark_runs_the_real_step(kb: KnowledgeBase, corpus: str, server, model: ScriptedModel) -> None:
    rewrites = {FOLLOW_UP: STANDALONE}
    model.steps["condense"] = lambda body: rewrites.get(last_user(body).rsplit("Follow-up: ", 1)[-1], "")
    items = [
        FollowUp("ship", "shop", "shipping", FIRST, "From Rotterdam [1].", FOLLOW_UP, STANDALONE),
        FollowUp(
            "vouch",
            "shop",
            "vouchers",
            "Do you sell gift vouchers?",
            "Yes [1].",
            "How long are they valid?",
            "How long are gift vouchers valid?",
        ),
    ]
    report = measure_followups(kb, _endpoint(server), items, {"shop": corpus}, "hybrid")
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["ship"]["rewritten"] == STANDALONE and rows["ship"]["fallback"] == ""
    assert rows["vouch"]["rewritten"] == "How long are they valid?" and rows["vouch"]["fallback"]
    assert report["model_calls"] == 2 and report["fallbacks"] == {"vouch": "the reply was empty"}
    assert report["recall"]["standalone"] == 1.0 and rows["ship"]["found"]["rewritten"] is True
    assert model.calls["condense"] == 2 and all(r["tokens"][0] > 0 for r in report["rows"])


def test_found_at_k_looks_for_the_document_among_the_first_five(kb: KnowledgeBase, corpus: str) -> None:
    assert found_at_k(kb, corpus, "How long are gift vouchers valid?", "vouchers", "hybrid")
    assert not found_at_k(kb, corpus, "How long are gift vouchers valid?", "no-such-document", "hybrid")


def test_the_chat_shows_the_step_only_for_a_follow_up() -> None:
    from agent.chat.view import TurnView
    from agent.core.events import StepEvent

    view = TurnView()
    quiet = {"needs_context": False}
    view.add(StepEvent("condense", "start", detail=quiet))
    view.add(StepEvent("condense", "end", 0.01, detail={**quiet, "standalone": FIRST, "model_called": False}))
    assert view.messages() == []  # a first turn, or a question that stands alone: nothing to show
    view = TurnView()
    view.add(StepEvent("condense", "start", detail={"needs_context": True}))
    view.add(StepEvent("condense", "end", 1.2, detail={"needs_context": True, "standalone": STANDALONE}))
    (shown,) = view.messages()
    assert shown["metadata"]["title"] == "Understand the follow-up" and shown["metadata"]["status"] == "done"
    assert "Rotterdam warehouse" in shown["content"]
