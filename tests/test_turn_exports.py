"""The turn log as data: `ladder logs`, feedback, eval-set and fine-tuning exports, distillation, and
the fine-tuning API calls against a scripted OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from agent.core.config import Settings
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.endpoint import ChatEndpoint
from agent.records.redact import redact
from agent.records.turns import add_feedback, parse_age
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.finetune.data import check_example
from evals.finetune.exports import distilled_examples, evalset_records, finetune_examples
from knowledge.base import KnowledgeBase

DOCS = [
    {"id": "refunds", "title": "Refunds", "text": "Refunds are paid within 14 days after the returned parcel arrives."},
    {"id": "shipping", "title": "Shipping", "text": "Parcels ship from the Rotterdam warehouse every weekday."},
]
SECRET = "sk-live0123456789abcdefghijklmnop"


@pytest.fixture
def server() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI(chat=ScriptedModel()) as scripted:
        yield scripted


@pytest.fixture
def agent(kb: KnowledgeBase, server: ScriptedOpenAI) -> Iterator[Agent]:
    settings = Settings(openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0)
    client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=20)
    with open_checkpointer(kb.db.url) as checkpointer:
        yield Agent(settings, kb, ChatEndpoint(client, "scripted"), checkpointer)


def cli(kb: KnowledgeBase, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    base["LADDER_DATA_DIR"] = str(kb.db.embedded.root)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_redaction() -> None:
    text = f"Mail ann.lee@example.com or call +44 20 7946 0958 with key {SECRET} at postgresql://u:pw@db/x"
    assert redact(text) == "Mail [EMAIL] or call [PHONE] with key [SECRET] at postgresql://u:***@db/x"
    kept = redact(text, personal=False)
    assert "ann.lee@example.com" in kept and SECRET not in kept
    assert redact("On 2024-05-01 we sold 1234 units of v1.2.3 (order 12345).") == (
        "On 2024-05-01 we sold 1234 units of v1.2.3 (order 12345)."
    )
    assert redact({"a": ["password=hunter2", 3]}) == {"a": ["password=[SECRET]", 3]}
    assert parse_age("90d").days == 90
    with pytest.raises(ValueError, match="not an age"):
        parse_age("soon")


def test_an_approved_turn_becomes_an_eval_line_and_a_finetuning_example(
    agent: Agent, corpus: str, kb: KnowledgeBase, tmp_path: Path
) -> None:
    question = f"How long do refunds take? Reply to ann.lee@example.com, my key is {SECRET}"
    result = agent.ask(TurnRequest(question, corpus, face="ui")).to_dict()
    with kb.db.connection() as conn:
        add_feedback(conn, result["turn_id"], "up")
        turn = conn.execute(
            "SELECT status, model, settings, events, model_calls, passages FROM turns WHERE turn_id = %s",
            (result["turn_id"],),
        ).fetchone()
    status, model, settings, events, model_calls, passages = turn
    assert status == "done" and model == "scripted" and settings["search_mode"] == "hybrid"
    assert {c["step"] for c in model_calls} >= {"draft", "fact_check"} and all(c["messages"] for c in model_calls)
    assert any(e["type"] == "tool" and e["name"] == "search_knowledge" for e in events)
    assert passages[0]["rank"] == 1 and "text" in passages[0]
    assert "OPENAI_API_KEY" not in json.dumps(settings) and "base_url" not in json.dumps(settings)

    evalset = tmp_path / "eval.jsonl"
    finetune = tmp_path / "ft.jsonl"
    ran = cli(kb, "export", "evalset", "--out", str(evalset))
    assert ran.returncode == 0, ran.stderr
    lines = {r["id"]: r for r in map(json.loads, evalset.read_text().splitlines())}
    line = lines[result["turn_id"]]
    assert line["question"].startswith("How long do refunds take?") and "[EMAIL]" in line["question"]
    assert SECRET not in evalset.read_text() and "[SECRET]" in line["question"]
    assert line["reference_answer"] == result["answer"] and line["label"] == "up"
    assert line["reference_doc_ids"] and all(isinstance(c, str) and c for c in line["reference_contexts"])

    ran = cli(kb, "export", "finetune", "--out", str(finetune), "--val-fraction", "0")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["train"] >= 1 and summary["errors"] == {} and summary["estimated_cost_usd"] > 0
    examples = [json.loads(x) for x in finetune.read_text().splitlines()]
    mine = next(e for e in examples if e["messages"][1]["content"].startswith("How long do refunds take?"))
    assert check_example(mine) == []
    roles = [m["role"] for m in mine["messages"]]
    assert roles[:2] == ["system", "user"] and roles[-1] == "assistant" and "tool" in roles
    call = next(m for m in mine["messages"] if m.get("tool_calls"))["tool_calls"][0]
    assert call["function"]["name"] == "search_knowledge" and json.loads(call["function"]["arguments"])["query"]
    assert mine["tools"][0]["function"]["name"] == "search_knowledge"
    assert mine["messages"][-1]["content"] == result["answer"]
    assert SECRET not in finetune.read_text()


def test_corrections_feedback_cli_logs_and_pruning(agent: Agent, corpus: str, kb: KnowledgeBase) -> None:
    old = agent.ask(TurnRequest("Where do parcels ship from?", corpus)).to_dict()
    new = agent.ask(TurnRequest("Where do parcels ship from today?", corpus)).to_dict()
    ran = cli(kb, "feedback", new["turn_id"], "down", "--comment", "wrong city", "--correct", "From Rotterdam.")
    assert ran.returncode == 0, ran.stderr
    with kb.db.connection() as conn:
        records, _ = evalset_records(conn)
        assert next(r for r in records if r["id"] == new["turn_id"])["reference_answer"] == "From Rotterdam."
        corrected = [e for e in finetune_examples(conn) if e["messages"][-1]["content"] == "From Rotterdam."]
        assert len(corrected) == 1  # a corrected answer is a target even under --min-feedback up
        conn.execute("UPDATE turns SET started_at = now() - interval '100 days' WHERE turn_id = %s", (old["turn_id"],))
    listed = cli(kb, "logs", "--feedback", "down", "--json", "--limit", "1000")
    turns = [json.loads(x) for x in listed.stdout.splitlines()]
    assert new["turn_id"] in {t["turn_id"] for t in turns} and old["turn_id"] not in {t["turn_id"] for t in turns}
    assert cli(kb, "logs", "prune", "--older-than", "90d").returncode == 0
    with kb.db.connection() as conn:
        ids = (old["turn_id"], new["turn_id"])
        remaining = {r[0] for r in conn.execute("SELECT turn_id FROM turns WHERE turn_id IN (%s, %s)", ids)}
    assert remaining == {new["turn_id"]}
    bad = cli(kb, "feedback", "no-such-turn", "up")
    assert bad.returncode == 1 and "no turn 'no-such-turn'" in bad.stderr and "Traceback" not in bad.stderr
    assert cli(kb, "logs", "prune", "--older-than", "soon").returncode == 2


def test_distillation_keeps_only_fact_checked_answers(
    agent: Agent, corpus: str, kb: KnowledgeBase, server: ScriptedOpenAI
) -> None:
    agent.ask(TurnRequest("How long do refunds take?", corpus))
    teacher_model = ScriptedModel()
    with ScriptedOpenAI(chat=teacher_model) as teacher_server, open_checkpointer(kb.db.url) as checkpointer:
        client = openai.OpenAI(api_key="k", base_url=teacher_server.base_url, max_retries=0, timeout=20)
        teacher = Agent(agent.settings, kb, ChatEndpoint(client, "teacher"), checkpointer)
        with kb.db.connection() as conn:
            examples, dropped = distilled_examples(teacher, conn)
        assert examples and all(check_example(e) == [] for e in examples)
        assert any(e["messages"][1]["content"] == "How long do refunds take?" for e in examples)

        def unsupported(body: dict[str, Any]) -> str:
            return json.dumps({"checks": [{"n": 1, "supported": False, "passages": []}]})

        teacher_model.steps["fact_check"] = unsupported
        teacher_model.steps["revise"] = lambda body: "Still unsure."
        with kb.db.connection() as conn:
            kept, dropped = distilled_examples(teacher, conn)
    assert kept == [] and dropped >= 1


def test_finetune_submit_and_status_through_the_api(kb: KnowledgeBase, tmp_path: Path) -> None:
    train = tmp_path / "ft.jsonl"
    example = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}
    train.write_text(json.dumps(example) + "\n")
    (tmp_path / "ft.validation.jsonl").write_text(json.dumps(example) + "\n")
    missing = cli(kb, "finetune", "submit", str(train))
    assert missing.returncode == 1 and "set OPENAI_API_KEY" in missing.stderr
    with ScriptedOpenAI() as api:
        env = {"OPENAI_API_KEY": "sk-test-key-000000000000", "OPENAI_BASE_URL": api.base_url}
        ran = cli(kb, "finetune", "submit", str(train), "--model", "gpt-4o-mini-2024-07-18", env=env)
        assert ran.returncode == 0, ran.stderr
        assert "started fine-tuning job ftjob-1" in ran.stdout
        assert len(api.files) == 2 and b'"content": "Q?"' in api.files["file-1"]
        job = api.jobs["ftjob-1"]
        assert job["training_file"] == "file-1" and job["validation_file"] == "file-2"
        status = cli(kb, "finetune", "status", "ftjob-1", env=env)
        assert status.returncode == 0 and "ftjob-1: queued" in status.stdout
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
        refused = cli(kb, "finetune", "submit", str(bad), env=env)
        assert refused.returncode == 1 and "format errors" in refused.stderr and len(api.files) == 2
    checked = cli(kb, "finetune", "check", str(bad))
    assert checked.returncode == 1 and "example_missing_assistant_message" in checked.stdout


def test_embeddings_are_fine_tuned_on_approved_turns(kb: KnowledgeBase, collection: str, tmp_path: Path) -> None:
    import uuid

    from psycopg.types.json import Jsonb

    from evals.ladder.embedding_rung import run_embedding_rung
    from knowledge.embeddings import EmbeddingError

    facts = [
        ("Refunds", "Refunds are paid within 14 days after the returned parcel arrives.", "How fast are refunds?"),
        ("Shipping", "Parcels ship from the Rotterdam warehouse every weekday.", "Where do parcels leave from?"),
        ("Support", "Support answers email within one working day.", "When does support reply?"),
        ("Returns", "Returns are free for 30 days with the prepaid label.", "Do returns cost anything?"),
        ("Payment", "We accept cards, bank transfer and invoices for companies.", "How can I pay?"),
        ("Warranty", "Every product has a two-year warranty against defects.", "How long is the warranty?"),
    ]
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(json.dumps({"id": t.lower(), "title": t, "text": x}) for t, x, _ in facts))
    kb.ingest([path], collection, progress=False)
    settings = Settings(data_dir=kb.db.embedded.root, collection=collection)
    with pytest.raises(EmbeddingError, match="at least 2"):
        run_embedding_rung(settings, collection)
    with kb.db.connection() as conn:
        for title, text, question in facts:
            chunk_id, doc_id = conn.execute(
                "SELECT c.id, d.doc_id FROM chunks c JOIN documents d ON d.id = c.document_id"
                " JOIN collections k ON k.id = c.collection_id WHERE k.name = %s AND c.text = %s",
                (collection, text),
            ).fetchone()
            turn_id = uuid.uuid4().hex
            cited = {"doc_id": doc_id, "chunk_id": chunk_id}
            passage = {**cited, "title": title, "text": text, "rank": 1, "score": 1.0}
            conn.execute(
                "INSERT INTO turns (turn_id, thread_id, question, collection, status, answer, citations, passages)"
                " VALUES (%s, %s, %s, %s, 'done', %s, %s, %s)",
                (turn_id, turn_id, question, collection, text, Jsonb([{"number": 1, **cited}]), Jsonb([passage])),
            )
            add_feedback(conn, turn_id, "up")
    report = run_embedding_rung(settings, collection, epochs=2)
    assert report["pairs"] == 6 and report["trained_on"] == 5 and report["measured_on_held_out"]
    assert report["chunks_reembedded"] == 6 and report["collection"] == f"{collection}-ft"
    assert (Path(report["model_dir"]) / "config.json").is_file()
    assert 0 <= report["mrr@10_before"] <= 1 and 0 <= report["mrr@10_after"] <= 1
    tuned = Settings(data_dir=kb.db.embedded.root, embedding_model=report["model_dir"])
    from agent.core.assemble import open_knowledge_base

    with open_knowledge_base(tuned) as tuned_kb:
        hits = tuned_kb.search("How fast are refunds?", report["collection"], k=1, mode="dense")
    assert hits[0].doc_id == "refunds"
    with pytest.raises(Exception, match="exists already"):
        run_embedding_rung(settings, collection)


def test_distillation_skips_questions_it_cannot_ask_again(agent: Agent, corpus: str, kb: KnowledgeBase) -> None:
    import uuid

    gone = uuid.uuid4().hex
    with kb.db.connection() as conn:
        conn.execute(
            "INSERT INTO turns (turn_id, thread_id, question, collection, data_source, status, answer)"
            " VALUES (%s, %s, 'How many artists?', %s, 'a-database-since-removed', 'done', '275')",
            (gone, gone, corpus),
        )
        examples, dropped = distilled_examples(agent, conn)
    assert dropped >= 1 and all(e["messages"][1]["content"] != "How many artists?" for e in examples)
