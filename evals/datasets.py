"""Readers for the public data in ../shared/data, as retrieval datasets (documents, queries, qrels)."""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_ENV = "LADDER_SHARED_DATA"


def shared_data_dir() -> Path:
    """The shared data folder: $LADDER_SHARED_DATA, else ../shared/data beside the checkout."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass
class RetrievalDataset:
    """Documents to ingest, queries to ask, and which documents answer each query."""

    name: str
    documents: list[dict[str, str]]  # {"id", "title", "text"}
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def write_jsonl(self, path: Path) -> Path:
        """The documents in Ladder's JSONL ingest format."""
        with path.open("w", encoding="utf-8") as handle:
            for doc in self.documents:
                record = {"id": doc["id"], "text": doc["text"]}
                if doc.get("title"):
                    record["title"] = doc["title"]
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path


def _cisi_records(text: str) -> dict[str, dict[str, str]]:
    records: dict[str, dict[str, str]] = {}
    for block in re.split(r"^\.I\s+", text, flags=re.M)[1:]:
        first, _, rest = block.partition("\n")
        fields: dict[str, str] = {}
        for match in re.finditer(r"^\.([A-Z])\s*\n(.*?)(?=^\.[A-Z]\s*$|\Z)", rest, flags=re.M | re.S):
            fields[match.group(1)] = " ".join(match.group(2).split())
        records[first.strip()] = fields
    return records


def load_cisi(folder: Path | None = None) -> RetrievalDataset:
    """CISI: 1460 abstracts, the 76 queries that have relevance judgements."""
    folder = folder or shared_data_dir() / "cisi"
    docs = _cisi_records((folder / "CISI.ALL").read_text(encoding="latin-1"))
    queries = _cisi_records((folder / "CISI.QRY").read_text(encoding="latin-1"))
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "CISI.REL").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            qrels.setdefault(parts[0], {})[parts[1]] = 1
    return RetrievalDataset(
        name="cisi",
        documents=[{"id": i, "title": f.get("T", ""), "text": f.get("W", "")} for i, f in docs.items()],
        queries={q: queries[q].get("W", "") for q in qrels if q in queries},
        qrels={q: rels for q, rels in qrels.items() if q in queries},
    )


def read_pubmedqa(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """PubMedQA (PQA-L dev) by PubMed id, each item with its abstract joined under ``"ABSTRACT"``."""
    path = path or shared_data_dir() / "pubmedqa" / "pqal_dev.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    for item in raw.values():
        contexts = item["CONTEXTS"]
        if isinstance(contexts, str):  # this copy stores lists as their Python repr
            contexts = ast.literal_eval(contexts)
        item["ABSTRACT"] = "\n\n".join(contexts)
    return raw


def load_pubmedqa(path: Path | None = None) -> RetrievalDataset:
    """PubMedQA (PQA-L dev): 500 abstracts; each question's own abstract is its relevant document."""
    documents, queries, qrels = [], {}, {}
    for pmid, item in read_pubmedqa(path).items():
        documents.append({"id": pmid, "title": "", "text": item["ABSTRACT"]})
        queries[pmid] = item["QUESTION"]
        qrels[pmid] = {pmid: 1}
    return RetrievalDataset(name="pubmedqa", documents=documents, queries=queries, qrels=qrels)


@dataclass
class DecompositionItem:
    id: str
    question: str
    gold: list[str]
    independent: list[bool]  # a gold sub-question that needs no earlier answer


def load_fanoutqa(path: Path | None = None) -> list[DecompositionItem]:
    """FanOutQA dev: multi-part questions with their gold top-level decomposition (CC BY-SA 4.0)."""
    path = path or shared_data_dir() / "fanoutqa" / "fanout_dev_part.json"
    items = []
    for raw in json.loads(path.read_text(encoding="utf-8")):
        parts = raw.get("decomposition") or []
        items.append(
            DecompositionItem(
                id=raw["id"],
                question=raw["question"],
                gold=[p["question"] for p in parts],
                independent=[not p.get("depends_on") for p in parts],
            )
        )
    return items
