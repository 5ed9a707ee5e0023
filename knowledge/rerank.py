"""Rerankers for the search pipeline's rerank stage: diversity (MMR) and a cross-encoder.

The model-graded reranker lives with the agent (it needs the chat model); these need only the
knowledge base.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np
import psycopg

from knowledge.db import Database
from knowledge.embeddings import Embedder
from knowledge.search import SearchError, SearchHit


def mmr_order(query: np.ndarray, vectors: np.ndarray, lambda_: float = 0.7) -> list[int]:
    """Maximal marginal relevance: indexes of ``vectors`` in the order that trades relevance to
    ``query`` (weight ``lambda_``) against similarity to what was already picked."""
    if len(vectors) == 0:
        return []
    relevance = vectors @ query
    picked: list[int] = []
    remaining = list(range(len(vectors)))
    while remaining:
        redundancy = (vectors[remaining] @ vectors[picked].T).max(axis=1) if picked else np.zeros(len(remaining))
        scores = lambda_ * relevance[remaining] - (1 - lambda_) * redundancy
        best = remaining[int(np.argmax(scores))]
        picked.append(best)
        remaining.remove(best)
    return picked


def chunk_vectors(conn: psycopg.Connection, chunk_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Stored embeddings of these chunks."""
    rows = conn.execute("SELECT id, embedding FROM chunks WHERE id = ANY(%s)", (list(chunk_ids),)).fetchall()
    return {int(cid): np.asarray(vec.to_numpy(), dtype=np.float32) for cid, vec in rows}


class MMRReranker:
    """A reranker for the pipeline: diversity among the candidates by maximal marginal relevance."""

    def __init__(self, db: Database, embedder: Embedder, lambda_: float = 0.7) -> None:
        self.db, self.embedder, self.lambda_ = db, embedder, lambda_

    def order_ids(self, query: str, chunk_ids: Sequence[int]) -> list[int]:
        with self.db.connection() as conn:
            found = chunk_vectors(conn, chunk_ids)
        ids = [cid for cid in chunk_ids if cid in found]
        if not ids:
            return list(chunk_ids)
        order = mmr_order(self.embedder.embed([query])[0], np.stack([found[c] for c in ids]), self.lambda_)
        return [ids[i] for i in order]

    def __call__(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        by_id = {hit.chunk_id: hit for hit in hits}
        return [by_id[cid] for cid in self.order_ids(query, [hit.chunk_id for hit in hits])]


class CrossEncoderReranker:
    """A reranker for the pipeline: a sentence-transformers cross-encoder from a local folder.

    No cross-encoder weights ship on the package registry, so this runs only when the user points
    ``LADDER_CROSS_ENCODER_PATH`` at one; nothing is ever fetched from a model hub.
    """

    def __init__(self, path: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(path, device="cpu", local_files_only=True)
        except Exception as exc:
            raise SearchError(f"cannot load the cross-encoder from {path}: {exc}") from exc
        self._lock = threading.Lock()

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        with self._lock:
            predicted = self._model.predict([(query, text) for text in texts], show_progress_bar=False)
        return [float(value) for value in np.asarray(predicted).reshape(-1)]

    def __call__(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        scored = sorted(zip(self.scores(query, [h.text for h in hits]), hits, strict=True), key=lambda p: -p[0])
        for score, hit in scored:
            hit.score = score
        return [hit for _, hit in scored]


_cross_encoders: dict[str, CrossEncoderReranker] = {}
_cross_encoders_lock = threading.Lock()


def load_cross_encoder(path: str) -> CrossEncoderReranker:
    """A cross-encoder loaded once per process."""
    with _cross_encoders_lock:
        if path not in _cross_encoders:
            _cross_encoders[path] = CrossEncoderReranker(path)
        return _cross_encoders[path]
