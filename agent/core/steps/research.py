"""Research one sub-question: retrieval is a graph step, and a bounded ReAct loop may search again.

Every search goes through the search tool (tools/knowledge.py) and so through the knowledge base's
pipeline: HyDE is its expansion stage, and the rerankers (the chat model's grades, MMR, a
cross-encoder) run in its rerank stage over all the candidates found.

Small local models pick tools badly, so the first search always happens (the graph drives it).
``research_mode`` then decides who may search again: nobody (``retrieve``), the model through a
JSON action (``react_json``, schema-constrained), or the model through native tool calls
(``react_native``). Either way at most ``max_tool_calls`` searches run per sub-question.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.runtime import Runtime

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.events import StepEvent, ToolEvent
from agent.core.state import Research, ResearchTask
from agent.core.steps.common import emit, numbered, step
from agent.core.steps.rerank import reranker_for
from agent.models.calls import MalformedReply
from knowledge.search import SearchHit
from tools.knowledge import NAME as SEARCH_TOOL
from tools.knowledge import SCHEMA as SEARCH_SCHEMA
from tools.knowledge import ToolArgumentError, find_passages, format_passages, parse_arguments, passage_of


class _Researcher:
    def __init__(self, runtime: Runtime[TurnContext], task: ResearchTask) -> None:
        self.runtime = runtime
        self.ctx = runtime.context
        self.task = task
        self.found: dict[int, SearchHit] = {}  # every candidate, in the order first found
        self.searches: list[str] = []
        self.errors: list[str] = []
        self.first_result = ""

    @property
    def budget_left(self) -> bool:
        return len(self.searches) < max(1, self.ctx.limits.max_tool_calls)

    @property
    def depth(self) -> int:
        return self.ctx.limits.passages_per_question * (3 if self.ctx.switches.rerank else 1)

    def search(self, query: str) -> list[SearchHit]:
        """One search_knowledge call (with HyDE fused in when switched on), shown as a tool event."""
        ctx = self.ctx
        expansions = [("hyde", self._hypothetical)] if ctx.switches.hyde else []
        hits = find_passages(ctx.kb, ctx.collection, query, k=self.depth, mode=ctx.search_mode, expansions=expansions)
        self.searches.append(query)
        if len(self.searches) == 1:
            self.first_result = format_passages(hits)  # what the ReAct model sees as its first tool result
        for hit in hits:
            self.found.setdefault(hit.chunk_id, hit)
        shown = [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": round(h.score, 4)} for h in hits]
        emit(self.runtime, ToolEvent(SEARCH_TOOL, {"query": query, "k": self.depth}, shown, self.task["index"]))
        return hits

    def _hypothetical(self, query: str) -> str:
        """HyDE: a passage that could answer the query, written by the model, to search by its embedding."""
        text = self.ctx.caller.text(
            "hyde",
            [{"role": "system", "content": prompts.HYDE}, {"role": "user", "content": query}],
            max_tokens=120,
        )
        emit(self.runtime, StepEvent("hyde", "end", detail={"passage": text[:300]}))
        return text

    def react_json(self) -> None:
        while self.budget_left:
            messages = [
                {"role": "system", "content": prompts.REACT},
                {
                    "role": "user",
                    "content": f"Question: {self.task['sub_question']}\n"
                    f"Searches so far: {json.dumps(self.searches)}\n"
                    f"{numbered([passage_of(h) for h in self.found.values()])}",
                },
            ]
            try:
                action = self.ctx.caller.json("research", messages, prompts.Action, max_tokens=80)
            except MalformedReply as exc:
                self.errors.append(str(exc))
                return
            query = action.query.strip()
            if action.action != "search" or not query or query in self.searches:
                return
            self.search(query)

    def react_native(self) -> None:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompts.REACT_NATIVE},
            {"role": "user", "content": self.task["sub_question"]},
            {
                "role": "assistant",
                "content": "",  # llama.cpp's server rejects content: null
                "tool_calls": [_call_record("call_0", self.searches[0])],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": self.first_result},
        ]
        for _ in range(self.ctx.limits.max_tool_calls):  # bounded even if every call is refused
            if not self.budget_left:
                return
            message = self.ctx.caller.chat("research", messages, tools=[SEARCH_SCHEMA])
            calls = list(message.tool_calls or [])
            if not calls:
                return
            messages.append({"role": "assistant", "content": message.content or "", "tool_calls": _records(calls)})
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call.id, "content": self._run_tool(call)})

    def _run_tool(self, call: Any) -> str:
        if call.function.name != SEARCH_TOOL:
            self.errors.append(f"the model called an unknown tool {call.function.name!r}")
            return f"Error: there is no tool named {call.function.name!r}; the only tool is {SEARCH_TOOL}."
        if not self.budget_left:
            return "Error: the search budget for this question is used up; answer with what you have."
        try:
            args = parse_arguments(call.function.arguments)
        except ToolArgumentError as exc:
            return f"Error: {exc}"
        return format_passages(self.search(args.query))

    def rerank(self) -> None:
        """The pipeline's rerank stage over every candidate found for this sub-question."""
        candidates = list(self.found.values())
        if len(candidates) <= 1:
            return
        reranker = reranker_for(self.runtime, self.errors)
        ranked = self.ctx.kb.searcher.rerank(self.task["sub_question"], candidates, [reranker])
        self.found = {hit.chunk_id: hit for hit in ranked}


def _call_record(call_id: str, query: str) -> dict[str, Any]:
    arguments = json.dumps({"query": query})
    return {"id": call_id, "type": "function", "function": {"name": SEARCH_TOOL, "arguments": arguments}}


def _records(calls: list[Any]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in calls
    ]


def research(task: ResearchTask, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    worker = _Researcher(runtime, task)
    with step(runtime, "research", sub_question=task["index"], question=task["sub_question"]) as result:
        if ctx.switches.retrieval:
            worker.search(task["sub_question"])
            if ctx.research_mode == "react_json":
                worker.react_json()
            elif ctx.research_mode == "react_native":
                worker.react_native()
            if ctx.switches.rerank:
                worker.rerank()
        passages = [passage_of(hit) for hit in worker.found.values()][: ctx.limits.passages_per_question]
        result["passages"] = [p["chunk_id"] for p in passages]
    done: Research = {
        "index": task["index"],
        "sub_question": task["sub_question"],
        "passages": passages,
        "searches": worker.searches,
    }
    return {"research": [done], "errors": worker.errors}
