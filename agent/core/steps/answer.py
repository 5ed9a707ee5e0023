"""Finish the turn: resolve citations to chunk ids and record the exchange in the thread's history."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from agent.core.context import TurnContext
from agent.core.state import TurnState
from agent.core.steps.common import cited_numbers, step
from agent.core.steps.draft import context_passages


def answer(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    with step(runtime, "answer") as result:
        text = state.get("answer") or state.get("draft") or ""
        passages = context_passages(state, ctx) if state.get("route") != "smalltalk" else []
        numbers = cited_numbers(text, len(passages))
        # Then the passages the fact-check found backing a claim, when the answer did not cite them itself (small
        # models often cite nothing, or the wrong number): the passage that supports a claim is always there to open.
        # Each keeps its number in the draft's prompt: numbering them by their place in this list showed passage [1]
        # as [2] when the fact-check's first evidence was another passage.
        number_of = {p["chunk_id"]: n for n, p in enumerate(passages, start=1)}
        evidence = [number_of[cid] for v in state.get("fact_check") or [] for cid in v["evidence"] if cid in number_of]
        citations = [
            {"number": n, "doc_id": passages[n - 1]["doc_id"], "chunk_id": passages[n - 1]["chunk_id"]}
            for n in dict.fromkeys([*numbers, *evidence])
        ]
        result["citations"] = len(citations)
    history = [{"role": "user", "content": state["question"]}, {"role": "assistant", "content": text}]
    return {"answer": text, "citations": citations, "passages": passages, "history": history}
