"""Route the question: small talk is answered without retrieval; with a database picked, questions
about its data go to SQL; everything else is researched.

No model call: the question is compared with labelled examples by embedding similarity (the
knowledge base's own embedder), which on 2 cores costs milliseconds instead of seconds.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
from langgraph.runtime import Runtime

from agent.core.context import TurnContext
from agent.core.state import TurnState
from agent.core.steps.common import standalone_question, step

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

DATA_EXAMPLES = (
    "How many customers are there?",
    "Which five products sold the most last year?",
    "What is the total revenue per country?",
    "List the top 10 artists by number of tracks.",
    "What is the average order value by month?",
    "Which employees have the most customers?",
    "Show the count of orders per status.",
    "What percentage of invoices are over 10 dollars?",
)


@lru_cache(maxsize=4)
def _example_vectors(embedder: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        embedder.embed(list(SMALLTALK_EXAMPLES)),
        embedder.embed(list(KNOWLEDGE_EXAMPLES)),
        embedder.embed(list(DATA_EXAMPLES)),
    )


def _mentions(question: str, tables: list[str]) -> bool:
    """Whether the question names a table (singular or plural, any case, underscores as spaces)."""
    words = set(re.findall(r"[a-z0-9]+", question.lower()))
    for table in tables:
        name = table.rsplit(".", 1)[-1].lower().replace("_", " ")
        parts = name.split()
        if parts and all(p in words or p + "s" in words or p + "es" in words for p in parts):
            return True
    return False


# Below this similarity to every small-talk example, a question is researched: when unsure,
# looking things up costs seconds, while skipping retrieval for a real question costs the answer.
SMALLTALK_MIN_SIMILARITY = 0.5


def route_for(question: str, embedder: Any | None, tables: list[str] | None = None) -> str:
    """'smalltalk', 'data' or 'knowledge' by the nearest labelled example, 'knowledge' when unsure.

    'data' needs a picked database (``tables``): a question that names one of its tables, or that
    is nearer to the data examples than to the document ones, is answered with SQL.
    """
    if embedder is None:
        return "data" if tables and _mentions(question, tables) else "knowledge"
    smalltalk, knowledge, data = _example_vectors(embedder)
    query = embedder.embed([question])[0]
    nearest_smalltalk = float(np.max(smalltalk @ query))
    nearest_knowledge = float(np.max(knowledge @ query))
    if nearest_smalltalk >= SMALLTALK_MIN_SIMILARITY and nearest_smalltalk > nearest_knowledge:
        return "smalltalk"
    if tables and (_mentions(question, tables) or float(np.max(data @ query)) > nearest_knowledge):
        return "data"
    return "knowledge"


def classify(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx = runtime.context
    with step(runtime, "classify") as result:
        embedder = ctx.kb.embedder
        tables = ctx.data_source.list_tables() if ctx.data_source is not None else None
        route = route_for(standalone_question(state), embedder, tables)
        domain = ctx.kb.description(ctx.collection)
        result["route"] = route
        if domain:
            result["domain"] = domain
    return {"route": route, "domain": domain}
