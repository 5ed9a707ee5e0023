"""The issue's acceptance path: ingest the PubMedQA abstracts, ask its questions, find the abstracts."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.datasets import load_pubmedqa
from knowledge.base import KnowledgeBase
from knowledge.chunking import ChunkingConfig


@pytest.mark.slow
def test_pubmedqa_questions_find_their_abstracts(embedded_db, embedder, shared_data: Path, tmp_path: Path) -> None:
    dataset = load_pubmedqa(shared_data / "pubmedqa" / "pqal_dev.json")
    kb = KnowledgeBase(embedded_db, embedder, chunking=ChunkingConfig())
    report = kb.ingest([dataset.write_jsonl(tmp_path / "pubmedqa.jsonl")], "pubmedqa", progress=False)
    assert report.documents_added == 500 and not report.skipped
    questions = list(dataset.queries.items())[::5]  # 100 of the 500
    found_at_1 = found_in_5 = 0
    for pmid, question in questions:
        ranked = list(dict.fromkeys(hit.doc_id for hit in kb.search(question, "pubmedqa", k=15)))
        found_at_1 += ranked[:1] == [pmid]
        found_in_5 += pmid in ranked[:5]
    assert found_in_5 / len(questions) >= 0.97
    assert found_at_1 / len(questions) >= 0.9
