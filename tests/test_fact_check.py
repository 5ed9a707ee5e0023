"""The fact-check: its guards on hand-written cases, the model asked only about what they leave, and the
benchmark's plumbing (the claims set, before and after, the figures) against a scripted model."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from agent.core.config import Settings
from agent.core.state import Passage
from agent.core.steps.fact_check import NOT_JUDGED, check_draft
from agent.core.steps.fact_guards import copied_from, guard, is_polar, numbers_in
from agent.models.calls import ModelCaller
from agent.models.endpoint import ChatEndpoint
from evals.bench.factcheck import (
    BEFORE_FACT_CHECK,
    Claim,
    Outcome,
    load_claims,
    meets_goal,
    report,
    run_checks,
    score,
    select_claims,
)
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI, last_user


def passages(*texts: str) -> list[Passage]:
    return [
        Passage(chunk_id=100 + n, doc_id=f"d{n}", title=f"Doc {n}", heading="", source="", text=t, score=1.0)
        for n, t in enumerate(texts, start=1)
    ]


DOCS = passages(
    "Refunds are paid within 14 days after the returned parcel arrives. Parcels ship from the Rotterdam "
    "warehouse every weekday.",
    "Killing an ingest at any point is safe: the next run redoes only what is missing. Several Ladder processes "
    "share one PostgreSQL server; the last one to exit stops it.",
    "Every loop has a bound: sub-questions per turn (4), searches per sub-question (3), revisions (1).",
)
QUESTION = "How long do refunds take?"


# -- guards -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "reason"),
    [
        ("Refunds take 21 days [1].", "21 is in none of the passages"),
        ("Parcels ship from the Hamburg warehouse [1].", "Hamburg is in none of the passages"),
        ("Refunds go through the MQTT queue [1].", "MQTT is in none of the passages"),
        ("Killing an ingest at any point is not safe [2].", "the passage says the opposite [2]"),
        ("Every loop has a bound: sub-questions per turn (3), searches per sub-question (4), revisions (1) [3].",
         "the passage says 4, not 3 [3]"),
        ("Several PostgreSQL processes share one Ladder server [2].", "the passage says Ladder, not PostgreSQL [2]"),
    ],
)  # fmt: skip
def test_a_guard_marks_what_the_passages_cannot_back_and_says_why(sentence: str, reason: str) -> None:
    assert guard(sentence, QUESTION, DOCS).startswith(reason)


@pytest.mark.parametrize(
    "sentence",
    [
        "Refunds are paid within 14 days after the returned parcel arrives [1].",  # verbatim
        "Refunds are paid within fourteen days of the parcel's return [1].",  # a number in words, paraphrased
        "1. Parcels leave Rotterdam every weekday [1].",  # a list marker is not a number; a name in the passages
        "According to Passage 1, refunds take 14 days.",  # words about the passages are not names
        "Passages 2 and 3 say nothing about refunds.",  # numbers that point at passages are not quantities
        "Stopping an ingest midway loses nothing: the next run redoes what is missing [2].",  # a negation reworded
        "An ingest that is killed is not a problem [2].",  # not a near copy: only the model can tell
        "Several Ladder processes can share one server [2][3].",
    ],
)
def test_no_guard_fires_on_what_the_passages_state(sentence: str) -> None:
    assert guard(sentence, QUESTION, DOCS) == ""


def test_an_answer_that_only_restates_the_question_is_never_supported() -> None:
    docs = passages("Ladder creates the vector extension if it is missing (the user needs the right to do that).")
    question = "And what if that server doesn't have pgvector?"
    assert guard("The server doesn't have pgvector [1].", question, docs) == "it only restates the question"
    assert guard("Then Ladder creates the vector extension itself [1].", question, docs) == ""
    # A yes/no question's own words are an answer; so are the words of a choice it offers.
    assert is_polar("And does the server need pgvector?") and not is_polar("What if it has no pgvector?")
    assert guard("The server needs the vector extension [1].", "Does the server need the vector extension?", docs) == ""
    assert guard("Ladder creates it [1].", "Does Ladder create it, or must I?", docs) == ""


def test_numbers_are_compared_as_numbers() -> None:
    assert numbers_in("1,099 women, 0.50 of them, three groups, 71% [2]") >= {"1099", "0.5", "3", "71", "2"}
    assert guard("Of 1099 women, 0.5 were screened [1].", "", passages("Of 1,099 women, 0.50 were screened.")) == ""


# -- the check: guards first, the model for the rest ----------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedModel, ModelCaller]]:
    model = ScriptedModel()
    with ScriptedOpenAI(chat=model) as server:
        client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20)
        yield model, ModelCaller(client, "scripted", max_calls=10)


CONVERSATION = [{"role": "system", "content": "s"}, {"role": "user", "content": "passages and question"}]


def test_the_model_is_asked_only_about_what_the_guards_leave(scripted: tuple[ScriptedModel, ModelCaller]) -> None:
    model, caller = scripted
    draft = "Refunds take 21 days [1]. Refunds are paid within 14 days [1]. Parcels ship on weekdays [1]."
    model.steps["fact_check"] = lambda body: json.dumps(
        {"checks": [{"n": 1, "supported": True, "passages": [1]}]}  # judges the first it is shown, skips the second
    )
    verdicts = check_draft(caller, CONVERSATION, QUESTION, draft, DOCS)
    assert [v["supported"] for v in verdicts] == [False, True, False]
    assert verdicts[0]["reason"] == "21 is in none of the passages" and verdicts[2]["reason"] == NOT_JUDGED
    assert verdicts[1]["evidence"] == [101] and verdicts[0]["evidence"] == []
    shown = last_user(model.bodies["fact_check"][-1])
    assert "21 days" not in shown and "1. Refunds are paid within 14 days [1]." in shown
    assert "(closest: passage [1])" in shown and "returned parcel arrives" not in shown  # pointed at, not quoted
    messages = model.bodies["fact_check"][-1]["messages"]
    assert messages[:2] == CONVERSATION and messages[2] == {"role": "assistant", "content": draft}  # a continuation
    check_draft(caller, CONVERSATION, QUESTION, draft, DOCS, quote=True)
    shown = last_user(model.bodies["fact_check"][-1])
    assert "(closest in passage [1]: Refunds are paid within 14 days after the returned parcel arrives.)" in shown


def test_a_copy_of_a_passage_is_supported_by_it_without_a_model_call(
    scripted: tuple[ScriptedModel, ModelCaller],
) -> None:
    model, caller = scripted
    draft = (
        "Refunds are paid within 14 days after the returned parcel arrives [2]. "
        "Several Ladder processes share one PostgreSQL server [2]."
    )
    verdicts = check_draft(caller, CONVERSATION, QUESTION, draft, DOCS)
    assert [(v["supported"], v["evidence"]) for v in verdicts] == [(True, [101]), (True, [102])]  # the passage copied
    assert model.calls["fact_check"] == 0
    assert copied_from("Parcels ship from the Rotterdam warehouse every weekday.", DOCS) == 1
    assert copied_from("Parcels ship every weekday.", DOCS) == 0  # most of the sentence left out
    assert copied_from("Killing an ingest at any point is safe.", DOCS) == 2  # a clause of a longer sentence
    assert copied_from("Parcels ship from the Rotterdam warehouse every day.", DOCS) == 0  # a word changed


def test_the_model_sees_the_words_a_near_copy_changed(scripted: tuple[ScriptedModel, ModelCaller]) -> None:
    model, caller = scripted
    check_draft(caller, CONVERSATION, QUESTION, "Refunds are paid within 14 days after the parcel is sent [1].", DOCS)
    shown = last_user(model.bodies["fact_check"][-1])
    assert '(it has "is sent" where passage [1] has "returned parcel arrives")' not in shown  # not a near copy
    check_draft(caller, CONVERSATION, QUESTION, "Refunds are paid within 14 days after the returned parcel ships [1].",
                DOCS)  # fmt: skip
    assert '(it has "ships" where passage [1] has "arrives")' in last_user(model.bodies["fact_check"][-1])


def test_no_model_call_when_the_guards_judge_every_sentence(scripted: tuple[ScriptedModel, ModelCaller]) -> None:
    model, caller = scripted
    verdicts = check_draft(caller, CONVERSATION, QUESTION, "Refunds take 21 days [1].", DOCS)
    assert [v["supported"] for v in verdicts] == [False] and model.calls["fact_check"] == 0
    check_draft(caller, CONVERSATION, QUESTION, "Refunds take 21 days [1].", DOCS, guards=False)
    assert model.calls["fact_check"] == 1  # without guards the model judges it


# -- the claims set -----------------------------------------------------------------------------------


def test_the_claims_set_is_balanced_in_pairs_and_halves() -> None:
    claims = load_claims()
    assert len(claims) >= 100
    assert Counter(c.label for c in claims) == {"supported": len(claims) // 2, "error": len(claims) // 2}
    pairs: dict[str, list[Claim]] = {}
    for claim in claims:
        pairs.setdefault(claim.id.split("-")[0], []).append(claim)
    for supported, error in pairs.values():
        assert (supported.label, error.label) == ("supported", "error")
        assert (supported.question, supported.passages, supported.split) == (
            error.question,
            error.passages,
            error.split,
        )
    kinds = Counter((c.kind, c.split) for c in claims if c.label == "error")
    for kind in ("negation", "number", "entity", "swapped", "other_passage", "restated", "reworded"):
        assert kinds[(kind, "tune")] >= 2 and kinds[(kind, "test")] >= 2, kind
    assert Counter(c.split for c in claims) == {"tune": len(claims) // 2, "test": len(claims) // 2}


def test_a_planted_error_differs_from_its_passages_and_a_verbatim_claim_is_in_its_cited_passage() -> None:
    for claim in load_claims():
        texts = [p["text"] for p in claim.passages]
        sentence = claim.answer.rsplit(" [", 1)[0]
        if claim.edit == "verbatim":
            cited = int(claim.answer.rsplit("[", 1)[1].split("]")[0])
            assert sentence in texts[cited - 1].replace("\n", " ") or sentence.rstrip(".") in texts[cited - 1]
        if claim.label == "error" and claim.kind != "restated":
            assert not any(sentence in text for text in texts), claim.id


def test_the_pubmedqa_claims_are_written_by_the_script(shared_data) -> None:
    from evals.bench.factcheck_claims import build_claims

    def pubmed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [i for i in items if i["source"].startswith("pubmedqa:")]

    committed = [json.loads(line) for line in open_claims()]
    assert pubmed(build_claims()) == pubmed(committed)


def open_claims() -> list[str]:
    from evals.bench.factcheck_claims import CLAIMS_FILE

    return CLAIMS_FILE.read_text(encoding="utf-8").splitlines()


def test_a_limit_keeps_whole_pairs_from_across_the_set() -> None:
    claims = load_claims()
    picked = select_claims(claims, "all", 10)
    assert len(picked) == 10 and Counter(c.label for c in picked) == {"supported": 5, "error": 5}
    assert {c.source.split(":")[0] for c in picked} == {"pubmedqa", "docs", "hand"}
    assert all(c.split == "test" for c in select_claims(claims, "test"))


# -- the benchmark against a scripted model -----------------------------------------------------------


def test_the_benchmark_runs_before_and_after_and_scores_them(scripted: tuple[ScriptedModel, ModelCaller]) -> None:
    model, caller = scripted
    before_calls: list[dict[str, Any]] = []

    def before(body: dict[str, Any]) -> str:  # ed2d3da's check: its instruction in its own system message
        assert BEFORE_FACT_CHECK in body["messages"][0]["content"]
        before_calls.append(body)
        return json.dumps({"claims": [{"claim": "it", "supported": True, "evidence": [1]}]})

    model.steps["baseline"] = before
    claims = [c for c in load_claims() if c.id.split("-")[0] in {"002", "057"}]  # a changed number, a restatement
    endpoint = ChatEndpoint(caller.client, "scripted")
    outcomes = run_checks(endpoint, Settings(), claims)
    assert len(before_calls) == 4 and model.calls["draft"] == 4  # the turn's check follows the draft's call
    assert [o.flagged for o in outcomes["before"]] == [False] * 4  # the scripted model passes everything
    assert [o.flagged for o in outcomes["after"]] == [False, True, False, True]  # the guards catch both errors
    figures = report(outcomes, "scripted")
    assert figures["before"]["all"]["detected"] == 0.0 and figures["after"]["all"]["detected"] == 1.0
    assert figures["after"]["all"]["restated_passed"] == 0 and figures["before"]["all"]["restated_passed"] == 1
    assert figures["after"]["all"]["false_alarms"] == 0.0 and figures["after"]["meets_goal"]
    assert figures["misses"]["before"] == ["002-error", "057-error"]


def test_scores_count_detection_false_alarms_and_restated_claims() -> None:
    claims = {c.id: c for c in load_claims()}

    def outcome(claim_id: str, flagged: bool, malformed: bool = False) -> Outcome:
        return Outcome(claims[claim_id], flagged, 1.0, malformed)

    found = [
        outcome("001-supported", False),
        outcome("002-supported", True),
        outcome("001-error", True),
        outcome("002-error", False, malformed=True),
        outcome("057-error", False),
    ]
    figures = score(found)
    assert (figures["detected"], figures["false_alarms"]) == (round(1 / 3, 3), 0.5)
    assert figures["restated_passed"] == 1 and figures["malformed"] == 1
    assert figures["flagged_by_group"]["restated"] == 0.0
    assert not meets_goal(figures)


def test_the_command_prints_the_figures_as_json() -> None:
    import os
    import subprocess
    import sys

    with ScriptedOpenAI(chat=ScriptedModel()) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k", "LADDER_CHAT_MODEL": "scripted"}
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", "bench", "factcheck", "--limit", "2", "--json"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        bad = subprocess.run(
            [sys.executable, "-m", "agent.cli", "bench", "factcheck", "--config", "later"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["model"] == "scripted" and figures["after"]["all"]["claims"] == 2
    assert figures["before"]["all"]["malformed"] == 2  # the scripted model does not know ed2d3da's prompt
    assert bad.returncode == 2 and "'later': use after, before, model" in bad.stderr
