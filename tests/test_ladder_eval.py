"""The evaluation harness: eval-set files, climbing the ladder against a scripted model, resuming,
the report (table, chart, HTML, diffs), the regression gate, and the chunking sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.config import Settings
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from evals.eval_sets import EvalExample, EvalSet, EvalSetError, cisi_set, pubmedqa_set, read_jsonl, write_jsonl
from evals.ladder.report import compare, diff, headline, load_results, summarize, write_chart, write_html
from evals.ladder.run import EvalRunError, climb, run_ladder, score
from knowledge.base import KnowledgeBase

DOCS = [
    {"id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of a second heart attack in adults."},
    {"id": "d2", "title": "Vitamin C", "text": "Vitamin C does not prevent the common cold in most people."},
    {"id": "d3", "title": "Exercise", "text": "Regular exercise lowers blood pressure in adults with hypertension."},
]
EXAMPLES = [
    EvalExample(
        "q1",
        "Does aspirin reduce the risk of a second heart attack?",
        "Yes, it does.",
        [DOCS[0]["text"]],
        ["d1"],
        "yes",
    ),
    EvalExample("q2", "Does vitamin C prevent colds?", "No, it does not.", [DOCS[1]["text"]], ["d2"], "no"),
    EvalExample("q3", "Does exercise lower blood pressure?", "Yes.", [DOCS[2]["text"]], ["d3"], "yes"),
]


def test_rungs_are_cumulative_in_the_ladders_order() -> None:
    rungs = climb(["baseline", "+retrieval", "+factcheck"])
    assert [r.name for r in rungs] == ["baseline", "+retrieval", "+factcheck"]
    assert not any(rungs[0].switches.values())
    assert rungs[1].switches["retrieval"] and rungs[1].switches["fewshot"]
    assert rungs[1].settings["search_mode"] == "dense"
    top = rungs[2]
    assert all(top.switches.values()) and top.settings["search_mode"] == "hybrid"
    with pytest.raises(EvalRunError, match="unknown rungs"):
        climb(["baseline", "+magic"])


def test_eval_set_files(tmp_path: Path) -> None:
    evalset = EvalSet("mine", EXAMPLES)
    path = write_jsonl(evalset, tmp_path / "mine.jsonl")
    again = read_jsonl(path)
    assert [e.to_dict() for e in again.examples] == [e.to_dict() for e in EXAMPLES]
    bad = tmp_path / "bad.jsonl"
    for text, message in [
        ('{"question": "q"}\n{"nope": 1}\n', r"bad\.jsonl:2: each line needs"),
        ('{"id": "a", "question": "q"}\n{"id": "a", "question": "r"}\n', "appears twice"),
        ('{"question": "q", "extra": 1}\n', "unknown keys"),
        ('{"question": "q", "reference_contexts": "not a list"}\n', "list of strings"),
        ("{broken\n", "not JSON"),
        ("\n", "no examples"),
    ]:
        bad.write_text(text)
        with pytest.raises(EvalSetError, match=message):
            read_jsonl(bad)
    pubmed = pubmedqa_set()
    assert len(pubmed.examples) == 500 and pubmed.labels == ("yes", "no", "maybe")
    assert {e.label for e in pubmed.examples} <= {"yes", "no", "maybe"} and len(pubmed.documents) == 500
    cisi = cisi_set()
    assert len(cisi.examples) == 76 and len(cisi.documents) == 1460 and all(e.reference_doc_ids for e in cisi.examples)


class _FakeJudge:
    def json(self, step, messages, model, *, max_tokens=None):
        raise ValueError("no judge here")


class _FakeEmbedder:
    def embed(self, texts):
        import numpy as np

        return np.array([[1.0, 0.0] for _ in texts])


def test_score_uses_every_metric_that_applies() -> None:
    passages = [{"doc_id": "d1", "chunk_id": 1, "text": DOCS[0]["text"], "rank": 1}]
    metrics = score(EXAMPLES[0], "Yes. Aspirin reduces the risk [1].", passages, labels=("yes", "no", "maybe"))
    assert metrics["label_accuracy"] == 1.0 and metrics["context_recall_ids"] == 1.0
    assert metrics["context_precision_ids"] == 1.0 and 0 < metrics["answer_similarity"] <= 1
    assert {"faithfulness_overlap", "context_precision_string", "context_recall_string"} <= set(metrics)
    judged = score(EXAMPLES[0], "No.", passages, labels=("yes", "no"), embedder=_FakeEmbedder(), judge=_FakeJudge())
    assert judged["label_accuracy"] == 0.0 and judged["answer_relevancy_embedding"] == 1.0
    assert "faithfulness" not in judged  # the judge failed: undefined, left out rather than guessed
    assert "context_recall_ids" in score(EXAMPLES[0], "Yes", [], labels=("yes",))


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedModel, ScriptedOpenAI]]:
    model = ScriptedModel()
    model.steps["baseline"] = lambda body: "Maybe, I am not certain."
    model.steps["draft"] = lambda body: "Yes. The passage says so [1]."
    with ScriptedOpenAI(chat=model) as server:
        yield model, server


def test_the_ladder_is_climbed_stored_resumed_and_reported(
    kb: KnowledgeBase, scripted: tuple[ScriptedModel, ScriptedOpenAI], tmp_path: Path
) -> None:
    model, server = scripted
    settings = Settings(
        data_dir=kb.db.embedded.root, openai_base_url=server.base_url, chat_model="scripted", llm_max_retries=0
    )
    evalset = EvalSet(
        f"tiny{os.getpid()}", EXAMPLES, DOCS, instruction="Begin with yes, no or maybe.", labels=("yes", "no", "maybe")
    )
    seen: list[str] = []
    run_id = run_ladder(
        settings, kb, evalset, rungs=["baseline", "+retrieval", "+factcheck"], progress=lambda r, i, n: seen.append(r)
    )
    assert seen.count("baseline") == 3 and seen.count("+factcheck") == 3
    assert model.calls["fact_check"] == 3 and model.bodies["baseline"][0]["messages"][-1]["content"].endswith(
        "Begin with yes, no or maybe."
    )
    with kb.db.connection() as conn:
        found, rows = load_results(conn, run_id)
        assert found["status"] == "done" and len(rows) == 9
        conn.execute(
            "DELETE FROM eval_results WHERE run_id = %s AND rung = '+factcheck' AND example_id = 'q2'", (run_id,)
        )
    assert run_ladder(settings, kb, evalset, rungs=["baseline", "+retrieval", "+factcheck"], resume=run_id) == run_id
    with kb.db.connection() as conn:
        found, rows = load_results(conn, run_id)
    assert len(rows) == 9 and model.calls["fact_check"] == 4  # only the missing answer was asked again

    summary = summarize(found, rows)
    by_rung = {s["rung"]: s for s in summary}
    assert by_rung["baseline"]["metrics"]["label_accuracy"][0] == 0.0  # "Maybe": wrong for all three
    assert by_rung["+retrieval"]["metrics"]["label_accuracy"][0] == pytest.approx(2 / 3)  # "Yes": right twice
    assert by_rung["+retrieval"]["delta"]["label_accuracy"] == pytest.approx(2 / 3)
    assert by_rung["+retrieval"]["metrics"]["context_recall_ids"][0] == 1.0
    assert by_rung["baseline"]["metrics"]["context_recall_ids"][0] == 0.0  # nothing retrieved: nothing recalled
    assert "context_precision_ids" not in by_rung["baseline"]["metrics"]  # precision of nothing is undefined
    assert by_rung["+factcheck"]["tokens"] > by_rung["+retrieval"]["tokens"] > 0
    assert headline(summary) == "label_accuracy"
    chart = write_chart(summary, "label_accuracy", tmp_path / "ladder.png")
    assert chart.read_bytes()[:4] == b"\x89PNG"
    page = write_html(found, summary, ["label_accuracy"], chart, tmp_path / "ladder.html").read_text()
    assert "data:image/png;base64," in page and "+retrieval" in page
    changed = diff(rows, "baseline", "+retrieval", "label_accuracy")
    assert {c["example_id"] for c in changed} == {"q1", "q3"} and changed[0]["after"] == 1.0

    with kb.db.connection() as conn:
        same = compare(conn, run_id, run_id, "label_accuracy")
        assert same["ok"] and same["rung"] == "+factcheck"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "OPENAI_"))}
    env["LADDER_DATA_DIR"] = str(kb.db.embedded.root)
    cli = [sys.executable, "-m", "agent.cli", "eval"]
    report = subprocess.run(
        [*cli, "report", str(run_id), "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert [s["rung"] for s in json.loads(report.stdout)["summary"]] == ["baseline", "+retrieval", "+factcheck"]
    worse = run_ladder(settings, kb, evalset, rungs=["baseline"])
    gate = subprocess.run(
        [*cli, "compare", str(run_id), str(worse), "--rung", "baseline", "--metric", "answer_similarity"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gate.returncode == 0, gate.stderr  # the same rung on the same model: no drop
    model.steps["baseline"] = lambda body: "x" * 300  # as far as an answer can be from every reference
    worst = run_ladder(settings, kb, evalset, rungs=["baseline"])
    gate = subprocess.run(
        [*cli, "compare", str(run_id), str(worst), "--rung", "baseline", "--metric", "answer_similarity"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gate.returncode == 1 and "regression: answer_similarity" in gate.stderr


def test_chunk_sweep(kb: KnowledgeBase) -> None:
    from evals.ladder.chunk_sweep import sweep_chunks

    long_docs = [{"id": d["id"], "title": d["title"], "text": (d["text"] + " ") * 40} for d in DOCS]
    evalset = EvalSet(f"sweep{os.getpid()}", EXAMPLES, long_docs)
    rows = sweep_chunks(Settings(data_dir=kb.db.embedded.root), kb, evalset, [64, 256])
    assert [r["chunk_tokens"] for r in rows] == [64, 256] and rows[0]["chunks"] > rows[1]["chunks"]
    assert all(r["recall@10"] == 1.0 for r in rows)  # three documents: each is found at any size
    with pytest.raises(ValueError, match="needs documents"):
        sweep_chunks(Settings(data_dir=kb.db.embedded.root), kb, EvalSet("bare", EXAMPLES), [64])


def test_label_format_wants_the_label_first_then_the_reasons() -> None:
    from evals.ladder.rag_metrics import label_format

    assert label_format("Yes. The trial found fewer relapses [1].") == 1.0
    assert label_format("**No** - the cohort was too small to tell.") == 1.0
    assert label_format("Yes.") == 0.0 and label_format("Yes [3].") == 0.0  # a label without reasons
    assert label_format("The answer is yes, because it works.") == 0.0  # the label not first
    assert label_format("Maybe", ()) == 0.0
