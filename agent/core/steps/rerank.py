"""The reranker a turn plugs into the search pipeline's rerank stage, by ``rerank_method``.

``llm`` grades the candidates with the chat model in one call (it needs the model, so it lives
here); ``mmr`` and ``cross_encoder`` are the knowledge base's own rerankers.
"""

from __future__ import annotations

from langgraph.runtime import Runtime

from agent.core import prompts
from agent.core.context import TurnContext
from agent.core.events import StepEvent
from agent.core.steps.common import emit, numbered
from agent.models.calls import MalformedReply
from knowledge.rerank import MMRReranker, load_cross_encoder
from knowledge.search import Reranker, SearchHit
from tools.knowledge import passage_of


class ModelGrader:
    """A reranker: the chat model lists the candidates that help, most helpful first.

    An unusable or empty grading keeps the retrieval order rather than dropping everything.
    """

    def __init__(self, runtime: Runtime[TurnContext], errors: list[str]) -> None:
        self.runtime = runtime
        self.errors = errors

    def __call__(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        messages = [
            {"role": "system", "content": prompts.RERANK},
            {"role": "user", "content": f"Question: {query}\n{numbered([passage_of(h) for h in hits])}"},
        ]
        try:
            grades = self.runtime.context.caller.json("rerank", messages, prompts.Grades, max_tokens=80)
        except MalformedReply as exc:
            self.errors.append(str(exc))
            return hits
        picked = [n for n in dict.fromkeys(grades.relevant) if 1 <= n <= len(hits)]
        emit(self.runtime, StepEvent("rerank", "end", detail={"relevant": picked}))
        return [hits[n - 1] for n in picked] if picked else hits


class _Announced:
    """A knowledge-base reranker that reports itself as a step event."""

    def __init__(self, runtime: Runtime[TurnContext], method: str, reranker: Reranker) -> None:
        self.runtime, self.method, self.reranker = runtime, method, reranker

    def __call__(self, query: str, hits: list[SearchHit]) -> list[SearchHit]:
        ranked = self.reranker(query, hits)
        emit(self.runtime, StepEvent("rerank", "end", detail={"method": self.method}))
        return ranked


def reranker_for(runtime: Runtime[TurnContext], errors: list[str]) -> Reranker:
    """The turn's reranker; errors of the model's grading are appended to ``errors``."""
    ctx = runtime.context
    if ctx.rerank_method == "cross_encoder" and ctx.cross_encoder_path:
        return _Announced(runtime, "cross_encoder", load_cross_encoder(ctx.cross_encoder_path))
    if ctx.rerank_method == "mmr":
        return _Announced(runtime, "mmr", MMRReranker(ctx.kb.db, ctx.kb.embedder, ctx.mmr_lambda))
    return ModelGrader(runtime, errors)
