"""The follow-up benchmark: does a follow-up find its document once the condense step has rewritten it?

Each triple in ``data/followups.jsonl`` is a first question with a short answer (the thread so far), a
follow-up that leans on it ("How many women took part in that trial?"), the document that answers the
follow-up, and a standalone question written by hand. They were written by hand from the documents of
two shared corpora with their own document ids: PubMedQA's abstracts (MIT) and CISI's (a public test
collection); see ``evals.datasets``. Retrieval recall@5 of the follow-up is measured three ways in the
same run, over the same collections and search mode as a turn: the follow-up as typed (the baseline),
rewritten by the real condense step with the configured chat model, and the hand-written standalone
question (the ceiling). The seconds the step costs are printed beside a bare one-token call to the
same model, measured in the same run.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agent.core.assemble import open_knowledge_base
from agent.core.config import Settings
from agent.core.steps.condense import Condensed, condense_question
from agent.models.calls import ModelCaller
from agent.models.endpoint import ChatEndpoint, open_chat_endpoint
from evals.datasets import RetrievalDataset, load_cisi, load_pubmedqa
from knowledge.base import KnowledgeBase
from knowledge.errors import LadderError

console = Console()
DATA = Path(__file__).resolve().parent / "data" / "followups.jsonl"
CORPORA = {"pubmedqa": load_pubmedqa, "cisi": load_cisi}
WAYS = ("literal", "rewritten", "standalone")
K = 5  # recall@5: the relevant document among the first five documents found
CHUNK_DEPTH = 30  # chunks fetched per query before collapsing to documents
BARE_CALLS = 3
GOAL_RATIO = 0.9  # rewritten within 10% of the hand-written standalone question


class FollowUpDataError(LadderError, ValueError):
    """The follow-up triples cannot be read or name a corpus that does not exist."""


@dataclass(frozen=True)
class FollowUp:
    id: str
    corpus: str
    doc_id: str
    first: str
    answer: str
    follow_up: str
    standalone: str

    def history(self) -> list[dict[str, str]]:
        """The thread before the follow-up, as the graph's state keeps it."""
        return [{"role": "user", "content": self.first}, {"role": "assistant", "content": self.answer}]


def load_followups(path: Path = DATA) -> list[FollowUp]:
    """The triples, each checked for every field; a clear error names the line that is wrong."""
    names = [f.name for f in fields(FollowUp)]
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            values = {name: record[name] for name in names}
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise FollowUpDataError(f"{path}:{number}: not a follow-up triple ({exc!r})") from None
        if not all(isinstance(v, str) and v.strip() for v in values.values()):
            raise FollowUpDataError(f"{path}:{number}: every field must be non-empty text")
        if values["corpus"] not in CORPORA:
            raise FollowUpDataError(f"{path}:{number}: unknown corpus {values['corpus']!r}; known: {sorted(CORPORA)}")
        items.append(FollowUp(**values))
    return items


def ingest_corpora(kb: KnowledgeBase, datasets: dict[str, RetrievalDataset]) -> dict[str, str]:
    """Each corpus in a collection of its own (a rerun skips the documents already stored)."""
    collections = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, dataset in datasets.items():
            collection = f"bench-followups-{name}"
            kb.ingest([dataset.write_jsonl(Path(folder) / f"{name}.jsonl")], collection, progress=False)
            collections[name] = collection
    return collections


def found_at_k(kb: KnowledgeBase, collection: str, query: str, doc_id: str, mode: str) -> bool:
    """Whether ``doc_id`` is among the first K documents a search for ``query`` finds."""
    hits = kb.search(query, collection, k=CHUNK_DEPTH, mode=mode)
    return doc_id in list(dict.fromkeys(hit.doc_id for hit in hits))[:K]


def condense_all(endpoint: ChatEndpoint, items: list[FollowUp]) -> list[tuple[Condensed, float, tuple[int, int]]]:
    """Every follow-up through the real condense step (its rule, prompt and fallback): the result, its
    seconds, and the (prompt, completion) tokens the endpoint counted, which read the same on any machine."""
    out = []
    for item in items:
        caller = ModelCaller(endpoint.client, endpoint.model, max_calls=2, json_mode=endpoint.json_mode)  # type: ignore[arg-type]
        started = time.perf_counter()
        condensed = condense_question(caller, item.follow_up, item.history())
        seconds = time.perf_counter() - started
        out.append((condensed, seconds, (caller.stats.prompt_tokens, caller.stats.completion_tokens)))
    return out


def bare_call_seconds(endpoint: ChatEndpoint, calls: int = BARE_CALLS) -> float:
    """The baseline: the median seconds of a one-token reply to a one-word prompt, the cost of any call."""
    caller = ModelCaller(endpoint.client, endpoint.model, max_calls=calls)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        caller.text("bare", [{"role": "user", "content": "Hi"}], max_tokens=1)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure_followups(
    kb: KnowledgeBase, endpoint: ChatEndpoint, items: list[FollowUp], collections: dict[str, str], mode: str
) -> dict[str, Any]:
    """Recall@K of every follow-up three ways, and what condensing cost; the report as a dict."""
    bare = bare_call_seconds(endpoint)
    rows = []
    for item, (condensed, seconds, tokens) in zip(items, condense_all(endpoint, items), strict=True):
        queries = {"literal": item.follow_up, "rewritten": condensed.standalone, "standalone": item.standalone}
        found = {way: found_at_k(kb, collections[item.corpus], q, item.doc_id, mode) for way, q in queries.items()}
        rows.append(
            {
                "id": item.id,
                "corpus": item.corpus,
                "follow_up": item.follow_up,
                "rewritten": condensed.standalone,
                "model_called": condensed.reason is not None,
                "fallback": condensed.fallback,
                "seconds": round(seconds, 3),
                "tokens": tokens,
                "found": found,
            }
        )
    return summarise(rows, bare)


def _recall(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {way: round(sum(r["found"][way] for r in rows) / len(rows), 3) if rows else 0.0 for way in WAYS}


def summarise(rows: list[dict[str, Any]], bare_seconds: float) -> dict[str, Any]:
    """The figures: recall per way (all and per corpus), the goal, and the step's seconds against the baseline."""
    recall = _recall(rows)
    seconds = [r["seconds"] for r in rows] or [0.0]
    mean = statistics.fmean(seconds)
    ratio = recall["rewritten"] / recall["standalone"] if recall["standalone"] else 0.0
    return {
        "triples": len(rows),
        "k": K,
        "recall": recall,
        "by_corpus": {c: _recall([r for r in rows if r["corpus"] == c]) for c in sorted({r["corpus"] for r in rows})},
        "rewritten_to_standalone": round(ratio, 3),
        "within_10pct_of_standalone": ratio >= GOAL_RATIO,
        "rewritten_minus_literal": round(recall["rewritten"] - recall["literal"], 3),
        "model_calls": sum(1 for r in rows if r["model_called"]),
        "fallbacks": {r["id"]: r["fallback"] for r in rows if r["fallback"]},
        "condense_seconds": {"mean": round(mean, 3), "p95": round(float(np.percentile(seconds, 95)), 3)},
        "condense_tokens": {
            "prompt_mean": round(statistics.fmean(r["tokens"][0] for r in rows), 1) if rows else 0.0,
            "completion_mean": round(statistics.fmean(r["tokens"][1] for r in rows), 1) if rows else 0.0,
        },
        "bare_call_seconds": round(bare_seconds, 3),
        "condense_to_bare_call": round(mean / bare_seconds, 2) if bare_seconds else None,
        "rows": rows,
    }


def missing_documents(items: list[FollowUp], datasets: dict[str, RetrievalDataset]) -> list[str]:
    """Triples whose relevant document is not in their corpus: a broken triple, reported as a problem."""
    ids = {name: {doc["id"] for doc in dataset.documents} for name, dataset in datasets.items()}
    return [
        f"{item.id}: no document {item.doc_id!r} in {item.corpus}"
        for item in items
        if item.doc_id not in ids[item.corpus]
    ]


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"follow-ups: recall@{report['k']} of {report['triples']} triples")
    table.add_column("corpus")
    for way in WAYS:
        table.add_column(way, justify="right")
    for corpus, recall in [*report["by_corpus"].items(), ("all", report["recall"])]:
        table.add_row(corpus, *(f"{recall[way]:.3f}" for way in WAYS))
    console.print(table)
    seconds = report["condense_seconds"]
    console.print(
        f"rewritten / standalone: {report['rewritten_to_standalone']} (goal ≥ {GOAL_RATIO}); "
        f"rewritten - literal: {report['rewritten_minus_literal']}\n"
        f"condense: {report['model_calls']} model calls, {len(report['fallbacks'])} fallbacks; "
        f"seconds mean {seconds['mean']}, p95 {seconds['p95']} = {report['condense_to_bare_call']}x "
        f"a bare one-token call ({report['bare_call_seconds']} s, same run); tokens per call: "
        f"{report['condense_tokens']['prompt_mean']} in, {report['condense_tokens']['completion_mean']} out",
        highlight=False,
        markup=False,
    )
    for row in report["rows"]:
        if row["found"]["standalone"] and not row["found"]["rewritten"]:
            console.print(
                f"  missed: {row['id']}: {row['follow_up']!r} → {row['rewritten']!r}", highlight=False, markup=False
            )


def run_followups_benchmark(
    settings: Settings, *, out_file: Path | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Ingest the corpora, condense every follow-up with the configured chat model, print and return the report."""
    items = load_followups()[:limit]
    datasets = {name: CORPORA[name]() for name in sorted({item.corpus for item in items})}
    problems = missing_documents(items, datasets)
    with open_knowledge_base(settings) as kb, open_chat_endpoint(settings) as endpoint:
        collections = ingest_corpora(kb, datasets)
        report = measure_followups(kb, endpoint, items, collections, settings.search_mode)
    report = {"model": endpoint.model, "search_mode": settings.search_mode, **report, "problems": problems}
    print_report(report)
    if out_file is not None:
        out_file.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report
