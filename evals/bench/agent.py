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
from agent.core.events import TokenEvent, TurnEvent
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


def bench_embedded(kb: KnowledgeBase, settings: Settings) -> dict[str, Any]:
    """The embedded model end to end: a two-part question, time to first token, tokens per second."""
    local = _local(settings)
    with open_agent(local, kb=kb) as agent:
        started = time.perf_counter()
        first_token: list[float] = []

        token_times: list[float] = []

        def watch(event: TurnEvent) -> None:
            now = time.perf_counter() - started
            if isinstance(event, TokenEvent):
                token_times.append(now)
                if not first_token:
                    first_token.append(now)

        result = agent.ask(TurnRequest(TWO_PARTS, COLLECTION), on_event=watch)
        total = time.perf_counter() - started
    return {
        "model": agent.model,
        "threads": local.llm_threads or "auto",
        "total_s": total,
        "first_token_s": first_token[0] if first_token else None,
        "sub_questions": result["sub_questions"],
        "model_calls": result.usage["model_calls"],
        "completion_tokens": result["usage"]["completion_tokens"],
        # Streamed pieces are single tokens with llama.cpp's server: their rate is the decode speed.
        "tokens_per_s": (len(token_times) - 1) / max(token_times[-1] - token_times[0], 1e-9)
        if len(token_times) > 1
        else None,
        "error": result.get("error"),
        "answer": result["answer"],
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
            console.print(
                f"embedded {emb['model']}: two-part question in {emb['total_s']:.1f} s (goal <= 60),"
                f" first token after {emb['first_token_s'] or float('nan'):.1f} s (goal <= 10),"
                f" {emb['model_calls']} model calls, decoding {emb['tokens_per_s'] or float('nan'):.1f} tokens/s"
                + (f"; error: {emb['error']}" if emb["error"] else "")
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
