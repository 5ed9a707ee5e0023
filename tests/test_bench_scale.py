"""`ladder bench scale`: its BM25 reference agrees with Ladder's keyword search where both are exact, its
baseline is the query-time scoring it replaced, and a small run reports every figure the issue names."""

from __future__ import annotations

import uuid

import numpy as np

from agent.core.config import Settings
from evals.bench.retrieval import _real_sentences, _synthetic_texts
from evals.bench.scale import (
    QueryTimeSearcher,
    ScaleOptions,
    _agreement,
    _bm25s_index,
    _documents,
    format_scale_report,
    run_scale_benchmark,
)
from knowledge.base import KnowledgeBase
from knowledge.bm25 import BM25Params, bm25_search, query_lexemes
from knowledge.store import drop_collection, ensure_collection, write_documents

QUESTIONS = [
    "Does aspirin reduce the risk of heart disease?",
    "information retrieval systems for libraries and the evaluation of indexing languages",
    "cancer survival after surgery",
]


def test_bm25s_over_the_same_tokens_agrees_with_ladder_and_the_baseline(kb: KnowledgeBase) -> None:
    texts = _synthetic_texts(_real_sentences(), 1_500, seed=9)
    vectors = np.ones((len(texts), kb.embedder.dimension), dtype=np.float32)
    name = f"scale-{uuid.uuid4().hex[:8]}"
    baseline = QueryTimeSearcher(kb.db, kb.embedder, kb.searcher.config)
    try:
        with kb.db.connection() as conn:
            collection = ensure_collection(conn, name, kb.embedder.model_name, kb.embedder.dimension)
            write_documents(conn, collection, _documents(vectors, texts, 0, len(texts)))
            retriever, ids, vocab = _bm25s_index(conn, collection)
            position = {chunk_id: i for i, chunk_id in enumerate(ids)}
            assert len(ids) == len(texts)
            for question in QUESTIONS:
                ours = bm25_search(conn, collection.id, question, 10, BM25Params())
                assert ours.exact and len(ours.hits) == 10
                top = [cid for cid, _ in ours.hits]
                tied, _ = _agreement(retriever, position, vocab, query_lexemes(conn, question), top)
                assert tied == 1.0, question
                before = baseline.keyword(conn, collection, question, 10)
                assert np.allclose([s for _, s in before], [s for _, s in ours.hits], rtol=1e-9)
            # A top 10 that is not bm25s's scores below 1.
            worst = [cid for cid, _ in bm25_search(conn, collection.id, QUESTIONS[0], 400, BM25Params()).hits[-10:]]
            assert _agreement(retriever, position, vocab, query_lexemes(conn, QUESTIONS[0]), worst)[0] < 1.0
    finally:
        with kb.db.connection() as conn:
            drop_collection(conn, name)


def test_a_small_run_reports_every_figure(kb: KnowledgeBase) -> None:
    assert kb.db.embedded is not None
    settings = Settings(data_dir=kb.db.embedded.root)
    lines: list[str] = []
    options = ScaleOptions(chunks=2_000, queries=6, baseline_queries=2, maintenance_work_mem="64MB", cisi=False)
    figures = run_scale_benchmark(settings, options, lines.append)
    for key in (
        "chunks",
        "hybrid_p95_ms_short",
        "hybrid_p95_ms_long",
        "keyword_p95_ms_short",
        "dense_p95_ms",
        "dense_recall_at_10",
        "keyword_top10_overlap",
        "ingest_chunks_per_s",
        "index_build_s",
        "db_size_mb",
    ):
        assert figures[key] is not None and figures[key] >= 0, key
        if key != "chunks" and not key.startswith("dense") and key not in ("index_build_s", "db_size_mb"):
            assert figures["baseline"][key] is not None, key
    assert figures["chunks"] == 2_000 and figures["dense_recall_at_10"] > 0.8
    assert figures["keyword_top10_overlap"] == 1.0  # 2,000 chunks fit the budget: exact
    assert figures["questions"] == {"short": 3, "long": 3} and figures["baseline"]["questions"] == {
        "short": 1,
        "long": 1,
    }
    assert "hybrid, short" in format_scale_report(figures) and any("HNSW" in line for line in lines)
    with kb.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM collections WHERE name LIKE 'bench-scale%%'").fetchone()[0] == 0
