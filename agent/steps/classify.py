"""Route the question: small talk is answered without retrieval; everything else is researched.

No model call: the question is compared with labelled examples by embedding similarity (the
knowledge base's own embedder), which on 2 cores costs milliseconds instead of seconds.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from langgraph.runtime import Runtime

from agent.context import TurnContext
from agent.state import TurnState
from agent.steps.common import step

SMALLTALK_EXAMPLES = (
    "hi",
    "hello there",
    "hey, how are you?",
    "good morning",
    "thanks!",
    "thank you, that helps",
    "great, thanks a lot",
    "bye",
    "who are you?",
    "what can you do?",
)
KNOWLEDGE_EXAMPLES = (
    "How do I configure the database connection?",
    "What does the report say about revenue growth?",
    "When was the policy last updated and who approved it?",
    "Which files mention the refund process?",
    "Explain how chunking works.",
    "What is the capital of France?",
    "Summarise the findings of the study.",
    "Does the treatment reduce mortality?",
)


@lru_cache(maxsize=4)
def _example_vectors(embedder: Any) -> tuple[np.ndarray, np.ndarray]:
    return embedder.embed(list(SMALLTALK_EXAMPLES)), embedder.embed(list(KNOWLEDGE_EXAMPLES))


# Below this similarity to every small-talk example, a question is researched: when unsure,
# looking things up costs seconds, while skipping retrieval for a real question costs the answer.
SMALLTALK_MIN_SIMILARITY = 0.5


def route_for(question: str, embedder: Any | None) -> str:
    """'smalltalk' or 'knowledge' by the nearest labelled example, 'knowledge' when unsure."""
    if embedder is None:
        return "knowledge"
    smalltalk, knowledge = _example_vectors(embedder)
    query = embedder.embed([question])[0]
    nearest_smalltalk = float(np.max(smalltalk @ query))
    if nearest_smalltalk >= SMALLTALK_MIN_SIMILARITY and nearest_smalltalk > float(np.max(knowledge @ query)):
        return "smalltalk"
    return "knowledge"


def classify(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    with step(runtime, "classify") as result:
        embedder = ctx.kb.embedder if ctx.kb is not None else None
        route = route_for(state["question"], embedder)
        domain = ctx.kb.description(ctx.collection) if ctx.kb is not None else ""
        result["route"] = route
        if domain:
            result["domain"] = domain
    return {"route": route, "domain": domain}
