"""What a turn returns: the answer, its citations and checks, and the passages it used.

Every face (CLI, chat, MCP, the OpenAI-compatible API) and the eval runner read this one object;
``to_dict()`` is its JSON form (``ladder ask --json``, MCP).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.core.state import Passage, Verdict


@dataclass(frozen=True)
class Citation:
    """A passage the answer cites: its number [n] in the draft's prompt (also when the fact-check found it;
    None only in turns logged before that was so)."""

    number: int | None
    doc_id: str
    chunk_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "doc_id": self.doc_id, "chunk_id": self.chunk_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Citation:
        """A citation as the turn log keeps it."""
        return cls(data.get("number"), data["doc_id"], data["chunk_id"])


@dataclass
class TurnResult:
    """One finished turn. ``passages`` are the ones the answer was drafted from, numbered as cited."""

    answer: str
    turn_id: str
    thread_id: str
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    retrieved: list[dict[str, Any]] = field(default_factory=list)  # every passage found, with sub-question and rank
    sub_questions: list[str] = field(default_factory=list)
    fact_check: list[Verdict] = field(default_factory=list)
    revised: bool = False
    usage: dict[str, Any] = field(default_factory=dict)
    switches: dict[str, bool] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    data: dict[str, Any] | None = None  # the SQL tool's result, for a question answered from a database
    error: str | None = None  # why the turn stopped early; the answer may be partial

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "answer": self.answer,
            "citations": [c.to_dict() for c in self.citations],
            "sub_questions": self.sub_questions,
            "fact_check": self.fact_check,
            "revised": self.revised,
            "usage": self.usage,
            "switches": self.switches,
            "turn_id": self.turn_id,
            "thread_id": self.thread_id,
            "errors": self.errors,
            "passages": self.passages,
        }
        if self.data:
            out["data"] = self.data
        if self.error is not None:
            out["error"] = self.error
        return out
