"""Retrieval metrics (ranx), checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from evals.metrics import retrieval_scores


def test_single_query_by_hand() -> None:
    scores = retrieval_scores({"q": {"a": 1, "b": 1}}, {"q": ["x", "a", "y", "b"]})
    assert scores["recall@1"] == 0.0
    assert scores["recall@5"] == 1.0
    assert scores["mrr@10"] == pytest.approx(0.5)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx(dcg / ideal)


def test_missing_run_scores_zero_and_duplicates_collapse() -> None:
    scores = retrieval_scores({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": ["a", "a", "c"]})
    assert scores["recall@1"] == pytest.approx(0.5)
    assert scores["mrr@10"] == pytest.approx(0.5)
