"""Measure the fine-tuned-embeddings rung on CISI, with CISI's relevance judgements standing in for
thumbs-up feedback: each query becomes an approved turn citing the first chunk of (up to
``PER_QUERY``) relevant abstracts. Then `run_embedding_rung` trains on 80% of the queries and
compares dense MRR@10 on the other 20% before and after. The simulated turns are deleted after.

    .venv/bin/python scripts/embedding_rung_cisi.py
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

from psycopg.types.json import Jsonb

from agent.core.assemble import open_knowledge_base
from agent.core.config import get_settings
from agent.records.turns import add_feedback
from evals.datasets import load_cisi
from evals.ladder.embedding_rung import run_embedding_rung
from knowledge.store import drop_collection

COLLECTION = "cisi-ft-bench"
PER_QUERY = 10


def main() -> None:
    settings = get_settings()
    data = load_cisi()
    with open_knowledge_base(settings) as kb:
        with kb.db.connection() as conn:
            drop_collection(conn, COLLECTION)
            drop_collection(conn, f"{COLLECTION}-ft")
        with tempfile.TemporaryDirectory() as folder:
            kb.ingest([data.write_jsonl(Path(folder) / "cisi.jsonl")], COLLECTION, progress=False)
        with kb.db.connection() as conn:
            first_chunk = {
                doc_id: (chunk_id, text, title)
                for doc_id, chunk_id, text, title in conn.execute(
                    "SELECT DISTINCT ON (d.doc_id) d.doc_id, c.id, c.text, d.title FROM chunks c"
                    " JOIN documents d ON d.id = c.document_id JOIN collections k ON k.id = c.collection_id"
                    " WHERE k.name = %s ORDER BY d.doc_id, c.ordinal",
                    (COLLECTION,),
                )
            }
            for query_id, question in data.queries.items():
                relevant = [d for d in sorted(data.qrels[query_id], key=int) if d in first_chunk][:PER_QUERY]
                cited = [{"number": n, "doc_id": d, "chunk_id": first_chunk[d][0]} for n, d in enumerate(relevant, 1)]
                passages = []
                for c in cited:
                    _, text, title = first_chunk[c["doc_id"]]
                    passages.append({**c, "title": title, "text": text, "rank": c["number"]})
                turn_id = uuid.uuid4().hex
                conn.execute(
                    "INSERT INTO turns (turn_id, thread_id, face, question, collection, status, answer, citations,"
                    " passages) VALUES (%s, %s, 'bench', %s, %s, 'done', '(simulated)', %s, %s)",
                    (turn_id, turn_id, question, COLLECTION, Jsonb(cited), Jsonb(passages)),
                )
                add_feedback(conn, turn_id, "up")
    try:
        report = run_embedding_rung(settings, COLLECTION, epochs=1)
        print(json.dumps(report, indent=1))
    finally:
        with open_knowledge_base(settings) as kb, kb.db.connection() as conn:
            conn.execute("DELETE FROM turns WHERE face = 'bench' AND collection = %s", (COLLECTION,))


if __name__ == "__main__":
    main()
