"""What a turn runs with: the model caller, the knowledge base, the technique switches and the bounds.

The context is passed to the graph at run time (LangGraph's ``context``), so none of it is
checkpointed; the state holds only plain data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

from agent.core.config import Settings
from agent.models.calls import ModelCaller
from knowledge.base import KnowledgeBase
from knowledge.errors import LadderError
from tools.sql.database import DataSource

EMBEDDED_PASSAGE_TOKENS = 500
SWITCHES = ("fewshot", "retrieval", "hyde", "rerank", "decompose", "fact_check")


class SwitchError(LadderError, ValueError):
    """An unknown technique switch or value."""


@dataclass(frozen=True)
class Switches:
    """The techniques in force for a turn: the rungs of the ladder."""

    fewshot: bool = True
    retrieval: bool = True
    hyde: bool = False
    rerank: bool = False
    decompose: bool = True
    fact_check: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, overrides: dict[str, bool] | None = None) -> Switches:
        values = {name: getattr(settings, f"use_{name}") for name in SWITCHES}
        for name, value in (overrides or {}).items():
            if name not in values:
                raise SwitchError(f"unknown switch {name!r}; switches are {', '.join(SWITCHES)}")
            values[name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, bool]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_switch(text: str) -> tuple[str, bool]:
    """``NAME=on|off`` (also true/false, 1/0, yes/no) as (name, value)."""
    name, sep, raw = text.partition("=")
    value = raw.strip().lower()
    truthy, falsy = {"on", "true", "1", "yes"}, {"off", "false", "0", "no"}
    if not sep or value not in truthy | falsy:
        raise SwitchError(f"switch {text!r} must look like NAME=on or NAME=off")
    name = name.strip().replace("-", "_")
    if name not in SWITCHES:
        raise SwitchError(f"unknown switch {name!r}; switches are {', '.join(SWITCHES)}")
    return name, value in truthy


@dataclass(frozen=True)
class Limits:
    """Hard bounds: every loop in the graph stops at one of these."""

    max_sub_questions: int = 4
    max_tool_calls: int = 3
    max_revisions: int = 1
    passages_per_question: int = 4
    answer_max_tokens: int = 400
    context_tokens: int = 4096
    max_question_tokens: int = 1000
    passage_tokens: int = 3000

    @classmethod
    def from_settings(cls, settings: Settings, *, embedded: bool = False) -> Limits:
        # On a CPU every prompt token is read at ~100 tokens/s: the embedded model gets tight
        # contexts so the first words of the answer appear within seconds, not half a minute.
        passage_tokens = settings.draft_context_tokens or (EMBEDDED_PASSAGE_TOKENS if embedded else 3000)
        return cls(
            passage_tokens=passage_tokens,
            max_sub_questions=settings.max_sub_questions,
            max_tool_calls=settings.max_tool_calls,
            max_revisions=settings.max_revisions,
            passages_per_question=settings.passages_per_question,
            answer_max_tokens=settings.answer_max_tokens,
            context_tokens=settings.llm_context_tokens,
            max_question_tokens=settings.max_question_tokens,
        )


@dataclass
class TurnContext:
    """Everything a node needs that is not state."""

    caller: ModelCaller
    kb: KnowledgeBase
    collection: str
    switches: Switches
    limits: Limits
    search_mode: str = "hybrid"
    research_mode: str = "retrieve"
    condense: bool = True  # a follow-up is rewritten as a standalone question (not a rung: eval sets are single-turn)
    rerank_method: str = "llm"
    mmr_lambda: float = 0.7
    cross_encoder_path: str | None = None
    data_source: DataSource | None = None  # the database picked for this turn, if any
    started: float = field(default_factory=time.perf_counter)
