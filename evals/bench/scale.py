"""`ladder bench scale`: search at a million chunks, today's keyword scoring against the one before it.

The chunks are synthetic the way the 100k HNSW benchmark makes them: vectors mixed from real
embeddings (of passages drawn from CISI and PubMedQA, embedded here), texts of 3 to 8 real sentences,
so the term statistics are those of real text at any size. They are written through Ladder's own
write path (store.write_documents: the triggers that keep BM25's statistics, the compaction), then
the HNSW index is built, and every query is timed through Ladder's searcher with both keyword
scorings in the same process: BM25 from the statistics kept at write time with MaxScore pruning
(knowledge/bm25.py), and the query-time BM25 it replaced (reproduced below as the baseline).
Keyword results are checked against bm25s over the very same tokens, and nDCG@10 on CISI against
its human judgements with both scorings.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agent.core.assemble import open_knowledge_base
from agent.core.config import Settings
from evals.bench.retrieval import (
    CHUNK_DEPTH,
    LOADERS,
    _build_hnsw_index,
    _collapse,
    _real_sentences,
    _synthetic_texts,
    _synthetic_vectors,
)
from evals.metrics import retrieval_scores
from knowledge import term_stats
from knowledge.base import KnowledgeBase
from knowledge.bm25 import TEXT_SEARCH_CONFIG, query_lexemes
from knowledge.chunking import Chunk
from knowledge.search import SearchConfig, Searcher, SearchRequest
from knowledge.store import (
    Collection,
    DocumentWrite,
    drop_collection,
    ensure_collection,
    get_collection,
    write_documents,
)

NAME = "bench-scale"
CHUNKS_PER_DOCUMENT = 1_000
DOCUMENTS_PER_BATCH = 5
SHORT_WORDS = 12  # a question of at most this many words is short
KEYWORD_DEPTH = 50  # what hybrid search asks of each retriever (SearchConfig.candidates)
INGEST_SAMPLE = 50_000  # chunks written with and without the statistics, for the ingest ratio

# The keyword scoring before the statistics were kept at write time (07a6a60), verbatim: each query
# lexeme's document frequency counted from the GIN index and the collection's size and average length
# from its chunks, per query, then every chunk that holds any query lexeme scored.
QUERY_TIME_BM25_SQL = r"""
WITH q AS (
    SELECT lexeme, cardinality(positions) AS qtf,
           ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery AS tq
    FROM unnest(to_tsvector({cfg}, %(query)s))
),
anyq AS MATERIALIZED (SELECT string_agg(tq::text, ' | ')::tsquery AS tq, array_agg(lexeme) AS lexemes FROM q),
stats AS MATERIALIZED (
    SELECT count(*)::float8 AS n, greatest(avg(n_tokens), 1)::float8 AS avgdl
    FROM chunks WHERE collection_id = {cid}
),
terms AS MATERIALIZED (
    SELECT q.lexeme, q.qtf, ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5)) AS idf
    FROM q CROSS JOIN stats
    CROSS JOIN LATERAL (
        SELECT count(*)::float8 AS df FROM chunks WHERE collection_id = {cid} AND tsv @@ q.tq
    ) df
),
cand AS (
    SELECT c.id, c.tsv, c.n_tokens, anyq.lexemes FROM chunks c, anyq
    WHERE c.collection_id = {cid} AND c.tsv @@ anyq.tq {filter}
)
SELECT cand.id,
       sum(terms.idf * terms.qtf * (m.tf * (%(k1)s + 1))
           / (m.tf + %(k1)s * (1 - %(b)s + %(b)s * cand.n_tokens / stats.avgdl))) AS score
FROM cand CROSS JOIN stats
CROSS JOIN LATERAL (
    SELECT u.lexeme,
           (SELECT sum(CASE w WHEN 'A' THEN 1 + %(ta)s WHEN 'B' THEN 1 + %(hb)s ELSE 1 END)
            FROM unnest(u.weights) AS w)::float8 AS tf
    FROM unnest(cand.tsv) AS u
    WHERE u.lexeme = ANY(cand.lexemes)
) m
JOIN terms ON terms.lexeme = m.lexeme
GROUP BY cand.id
ORDER BY score DESC, cand.id
LIMIT %(n)s
"""


class QueryTimeSearcher(Searcher):
    """Ladder's searcher with the keyword scoring it had before (the baseline)."""

    def keyword(
        self,
        conn: psycopg.Connection,
        collection: Collection,
        query: str,
        limit: int,
        filters: dict[str, Any] | None = None,
    ) -> list[tuple[int, float]]:
        cfg = self.config
        statement = sql.SQL(QUERY_TIME_BM25_SQL).format(
            cfg=sql.Literal(TEXT_SEARCH_CONFIG),
            cid=sql.Literal(collection.id),
            filter=sql.SQL("AND c.metadata @> %(f)s") if filters else sql.SQL(""),
        )
        params = {
            "query": query,
            "n": limit,
            "f": Jsonb(filters or {}),
            "k1": cfg.bm25_k1,
            "b": cfg.bm25_b,
            "ta": cfg.title_weight,
            "hb": cfg.heading_weight,
        }
        return [(int(cid), float(score)) for cid, score in conn.execute(statement, params).fetchall()]


@dataclass
class ScaleOptions:
    chunks: int = 1_000_000
    queries: int = 200  # questions timed on today's scoring, half short and half long where there are enough
    baseline_queries: int = 40  # of those, timed on the query-time baseline too (it is slow at scale)
    maintenance_work_mem: str = "4GB"  # room for the HNSW graph of a million vectors
    cisi: bool = True
    keep: bool = False
    reuse: bool = False  # time the collection a --keep run left (same size), not build it again


@dataclass
class _Timings:
    ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.ms.setdefault(key, []).append(value)

    def p(self, key: str, q: float) -> float | None:
        values = self.ms.get(key)
        return float(np.percentile(values, q)) if values else None


def _questions(count: int) -> tuple[list[str], list[str]]:
    """Short and long questions from the datasets (a fixed seed), up to ``count`` in all."""
    rng = np.random.default_rng(11)
    every = [q for load in LOADERS.values() for q in load().queries.values()]
    short = [q for q in every if len(q.split()) <= SHORT_WORDS]
    long = [q for q in every if len(q.split()) > SHORT_WORDS]
    half = count // 2
    n_short = min(len(short), max(half, count - len(long)))
    n_long = min(len(long), count - n_short)
    pick = lambda items, n: [items[i] for i in rng.choice(len(items), size=n, replace=False)]  # noqa: E731
    return pick(short, n_short), pick(long, n_long)


def _real_embeddings(kb: KnowledgeBase, sentences: list[str], count: int) -> np.ndarray:
    """Embeddings of ``count`` real sentences (a fixed seed): what the synthetic vectors are mixed from.
    Mixed from too few (1,500 passages were tried), a million vectors crowd into tight clusters of
    near-duplicates that no real corpus has, and HNSW recall@10 fell to 0.54."""
    picks = np.random.default_rng(17).choice(len(sentences), size=min(count, len(sentences)), replace=False)
    return kb.embedder.embed([sentences[i] for i in picks])


def _documents(vectors: np.ndarray, texts: list[str], start: int, stop: int) -> list[DocumentWrite]:
    docs = []
    for first in range(start, stop, CHUNKS_PER_DOCUMENT):
        last = min(first + CHUNKS_PER_DOCUMENT, stop)
        chunks = [
            Chunk(ordinal=i - first, text=texts[i], heading="", n_tokens=len(texts[i].split()))
            for i in range(first, last)
        ]
        docs.append(
            DocumentWrite(
                doc_id=f"synthetic-{first // CHUNKS_PER_DOCUMENT}",
                source=f"synthetic/{first // CHUNKS_PER_DOCUMENT}",
                title="",
                metadata={},
                content_hash=str(first),
                chunking="synthetic",
                chunks=chunks,
                embeddings=vectors[first:last],
            )
        )
    return docs


def _write(conn: psycopg.Connection, collection: Collection, vectors: np.ndarray, texts: list[str], say) -> float:
    """Write the chunks through Ladder's write path, a batch of documents per transaction; chunks per second."""
    step = CHUNKS_PER_DOCUMENT * DOCUMENTS_PER_BATCH
    start = time.perf_counter()
    for first in range(0, len(texts), step):
        write_documents(conn, collection, _documents(vectors, texts, first, min(first + step, len(texts))))
        if (first // step) % 40 == 39:
            done = first + step
            say(f"  {done:,} chunks written, {done / (time.perf_counter() - start):,.0f} chunks/s")
    return len(texts) / (time.perf_counter() - start)


def _ingest_sample(kb: KnowledgeBase, vectors: np.ndarray, texts: list[str]) -> dict[str, float]:
    """Chunks per second writing the same sample with the statistics kept and without (the triggers off)."""
    rates: dict[str, float] = {}
    for label, stats_on in (("without_stats", False), ("with_stats", True), ("without_stats_again", False)):
        name = f"{NAME}-ingest"
        with kb.db.connection() as conn:
            drop_collection(conn, name)
            collection = ensure_collection(conn, name, kb.embedder.model_name, kb.embedder.dimension)
            conn.commit()
            try:
                if not stats_on:
                    conn.execute("SET ladder.term_stats = 'off'")  # the triggers return at once
                    conn.commit()
                rates[label] = _write(conn, collection, vectors, texts, lambda _: None)
            finally:
                conn.rollback()
                conn.execute("RESET ladder.term_stats")
                conn.commit()
            drop_collection(conn, name)
    return {
        "chunks": len(texts),
        "with_stats_chunks_per_s": rates["with_stats"],
        "without_stats_chunks_per_s": (rates["without_stats"] + rates["without_stats_again"]) / 2,
    }


def _bm25s_index(conn: psycopg.Connection, collection: Collection) -> tuple[Any, list[int], dict[str, int]]:
    """bm25s over the chunks' own tokens (the tsvectors' lexemes, as often as they occur), each chunk padded
    with a token no query holds to its stored length, so both compute BM25 over the same numbers."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on itself at import
    vocab: dict[str, int] = {"\x00pad": 0}
    ids: list[int] = []
    corpus: list[list[int]] = []
    with conn.cursor(name="bench_scale_tokens") as cur:
        cur.itersize = 20_000
        cur.execute(
            "SELECT c.id, c.n_tokens, u.lexemes, u.counts FROM chunks c CROSS JOIN LATERAL"
            " (SELECT array_agg(lexeme) AS lexemes, array_agg(cardinality(positions)) AS counts FROM unnest(c.tsv)) u"
            " WHERE c.collection_id = %s ORDER BY c.id",
            (collection.id,),
        )
        for chunk_id, n_tokens, lexemes, counts in cur:
            tokens = [vocab.setdefault(lexeme, len(vocab)) for lexeme in lexemes or []]
            row = np.repeat(np.asarray(tokens, dtype=np.int64), np.asarray(counts or [], dtype=np.int64)).tolist()
            row.extend([0] * max(int(n_tokens) - len(row), 0))
            corpus.append(row)
            ids.append(int(chunk_id))
    conn.commit()
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenization.Tokenized(ids=corpus, vocab=vocab), show_progress=False)
    return retriever, ids, vocab


def _agreement(
    retriever: Any, position: dict[int, int], vocab: dict[str, int], lexemes: list[tuple[str, int]], ours: list[int]
) -> tuple[float, float]:
    """Of our top 10: the share that bm25s ranks in its top 10 counting ties at its 10th score, and the
    share of the very same ids (ties broken differently count against it)."""
    query = [vocab[lexeme] for lexeme, count in lexemes if lexeme in vocab for _ in range(count)]
    if not query:
        return (1.0, 1.0) if not ours else (0.0, 0.0)
    scores = retriever.get_scores(query)
    top = np.argsort(-scores, kind="stable")[:10]
    tenth = float(scores[top[-1]]) if len(top) else 0.0
    mine = [position[c] for c in ours[:10]]
    tied = sum(1 for i in mine if scores[i] >= tenth * (1 - 1e-5) and scores[i] > 0) / 10
    strict = len(set(mine) & {int(i) for i in top}) / 10
    return tied, strict


def _time_queries(
    kb: KnowledgeBase,
    searchers: dict[str, Searcher],
    collection: Collection,
    short: list[str],
    long: list[str],
    baseline_count: int,
) -> tuple[_Timings, dict[str, dict[str, list[int]]]]:
    """Keyword and hybrid latency per scorer and question length; keyword top 10 per scorer and question."""
    timings = _Timings()
    top10: dict[str, dict[str, list[int]]] = {name: {} for name in searchers}
    per_length = {"short": short, "long": long}
    with kb.db.connection() as conn:
        for length, questions in per_length.items():
            for i, question in enumerate(questions):
                for name, searcher in searchers.items():
                    if name == "baseline" and i >= baseline_count // 2:
                        continue
                    start = time.perf_counter()
                    hits = searcher.keyword(conn, collection, question, KEYWORD_DEPTH)
                    timings.add(f"{name}.keyword.{length}", (time.perf_counter() - start) * 1000)
                    conn.commit()
                    top10[name][question] = [cid for cid, _ in hits[:10]]
                    request = SearchRequest(query=question, collection=collection.name, k=10, mode="hybrid")
                    start = time.perf_counter()
                    searcher.search(request)
                    timings.add(f"{name}.hybrid.{length}", (time.perf_counter() - start) * 1000)
    return timings, top10


def _time_dense(
    kb: KnowledgeBase, collection: Collection, truth: np.ndarray, queries: np.ndarray, ef_search: int
) -> tuple[list[float], float]:
    """HNSW latency per query and recall@10 against the exact top 10 (``truth``), at this ef_search."""
    searcher = Searcher(kb.db, kb.embedder, replace(kb.searcher.config, ef_search=ef_search))
    ms: list[float] = []
    recalls: list[float] = []
    with kb.db.connection() as conn:
        for query, expected in zip(queries, truth, strict=True):
            start = time.perf_counter()
            found = searcher.dense(conn, collection, query, 10)
            ms.append((time.perf_counter() - start) * 1000)
            conn.commit()
            recalls.append(len({cid for cid, _ in found} & set(expected.tolist())) / 10)
    return ms, float(np.mean(recalls))


def _cisi_ndcg(kb: KnowledgeBase, searchers: dict[str, Searcher]) -> dict[str, dict[str, float]]:
    """nDCG@10 and recall@5 on CISI's human judgements, keyword and hybrid, with each scorer."""
    dataset = LOADERS["cisi"]()
    name = f"{NAME}-cisi"
    with tempfile.TemporaryDirectory() as tmp:
        path = dataset.write_jsonl(Path(tmp) / "cisi.jsonl")
        with kb.db.connection() as conn:
            drop_collection(conn, name)
        kb.ingest([path], name, progress=False)
    out: dict[str, dict[str, float]] = {}
    for label, searcher in searchers.items():
        for mode in ("keyword", "hybrid"):
            rankings = {
                qid: _collapse(
                    [
                        h.doc_id
                        for h in searcher.search(SearchRequest(query=q, collection=name, k=CHUNK_DEPTH, mode=mode))  # type: ignore[arg-type]
                    ]
                )
                for qid, q in dataset.queries.items()
            }
            scores = retrieval_scores(dataset.qrels, rankings, ["ndcg@10", "recall@5"])
            out[f"{label}.{mode}"] = scores
    with kb.db.connection() as conn:
        drop_collection(conn, name)
    return out


def _build_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / f"{NAME}-build.json"


def _reusable(kb: KnowledgeBase, settings: Settings, options: ScaleOptions) -> dict[str, Any] | None:
    """The figures of the build a --keep run left, when --reuse asks for it and it has the asked size."""
    if not options.reuse or not _build_file(settings).exists():
        return None
    saved = json.loads(_build_file(settings).read_text())
    with kb.db.connection() as conn:
        collection = get_collection(conn, NAME)
        count = (
            conn.execute("SELECT count(*) FROM chunks WHERE collection_id = %s", (collection.id,)).fetchone()
            if collection
            else None
        )
    if collection is None or count is None or int(count[0]) != options.chunks or saved.get("chunks") != options.chunks:
        return None
    return {**saved, "collection": collection, "reused": True}


def _build(kb, settings, options, vectors, texts, say) -> dict[str, Any]:
    """Write the collection through Ladder's write path and build its HNSW index; the build's figures."""
    sample = min(INGEST_SAMPLE, options.chunks)
    say(f"writing {sample:,} chunks with and without the statistics (ingest ratio)")
    ingest_sample = _ingest_sample(kb, vectors[:sample], texts[:sample])

    with kb.db.connection() as conn:
        drop_collection(conn, NAME)
        collection = ensure_collection(conn, NAME, kb.embedder.model_name, kb.embedder.dimension)
        conn.commit()
        say(f"writing {options.chunks:,} chunks through Ladder's write path")
        ingest_rate = _write(conn, collection, vectors, texts, say)
        first = conn.execute("SELECT min(id) FROM chunks WHERE collection_id = %s", (collection.id,)).fetchone()
        first_id = int(first[0]) if first else 0
        say("building the HNSW index")
        build_settings = settings.model_copy(update={"maintenance_work_mem": options.maintenance_work_mem})
        build_s = _build_hnsw_index(conn, build_settings, collection, kb.embedder.dimension)
        db_mb = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20  # type: ignore[index]
        stats = term_stats.summary(conn, collection.id)

    figures = {
        "chunks": options.chunks,
        "first_id": first_id,
        "ingest_rate": ingest_rate,
        "ingest_sample": ingest_sample,
        "build_s": build_s,
        "db_mb": db_mb,
        "stats": stats,
    }
    _build_file(settings).write_text(json.dumps(figures))
    return {**figures, "collection": collection, "reused": False}


def run_scale_benchmark(settings: Settings, options: ScaleOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Build the collection, time every search against the baseline, and return the figures."""
    settings = settings.model_copy(update={"db_statement_timeout_ms": 1_800_000})  # the baseline is slow at scale
    with open_knowledge_base(settings) as kb:
        searchers: dict[str, Searcher] = {
            "today": kb.searcher,
            "baseline": QueryTimeSearcher(kb.db, kb.embedder, kb.searcher.config),
        }
        sentences = _real_sentences()
        say(f"embedding real passages to mix {options.chunks:,} vectors from")
        base = _real_embeddings(kb, sentences, max(100, options.chunks // 80))
        vectors = _synthetic_vectors(base, options.chunks)
        built = _reusable(kb, settings, options)
        if built is None:
            built = _build(kb, settings, options, vectors, _synthetic_texts(sentences, options.chunks), say)
        short, long = _questions(options.queries)
        dense = _dense_figures(kb, built, vectors, short + long, say)
        for question in (short + long)[:5]:  # warm the caches both scorers read
            kb.searcher.search(SearchRequest(query=question, collection=NAME, k=10, mode="hybrid"))
        say(
            f"timing keyword and hybrid search: {len(short)} short and {len(long)} long questions"
            f" ({options.baseline_queries} of them on the baseline too)"
        )
        timings, top10 = _time_queries(kb, searchers, built["collection"], short, long, options.baseline_queries)
        say("indexing the same chunks' tokens with bm25s")
        agreement = _bm25s_agreement(kb, built["collection"], top10)
        cisi = {}
        if options.cisi:
            say("nDCG@10 on CISI with both scorings")
            cisi = _cisi_ndcg(kb, searchers)
        if not options.keep:
            with kb.db.connection() as conn:
                drop_collection(conn, NAME)
        config = kb.searcher.config
    return _report(options, built, dense, timings, agreement, cisi, config)


def _dense_figures(
    kb: KnowledgeBase, built: dict[str, Any], vectors: np.ndarray, questions: list[str], say: Callable[[str], None]
) -> dict[str, Any]:
    """Dense recall@10 against an exact scan and latency at the default ef_search and two wider ones."""
    say(f"timing dense search ({len(questions)} questions)")
    query_vectors = kb.embedder.embed(questions)
    truth = np.argsort(-(query_vectors @ vectors.T), axis=1)[:, :10] + built["first_id"]
    default_ef = kb.searcher.config.ef_search
    by_ef: dict[int, dict[str, float]] = {}
    figures: dict[str, Any] = {}
    for ef in sorted({default_ef, 2 * default_ef, 4 * default_ef}):
        ms, recall_at = _time_dense(kb, built["collection"], truth, query_vectors, ef)
        by_ef[ef] = {"recall_at_10": recall_at, "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95)}
        if ef == default_ef:
            figures = {"dense_p50_ms": _pct(ms, 50), "dense_p95_ms": _pct(ms, 95), "dense_recall_at_10": recall_at}
    return {**figures, "dense_by_ef_search": by_ef}


def _bm25s_agreement(
    kb: KnowledgeBase, collection: Collection, top10: dict[str, dict[str, list[int]]]
) -> dict[str, list[tuple[float, float]]]:
    """Each scorer's top 10 against bm25s over the same chunks' tokens, per question."""
    with kb.db.connection() as conn:
        retriever, ids, vocab = _bm25s_index(conn, collection)
        position = {chunk_id: i for i, chunk_id in enumerate(ids)}
        return {
            name: [
                _agreement(retriever, position, vocab, query_lexemes(conn, question), ours)
                for question, ours in per_question.items()
            ]
            for name, per_question in top10.items()
        }


def _scorer_figures(name: str, timings: _Timings, agreement: dict[str, list[tuple[float, float]]], cisi: dict) -> dict:
    """One scorer's latency percentiles, agreement with bm25s and CISI figures."""
    tied = [a for a, _ in agreement[name]]
    strict = [b for _, b in agreement[name]]
    latency = {
        f"{mode}_p{q}_ms_{kind}": timings.p(f"{name}.{mode}.{kind}", q)
        for mode in ("hybrid", "keyword")
        for kind in ("short", "long")
        for q in (50, 95)
    }
    return {
        **latency,
        "keyword_top10_overlap": float(np.mean(tied)) if tied else None,
        "keyword_top10_same_ids": float(np.mean(strict)) if strict else None,
        "questions": {k.split(".")[-1]: len(v) for k, v in timings.ms.items() if k.startswith(f"{name}.keyword")},
        "cisi": {k.split(".", 1)[1]: v for k, v in cisi.items() if k.startswith(f"{name}.")},
    }


def _report(
    options: ScaleOptions,
    built: dict[str, Any],
    dense: dict[str, Any],
    timings: _Timings,
    agreement: dict[str, list[tuple[float, float]]],
    cisi: dict,
    config: SearchConfig,
) -> dict[str, Any]:
    """The JSON object `ladder bench scale --json` prints: today's figures, the baseline's, and their ratios."""
    today, baseline = (_scorer_figures(name, timings, agreement, cisi) for name in ("today", "baseline"))
    baseline["ingest_chunks_per_s"] = built["ingest_sample"]["without_stats_chunks_per_s"]
    ratios = {
        key: baseline[key] / today[key]
        for key in ("hybrid_p95_ms_short", "hybrid_p95_ms_long", "keyword_p95_ms_short", "keyword_p95_ms_long")
        if today[key] and baseline[key]
    }
    return {
        "chunks": options.chunks,
        **{k: v for k, v in today.items() if k not in ("questions", "cisi")},
        **dense,
        "ef_search": config.ef_search,
        "ingest_chunks_per_s": built["ingest_rate"],
        "ingest_sample": built["ingest_sample"],
        "index_build_s": built["build_s"],
        "db_size_mb": built["db_mb"],
        "term_stats": built["stats"],
        "reused_build": built["reused"],
        "keyword_budget": config.keyword_budget,
        "questions": today["questions"],
        "cisi": today["cisi"],
        "baseline": baseline,
        "speedup_p95": ratios,
    }


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _ms(value: float | None) -> str:
    return f"{value:,.1f}" if value is not None else "-"


def format_scale_report(f: dict[str, Any]) -> str:
    """The figures as lines a reader scans: today's beside the baseline's, with the goals."""
    b = f["baseline"]
    q = f["questions"]
    sample = f["ingest_sample"]
    lines = [
        f"{f['chunks']:,} chunks ({f['term_stats']['lexemes']:,} distinct terms), database {f['db_size_mb']:,.0f} MB;"
        f" written at {f['ingest_chunks_per_s']:,.0f} chunks/s (vectors given),"
        f" HNSW built in {f['index_build_s']:,.0f} s",
        f"ingest of {sample['chunks']:,} chunks: {sample['with_stats_chunks_per_s']:,.0f} chunks/s"
        f" keeping the statistics, {sample['without_stats_chunks_per_s']:,.0f} without",
        f"dense (HNSW, ef_search {f['ef_search']}): recall@10 {f['dense_recall_at_10']:.3f} against exact search,"
        f" p50 {_ms(f['dense_p50_ms'])} ms, p95 {_ms(f['dense_p95_ms'])} ms; "
        + ", ".join(
            f"ef_search {ef}: {d['recall_at_10']:.3f} ({_ms(d['p95_ms'])} ms p95)"
            for ef, d in f.get("dense_by_ef_search", {}).items()
        ),
        f"questions: {q.get('short', 0)} short (<= {SHORT_WORDS} words), {q.get('long', 0)} long;"
        f" the baseline ran {b['questions'].get('short', 0)} + {b['questions'].get('long', 0)} of them",
        "",
        f"{'p95 ms (p50)':<24}{'stored statistics':>22}{'query-time baseline':>22}{'speed-up':>10}{'goal':>8}",
    ]
    for key, label, goal in (
        ("hybrid_%s_ms_short", "hybrid, short", "100"),
        ("hybrid_%s_ms_long", "hybrid, long", "300"),
        ("keyword_%s_ms_short", "keyword, short", ""),
        ("keyword_%s_ms_long", "keyword, long", ""),
    ):
        today = f"{_ms(f[key % 'p95'])} ({_ms(f[key % 'p50'])})"
        before = f"{_ms(b[key % 'p95'])} ({_ms(b[key % 'p50'])})"
        ratio = f["speedup_p95"].get(key % "p95")
        lines.append(f"{label:<24}{today:>22}{before:>22}{(f'{ratio:.1f}x' if ratio else '-'):>10}{goal:>8}")
    lines.append(
        f"keyword top-10 agreement with bm25s over the same tokens: {f['keyword_top10_overlap']:.3f}"
        f" (ties at the 10th score counted; same ids {f['keyword_top10_same_ids']:.3f});"
        f" baseline {b['keyword_top10_overlap']:.3f}"
    )
    for mode, scores in f["cisi"].items():
        before = b["cisi"].get(mode, {})
        lines.append(
            f"CISI {mode}: nDCG@10 {scores['ndcg@10']:.4f} (baseline {before.get('ndcg@10', float('nan')):.4f}),"
            f" recall@5 {scores['recall@5']:.4f} (baseline {before.get('recall@5', float('nan')):.4f})"
        )
    return "\n".join(lines)
