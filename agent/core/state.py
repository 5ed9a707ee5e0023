"""The graph's state: plain dicts that a checkpointer can store."""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict

from tools.knowledge import Passage

__all__ = ["Passage", "Research", "ResearchTask", "TurnState", "Verdict"]


class Research(TypedDict):
    index: int
    sub_question: str
    passages: list[Passage]
    searches: list[str]


class Verdict(TypedDict):
    claim: str
    supported: bool
    evidence: list[int]
    reason: NotRequired[str]  # why it is unsupported ("" when supported)
    # per evidence passage, the sentence that backs the claim: {"chunk_id", "passage", "start", "end"}
    support: NotRequired[list[dict[str, Any]]]


def research_reducer(old: list[Research] | None, new: list[Research] | None) -> list[Research]:
    """Append research results; ``None`` starts a new turn with none."""
    if new is None:
        return []
    return [*(old or []), *new]


def list_reset_reducer(old: list[Any] | None, new: list[Any] | None) -> list[Any]:
    if new is None:
        return []
    return [*(old or []), *new]


class TurnState(TypedDict, total=False):
    """One conversation thread; per-turn fields are reset by the classify node."""

    question: str  # as the user typed it
    standalone: str  # the question rewritten to stand without the thread (agent/core/steps/condense.py)
    route: str
    domain: str
    sub_questions: list[str]
    research: Annotated[list[Research], research_reducer]
    passages: list[Passage]  # what the draft was given, numbered as it cites them
    draft: str
    fact_check: list[Verdict]
    revised: bool
    answer: str
    citations: list[dict[str, Any]]
    data: dict[str, Any]  # the SQL tool's result when the question was answered from a database
    errors: Annotated[list[str], list_reset_reducer]
    history: Annotated[list[dict[str, str]], operator.add]


class ResearchTask(TypedDict):
    """What one parallel research branch receives."""

    index: int
    sub_question: str
