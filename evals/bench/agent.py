"""The agent benchmark: graph overhead, parallel fan-out, the embedded model's speed, decomposition recall.

Ratios are measured against a baseline run in the same process; absolute timings are printed
beside them for the README, with the machine they came from.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openai
from rich.console import Console

from agent.core.assemble import open_agent, open_knowledge_base
from agent.core.config import Settings
from agent.core.events import StepEvent, TokenEvent, TurnEvent
from agent.core.steps.decompose import split_question
from agent.core.turn import Agent, TurnRequest, open_checkpointer
from agent.models.calls import ModelCaller
from agent.models.endpoint import ChatEndpoint, open_chat_endpoint
from evals.datasets import load_fanoutqa
from evals.doubles.scripted_agent import ScriptedModel
from evals.doubles.scripted_model import ScriptedOpenAI
from knowledge.base import KnowledgeBase

console = Console()
COLLECTION = "bench-agent"
DOCS = Path(__file__).resolve().parents[2] / "docs"
ONE_PART = "How do I point Ladder at my own PostgreSQL server?"
TWO_PARTS = "How do I point Ladder at my own PostgreSQL server, and what happens when an ingest is killed midway?"
FOUR_PARTS = (
    "How do I point Ladder at my own PostgreSQL server and how are PDF files split into chunks and "
    "what does hybrid search do and where does the embedded database keep its data?"
)


def _local(settings: Settings) -> Settings:
    """The same settings with no endpoint configured, so the embedded model serves them."""
    return settings.model_copy(update={"openai_base_url": None, "openai_api_key": None})


def _scripted_agent(kb: KnowledgeBase, settings: Settings, server: ScriptedOpenAI, checkpointer: Any) -> Agent:
    client = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0, timeout=60)
    return Agent(settings, kb, ChatEndpoint(client, "scripted"), checkpointer)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_overhead(kb: KnowledgeBase, settings: Settings, turns: int) -> dict[str, float]:
    """Turn time with a model that answers instantly: the graph, retrieval and bookkeeping."""
    with ScriptedOpenAI(chat=ScriptedModel()) as server, open_checkpointer(kb.db.url) as checkpointer:
        agent = _scripted_agent(kb, settings, server, checkpointer)
        agent.ask(TurnRequest(TWO_PARTS, COLLECTION))  # warm-up
        times = [_timed(lambda: agent.ask(TurnRequest(TWO_PARTS, COLLECTION))) * 1000 for _ in range(turns)]
    return {"turns": turns, "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def bench_fan_out(kb: KnowledgeBase, settings: Settings, delay_s: float = 1.0) -> dict[str, float]:
    """A 4-part question against a 1-part one with a model taking ``delay_s`` per call (rerank on,
    so every research branch calls the model): parallel branches keep the ratio near 1."""
    switches = {"rerank": True}
    with ScriptedOpenAI(chat=ScriptedModel(), delay_s=delay_s) as server, open_checkpointer(kb.db.url) as saver:
        agent = _scripted_agent(kb, settings, server, saver)
        one = min(_timed(lambda: agent.ask(TurnRequest(ONE_PART, COLLECTION, switches=switches))) for _ in range(2))
        four = min(_timed(lambda: agent.ask(TurnRequest(FOUR_PARTS, COLLECTION, switches=switches))) for _ in range(2))
        calls = agent.ask(TurnRequest(FOUR_PARTS, COLLECTION, switches=switches)).usage["model_calls"]
    return {"one_part_s": one, "four_part_s": four, "ratio": four / one, "four_part_model_calls": calls}


TWO_PART_QUESTIONS = (
    TWO_PARTS,
    "Which file types can I ingest, and what happens to a file that cannot be read?",
    "Where does the embedded database keep its data, and how are migrations applied?",
)
WARM_UP = "What does hybrid search combine?"


def _timed_turn(agent: Agent, question: str) -> dict[str, Any]:
    """One turn with the time of its first streamed word and of each step."""
    started = time.perf_counter()
    first_token: list[float] = []
    steps: dict[str, float] = {}

    def watch(event: TurnEvent) -> None:
        if isinstance(event, TokenEvent) and not first_token:
            first_token.append(time.perf_counter() - started)
        elif isinstance(event, StepEvent) and event.status == "end" and event.seconds is not None:
            steps[event.step] = steps.get(event.step, 0.0) + event.seconds

    result = agent.ask(TurnRequest(question, COLLECTION), on_event=watch)
    return {
        "question": question,
        "total_s": time.perf_counter() - started,
        "first_token_s": first_token[0] if first_token else None,
        "steps_s": steps,
        "model_calls": result.usage["model_calls"],
        "claims": len(result.fact_check),
        "error": result.error,
        "answer": result.answer,
        "turn_id": result.turn_id,
    }


def _floor(agent: Agent, kb: KnowledgeBase, turn_id: str) -> dict[str, Any]:
    """One completion that reads the turn's draft prompt and writes its answer, from a cold context.

    The same messages at temperature 0 give the same answer, so the floor reads exactly as many
    prompt tokens as the draft and writes exactly as many tokens: what any turn must at least cost.
    """
    with kb.db.connection() as conn:
        row = conn.execute("SELECT model_calls FROM turns WHERE turn_id = %s", (turn_id,)).fetchone()
    draft = next(c for c in row[0] if c["step"] == "draft")
    client, model = agent.endpoint.client, agent.endpoint.model
    # An unrelated call first, so the floor cannot reuse the turn's evaluated prefix.
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say OK."}], max_tokens=2)
    started = time.perf_counter()
    response = client.chat.completions.create(
        model=model, messages=draft["messages"], temperature=0, max_tokens=agent.settings.answer_max_tokens
    )
    usage = response.usage
    return {
        "floor_s": time.perf_counter() - started,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
    }


def bench_embedded(kb: KnowledgeBase, settings: Settings) -> dict[str, Any]:
    """Two-part questions end to end on the embedded model, each against its floor (same process)."""
    local = _local(settings)
    turns = []
    with open_agent(local, kb=kb) as agent:
        _timed_turn(agent, WARM_UP)  # the weights in memory, the system prompt in the context
        for question in TWO_PART_QUESTIONS:
            turn = _timed_turn(agent, question)
            turn.update(_floor(agent, kb, turn["turn_id"]))
            turn["ratio"] = turn["total_s"] / turn["floor_s"]
            turns.append(turn)
    firsts = [t["first_token_s"] for t in turns if t["first_token_s"] is not None]
    return {
        "model": agent.model,
        "threads": local.llm_threads or "auto",
        "turns": turns,
        "total_s": statistics.median(t["total_s"] for t in turns),
        "first_token_s": statistics.median(firsts) if firsts else None,
        "floor_s": statistics.median(t["floor_s"] for t in turns),
        "ratio": statistics.median(t["ratio"] for t in turns),
        "errors": [t["error"] for t in turns if t["error"]],
    }


def bench_decomposition(kb: KnowledgeBase, settings: Settings, limit: int, threshold: float = 0.8) -> dict[str, Any]:
    """How many FanOutQA gold sub-questions the decomposition recovers (cosine match of embeddings)."""
    items = load_fanoutqa()[:limit]
    local = _local(settings)
    matched = total = matched_independent = total_independent = 0
    seconds: list[float] = []
    with open_chat_endpoint(local) as endpoint:
        caller = ModelCaller(endpoint.client, endpoint.model, max_calls=10_000, json_mode=endpoint.json_mode)
        for item in items:
            start = time.perf_counter()
            predicted, _ = split_question(caller, item.question, max_parts=10, fewshot=True)
            seconds.append(time.perf_counter() - start)
            gold_vectors = kb.embedder.embed(item.gold)
            predicted_vectors = kb.embedder.embed(predicted)
            best = (gold_vectors @ predicted_vectors.T).max(axis=1)
            hits = best >= threshold
            matched += int(hits.sum())
            total += len(item.gold)
            matched_independent += int(hits[np.array(item.independent)].sum())
            total_independent += int(sum(item.independent))
    return {
        "questions": len(items),
        "gold_sub_questions": total,
        "recall": matched / max(total, 1),
        "recall_independent": matched_independent / max(total_independent, 1),
        "threshold": threshold,
        "seconds_per_question": statistics.mean(seconds) if seconds else 0.0,
    }


def run_agent_benchmark(
    settings: Settings, *, turns: int = 20, embedded: bool = True, fanout_questions: int = 20
) -> dict[str, Any]:
    """Run every part, print it, and return the figures."""
    figures: dict[str, Any] = {}
    with open_knowledge_base(settings) as kb:
        kb.ingest([DOCS], COLLECTION, progress=False)
        figures["overhead"] = overhead = bench_overhead(kb, settings, turns)
        console.print(
            f"graph overhead with an instant scripted model, two-part question ({turns} turns):"
            f" p50 {overhead['p50_ms']:.0f} ms, p95 {overhead['p95_ms']:.0f} ms"
        )
        figures["fan_out"] = fan = bench_fan_out(kb, settings)
        console.print(
            f"fan-out with a 1 s/call scripted model: 1-part {fan['one_part_s']:.2f} s, 4-part"
            f" {fan['four_part_s']:.2f} s ({fan['four_part_model_calls']} calls):"
            f" ratio {fan['ratio']:.2f} (goal <= 1.5)"
        )
        if embedded:
            figures["embedded"] = emb = bench_embedded(kb, settings)
            for turn in emb["turns"]:
                steps = ", ".join(f"{k} {v:.1f}" for k, v in turn["steps_s"].items() if v >= 0.05)
                console.print(
                    f"  {turn['question']!r}: {turn['total_s']:.1f} s, first words {turn['first_token_s'] or 0:.1f} s,"
                    f" floor {turn['floor_s']:.1f} s ({turn['prompt_tokens']} prompt + {turn['completion_tokens']}"
                    f" answer tokens): ratio {turn['ratio']:.2f}; {turn['model_calls']} calls; {steps}",
                    highlight=False,
                )
            console.print(
                f"embedded {emb['model']} ({len(emb['turns'])} two-part questions, median): end to end"
                f" {emb['total_s']:.1f} s (goal <= 25), first words {emb['first_token_s'] or float('nan'):.1f} s"
                f" (goal <= 6), floor {emb['floor_s']:.1f} s: ratio {emb['ratio']:.2f} (goal <= 1.5)"
                + (f"; errors: {emb['errors']}" if emb["errors"] else "")
            )
            if fanout_questions:
                figures["decomposition"] = dec = bench_decomposition(kb, settings, fanout_questions)
                console.print(
                    f"FanOutQA decomposition ({dec['questions']} questions, {dec['gold_sub_questions']} gold"
                    f" sub-questions, cosine >= {dec['threshold']}): recall {dec['recall']:.3f};"
                    f" of sub-questions that need no earlier answer {dec['recall_independent']:.3f};"
                    f" {dec['seconds_per_question']:.1f} s per question"
                )
    return figures
