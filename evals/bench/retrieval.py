"""The retrieval benchmark: quality against baselines, HNSW against exact search, ingest against raw embedding.

Every figure is printed beside a baseline run in the same process, because the machines are
noisy: a ratio holds where an absolute number does not.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.table import Table

from agent.core.assemble import open_knowledge_base
from agent.core.config import Settings
from evals.datasets import RetrievalDataset, load_cisi, load_pubmedqa
from evals.metrics import RETRIEVAL_METRICS, retrieval_scores
from knowledge import store
from knowledge.base import KnowledgeBase
from knowledge.chunking import chunk_document
from knowledge.ingest import embedding_text
from knowledge.loaders import LoadedDocument, load_jsonl
from knowledge.search import Searcher, SearchRequest
from knowledge.store import Collection, drop_collection, ensure_collection, get_collection

console = Console()
CHUNK_DEPTH = 50  # chunks fetched per query before collapsing to documents
LOADERS = {"cisi": load_cisi, "pubmedqa": load_pubmedqa}


@dataclass
class DatasetResult:
    name: str
    queries: int
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    ingest: dict[str, float] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def _bm25_rankings(dataset: RetrievalDataset, depth: int) -> dict[str, list[str]]:
    """The baseline: BM25 from bm25s with English stopwords and the Snowball stemmer."""
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on itself at import

    stemmer = Stemmer.Stemmer("english")
    corpus = [f"{d['title']}\n{d['text']}" for d in dataset.documents]
    ids = [d["id"] for d in dataset.documents]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    qids = list(dataset.queries)
    tokens = bm25s.tokenize([dataset.queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    results, _ = retriever.retrieve(tokens, k=min(depth, len(ids)), show_progress=False)
    return {qid: [ids[i] for i in row] for qid, row in zip(qids, results, strict=True)}


def _collapse(doc_ids: list[str], depth: int = 10) -> list[str]:
    return list(dict.fromkeys(doc_ids))[:depth]


def _exact_rankings(kb: KnowledgeBase, collection: Collection, dataset: RetrievalDataset) -> dict[str, list[str]]:
    """Exact cosine search in numpy over the very embeddings Ladder stored."""
    with kb.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.doc_id, c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.collection_id = %s ORDER BY c.id",
            (collection.id,),
        ).fetchall()
    doc_ids = [r[0] for r in rows]
    matrix = np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows])
    qids = list(dataset.queries)
    queries = kb.embedder.embed([dataset.queries[q] for q in qids])
    sims = queries @ matrix.T
    order = np.argsort(-sims, axis=1)[:, :CHUNK_DEPTH]
    return {qid: _collapse([doc_ids[i] for i in row]) for qid, row in zip(qids, order, strict=True)}


def _ladder_rankings(
    kb: KnowledgeBase, collection: str, dataset: RetrievalDataset, mode: str, timings: list[float] | None = None
) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for qid, query in dataset.queries.items():
        request = SearchRequest(query=query, collection=collection, k=CHUNK_DEPTH, mode=mode)  # type: ignore[arg-type]
        start = time.perf_counter()
        hits = kb.searcher.search(request)
        if timings is not None:
            timings.append((time.perf_counter() - start) * 1000)
        out[qid] = _collapse([hit.doc_id for hit in hits])
    return out


def _chunk_texts(path: Path, kb: KnowledgeBase) -> list[str]:
    texts: list[str] = []
    for item in load_jsonl(path, max_bytes=10**9):
        if isinstance(item, LoadedDocument):
            for chunk in chunk_document(item, kb.chunking):
                texts.append(embedding_text(item.title, chunk.heading, chunk.text))
    return texts


def bench_dataset(kb: KnowledgeBase, dataset: RetrievalDataset, workdir: Path) -> DatasetResult:
    """Ingest the dataset into a fresh collection and score every retriever on it."""
    collection_name = f"bench-{dataset.name}"
    path = dataset.write_jsonl(workdir / f"{dataset.name}.jsonl")
    with kb.db.connection() as conn:
        drop_collection(conn, collection_name)
    result = DatasetResult(name=dataset.name, queries=len(dataset.queries))

    texts = _chunk_texts(path, kb)
    kb.embedder.embed(texts[:64])  # warm-up: first calls pay for lazy initialisation
    raw_seconds = []
    start = time.perf_counter()
    kb.embedder.embed(texts)
    raw_seconds.append(time.perf_counter() - start)
    report = kb.ingest([path], collection_name, progress=False)
    start = time.perf_counter()
    kb.embedder.embed(texts)
    raw_seconds.append(time.perf_counter() - start)
    raw_rate = len(texts) / statistics.mean(raw_seconds)
    ingest_rate = report.chunks_written / report.seconds
    result.ingest = {
        "chunks": report.chunks_written,
        "raw_embed_chunks_per_s": raw_rate,
        "ingest_chunks_per_s": ingest_rate,
        "ratio": ingest_rate / raw_rate,
    }

    with kb.db.connection() as conn:
        collection = get_collection(conn, collection_name)
    assert collection is not None
    result.scores["bm25 (bm25s)"] = retrieval_scores(dataset.qrels, _bm25_rankings(dataset, 10))
    result.scores["exact dense (numpy)"] = retrieval_scores(dataset.qrels, _exact_rankings(kb, collection, dataset))
    for mode in ("dense", "keyword", "hybrid"):
        timings: list[float] = []
        result.scores[f"ladder {mode}"] = retrieval_scores(
            dataset.qrels, _ladder_rankings(kb, collection_name, dataset, mode, timings)
        )
        result.latency_ms[mode] = {"p50": float(np.percentile(timings, 50)), "p95": float(np.percentile(timings, 95))}
    return result


def _synthetic_vectors(base: np.ndarray, n: int, seed: int = 7) -> np.ndarray:
    """``n`` unit vectors spread like real embeddings: mixtures of two real ones plus noise."""
    rng = np.random.default_rng(seed)
    first = base[rng.integers(0, len(base), n)]
    second = base[rng.integers(0, len(base), n)]
    mix = rng.uniform(0.0, 0.5, size=(n, 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.35 / np.sqrt(base.shape[1]), size=(n, base.shape[1])).astype(np.float32)
    vectors = first + mix * second + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _synthetic_texts(sentences: list[str], n: int, seed: int = 5) -> list[str]:
    """``n`` passages of 3 to 8 sentences drawn from real text: realistic term statistics at any size."""
    if not sentences:
        return [f"synthetic passage {i}" for i in range(n)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sentences), size=(n, 8))
    lengths = rng.integers(3, 9, size=n)
    return [" ".join(sentences[j] for j in row[:length]) for row, length in zip(picks, lengths, strict=True)]


def _write_synthetic_chunks(
    conn: psycopg.Connection, name: str, vectors: np.ndarray, texts: list[str]
) -> tuple[Collection, int]:
    """A fresh collection holding one document of the given chunks; returns it and its first chunk id."""
    dim = vectors.shape[1]
    drop_collection(conn, name)
    collection = ensure_collection(conn, name, f"synthetic-{dim}", dim)
    document_id = conn.execute(
        "INSERT INTO documents (collection_id, doc_id, source, content_hash, chunking, n_chunks)"
        " VALUES (%s, 'synthetic', 'synthetic', '', '', %s) RETURNING id",
        (collection.id, len(vectors)),
    ).fetchone()[0]  # type: ignore[index]
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY chunks (document_id, collection_id, ordinal, text, n_tokens, embedding)"
            " FROM STDIN WITH (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int8", "int4", "int4", "text", "int4", "vector"])
        for i, (vector, text) in enumerate(zip(vectors, texts, strict=True)):
            copy.write_row((document_id, collection.id, i, text, len(text.split()), vector))
    conn.commit()
    first_id = conn.execute("SELECT min(id) FROM chunks WHERE collection_id = %s", (collection.id,)).fetchone()[0]  # type: ignore[index]
    return collection, first_id


def _build_hnsw_index(conn: psycopg.Connection, settings: Settings, collection: Collection, dim: int) -> float:
    """Build the collection's HNSW index with Ladder's parameters and analyse the table; returns the build seconds."""
    conn.execute(f"SET maintenance_work_mem = '{settings.maintenance_work_mem}'")
    start = time.perf_counter()
    conn.execute(
        f'CREATE INDEX "{collection.hnsw_index}" ON chunks USING hnsw ((embedding::vector({dim}))'
        f" vector_cosine_ops) WITH (m = {store.HNSW_M}, ef_construction = {store.HNSW_EF_CONSTRUCTION})"
        f" WHERE collection_id = {collection.id}"
    )
    conn.commit()
    build_seconds = time.perf_counter() - start
    conn.execute("RESET maintenance_work_mem")
    conn.execute("ANALYZE chunks")
    conn.commit()
    return build_seconds


@dataclass
class _DenseRuns:
    """Per-query recall@10 and latency of the HNSW search and of the exact scan."""

    recalls: list[float] = field(default_factory=list)
    exact_recalls: list[float] = field(default_factory=list)
    hnsw_ms: list[float] = field(default_factory=list)
    exact_ms: list[float] = field(default_factory=list)


def _time_dense(
    conn: psycopg.Connection, searcher: Searcher, collection: Collection, queries: np.ndarray, truths: np.ndarray
) -> _DenseRuns:
    """Run every query through the index and through the exact scan, timing each and scoring it against the truth."""
    runs = _DenseRuns()
    for query, truth in zip(queries, truths, strict=True):
        # dense() sets its planner options with SET LOCAL: commit after each so none leak.
        start = time.perf_counter()
        approx = searcher.dense(conn, collection, query, 10)
        runs.hnsw_ms.append((time.perf_counter() - start) * 1000)
        conn.commit()
        start = time.perf_counter()
        exact = searcher.dense(conn, collection, query, 10, exact=True)
        runs.exact_ms.append((time.perf_counter() - start) * 1000)
        conn.commit()
        runs.recalls.append(len({cid for cid, _ in approx} & set(truth.tolist())) / 10)
        runs.exact_recalls.append(len({cid for cid, _ in exact} & set(truth.tolist())) / 10)
    return runs


def _time_keyword(
    conn: psycopg.Connection, searcher: Searcher, collection: Collection, texts: list[str]
) -> list[float]:
    """Milliseconds of one keyword search per query text."""
    keyword_ms: list[float] = []
    for text in texts:
        start = time.perf_counter()
        searcher.keyword(conn, collection, text, 50)
        keyword_ms.append((time.perf_counter() - start) * 1000)
        conn.commit()
    return keyword_ms


def _query_plans(conn: psycopg.Connection, collection: Collection, dim: int, query: np.ndarray) -> tuple[str, str]:
    """The planner's plan for a nearest-neighbour query, with index scans allowed and then forbidden."""
    explain = (
        f"EXPLAIN (ANALYZE, COSTS OFF) SELECT id FROM chunks WHERE collection_id = {collection.id}"
        f" ORDER BY embedding::vector({dim}) <=> %s::vector({dim}) LIMIT 10"
    )
    plan = "\n".join(row[0] for row in conn.execute(explain, (query,)))
    conn.execute("SET LOCAL enable_indexscan = off")
    exact_plan = "\n".join(row[0] for row in conn.execute(explain, (query,)))
    conn.commit()
    return plan, exact_plan


def _pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values``."""
    return float(np.percentile(values, q))


def bench_hnsw(
    kb: KnowledgeBase,
    settings: Settings,
    base: np.ndarray,
    queries: np.ndarray,
    n: int,
    *,
    sentences: list[str] | None = None,
    query_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Recall@10 of the HNSW index against exact search on ``n`` chunks, and dense and keyword latencies.

    The chunks' vectors are mixtures of real embeddings and their texts mixtures of real
    sentences, so the same collection also times BM25 at a size the datasets do not reach.
    """
    name = "bench-hnsw"
    vectors = _synthetic_vectors(base, n)
    texts = _synthetic_texts(sentences or [], n)
    dim = vectors.shape[1]
    with kb.db.connection() as conn:
        collection, first_id = _write_synthetic_chunks(conn, name, vectors, texts)
        build_seconds = _build_hnsw_index(conn, settings, collection, dim)
        exact_truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + first_id
        dense = _time_dense(conn, kb.searcher, collection, queries, exact_truth)
        keyword_ms = _time_keyword(conn, kb.searcher, collection, query_texts or [])
        plan, exact_plan = _query_plans(conn, collection, dim, queries[0])
        drop_collection(conn, name)
    hnsw_ms, exact_ms = dense.hnsw_ms, dense.exact_ms
    return {
        "vectors": n,
        "queries": len(queries),
        "ef_search": settings.hnsw_ef_search,
        "build_seconds": build_seconds,
        "recall@10": float(np.mean(dense.recalls)),
        "exact_scan_recall@10": float(np.mean(dense.exact_recalls)),
        "hnsw_p50_ms": _pct(hnsw_ms, 50),
        "hnsw_p95_ms": _pct(hnsw_ms, 95),
        "exact_p50_ms": _pct(exact_ms, 50),
        "exact_p95_ms": _pct(exact_ms, 95),
        "speedup_p50": _pct(exact_ms, 50) / _pct(hnsw_ms, 50),
        "speedup_p95": _pct(exact_ms, 95) / _pct(hnsw_ms, 95),
        "keyword_p50_ms": _pct(keyword_ms, 50) if keyword_ms else None,
        "keyword_p95_ms": _pct(keyword_ms, 95) if keyword_ms else None,
        "uses_index": collection.hnsw_index in plan,
        "exact_uses_index": collection.hnsw_index in exact_plan,
        "hnsw_plan": plan,
        "exact_plan": exact_plan,
    }


def _print_scores(result: DatasetResult) -> None:
    table = Table(title=f"{result.name}: {result.queries} queries (document-level)")
    table.add_column("retriever")
    for metric in RETRIEVAL_METRICS:
        table.add_column(metric, justify="right")
    for method, scores in result.scores.items():
        table.add_row(method, *(f"{scores[m]:.4f}" for m in RETRIEVAL_METRICS))
    console.print(table)
    best_name, best = max(
        ((m, s) for m, s in result.scores.items() if not m.startswith("ladder")),
        key=lambda kv: kv[1]["ndcg@10"],
    )
    hybrid = result.scores["ladder hybrid"]["ndcg@10"]
    console.print(
        f"ladder hybrid nDCG@10 {hybrid:.4f} vs best baseline ({best_name}) {best['ndcg@10']:.4f}: "
        f"{(hybrid / best['ndcg@10'] - 1) * 100:+.1f}% relative"
    )
    console.print(
        "search latency per query, embedding the query included (p50 / p95 ms): "
        + ", ".join(f"{mode} {v['p50']:.1f} / {v['p95']:.1f}" for mode, v in result.latency_ms.items())
    )
    ing = result.ingest
    console.print(
        f"ingest {ing['ingest_chunks_per_s']:.1f} chunks/s vs raw embedding {ing['raw_embed_chunks_per_s']:.1f}"
        f" chunks/s on the same {int(ing['chunks'])} chunks: ratio {ing['ratio']:.2f}\n"
    )


def _first_queries(dataset: RetrievalDataset, count: int) -> None:
    """Keep only the dataset's first ``count`` queries and their judgements (the quick run)."""
    keep = list(dataset.queries)[:count]
    dataset.queries = {q: dataset.queries[q] for q in keep}
    dataset.qrels = {q: dataset.qrels[q] for q in keep}


def _dataset_figures(result: DatasetResult) -> dict[str, Any]:
    """One dataset's figures as the benchmark writes them."""
    return {
        "queries": result.queries,
        "scores": result.scores,
        "ingest": result.ingest,
        "latency_ms": result.latency_ms,
    }


def _benchmark_embeddings(kb: KnowledgeBase) -> np.ndarray:
    """Every embedding the dataset runs stored: the real vectors the synthetic ones are mixed from."""
    with kb.db.connection() as conn:
        return np.stack(
            [
                np.asarray(r[0].to_numpy(), dtype=np.float32)
                for r in conn.execute(
                    "SELECT c.embedding FROM chunks c JOIN collections k ON k.id = c.collection_id"
                    " WHERE k.name IN ('bench-cisi', 'bench-pubmedqa')"
                )
            ]
        )


def _sample_questions() -> list[str]:
    """Up to 200 of the datasets' questions, drawn with a fixed seed."""
    questions = [q for load in LOADERS.values() for q in load().queries.values()]
    rng = np.random.default_rng(11)
    return [questions[i] for i in rng.choice(len(questions), size=min(200, len(questions)), replace=False)]


def _real_sentences() -> list[str]:
    """The datasets' documents split into sentences of four words or more."""
    return [
        sentence
        for load in LOADERS.values()
        for doc in load().documents
        for sentence in re.split(r"(?<=[.!?])\s+", doc["text"])
        if len(sentence.split()) >= 4
    ]


def _print_hnsw(hnsw: dict[str, Any]) -> None:
    """Print the HNSW figures beside the exact scan's."""
    console.print(
        f"HNSW on {hnsw['vectors']} vectors (ef_search {hnsw['ef_search']}, built in"
        f" {hnsw['build_seconds']:.1f} s): recall@10 {hnsw['recall@10']:.4f} vs exact;"
        f" p50 {hnsw['hnsw_p50_ms']:.2f} ms vs exact scan {hnsw['exact_p50_ms']:.2f} ms"
        f" ({hnsw['speedup_p50']:.1f}x), p95 {hnsw['hnsw_p95_ms']:.2f} ms vs {hnsw['exact_p95_ms']:.2f} ms"
        f" ({hnsw['speedup_p95']:.1f}x); index used: {hnsw['uses_index']}"
    )
    console.print(
        f"keyword (BM25) on the same {hnsw['vectors']} chunks of real sentences:"
        f" p50 {hnsw['keyword_p50_ms']:.1f} ms, p95 {hnsw['keyword_p95_ms']:.1f} ms"
    )


def _run_hnsw(kb: KnowledgeBase, settings: Settings, n: int) -> dict[str, Any]:
    """The HNSW benchmark on ``n`` chunks mixed from the datasets' stored embeddings and sentences."""
    base = _benchmark_embeddings(kb)
    picked = _sample_questions()
    sentences = _real_sentences()
    return bench_hnsw(kb, settings, base, kb.embedder.embed(picked), n, sentences=sentences, query_texts=picked)


def run_retrieval_benchmark(
    settings: Settings,
    *,
    out_file: Path | None = None,
    hnsw_vectors: int = 100_000,
    quick: bool = False,
    datasets: tuple[str, ...] = ("cisi", "pubmedqa"),
    skip_hnsw: bool = False,
) -> dict[str, Any]:
    """Run the whole benchmark, print its tables, and return (and optionally write) the figures."""
    warnings.filterwarnings("ignore", module="ranx")
    figures: dict[str, Any] = {"settings": settings.search_config().__dict__}
    with open_knowledge_base(settings) as kb, tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            dataset = LOADERS[name]()
            if quick:
                _first_queries(dataset, 20)
            result = bench_dataset(kb, dataset, Path(tmp))
            _print_scores(result)
            figures[name] = _dataset_figures(result)
        if not skip_hnsw:
            figures["hnsw"] = _run_hnsw(kb, settings, 5_000 if quick else hnsw_vectors)
            _print_hnsw(figures["hnsw"])
    if out_file is not None:
        out_file.write_text(json.dumps(figures, indent=2, default=str))
    return figures


def write_chart(figures: dict[str, Any], path: Path) -> Path:
    """A bar chart of nDCG@10 per retriever and dataset, from the benchmark's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [name for name in ("cisi", "pubmedqa") if name in figures]
    if not datasets:
        raise ValueError("the figures hold no dataset results to chart")
    methods = list(figures[datasets[0]]["scores"])
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        values = [figures[name]["scores"][m]["ndcg@10"] for m in methods]
        colors = ["#4C72B0" if m.startswith("ladder") else "#B0B0B0" for m in methods]
        bars = ax.barh(methods, values, color=colors)
        ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
        ax.invert_yaxis()
        low = min(values)
        ax.set_xlim(max(0.0, low - (1 - low) * 0.6 - 0.02), min(1.0, max(values) + (1 - low) * 0.25 + 0.02))
        ax.set_title(f"{name}: nDCG@10 ({figures[name]['queries']} queries)", fontsize=10)
        ax.tick_params(labelsize=8)
    fig.suptitle("Ladder's retrieval modes (blue) against baselines (grey)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
