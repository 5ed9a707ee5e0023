"""Helpers the steps share: events, passage packing, citations."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langgraph.runtime import Runtime

from agent.core.context import TurnContext
from agent.core.events import StepEvent, TurnEvent
from agent.core.state import Passage, Research, TurnState
from knowledge.tokens import count_tokens
from tools.knowledge import format_passages

_CITATION = re.compile(r"\[(\d{1,3})\]")
# tiktoken counts for OpenAI's tokenizers; other models' tokenizers differ, so leave a margin.
TOKEN_MARGIN = 1.2


def emit(runtime: Runtime[TurnContext], event: TurnEvent) -> None:
    """Send an event to whoever streams the graph (custom stream mode)."""
    runtime.stream_writer(event)


@contextmanager
def step(
    runtime: Runtime[TurnContext], name: str, *, sub_question: int | None = None, **detail: Any
) -> Iterator[dict[str, Any]]:
    """Emit start and end events for a step; the yielded dict is added to the end event's detail."""
    started = time.perf_counter()
    emit(runtime, StepEvent(name, "start", sub_question=sub_question, detail=dict(detail)))
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        seconds = round(time.perf_counter() - started, 3)
        emit(runtime, StepEvent(name, "end", seconds, sub_question, {**detail, **result}))


def standalone_question(state: TurnState) -> str:
    """The question as the steps after condense read it: standalone, or as typed when none was made."""
    return state.get("standalone") or state["question"]


def collect_passages(research: list[Research]) -> list[Passage]:
    """Passages of all sub-questions, each once, interleaved by rank (every sub-question's best
    passage first), so that a tight token budget still covers every part of the question."""
    seen: set[int] = set()
    out: list[Passage] = []
    ordered = sorted(research, key=lambda r: r["index"])
    depth = max((len(item["passages"]) for item in ordered), default=0)
    for rank in range(depth):
        for item in ordered:
            if rank < len(item["passages"]):
                passage = item["passages"][rank]
                if passage["chunk_id"] not in seen:
                    seen.add(passage["chunk_id"])
                    out.append(passage)
    return out


def pack(passages: list[Passage], budget_tokens: int) -> list[Passage]:
    """The leading passages that fit in ``budget_tokens`` (with a margin for other tokenizers)."""
    packed: list[Passage] = []
    used = 0
    for passage in passages:
        cost = int(count_tokens(passage["text"]) * TOKEN_MARGIN) + 12
        if used + cost > budget_tokens:
            break
        packed.append(passage)
        used += cost
    return packed


def numbered(passages: list[Passage]) -> str:
    """Passages as delimited data, numbered from 1 for the model to cite (the search tool's own format)."""
    return format_passages(passages, numbered=True)


def cited_numbers(text: str, limit: int) -> list[int]:
    """Citation numbers [n] in the text that point at one of ``limit`` passages, in order, once each."""
    found = [int(n) for n in _CITATION.findall(text)]
    return list(dict.fromkeys(n for n in found if 1 <= n <= limit))
