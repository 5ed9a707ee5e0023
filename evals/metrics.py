"""Retrieval metrics, computed by ranx (a maintained implementation of the TREC measures)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

RETRIEVAL_METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")


def retrieval_scores(
    qrels: Mapping[str, Mapping[str, int]],
    rankings: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = RETRIEVAL_METRICS,
) -> dict[str, float]:
    """Mean of each metric over the queries in ``qrels``; a query with no results scores 0."""
    from ranx import Qrels, Run, evaluate

    run: dict[str, dict[str, float]] = {}
    for qid in qrels:
        ranked = list(dict.fromkeys(rankings.get(qid, [])))
        # ranx ranks by score: give strictly decreasing scores in the given order.
        run[qid] = {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)} or {"__none__": 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's int cast warnings inside ranx: noise, not a result
        scores = evaluate(Qrels({q: dict(r) for q, r in qrels.items()}), Run(run), list(metrics), make_comparable=True)
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {name: float(value) for name, value in scores.items()}
