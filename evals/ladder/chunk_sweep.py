"""`ladder eval sweep-chunks`: the chunking experiment, retrieval metrics per chunk size.

The set's documents are ingested once per size into their own collection, and each question's
ranking of documents (its chunks' documents, first occurrence) is scored against the reference
document ids with ranx.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from agent.core.config import Settings
from evals.eval_sets import EvalSet
from evals.metrics import retrieval_scores
from knowledge.base import KnowledgeBase


def sweep_chunks(
    settings: Settings,
    kb: KnowledgeBase,
    evalset: EvalSet,
    sizes: list[int],
    *,
    limit: int | None = None,
    k: int = 10,
) -> list[dict[str, Any]]:
    """One row per chunk size: chunks made, ingest seconds, and recall/MRR/nDCG of the reference documents."""
    examples = [e for e in evalset.examples if e.reference_doc_ids][:limit]  # limit None: all
    if not evalset.documents or not examples:
        raise ValueError(f"{evalset.name} needs documents and reference_doc_ids for a chunking sweep")
    qrels = {e.id: dict.fromkeys(e.reference_doc_ids or [], 1) for e in examples}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        corpus = evalset.write_documents(Path(folder) / "corpus.jsonl")
        for size in sizes:
            collection = f"sweep-{evalset.name}-{size}"
            started = time.perf_counter()
            report = kb.ingest(
                [corpus], collection, chunking=settings.chunking_config(size, min(size // 8, 64)), progress=False
            )
            seconds = time.perf_counter() - started
            rankings = {
                e.id: list(dict.fromkeys(h.doc_id for h in kb.search(e.question, collection, k=k * 3)))[:k]
                for e in examples
            }
            with kb.db.connection() as conn:
                chunks = conn.execute(
                    "SELECT count(*) FROM chunks c JOIN collections k ON k.id = c.collection_id WHERE k.name = %s",
                    (collection,),
                ).fetchone()[0]
            rows.append(
                {
                    "chunk_tokens": size,
                    "chunks": int(chunks),
                    "ingest_seconds": round(seconds, 1) if report.chunks_written else 0.0,
                    **retrieval_scores(qrels, rankings),
                }
            )
    return rows
