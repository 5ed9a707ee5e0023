"""Fine-tune the local embedding model on (question, passage) pairs, and re-embed a collection with it.

Training uses sentence-transformers' MultipleNegativesRankingLoss (in-batch negatives: every other
passage in the batch is a negative for a question) in a plain AdamW loop: the library's Trainer
would pull in `datasets` and `accelerate` for what is ten lines here. The result is saved as a
sentence-transformers folder, which `LADDER_EMBEDDING_MODEL` (or `embedding_model`) accepts as a
path, and the source collection is copied into a new collection embedded with it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from knowledge.bundled_model import local_model_path
from knowledge.embeddings import Embedder, EmbeddingError
from knowledge.ingest import embedding_text
from knowledge.store import CollectionError, ensure_collection, ensure_vector_index, get_collection


@dataclass
class TrainingReport:
    pairs: int
    epochs: int
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    model_dir: str


def train_embeddings(
    pairs: list[tuple[str, str]],
    base_model: str,
    out_dir: Path,
    *,
    epochs: int = 1,
    batch_size: int = 16,
    learning_rate: float = 2e-5,
    seed: int = 0,
) -> TrainingReport:
    """Train ``base_model`` on (question, passage) pairs with in-batch negatives; save it to ``out_dir``."""
    if len(pairs) < 2:
        raise EmbeddingError(f"fine-tuning needs at least 2 (question, passage) pairs; there are {len(pairs)}")
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    torch.manual_seed(seed)
    model = SentenceTransformer(str(local_model_path(base_model)), device="cpu", local_files_only=True)
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    order = list(range(len(pairs)))
    shuffler = random.Random(seed)
    losses: list[float] = []
    started = time.perf_counter()
    model.train()
    for _ in range(max(1, epochs)):
        shuffler.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = [pairs[i] for i in order[start : start + batch_size]]
            if len(batch) < 2:  # one pair has no in-batch negative to learn from
                continue
            features = [model.tokenize([q for q, _ in batch]), model.tokenize([p for _, p in batch])]
            loss = loss_fn(features, torch.empty(0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    return TrainingReport(
        pairs=len(pairs),
        epochs=max(1, epochs),
        steps=len(losses),
        seconds=round(time.perf_counter() - started, 2),
        first_loss=losses[0] if losses else float("nan"),
        last_loss=losses[-1] if losses else float("nan"),
        model_dir=str(out_dir),
    )


def copy_collection(
    conn: psycopg.Connection, source: str, target: str, embedder: Embedder, *, batch: int = 256
) -> dict[str, Any]:
    """Copy the documents and chunks of ``source`` into a new collection ``target`` embedded by ``embedder``."""
    found = get_collection(conn, source)
    if found is None:
        raise CollectionError(f"no collection named {source!r}")
    if get_collection(conn, target) is not None:
        raise CollectionError(f"collection {target!r} exists already; drop it first (`ladder collections drop`)")
    with conn.transaction():
        created = ensure_collection(conn, target, embedder.model_name, embedder.dimension)
        conn.execute(
            "INSERT INTO documents (collection_id, doc_id, source, title, metadata, content_hash, chunking, n_chunks)"
            " SELECT %s, doc_id, source, title, metadata, content_hash, chunking, n_chunks FROM documents"
            " WHERE collection_id = %s",
            (created.id, found.id),
        )
        rows = conn.execute(
            "SELECT c.id, nd.id, c.ordinal, c.title, c.heading, c.text, c.n_tokens, c.metadata FROM chunks c"
            " JOIN documents od ON od.id = c.document_id"
            " JOIN documents nd ON nd.collection_id = %s AND nd.doc_id = od.doc_id"
            " WHERE c.collection_id = %s ORDER BY c.id",
            (created.id, found.id),
        ).fetchall()
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            vectors = embedder.embed([embedding_text(r[3], r[4], r[5]) for r in part])
            values = [
                (r[1], created.id, r[2], r[3], r[4], r[5], r[6], Jsonb(r[7]), np.asarray(v))
                for r, v in zip(part, vectors, strict=True)
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO chunks (document_id, collection_id, ordinal, title, heading, text, n_tokens,"
                    " metadata, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    values,
                )
    ensure_vector_index(conn, created)
    conn.execute("ANALYZE chunks")
    return {"collection": target, "chunks": len(rows), "model": embedder.model_name}
