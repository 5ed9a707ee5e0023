"""RAG metrics (evals.ladder.rag_metrics), each checked against a value worked out by hand.

The judge and the embedder are tiny fakes: no model, no network.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from evals.ladder import rag_metrics as rm


class ScriptedJudge:
    """Returns scripted replies by step name, in order; a reply that is an exception is raised."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = {step: list(replies) for step, replies in script.items()}
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []

    def json(self, step: str, messages: list[dict[str, Any]], model: type[BaseModel], *, max_tokens: int | None = None):
        self.calls.append((step, messages))
        reply = self.script[step].pop(0)
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, model)
        return reply


class RaisingJudge:
    def json(self, step, messages, model, *, max_tokens=None):
        raise ValueError(f"{step}: reply did not fit {model.__name__}")


class DictEmbedder:
    """Fixed vectors by text, normalized to unit length."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = {k: np.asarray(v, float) / np.linalg.norm(v) for k, v in vectors.items()}

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def _verdicts(*bits: int) -> rm.Verdicts:
    return rm.Verdicts(verdicts=[rm.Verdict(statement=f"s{i}", verdict=b) for i, b in enumerate(bits)])


# --- LLM variants ------------------------------------------------------------------------------


def test_faithfulness_two_of_three_statements_supported() -> None:
    judge = ScriptedJudge(
        {
            "faithfulness.statements": [rm.Statements(statements=["a", "b", "c"])],
            "faithfulness.verdicts": [_verdicts(1, 0, 1)],
        }
    )
    assert rm.faithfulness(judge, "q", "an answer", ["ctx one", "ctx two"]) == pytest.approx(2 / 3)
    assert [step for step, _ in judge.calls] == ["faithfulness.statements", "faithfulness.verdicts"]
    assert "ctx one\nctx two" in judge.calls[1][1][-1]["content"]


def test_faithfulness_undefined_cases() -> None:
    no_statements = ScriptedJudge({"faithfulness.statements": [rm.Statements(statements=[])]})
    assert math.isnan(rm.faithfulness(no_statements, "q", "I cannot say.", ["ctx"]))
    assert math.isnan(rm.faithfulness(RaisingJudge(), "q", "answer", []))
    assert math.isnan(rm.faithfulness(RaisingJudge(), "q", "  ", ["ctx"]))


def test_answer_relevancy_mean_cosine() -> None:
    q = "What is X?"
    emb = DictEmbedder({q: [1, 0], "g1": [1, 0], "g2": [0, 1], "g3": [1, 1]})
    gens = [rm.GeneratedQuestion(question=g, noncommittal=0) for g in ("g1", "g2", "g3")]
    judge = ScriptedJudge({"answer_relevancy.question": gens})
    assert rm.answer_relevancy(judge, emb, q, "X is Y.", n=3) == pytest.approx((1 + 0 + 1 / math.sqrt(2)) / 3)


def test_answer_relevancy_noncommittal_is_zero() -> None:
    q = "What is X?"
    emb = DictEmbedder({q: [1, 0], "g1": [1, 0], "g2": [1, 0]})
    gens = [rm.GeneratedQuestion(question="g1", noncommittal=0), rm.GeneratedQuestion(question="g2", noncommittal=1)]
    judge = ScriptedJudge({"answer_relevancy.question": gens})
    assert rm.answer_relevancy(judge, emb, q, "I don't know.", n=2) == 0.0


def test_context_precision_by_hand() -> None:
    useful = [rm.Usefulness(verdict=v) for v in (1, 0, 1)]
    judge = ScriptedJudge({"context_precision.usefulness": useful})
    assert rm.context_precision(judge, "q", "ref", ["c1", "c2", "c3"]) == pytest.approx((1 / 1 + 2 / 3) / 2)
    none_useful = ScriptedJudge({"context_precision.usefulness": [rm.Usefulness(verdict=0)] * 3})
    assert rm.context_precision(none_useful, "q", "ref", ["c1", "c2", "c3"]) == 0.0
    assert math.isnan(rm.context_precision(RaisingJudge(), "q", "ref", []))
    assert math.isnan(rm.context_precision(RaisingJudge(), "q", "", ["c1"]))


def test_context_recall_one_of_two_sentences() -> None:
    rows = [rm.Attributed(statement="s1", attributed=1), rm.Attributed(statement="s2", attributed=0)]
    judge = ScriptedJudge({"context_recall.attribution": [rm.Attribution(classifications=rows)]})
    assert rm.context_recall(judge, "q", "S1. S2.", ["ctx"]) == 0.5
    assert rm.context_recall(RaisingJudge(), "q", "S1.", []) == 0.0
    assert math.isnan(rm.context_recall(RaisingJudge(), "q", "", ["ctx"]))


def test_llm_metrics_survive_a_judge_that_raises() -> None:
    judge, emb = RaisingJudge(), DictEmbedder({"q": [1, 0]})
    assert math.isnan(rm.faithfulness(judge, "q", "a", ["c"]))
    assert math.isnan(rm.answer_relevancy(judge, emb, "q", "a"))
    assert math.isnan(rm.context_precision(judge, "q", "r", ["c"]))
    assert math.isnan(rm.context_recall(judge, "q", "r", ["c"]))
    # a failure midway (second step) is also nan, not a crash
    half = ScriptedJudge(
        {"faithfulness.statements": [rm.Statements(statements=["a"])], "faithfulness.verdicts": [ValueError("bad")]}
    )
    assert math.isnan(rm.faithfulness(half, "q", "a", ["c"]))


# --- without a judge ---------------------------------------------------------------------------


def test_levenshtein_similarity() -> None:
    assert rm.answer_similarity_nonllm("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert rm.answer_similarity_nonllm("same", "same") == 1.0
    assert math.isnan(rm.answer_similarity_nonllm("x", ""))
    assert math.isnan(rm.answer_similarity_nonllm("x", None))


def test_context_precision_and_recall_nonllm() -> None:
    refs = ["the cat sat on the mat", "dogs bark loudly"]
    retrieved = ["zzzzzzzzzzzzzzzzzzzz", "the cat sat on a mat", "qqqqqqqq", "dogs bark loudly"]
    # relevance [0, 1, 0, 1]: (1/2 + 2/4) / 2
    assert rm.context_precision_nonllm(retrieved, refs) == pytest.approx(0.5)
    assert rm.context_recall_nonllm(retrieved, refs) == 1.0
    assert rm.context_recall_nonllm(retrieved[:2], refs) == 0.5
    assert rm.context_recall_nonllm([], refs) == 0.0
    assert math.isnan(rm.context_precision_nonllm([], refs))
    assert math.isnan(rm.context_precision_nonllm(retrieved, []))
    assert math.isnan(rm.context_recall_nonllm(retrieved, []))


def test_nonllm_threshold_boundary_follows_ragas() -> None:
    # similarity("ab", "ax") = 1 - 1/2 = 0.5: precision counts it (>=), recall does not (>), as in Ragas
    assert rm.context_precision_nonllm(["ab"], ["ax"]) == 1.0
    assert rm.context_recall_nonllm(["ab"], ["ax"]) == 0.0


def test_id_based_precision_and_recall() -> None:
    assert rm.context_precision_ids(["d1", "d2", "d3"], ["d1", "d2", "d4"]) == pytest.approx(2 / 3)
    assert rm.context_recall_ids(["d1", "d2", "d3"], ["d1", "d2", "d4"]) == pytest.approx(2 / 3)
    assert rm.context_precision_ids(["d1", "d1", "d5"], ["d1"]) == 0.5  # duplicates collapse
    assert rm.context_recall_ids([1, 2], ["1", "3"]) == 0.5  # ids compared as strings
    assert rm.context_recall_ids([], ["d1"]) == 0.0
    assert math.isnan(rm.context_precision_ids([], ["d1"]))
    assert math.isnan(rm.context_recall_ids(["d1"], []))


def test_faithfulness_nonllm() -> None:
    contexts = ["Paris is the capital of France.", "The Seine flows through Paris."]
    answer = "Paris is the capital of France [1]. The Seine flows through Paris [2]. Berlin has great museums."
    assert rm.faithfulness_nonllm(answer, contexts) == pytest.approx(2 / 3)
    # content words {capital, germany}: 1 of 2 covered -> 0.5 >= 0.5, supported; not at 0.6
    assert rm.faithfulness_nonllm("The capital is Germany.", contexts) == 1.0
    assert rm.faithfulness_nonllm("The capital is Germany.", contexts, threshold=0.6) == 0.0
    assert math.isnan(rm.faithfulness_nonllm("[1].", contexts))
    assert math.isnan(rm.faithfulness_nonllm(answer, []))


def test_answer_relevancy_embedding() -> None:
    emb = DictEmbedder({"q": [1, 0], "close": [1, 1], "opposite": [-1, 0]})
    assert rm.answer_relevancy_embedding(emb, "q", "close") == pytest.approx(1 / math.sqrt(2))
    assert rm.answer_relevancy_embedding(emb, "q", "opposite") == 0.0
    assert rm.answer_relevancy_embedding(emb, "q", "Sorry, I don\u2019t know that.") == 0.0
    assert rm.answer_relevancy_embedding(emb, "q", "There is no information on this.") == 0.0
    assert math.isnan(rm.answer_relevancy_embedding(emb, "q", ""))


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Yes, because the trial showed it.", "yes"),
        ("**No.**", "no"),
        ("It may be so; maybe.", "maybe"),
        ("Unclear", None),
        ("> - maybe not", "maybe"),
        ("The answer is no, not yes.", "no"),
        ("I know nothing", None),
        ("", None),
    ],
)
def test_label_from_answer(answer: str, label: str | None) -> None:
    assert rm.label_from_answer(answer) == label


def test_registry_covers_every_metric() -> None:
    for name, info in rm.METRICS.items():
        assert callable(getattr(rm, name))
        assert info.variant in {"llm", "non-llm", "id-based", "embedding"}
        assert info.description
    assert rm.METRICS["faithfulness_nonllm"].ragas_name is None
    assert rm.METRICS["context_precision_ids"].ragas_name == "IDBasedContextPrecision"


def test_bootstrap_ci() -> None:
    values = [0.0, 1.0, 0.5, 1.0, float("nan"), 0.25, 0.75]
    mean, low, high = rm.bootstrap_ci(values, n_resamples=200)
    assert mean == pytest.approx(3.5 / 6)
    assert low <= mean <= high and low < high
    assert rm.bootstrap_ci(values, n_resamples=200) == (mean, low, high)  # seeded
    assert rm.bootstrap_ci([0.4, float("nan")]) == (0.4, 0.4, 0.4)
    assert rm.bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7, 0.7)
    assert all(math.isnan(x) for x in rm.bootstrap_ci([float("nan")]))
