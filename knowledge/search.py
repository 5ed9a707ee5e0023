"""Find passages: dense (cosine over HNSW), keyword (Postgres full-text) and hybrid (RRF of both).

The pipeline has named stages, so techniques plug in without touching the retrievers (the agent's
research step runs every search through it):

    query  ->  transforms (rewrite the text the dense retriever embeds)
           ->  retrievers (dense, keyword)  ->  fusion (reciprocal rank fusion)
           ->  expansions (HyDE: a hypothetical passage's dense ranking, fused in by RRF)
           ->  rerankers (MMR, cross-encoder, the chat model's grades)  ->  recency  ->  top k
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from knowledge.bm25 import TEXT_SEARCH_CONFIG, BM25Params, bm25_search
from knowledge.db import Database
from knowledge.embeddings import Embedder
from knowledge.errors import LadderError
from knowledge.store import Collection, require_collection

Mode = Literal["dense", "keyword", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "keyword", "hybrid")
_WORD = re.compile(r"\w+", re.UNICODE)
_SURROGATE = re.compile("[\ud800-\udfff]")


# Postgres' own cover-density ranking, kept as the measured alternative to BM25.
_TS_RANK_SQL = """
SELECT c.id, ts_rank_cd(%(w)s::float4[], c.tsv, q, 1) AS score
FROM chunks c, websearch_to_tsquery({cfg}, %(t)s) AS q
WHERE c.collection_id = {cid} AND c.tsv @@ q {filter}
ORDER BY score DESC, c.id
LIMIT %(n)s
"""


class SearchError(LadderError, ValueError):
    """A search request that cannot be served; the message says why."""


@dataclass(frozen=True)
class SearchConfig:
    """Tuning of the retrievers and the fusion (the benchmark measured these defaults)."""

    rrf_k: int = 10
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    candidates: int = 50
    ef_search: int = 128
    keyword_scoring: Literal["bm25", "ts_rank_cd"] = "bm25"
    # At most about this many chunks scored per keyword search (0: no limit): past it BM25 scores the chunks
    # of the query's rarer terms instead of proving the ranking exact (knowledge/bm25.py).
    keyword_budget: int = 2_000
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    title_weight: float = 1.0  # extra term frequency for a match in the title
    heading_weight: float = 0.5  # extra term frequency for a match in a heading
    recency_half_life_days: float | None = None
    recency_field: str = "date"
    # At most this many of the top results from one document while others match too (0: no cap); the
    # rest of that document's passages follow the others', so k is still filled when only one matches.
    per_document: int = 2


QueryTransform = Callable[[str], str]
"""Maps the question to the text whose embedding the dense retriever uses."""
QueryExpansion = Callable[[str], str]
"""Writes a second text for the question (HyDE's hypothetical passage): its dense ranking is fused in."""


@dataclass
class SearchRequest:
    query: str
    collection: str
    k: int = 10
    mode: Mode = "hybrid"
    filters: dict[str, Any] | None = None
    recency: bool = False
    expansions: list[tuple[str, QueryExpansion]] = field(default_factory=list)  # (name, expansion)


@dataclass
class SearchHit:
    chunk_id: int
    score: float
    doc_id: str = ""
    text: str = ""
    title: str = ""
    heading: str = ""
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    ranks: dict[str, int] = field(default_factory=dict)  # rank in each retriever, 1-based

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "chunk_id": self.chunk_id,
            "score": self.score,
            "text": self.text,
            "title": self.title,
            "metadata": {**self.metadata, **({"heading": self.heading} if self.heading else {})},
        }


Reranker = Callable[[str, list[SearchHit]], list[SearchHit]]
"""Reorders fused candidates given the question (MMR, cross-encoder or the chat model's grades)."""


def keyword_query_text(query: str) -> str:
    """OR of the query's words in ``websearch_to_tsquery`` syntax.

    Postgres' own parsers AND every word, which finds nothing for a long question; only bare words
    are passed on, so quotes and '-' in the user's text cannot change the query's meaning.
    """
    return " or ".join(word for word in _WORD.findall(query) if word.lower() != "or")


def _positions(rankings: dict[str, list[tuple[int, float]]]) -> dict[int, dict[str, int]]:
    """Each chunk's 1-based rank in every retriever that found it."""
    out: dict[int, dict[str, int]] = {}
    for name, ranked in rankings.items():
        for rank, (chunk_id, _) in enumerate(ranked, start=1):
            out.setdefault(chunk_id, {})[name] = rank
    return out


def rrf_fuse(rankings: dict[str, list[int]], weights: dict[str, float], k: int) -> list[tuple[int, float]]:
    """Weighted reciprocal rank fusion: score(d) = sum_r w_r / (k + rank_r(d))."""
    scores: dict[int, float] = {}
    for name, ids in rankings.items():
        weight = weights.get(name, 1.0)
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def spread_documents(hits: list[SearchHit], per_document: int) -> list[SearchHit]:
    """``hits`` with each document's passages past the first ``per_document`` moved after the others'
    (in their order): the top results cover more documents, and nothing is dropped. 0 leaves them as they are."""
    if per_document <= 0:
        return hits
    seen: dict[str, int] = {}
    first: list[SearchHit] = []
    later: list[SearchHit] = []
    for hit in hits:
        seen[hit.doc_id] = seen.get(hit.doc_id, 0) + 1
        (first if seen[hit.doc_id] <= per_document else later).append(hit)
    return first + later


def recency_factor(value: Any, half_life_days: float, now: datetime) -> float:
    """0.5 ** (age / half-life) for an ISO date; 1.0 where there is no readable date."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return 1.0
    elif isinstance(value, datetime | date):
        when = value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
    else:
        return 1.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    age_days = max((now - when).total_seconds() / 86400.0, 0.0)
    return math.pow(0.5, age_days / half_life_days)


class Searcher:
    """Runs search requests against the database with one embedding model."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        config: SearchConfig | None = None,
        *,
        query_transforms: Sequence[QueryTransform] = (),
        rerankers: Sequence[Reranker] = (),
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.config = config or SearchConfig()
        self.query_transforms = list(query_transforms)
        self.rerankers = list(rerankers)

    def search(self, request: SearchRequest) -> list[SearchHit]:
        """The best ``k`` chunks for the request, best first."""
        self._check(request)
        cfg = self.config
        depth = max(request.k, cfg.candidates)
        keep = depth if (self.rerankers or request.recency or cfg.per_document) else request.k
        with self.db.connection() as conn:
            collection = require_collection(conn, request.collection, self.embedder.model_name, self.embedder.dimension)
            rankings = self.rankings(conn, collection, request, depth)
            if request.mode == "hybrid":
                ids = {name: [cid for cid, _ in ranked] for name, ranked in rankings.items()}
                fused = rrf_fuse(ids, {"dense": cfg.dense_weight, "keyword": cfg.keyword_weight}, cfg.rrf_k)
            else:
                fused = rankings[request.mode]
            ranks = _positions(rankings)
            hits = [SearchHit(chunk_id=cid, score=score, ranks=ranks[cid]) for cid, score in fused[:keep]]
            for name, expand in request.expansions:
                hits = self.expand(conn, collection, request, hits, name, expand)
            self._fill(conn, hits)
        hits = self.rerank(request.query, hits, self.rerankers)
        if request.recency:
            hits = self._apply_recency(hits)
        return spread_documents(hits, cfg.per_document)[: request.k]

    def _check(self, request: SearchRequest) -> None:
        if request.mode not in MODES:
            raise SearchError(f"unknown mode {request.mode!r}; use one of {', '.join(MODES)}")
        if not request.query.strip():
            raise SearchError("the query is empty")
        if _SURROGATE.search(request.query):  # how Python keeps bytes from argv that are not UTF-8
            raise SearchError("the query holds bytes that are not UTF-8 text")
        if not 1 <= request.k <= 1000:
            raise SearchError("k must be between 1 and 1000")
        if request.recency and not self.config.recency_half_life_days:
            raise SearchError("recency needs a half-life: set LADDER_RECENCY_HALF_LIFE_DAYS")

    def rankings(
        self, conn: psycopg.Connection, collection: Collection, request: SearchRequest, depth: int
    ) -> dict[str, list[tuple[int, float]]]:
        """Each retriever's (chunk id, score) list for the request's mode, best first."""
        out: dict[str, list[tuple[int, float]]] = {}
        if request.mode in ("dense", "hybrid"):
            out["dense"] = self.dense(conn, collection, self.embed_query(request.query), depth, request.filters)
        if request.mode in ("keyword", "hybrid"):
            out["keyword"] = self.keyword(conn, collection, request.query, depth, request.filters)
        return out

    def expand(
        self,
        conn: psycopg.Connection,
        collection: Collection,
        request: SearchRequest,
        hits: list[SearchHit],
        name: str,
        expansion: QueryExpansion,
    ) -> list[SearchHit]:
        """Fuse the dense ranking of the expansion's text (HyDE) with the ranking so far, by RRF."""
        text = expansion(request.query)
        if not text.strip():
            return hits
        extra = self.dense(conn, collection, self.embedder.embed([text])[0], len(hits) or request.k, request.filters)
        known = {hit.chunk_id: hit for hit in hits}
        fused = rrf_fuse(
            {"query": [hit.chunk_id for hit in hits], name: [cid for cid, _ in extra]},
            {"query": 1.0, name: 1.0},
            k=self.config.rrf_k,
        )
        ranked = [known.get(cid) or SearchHit(chunk_id=cid, score=score) for cid, score in fused]
        extra_rank = {cid: rank for rank, (cid, _) in enumerate(extra, start=1)}
        for hit in ranked:
            if hit.chunk_id in extra_rank:
                hit.ranks[name] = extra_rank[hit.chunk_id]
        return ranked[: len(hits) or request.k]

    def rerank(self, query: str, hits: list[SearchHit], rerankers: Sequence[Reranker]) -> list[SearchHit]:
        """The rerank stage: each reranker in turn reorders (and may drop) the candidates."""
        for reranker in rerankers:
            hits = reranker(query, hits)
        return hits

    # -- stages ----------------------------------------------------------------------------------

    def embed_query(self, query: str) -> np.ndarray:
        text = query
        for transform in self.query_transforms:
            text = transform(text)
        return self.embedder.embed([text])[0]

    def dense(
        self,
        conn: psycopg.Connection,
        collection: Collection,
        vector: np.ndarray,
        limit: int,
        filters: dict[str, Any] | None = None,
        *,
        exact: bool = False,
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) nearest first, through the collection's HNSW index."""
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(self.config.ef_search)))
            if filters:
                # Filters are applied after the index scan; iterative scans keep looking until
                # enough rows pass them instead of returning too few.
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            if exact:
                conn.execute("SET LOCAL enable_indexscan = off")
            # The exact scan needs its own statement text: psycopg prepares repeated statements
            # and a prepared plan does not change with enable_indexscan.
            query = sql.SQL(
                "SELECT id, 1 - (embedding::{vt} <=> %(q)s::{vt}) FROM chunks"
                " WHERE collection_id = {cid} {filter}"
                " ORDER BY embedding::{vt} <=> %(q)s::{vt} LIMIT %(n)s {tag}"
            ).format(
                tag=sql.SQL("/* exact */") if exact else sql.SQL(""),
                vt=collection.vector_type(),
                cid=sql.Literal(collection.id),
                filter=sql.SQL("AND metadata @> %(f)s") if filters else sql.SQL(""),
            )
            rows = conn.execute(query, {"q": vector, "n": limit, "f": Jsonb(filters or {})}).fetchall()
        rows.sort(key=lambda row: (-row[1], row[0]))  # relaxed order may be slightly out of order
        return [(int(cid), float(score)) for cid, score in rows]

    def keyword(
        self,
        conn: psycopg.Connection,
        collection: Collection,
        query: str,
        limit: int,
        filters: dict[str, Any] | None = None,
    ) -> list[tuple[int, float]]:
        """(chunk id, score) best first: BM25 (default, knowledge/bm25.py) or ts_rank_cd, over the GIN index."""
        cfg = self.config
        if cfg.keyword_scoring != "ts_rank_cd":
            params = BM25Params(cfg.bm25_k1, cfg.bm25_b, cfg.title_weight, cfg.heading_weight)
            return bm25_search(conn, collection.id, query, limit, params, filters, budget=cfg.keyword_budget).hits
        text = keyword_query_text(query)
        if not text:
            return []
        # ts_rank_cd weights are ordered {D, C, B, A}: body, unused, heading, title.
        weights = [1.0, 0.0, min(1.0, 0.5 + cfg.heading_weight), min(1.0, 0.5 + cfg.title_weight)]
        statement = sql.SQL(_TS_RANK_SQL).format(
            cfg=sql.Literal(TEXT_SEARCH_CONFIG),
            cid=sql.Literal(collection.id),
            filter=sql.SQL("AND c.metadata @> %(f)s") if filters else sql.SQL(""),
        )
        params = {"t": text, "w": weights, "n": limit, "f": Jsonb(filters or {})}
        rows = conn.execute(statement, params).fetchall()
        return [(int(cid), float(score)) for cid, score in rows]

    def _fill(self, conn: psycopg.Connection, hits: list[SearchHit]) -> None:
        if not hits:
            return
        rows = conn.execute(
            """
            SELECT c.id, d.doc_id, c.text, c.title, c.heading, d.source, c.metadata
            FROM chunks c JOIN documents d ON d.id = c.document_id
            WHERE c.id = ANY(%s)
            """,
            ([hit.chunk_id for hit in hits],),
        ).fetchall()
        details = {row[0]: row[1:] for row in rows}
        # A chunk replaced by a concurrent ingest since it was ranked is dropped, not shown stale.
        hits[:] = [hit for hit in hits if hit.chunk_id in details]
        for hit in hits:
            hit.doc_id, hit.text, hit.title, hit.heading, hit.source, hit.metadata = details[hit.chunk_id]

    def _apply_recency(self, hits: list[SearchHit]) -> list[SearchHit]:
        half_life = self.config.recency_half_life_days
        assert half_life is not None
        now = datetime.now(UTC)
        # Work on ranks, not raw scores: cosine can be negative and BM25 and RRF live on other
        # scales, so the decay multiplies a rank score (like RRF's) that is positive in every mode.
        for rank, hit in enumerate(hits, start=1):
            decay = recency_factor(hit.metadata.get(self.config.recency_field), half_life, now)
            hit.score = decay / (self.config.rrf_k + rank)
        return sorted(hits, key=lambda hit: -hit.score)
