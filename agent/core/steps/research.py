"""Research one sub-question: retrieval is a graph step, and a bounded ReAct loop may search again.

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
from agent.core.state import Passage, Research, ResearchTask
from agent.core.steps.common import emit, numbered, step
from agent.models.calls import MalformedReply
from knowledge.rerank import MMRReranker, load_cross_encoder
from knowledge.search import SearchHit, rrf_fuse
from tools.knowledge import NAME as SEARCH_TOOL
from tools.knowledge import SCHEMA as SEARCH_SCHEMA
from tools.knowledge import ToolArgumentError, format_passages, parse_arguments


def _passage(hit: SearchHit) -> Passage:
    return {"chunk_id": hit.chunk_id, "doc_id": hit.doc_id, "title": hit.title, "text": hit.text, "score": hit.score}


class _Researcher:
    def __init__(self, runtime: Runtime[TurnContext], task: ResearchTask) -> None:
        self.runtime = runtime
        self.ctx = runtime.context
        self.task = task
        self.found: dict[int, Passage] = {}
        self.order: list[int] = []
        self.searches: list[str] = []
        self.errors: list[str] = []
        self.first_result = ""

    @property
    def budget_left(self) -> bool:
        return len(self.searches) < max(1, self.ctx.limits.max_tool_calls)

    def search(self, query: str) -> list[SearchHit]:
        """One search_knowledge call (with HyDE fused in when switched on), shown as a tool event."""
        ctx = self.ctx
        assert ctx.kb is not None
        depth = ctx.limits.passages_per_question * (3 if ctx.switches.rerank else 1)
        hits = ctx.kb.search(query, ctx.collection, k=depth, mode=ctx.search_mode)  # type: ignore[arg-type]
        if ctx.switches.hyde:
            hits = self._with_hyde(query, hits, depth)
        self.searches.append(query)
        if len(self.searches) == 1:
            self.first_result = format_passages(hits)  # what the ReAct model sees as its first tool result
        for hit in hits:
            if hit.chunk_id not in self.found:
                self.found[hit.chunk_id] = _passage(hit)
                self.order.append(hit.chunk_id)
        emit(
            self.runtime,
            {
                "type": "tool",
                "name": SEARCH_TOOL,
                "sub_question": self.task["index"],
                "arguments": {"query": query, "k": depth},
                "result": [{"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": round(h.score, 4)} for h in hits],
            },
        )
        return hits

    def _with_hyde(self, query: str, hits: list[SearchHit], depth: int) -> list[SearchHit]:
        """Embed a hypothetical answer, search with it, and fuse with the plain query's ranking."""
        ctx = self.ctx
        assert ctx.kb is not None
        hypothetical = ctx.caller.text(
            "hyde",
            [{"role": "system", "content": prompts.HYDE}, {"role": "user", "content": query}],
            max_tokens=120,
        )
        emit(self.runtime, {"type": "step", "step": "hyde", "status": "end", "passage": hypothetical[:300]})
        if not hypothetical.strip():
            return hits
        hyde_hits = ctx.kb.search(hypothetical, ctx.collection, k=depth, mode="dense")
        by_id = {h.chunk_id: h for h in [*hits, *hyde_hits]}
        fused = rrf_fuse(
            {"query": [h.chunk_id for h in hits], "hyde": [h.chunk_id for h in hyde_hits]},
            {"query": 1.0, "hyde": 1.0},
            k=ctx.kb.searcher.config.rrf_k,
        )
        return [by_id[cid] for cid, _ in fused[:depth]]

    def react_json(self) -> None:
        while self.budget_left:
            messages = [
                {"role": "system", "content": prompts.REACT},
                {
                    "role": "user",
                    "content": f"Question: {self.task['sub_question']}\n"
                    f"Searches so far: {json.dumps(self.searches)}\n"
                    f"{numbered([self.found[c] for c in self.order])}",
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
                "tool_calls": [self._call_record("call_0", self.searches[0])],
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
            messages.append(
                {
                    "role": "assistant",
                    "content": message.content or "",
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.function.name, "arguments": c.function.arguments},
                        }
                        for c in calls
                    ],
                }
            )
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

    def _call_record(self, call_id: str, query: str) -> dict[str, Any]:
        arguments = json.dumps({"query": query})
        return {"id": call_id, "type": "function", "function": {"name": SEARCH_TOOL, "arguments": arguments}}

    def rerank(self) -> None:
        """Reorder the candidates: graded by the model in one call, or diversified by MMR."""
        candidates = [self.found[c] for c in self.order]
        if len(candidates) <= 1:
            return
        if self.ctx.rerank_method == "cross_encoder" and self.ctx.cross_encoder_path:
            scores = load_cross_encoder(self.ctx.cross_encoder_path).scores(
                self.task["sub_question"], [p["text"] for p in candidates]
            )
            ranked = sorted(zip(scores, candidates, strict=True), key=lambda pair: -pair[0])
            self.order = [p["chunk_id"] for _, p in ranked]
            emit(self.runtime, {"type": "step", "step": "rerank", "status": "end", "method": "cross_encoder"})
            return
        if self.ctx.rerank_method == "mmr":
            assert self.ctx.kb is not None
            reranker = MMRReranker(self.ctx.kb.db, self.ctx.kb.embedder, self.ctx.mmr_lambda)
            self.order = reranker.order_ids(self.task["sub_question"], self.order)
            emit(self.runtime, {"type": "step", "step": "rerank", "status": "end", "method": "mmr"})
            return
        messages = [
            {"role": "system", "content": prompts.RERANK},
            {"role": "user", "content": f"Question: {self.task['sub_question']}\n{numbered(candidates)}"},
        ]
        try:
            grades = self.ctx.caller.json("rerank", messages, prompts.Grades, max_tokens=80)
        except MalformedReply as exc:
            self.errors.append(str(exc))
            return
        picked = [n for n in dict.fromkeys(grades.relevant) if 1 <= n <= len(candidates)]
        emit(self.runtime, {"type": "step", "step": "rerank", "status": "end", "relevant": picked})
        if picked:  # an empty grading keeps the retrieval order rather than dropping everything
            self.order = [candidates[n - 1]["chunk_id"] for n in picked]


def research(task: ResearchTask, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    worker = _Researcher(runtime, task)
    with step(runtime, "research", sub_question=task["index"], question=task["sub_question"]) as result:
        if ctx.switches.retrieval and ctx.kb is not None:
            worker.search(task["sub_question"])
            if ctx.research_mode == "react_json":
                worker.react_json()
            elif ctx.research_mode == "react_native":
                worker.react_native()
            if ctx.switches.rerank:
                worker.rerank()
        passages = [worker.found[c] for c in worker.order][: ctx.limits.passages_per_question]
        result["passages"] = [p["chunk_id"] for p in passages]
    done: Research = {
        "index": task["index"],
        "sub_question": task["sub_question"],
        "passages": passages,
        "searches": worker.searches,
    }
    return {"research": [done], "errors": worker.errors}
