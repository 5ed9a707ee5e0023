"""`ladder eval run`: climb the ladder on an evaluation set, one rung at a time.

Each rung adds one technique to the one below it (the talk's ladder): the model alone, then
few-shot prompting, dense retrieval, hybrid search, HyDE, reranking, decomposition, fact-checking.
Every answer is scored with the non-LLM metrics (and the LLM-judged ones when a judge model is
given) and stored in Postgres as it is made, so a crashed run resumes where it stopped.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agent.core.config import Settings
from agent.core.context import SWITCHES
from agent.core.results import TurnResult
from agent.core.turn import LOGGED_SETTINGS, Agent, TurnRequest
from evals.eval_sets import EvalExample, EvalSet
from evals.ladder import rag_metrics as rm
from knowledge.base import KnowledgeBase
from knowledge.errors import LadderError

ADAPTER = "<adapter>"  # stands for the run's --adapter in a rung's settings

# Each rung: the switches it turns on and the settings it changes, on top of the rung below.
RUNGS: dict[str, tuple[dict[str, bool], dict[str, Any]]] = {
    "baseline": ({}, {}),
    "+fewshot": ({"fewshot": True}, {}),
    "+retrieval": ({"retrieval": True}, {"search_mode": "dense"}),
    "+hybrid": ({}, {"search_mode": "hybrid"}),
    "+hyde": ({"hyde": True}, {}),
    "+rerank": ({"rerank": True}, {}),
    "+decompose": ({"decompose": True}, {}),
    "+factcheck": ({"fact_check": True}, {}),
    # The model itself adapted (ladder finetune local), on the rungs below it, without the few-shot
    # example that fine-tuning should make unnecessary (fewer prompt tokens: the talk's claim).
    "+finetune": ({"fewshot": False}, {"chat_adapter": ADAPTER}),
}
DEFAULT_LADDER = tuple(r for r in RUNGS if r != "+finetune")  # +finetune needs an adapter named


class EvalRunError(LadderError, ValueError):
    """A ladder that cannot be climbed as given (unknown rung, unknown run)."""


@dataclass(frozen=True)
class Rung:
    name: str
    switches: dict[str, bool]
    settings: dict[str, Any]


def climb(names: list[str] | tuple[str, ...]) -> list[Rung]:
    """The rungs in order, each with everything the rungs below it switched on; ``+finetune`` sits on the
    highest rung asked below it (the adapter instead of the few-shot example), not on the whole ladder."""
    unknown = [n for n in names if n not in RUNGS]
    if unknown:
        raise EvalRunError(f"unknown rungs {unknown}; the ladder is {', '.join(RUNGS)}")
    switches = dict.fromkeys(SWITCHES, False)
    settings: dict[str, Any] = {"search_mode": "dense"}
    rungs = []
    for name in DEFAULT_LADDER:  # cumulative in the ladder's own order, whatever order was asked
        on, changed = RUNGS[name]
        switches.update(on)
        settings.update(changed)
        if name in names:
            rungs.append(Rung(name, dict(switches), dict(settings)))
    if "+finetune" in names:
        below = rungs[-1] if rungs else Rung("baseline", dict.fromkeys(SWITCHES, False), {"search_mode": "dense"})
        on, changed = RUNGS["+finetune"]
        rungs.append(Rung("+finetune", {**below.switches, **on}, {**below.settings, **changed}))
    return rungs


def collection_for(kb: KnowledgeBase, evalset: EvalSet, collection: str | None) -> str:
    """The collection the questions are asked of: the set's own documents, ingested once."""
    if collection:
        return collection
    if not evalset.documents:
        raise EvalRunError(f"{evalset.name} has no documents of its own: give --collection")
    name = f"eval-{evalset.name}"
    with tempfile.TemporaryDirectory() as folder:
        path = evalset.write_documents(Path(folder) / f"{evalset.name}.jsonl")
        kb.ingest([path], name, progress=False)  # unchanged documents are skipped on later runs
    return name


def score(
    example: EvalExample,
    answer: str,
    passages: list[dict[str, Any]],
    *,
    labels: tuple[str, ...] = (),
    embedder: Any = None,
    judge: Any = None,
    verdicts: list[dict[str, Any]] | None = None,
    drafted: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Every metric that applies to this example; NaN-free (a metric that does not apply is absent).
    ``verdicts`` and ``drafted`` (the fact-check's and the passages the draft was given) score the citations."""
    contexts = [p["text"] for p in passages]
    metrics: dict[str, float] = {}
    if verdicts and drafted:
        metrics["citation_quality"] = rm.citation_quality(verdicts, drafted, judge)
    if example.label and labels:
        metrics["label_accuracy"] = float(rm.label_from_answer(answer, labels) == example.label.lower())
        metrics["label_format"] = rm.label_format(answer, labels)
    if example.reference_answer:
        metrics["answer_similarity"] = rm.answer_similarity_nonllm(answer, example.reference_answer)
    if contexts:
        metrics["faithfulness_overlap"] = rm.faithfulness_nonllm(answer, contexts)
    if example.reference_doc_ids:
        retrieved = [p["doc_id"] for p in passages]
        metrics["context_recall_ids"] = rm.context_recall_ids(retrieved, example.reference_doc_ids)
        if retrieved:
            metrics["context_precision_ids"] = rm.context_precision_ids(retrieved, example.reference_doc_ids)
    if example.reference_contexts and contexts:
        metrics["context_precision_string"] = rm.context_precision_nonllm(contexts, example.reference_contexts)
        metrics["context_recall_string"] = rm.context_recall_nonllm(contexts, example.reference_contexts)
    if embedder is not None:
        metrics["answer_relevancy_embedding"] = rm.answer_relevancy_embedding(embedder, example.question, answer)
    if judge is not None:
        if contexts:
            metrics["faithfulness"] = rm.faithfulness(judge, example.question, answer, contexts)
        if embedder is not None:
            metrics["answer_relevancy"] = rm.answer_relevancy(judge, embedder, example.question, answer)
        if example.reference_answer and contexts:
            metrics["context_precision"] = rm.context_precision(
                judge, example.question, example.reference_answer, contexts
            )
            metrics["context_recall"] = rm.context_recall(judge, example.question, example.reference_answer, contexts)
    return {k: float(v) for k, v in metrics.items() if v == v}  # NaN != NaN: drop undefined values


def create_run(conn: psycopg.Connection, **fields: Any) -> int:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO eval_runs (dataset, collection, model, judge, rungs, settings, n_examples)"
            " VALUES (%(dataset)s, %(collection)s, %(model)s, %(judge)s, %(rungs)s, %(settings)s, %(n_examples)s)"
            " RETURNING id",
            {**fields, "rungs": Jsonb(fields["rungs"]), "settings": Jsonb(fields["settings"])},
        ).fetchone()
    assert row is not None
    return int(row[0])


def get_run(conn: psycopg.Connection, run_id: int) -> dict[str, Any]:
    run = conn.cursor(row_factory=dict_row).execute("SELECT * FROM eval_runs WHERE id = %s", (run_id,)).fetchone()
    if run is None:
        raise EvalRunError(f"no evaluation run {run_id}")
    return run


def _done(conn: psycopg.Connection, run_id: int) -> set[tuple[str, str]]:
    return {(r, e) for r, e in conn.execute("SELECT rung, example_id FROM eval_results WHERE run_id = %s", (run_id,))}


def _store(conn: psycopg.Connection, run_id: int, rung: str, position: int, row: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO eval_results (run_id, rung, example_id, position, question, answer, retrieved, metrics,"
            " usage, seconds, error, turn_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id, rung, example_id) DO NOTHING",
            (
                run_id,
                rung,
                row["example_id"],
                position,
                row["question"],
                row["answer"],
                Jsonb(row["retrieved"]),
                Jsonb(row["metrics"]),
                Jsonb(row["usage"]),
                row["seconds"],
                row["error"],
                row["turn_id"],
            ),
        )


@contextmanager
def _rung_agents(
    settings: Settings, kb: KnowledgeBase, model: str | None, adapter: str | None
) -> Iterator[Callable[[Rung], Agent]]:
    """An agent per rung on one model server; a rung with the adapter gets its own server, started when
    it is reached (and the base's stopped then: both at once would only compete for the same cores)."""
    from agent.core.assemble import open_agent

    with ExitStack() as stack:
        base = stack.enter_context(open_agent(settings, kb=kb, model=model))

        def agent_for(rung: Rung) -> Agent:
            nonlocal base
            changed = {k: (adapter if v == ADAPTER else v) for k, v in rung.settings.items()}
            if changed.get("chat_adapter") and base.settings.chat_adapter != changed["chat_adapter"]:
                stack.close()
                base = stack.enter_context(
                    open_agent(settings.model_copy(update={"chat_adapter": adapter}), kb=kb, model=model)
                )
            return base.variant(base.settings.model_copy(update=changed))

        yield agent_for


def run_ladder(
    settings: Settings,
    kb: KnowledgeBase,
    evalset: EvalSet,
    *,
    rungs: list[str] | tuple[str, ...] = DEFAULT_LADDER,
    model: str | None = None,
    judge_model: str | None = None,
    limit: int | None = None,
    concurrency: int = 1,
    collection: str | None = None,
    resume: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    adapter: str | None = None,
) -> int:
    """Run every rung over the examples (or finish run ``resume``); returns the run id.
    ``adapter`` is the LoRA adapter the +finetune rung serves."""
    ladder = climb(rungs)
    if any(r.settings.get("chat_adapter") == ADAPTER for r in ladder) and not adapter:
        raise EvalRunError("the +finetune rung serves an adapter: name it with --adapter (ladder finetune adapters)")
    examples = evalset.examples[:limit] if limit else evalset.examples
    target = collection_for(kb, evalset, collection)
    with kb.db.connection() as conn:
        if resume is not None:
            run_id = resume
            get_run(conn, run_id)
        else:
            run_id = create_run(
                conn,
                dataset=evalset.name,
                collection=target,
                model=model or settings.chat_model or settings.local_model,
                judge=judge_model,
                rungs=[r.name for r in ladder],
                settings={**{name: getattr(settings, name) for name in LOGGED_SETTINGS}, "adapter": adapter},
                n_examples=len(examples),
            )
        done = _done(conn, run_id)
    with ExitStack() as stack:
        agent_for = stack.enter_context(_rung_agents(settings, kb, model, adapter))
        judge = stack.enter_context(_judge(settings, judge_model)) if judge_model else None
        for rung in ladder:
            agent = agent_for(rung)
            todo = [(i, e) for i, e in enumerate(examples) if (rung.name, e.id) not in done]

            def one(item: tuple[int, EvalExample], agent: Agent = agent, rung: Rung = rung) -> None:
                position, example = item
                row = _answer(agent, kb, evalset, example, rung, target, judge)
                with kb.db.connection() as conn:
                    _store(conn, run_id, rung.name, position, row)
                if progress:
                    progress(rung.name, position, len(examples))

            with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                list(pool.map(one, todo))
    with kb.db.connection() as conn, conn.transaction():
        conn.execute("UPDATE eval_runs SET status = 'done', finished_at = now() WHERE id = %s", (run_id,))
    return run_id


@contextmanager
def _judge(settings: Settings, judge_model: str) -> Iterator[Any]:
    """A JSON caller on the judge model, for the LLM-judged metrics."""
    from agent.models.calls import ModelCaller
    from agent.models.endpoint import open_chat_endpoint

    with open_chat_endpoint(settings, judge_model) as endpoint:
        yield ModelCaller(endpoint.client, endpoint.model, max_calls=10**9, json_mode=endpoint.json_mode)  # type: ignore[arg-type]


def _answer(
    agent: Agent,
    kb: KnowledgeBase,
    evalset: EvalSet,
    example: EvalExample,
    rung: Rung,
    collection: str,
    judge: Any,
) -> dict[str, Any]:
    started = time.perf_counter()
    request = TurnRequest(evalset.prompt(example), collection, None, rung.switches, face="eval")
    try:
        result: TurnResult | None = agent.ask(request)
        error = result.error if result else None
    except Exception as exc:  # one bad example is recorded as an error, the run goes on
        result, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    passages = result.retrieved if result else []
    answer = result.answer if result else ""
    metrics = score(
        example, answer, passages, labels=evalset.labels, embedder=kb.embedder, judge=judge,
        verdicts=result.fact_check if result else None, drafted=list(result.passages) if result else None,
    )  # fmt: skip
    return {
        "example_id": example.id,
        "question": example.question,
        "answer": answer,
        "retrieved": [{"doc_id": p["doc_id"], "chunk_id": p["chunk_id"], "rank": p["rank"]} for p in passages],
        "metrics": metrics,
        "usage": result.usage if result else {},
        "seconds": round(seconds, 3),
        "error": error,
        "turn_id": result.turn_id if result else None,
    }
