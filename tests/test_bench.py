"""Pieces of the benchmark that must be right for its figures to mean anything."""

from __future__ import annotations

import numpy as np

from evals.bench.retrieval import _synthetic_vectors, bench_hnsw
from evals.datasets import load_cisi, load_pubmedqa
from knowledge.base import KnowledgeBase


def test_hnsw_is_used_and_close_to_exact(kb: KnowledgeBase) -> None:
    from agent.core.config import Settings

    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 384)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = _synthetic_vectors(base, 20, seed=3)
    figures = bench_hnsw(kb, Settings(), base, queries, 3000)
    assert figures["uses_index"] and not figures["exact_uses_index"]
    assert figures["exact_scan_recall@10"] == 1.0
    assert figures["recall@10"] >= 0.9


def test_synthetic_vectors_are_unit_and_distinct() -> None:
    base = np.eye(8, dtype=np.float32)
    vectors = _synthetic_vectors(base, 100)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(v, 5)) for v in vectors}) == 100


def test_shared_datasets_parse(shared_data) -> None:
    cisi = load_cisi(shared_data / "cisi")
    assert len(cisi.documents) == 1460 and len(cisi.queries) == 76
    assert all(cisi.qrels[q] for q in cisi.queries)
    pubmed = load_pubmedqa(shared_data / "pubmedqa" / "pqal_dev.json")
    assert len(pubmed.documents) == 500 and all(pubmed.qrels[q] == {q: 1} for q in pubmed.queries)


def test_chart_is_drawn_from_figures(tmp_path) -> None:
    import pytest

    from evals.bench.retrieval import write_chart

    scores = {m: {"ndcg@10": v} for m, v in [("bm25 (bm25s)", 0.38), ("ladder hybrid", 0.45)]}
    path = write_chart({"cisi": {"queries": 76, "scores": scores}}, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no dataset"):
        write_chart({"hnsw": {}}, tmp_path / "d.png")
