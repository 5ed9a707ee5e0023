"""The graph: only wiring. Each step lives in agent/steps/."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from agent.core.context import TurnContext
from agent.core.state import TurnState
from agent.core.steps.answer import answer
from agent.core.steps.classify import classify
from agent.core.steps.condense import condense
from agent.core.steps.decompose import decompose
from agent.core.steps.draft import draft, smalltalk
from agent.core.steps.fact_check import fact_check
from agent.core.steps.query_data import query_data
from agent.core.steps.research import research


def _route(state: TurnState) -> str:
    return {"smalltalk": "smalltalk", "data": "query_data"}.get(state.get("route", ""), "decompose")


def _fan_out(state: TurnState) -> list[Send]:
    """One research branch per sub-question, run in parallel."""
    return [
        Send("research", {"index": i, "sub_question": sub}) for i, sub in enumerate(state.get("sub_questions") or [])
    ]


def build_graph(checkpointer: Any = None) -> Any:
    """START → condense → classify → decompose → research × N → draft → fact_check → answer → END.

    classify may instead route to smalltalk or, when a database is picked, to query_data; both go to answer.
    """
    builder = StateGraph(TurnState, context_schema=TurnContext)
    builder.add_node("condense", condense)
    builder.add_node("classify", classify)
    builder.add_node("smalltalk", smalltalk)
    builder.add_node("decompose", decompose)
    builder.add_node("research", research)
    builder.add_node("draft", draft)
    builder.add_node("fact_check", fact_check)
    builder.add_node("query_data", query_data)
    builder.add_node("answer", answer)
    builder.add_edge(START, "condense")
    builder.add_edge("condense", "classify")
    builder.add_conditional_edges("classify", _route, ["smalltalk", "query_data", "decompose"])
    builder.add_conditional_edges("decompose", _fan_out, ["research"])
    builder.add_edge("research", "draft")
    builder.add_edge("draft", "fact_check")
    builder.add_edge("fact_check", "answer")
    builder.add_edge("smalltalk", "answer")
    builder.add_edge("query_data", "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer)
