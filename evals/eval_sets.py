"""Evaluation sets in one JSONL format, and readers for the shared data and Ladder's own exports.

A line: ``{"id", "question", "reference_answer"?, "reference_contexts"?, "reference_doc_ids"?,
"label"?}`` (what `ladder export evalset` writes). A set may also carry the documents its
questions are about (ingested into their own collection before a run) and an instruction that is
appended to every question (PubMedQA: begin with yes, no or maybe).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.datasets import RetrievalDataset, load_cisi, load_fanoutqa, read_pubmedqa, shared_data_dir
from knowledge.errors import LadderError

FIELDS = ("id", "question", "reference_answer", "reference_contexts", "reference_doc_ids", "label")
BUILT_IN = ("pubmedqa", "pubmedqa-train", "pubmedqa-heldout", "cisi", "fanoutqa", "sql-eval")
PUBMEDQA_HELDOUT = 100  # questions kept out of fine-tuning (pubmedqa-heldout); the other 400 are pubmedqa-train


class EvalSetError(LadderError, ValueError):
    """An evaluation set that cannot be read; the message names the file and line."""


@dataclass
class EvalExample:
    id: str
    question: str
    reference_answer: str | None = None
    reference_contexts: list[str] | None = None
    reference_doc_ids: list[str] | None = None
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class EvalSet:
    name: str
    examples: list[EvalExample]
    documents: list[dict[str, str]] = field(default_factory=list)  # {"id", "title", "text"}
    instruction: str = ""
    labels: tuple[str, ...] = ()

    def write_documents(self, path: Path) -> Path:
        """The set's documents in Ladder's JSONL ingest format."""
        return RetrievalDataset(self.name, self.documents, {}, {}).write_jsonl(path)

    def prompt(self, example: EvalExample) -> str:
        return f"{example.question} {self.instruction}".strip() if self.instruction else example.question


def _strings(value: Any, name: str, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EvalSetError(f"{where}: {name} must be a list of strings")
    return value


def read_jsonl(path: Path) -> EvalSet:
    """An evaluation set from a JSONL file in Ladder's format; every line is checked."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalSetError(f"cannot read {path}: {exc}") from exc
    examples, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("question"), str) or not record["question"]:
            raise EvalSetError(f"{where}: each line needs a non-empty string 'question'")
        unknown = set(record) - set(FIELDS)
        if unknown:
            raise EvalSetError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(FIELDS)})")
        example_id = str(record.get("id") or number)
        if example_id in seen:
            raise EvalSetError(f"{where}: the id {example_id!r} appears twice")
        seen.add(example_id)
        examples.append(
            EvalExample(
                id=example_id,
                question=record["question"],
                reference_answer=record.get("reference_answer"),
                reference_contexts=_strings(record.get("reference_contexts"), "reference_contexts", where),
                reference_doc_ids=_strings(record.get("reference_doc_ids"), "reference_doc_ids", where),
                label=record.get("label"),
            )
        )
    if not examples:
        raise EvalSetError(f"{path}: no examples")
    return EvalSet(name=path.stem, examples=examples)


def write_jsonl(evalset: EvalSet, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for example in evalset.examples:
            handle.write(json.dumps(example.to_dict(), ensure_ascii=False) + "\n")
    return path


def pubmedqa_set(path: Path | None = None) -> EvalSet:
    """PubMedQA (PQA-L dev): a yes/no/maybe label, the long answer, and the question's own abstract."""
    examples, documents = [], []
    for pmid, item in read_pubmedqa(path).items():
        abstract = item["ABSTRACT"]
        documents.append({"id": pmid, "title": "", "text": abstract})
        examples.append(
            EvalExample(
                id=pmid,
                question=item["QUESTION"],
                reference_answer=item.get("LONG_ANSWER"),
                reference_contexts=[abstract],
                reference_doc_ids=[pmid],
                label=item.get("final_decision"),
            )
        )
    return EvalSet(
        "pubmedqa",
        examples,
        documents,
        instruction="Begin your answer with yes, no or maybe.",
        labels=("yes", "no", "maybe"),
    )


def pubmedqa_part(part: str, path: Path | None = None) -> EvalSet:
    """PubMedQA split for fine-tuning: ``heldout`` (100 questions) or ``train`` (the other 400), no
    question in both; fixed by a hash of each PubMed id, so every run and machine splits alike. Both
    keep all 500 abstracts as documents: retrieval searches the same collection either way."""
    whole = pubmedqa_set(path)
    ranked = sorted(whole.examples, key=lambda e: hashlib.sha256(f"pubmedqa-split:{e.id}".encode()).hexdigest())
    held = {e.id for e in ranked[:PUBMEDQA_HELDOUT]}
    chosen = [e for e in whole.examples if (e.id in held) == (part == "heldout")]
    return EvalSet(f"pubmedqa-{part}", chosen, whole.documents, whole.instruction, whole.labels)


def cisi_set() -> EvalSet:
    """CISI: 1460 library-science abstracts and 76 queries with their relevant abstracts (retrieval only)."""
    data = load_cisi()
    examples = [
        EvalExample(id=qid, question=text, reference_doc_ids=sorted(data.qrels[qid], key=int))
        for qid, text in data.queries.items()
    ]
    return EvalSet("cisi", examples, data.documents)


def fanoutqa_set() -> EvalSet:
    """FanOutQA dev: multi-part questions; the reference answer is the gold answer as text."""
    raw = json.loads((shared_data_dir() / "fanoutqa" / "fanout_dev_part.json").read_text(encoding="utf-8"))
    answers = {r["id"]: r.get("answer") for r in raw}
    examples = [
        EvalExample(id=item.id, question=item.question, reference_answer=str(answers.get(item.id) or "") or None)
        for item in load_fanoutqa()
    ]
    return EvalSet("fanoutqa", examples)


def sqleval_set() -> EvalSet:
    """defog's sql-eval questions; the reference answer is the gold SQL, the label the category."""
    from evals.sql.harness import read_questions

    questions = read_questions(shared_data_dir() / "sql-eval" / "questions_postgres.csv")
    examples = [
        EvalExample(id=str(q.id), question=q.prompt, reference_answer=q.gold, label=q.category) for q in questions
    ]
    return EvalSet("sql-eval", examples)


def named_set(conn: Any, name: str, version: int | None = None) -> EvalSet:
    """A named set kept in Postgres (agent.records.evalsets) at ``version`` (default: its current one).

    The set's name records the version (``set:NAME@3``), so a run says exactly what it was scored against."""
    from agent.records.evalsets import set_items

    chosen, items = set_items(conn, name, version)
    if not items:
        raise EvalSetError(f"eval set {name!r} has no items at version {chosen}")
    examples = [
        EvalExample(
            id=item["item_id"],
            question=item["question"],
            reference_answer=item["reference_answer"],
            reference_contexts=list(item["reference_contexts"]) or None,
            reference_doc_ids=list(item["reference_doc_ids"]) or None,
        )
        for item in items
    ]
    return EvalSet(f"set:{name}@{chosen}", examples)


def load_eval_set(name: str) -> EvalSet:
    """A built-in set by name (pubmedqa, fanoutqa, sql-eval) or a JSONL file by path."""
    if name == "pubmedqa":
        return pubmedqa_set()
    if name in ("pubmedqa-train", "pubmedqa-heldout"):
        return pubmedqa_part(name.removeprefix("pubmedqa-"))
    if name == "cisi":
        return cisi_set()
    if name == "fanoutqa":
        return fanoutqa_set()
    if name == "sql-eval":
        return sqleval_set()
    path = Path(name)
    if not path.is_file():
        raise EvalSetError(f"no evaluation set {name!r}: use {', '.join(BUILT_IN)} or a JSONL file")
    return read_jsonl(path)
